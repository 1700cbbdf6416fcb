#!/usr/bin/env python3
"""manpage.py FLOWLAB OUT DOCDIR - writes flowlab(1) in roff from the program's own
--help texts (`flowlab --help` and `flowlab COMMAND --help` for every
command it lists), so the manual never says other than the program."""
import datetime
import os
import re
import subprocess
import sys


def helptext(exe, *args):
    env = dict(os.environ, OMP_WAIT_POLICY="passive", FLOWLAB_PLUGIN_PATH="")
    r = subprocess.run([exe, *args, "--help"], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit("manpage.py: %s %s --help failed (%d): %s"
                 % (exe, " ".join(args), r.returncode, r.stderr.strip()))
    return r.stdout


def esc(line):
    """One line of text as roff: backslashes escaped, minus signs kept
    minus signs, no line taken for a request."""
    line = line.replace("\\", "\\e").replace("-", "\\-")
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def block(text):
    """Preformatted text, as --help prints it."""
    out = [".nf"]
    for line in text.rstrip("\n").split("\n"):
        out.append(esc(line) if line.strip() else ".sp")
    out.append(".fi")
    return out


def commands(top):
    """The command names of the top-level --help, in its order."""
    names, inside = [], False
    for line in top.split("\n"):
        if line.startswith("commands:"):
            inside = True
        elif inside and line and not line.startswith(" "):
            break
        elif inside:
            m = re.match(r"^  ([a-z][a-z-]*)(\s|$)", line)
            if m and m.group(1) not in names:
                names.append(m.group(1))
    return names


def main():
    exe, out, docdir = sys.argv[1], sys.argv[2], sys.argv[3]
    top = helptext(exe)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             env=dict(os.environ, OMP_WAIT_POLICY="passive")).stdout.split()
    version = version[1] if len(version) > 1 else "unknown"
    # SOURCE_DATE_EPOCH: reproducible builds (Debian) get a fixed date.
    when = datetime.datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or
                                           datetime.datetime.now().timestamp(),
                                           tz=datetime.timezone.utc)
    desc = [l for l in top.split("\n")[1:] if l.strip()][0]
    lines = ['.TH FLOWLAB 1 "%s" "flowlab %s" "User Commands"' % (when.strftime("%Y-%m-%d"),
                                                                   version),
             ".SH NAME",
             "flowlab \\- " + esc(desc.rstrip(".").lower()[0] + desc.rstrip(".")[1:]),
             ".SH SYNOPSIS",
             ".B flowlab",
             "[\\fB\\-\\-plugin\\fR \\fIPATH\\fR]... [\\fB\\-\\-quiet\\fR] "
             "\\fICOMMAND\\fR [\\fIARGS\\fR]",
             ".SH DESCRIPTION",
             "This page collects the texts that \\fBflowlab \\-\\-help\\fR and "
             "\\fBflowlab \\fICOMMAND\\fB \\-\\-help\\fR print.",
             ".PP"]
    lines += block(top)
    lines.append(".SH COMMANDS")
    for c in commands(top):
        if c == "help":
            continue
        lines += [".SS " + c, ".PP"]
        lines += block(helptext(exe, c))
    lines += [".SH SEE ALSO",
              "The documentation in " + esc(docdir) + " (README.md, and in docs/: "
              "install.md, architecture.md, writing\\-a\\-layer.md, plugin\\-abi.md)."]
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
