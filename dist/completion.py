#!/usr/bin/env python3
"""completion.py FLOWLAB TEMPLATE OUT - writes flowlab's bash completion:
TEMPLATE (completion.bash.in) with the program's commands, each command's
options, the section names and each section's keys, and the components of
each kind, all read from the built program (`flowlab --help`,
`flowlab COMMAND --help`, `flowlab plugins`, `flowlab plugins SECTION`,
`flowlab plugins COMPONENT`), so completion follows the program."""
import os
import re
import subprocess
import sys

ENV = dict(os.environ, OMP_WAIT_POLICY="passive", FLOWLAB_PLUGIN_PATH="")
# `flowlab plugins` headings -> the section their components take
KIND_SECTION = {"flows": "flow", "posteriors": "posterior", "estimators": "estimator",
                "likelihoods": "likelihood", "priors": "prior", "targets": "target",
                "datasets": "data"}


def run(exe, *args):
    r = subprocess.run([exe, *args], capture_output=True, text=True, env=ENV)
    if r.returncode != 0:
        sys.exit("completion.py: %s %s failed (%d): %s"
                 % (exe, " ".join(args), r.returncode, r.stderr.strip()))
    return r.stdout


def options(text):
    """Every option spelled in a --help text (not a hyphenated word)."""
    found = re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)(?![\w-])", text)
    seen = []
    for o in found + ["--help"]:
        if o not in seen:
            seen.append(o)
    return seen


def keys_of(text):
    """The keys a `flowlab plugins X` text documents (4-space indented)."""
    return re.findall(r"^    ([a-z0-9_]+)\s", text, re.M)


def main():
    exe, template, out = sys.argv[1], sys.argv[2], sys.argv[3]
    top = run(exe, "--help")
    cmds, inside = [], False
    for line in top.split("\n"):
        if line.startswith("commands:"):
            inside = True
        elif inside and line and not line.startswith(" "):
            break
        elif inside:
            m = re.match(r"^  ([a-z][a-z-]*)(\s|$)", line)
            if m and m.group(1) not in cmds:
                cmds.append(m.group(1))
    opts = {c: options(run(exe, c, "--help")) for c in cmds if c != "help"}
    # the global options: the option lines of the top-level text's "options:"
    block = top.split("\noptions:")[-1].split("\n\n")[0]
    glob = options("\n".join(l.split("  ")[1] for l in block.split("\n")
                             if l.startswith("  -")))

    listing = run(exe, "plugins")
    comps, kind = {}, None
    for line in listing.split("\n"):
        m = re.match(r"^([a-z]+):$", line)
        if m:
            kind = KIND_SECTION.get(m.group(1))
            continue
        m = re.match(r"^  ([a-z0-9][a-z0-9_-]*)\s", line)
        if kind and m:
            comps.setdefault(kind, []).append(m.group(1))
    # the host's own sections: those the closing line of `flowlab plugins` names
    tail = re.search(r"`flowlab plugins train` \(([^)]*)\)", listing)
    host = ["train"] + ([s.strip() for s in tail.group(1).split(",")] if tail else [])
    keys = {}
    for s in host:
        keys.setdefault(s, [])
        keys[s] += [k for k in keys_of(run(exe, "plugins", s)) if k not in keys[s]]
    reserved = {"flow": ["type", "repeat", "permute"], "estimator": ["type", "k"]}
    for sec, names in comps.items():
        ks = keys.setdefault(sec, [])
        for k in reserved.get(sec, ["type"]):
            if k not in ks:
                ks.append(k)
        for n in names:
            ks += [k for k in keys_of(run(exe, "plugins", n)) if k not in ks]
    sections = list(keys) + ["sweep"]

    def q(words):
        return '"' + " ".join(words) + '"'

    body = ["_flowlab_commands=%s" % q([c for c in cmds]),
            "_flowlab_global_opts=%s" % q(glob),
            "_flowlab_sections=%s" % q(sections),
            "_flowlab_host_sections=%s" % q(host),
            "declare -gA _flowlab_opts=(" + " ".join("[%s]=%s" % (c, q(o))
                                                      for c, o in opts.items()) + ")",
            "declare -gA _flowlab_keys=(" + " ".join("[%s]=%s" % (s, q(k))
                                                     for s, k in keys.items()) + ")",
            "declare -gA _flowlab_types=(" + " ".join("[%s]=%s" % (s, q(n))
                                                      for s, n in comps.items()) + ")"]
    text = open(template, encoding="utf-8").read().replace("@FLOWLAB_TABLES@", "\n".join(body))
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
