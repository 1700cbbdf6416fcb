#!/usr/bin/env python3
"""Runs python/tests under pytest when it is installed (Debian's
python3-pytest, which scripts/bootstrap.sh installs); without it, runs every
test_* function itself, each with a fresh tmp_path, so the tests still run.
Exit 0 when all pass. `meson test` calls this (tests/meson.build)."""
import importlib.util
import os
import pathlib
import sys
import tempfile
import traceback

here = os.path.dirname(os.path.abspath(__file__))
if importlib.util.find_spec("pytest") is not None:
    import pytest
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", here] + sys.argv[1:]))

print("run.py: pytest is not installed; running the tests directly")
failed = 0
with tempfile.TemporaryDirectory() as tmp:
    for f in sorted(os.listdir(here)):
        if not (f.startswith("test_") and f.endswith(".py")):
            continue
        spec = importlib.util.spec_from_file_location(f[:-3], os.path.join(here, f))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name in sorted(n for n in dir(mod) if n.startswith("test_")):
            d = pathlib.Path(tmp) / name
            d.mkdir()
            try:
                getattr(mod, name)(d)
                print("ok", name)
            except Exception:
                failed += 1
                print("FAIL", name)
                traceback.print_exc()
sys.exit(1 if failed else 0)
