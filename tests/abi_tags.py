#!/usr/bin/env python3
"""abi_tags.py - every function pointer of a struct in include/flowlab/ (the
fl_host services, the class structs' functions, the registrar and the
plugin entry) carries a call tag, and only tags host.h defines:

  [init] [create] [any] [thread-safe]   services of the host
  [once] [serial] [concurrent]          functions of a component

A member's tag is in the comment just above it or on its own line(s).

  python3 tests/abi_tags.py include"""
import os
import re
import sys

TAGS = {"init", "create", "any", "thread-safe", "once", "serial", "concurrent"}
inc = sys.argv[1] if len(sys.argv) > 1 else "include"
d = os.path.join(inc, "flowlab")
bad = []
checked = 0

# the legend in host.h defines every tag
legend = open(os.path.join(d, "host.h")).read().split("#ifndef")[0]
for t in TAGS:
    if not re.search(r"^ \*\s+\[%s\]\s" % re.escape(t), legend, re.M):
        bad.append("host.h: the tag [%s] is not defined at the top" % t)

for h in sorted(os.listdir(d)):
    if not h.endswith(".h"):
        continue
    text = open(os.path.join(d, h)).read()
    for m in re.finditer(r"^(?:typedef )?struct (fl_\w+) \{\n(.*?)^\}", text, re.M | re.S):
        name, body = m.group(1), m.group(2)
        # split the body into members: each ends with ';' outside comments
        # and takes the comment lines above it along
        pending = ""
        for line in body.splitlines(keepends=True):
            pending += line
            code = re.sub(r"/\*.*?\*/", "", pending, flags=re.S)
            if "/*" in code or not code.rstrip().endswith(";"):
                continue  # inside a comment, or the declaration goes on
            member, pending = pending, ""
            fn = re.search(r"\(\*\s*(\w+)\)\s*\(", re.sub(r"/\*.*?\*/", "", member, flags=re.S))
            is_host = name == "fl_host"
            if not fn and not is_host:
                continue
            field = fn.group(1) if fn else re.findall(r"(\w+)\s*;", member)[-1]
            checked += 1
            tags = set(re.findall(r"\[([a-z][a-z-]{2,})\]", member))
            if not tags & TAGS:
                bad.append("%s: %s.%s has no call tag" % (h, name, field))
            for t in tags - TAGS:
                bad.append("%s: %s.%s has an unknown tag [%s]" % (h, name, field, t))

for b in bad:
    print("FAIL:", b)
print("%d members checked, %d problems" % (checked, len(bad)))
sys.exit(1 if bad else 0)
