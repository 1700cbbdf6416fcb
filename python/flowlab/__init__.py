"""flowlab - load flowlab runs and sweeps from Python.

    import flowlab
    run = flowlab.load_run("runs/quickstart-20261208-001500")
    lp = run.log_prob(x)            # log p(x) per row, nats (NumPy array)
    xs = run.sample(1000, seed=3)   # (1000, dim) samples
    run.config["train"]["lr"]       # config.ini, every key spelled out
    run.result["test_nll"]          # result.json
    run.metrics                     # metrics.csv: a pandas DataFrame, or a dict of arrays
    table = flowlab.load_sweep("sweeps/density-depth")   # report.csv

Pure Python over ctypes and NumPy: log_prob and sample call libflowlab.so
(include/flowlab/embed.h), the numbers `flowlab logprob` and `flowlab sample`
print. The library is found through the FLOWLAB_LIB variable (a path to
libflowlab.so), else in build*/framework/ of the source tree this package
sits in, else on the system's library path. docs/python.md has the details.
"""
import configparser
import csv
import ctypes
import ctypes.util
import glob
import json
import os

import numpy as np

__all__ = ["load_run", "load_sweep", "Run", "FlowlabError", "library_path"]

try:  # tables become DataFrames when pandas is there
    import pandas as _pd
except ImportError:  # pragma: no cover - depends on the machine
    _pd = None

# fl_status (include/flowlab/core.h)
_STATUS = {0: "ok", 1: "invalid argument", 2: "out of memory", 3: "i/o error",
           4: "malformed input", 5: "unsupported operation", 6: "NaN or infinity",
           7: "ABI mismatch", 8: "not found", 9: "exists", 10: "internal error"}


class FlowlabError(RuntimeError):
    """A call into libflowlab failed; str() is flowlab's one-line message and
    .status its fl_status code."""

    def __init__(self, status, message):
        super().__init__(message or _STATUS.get(status, "error %d" % status))
        self.status = status


def library_path():
    """The libflowlab.so this package loads (see the module's docstring)."""
    env = os.environ.get("FLOWLAB_LIB")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    found = sorted(glob.glob(os.path.join(root, "build*", "framework", "libflowlab.so")))
    plain = os.path.join(root, "build", "framework", "libflowlab.so")
    if plain in found:
        return plain
    if found:
        return found[0]
    return ctypes.util.find_library("flowlab")


_lib = None


def _library():
    global _lib
    if _lib is not None:
        return _lib
    path = library_path()
    if not path:
        raise FlowlabError(3, "libflowlab.so not found: build flowlab (meson setup build && "
                              "ninja -C build) or set FLOWLAB_LIB to its path")
    lib = ctypes.CDLL(path)
    vp, u32, u64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
    dp = ctypes.POINTER(ctypes.c_double)
    lib.fl_embed_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(vp)]
    lib.fl_embed_open.restype = ctypes.c_int
    lib.fl_embed_close.argtypes = [vp]
    lib.fl_embed_close.restype = None
    lib.fl_embed_task.argtypes = [vp]
    lib.fl_embed_task.restype = ctypes.c_char_p
    lib.fl_embed_dim.argtypes = [vp]
    lib.fl_embed_dim.restype = u32
    lib.fl_embed_sample_dim.argtypes = [vp]
    lib.fl_embed_sample_dim.restype = u32
    lib.fl_embed_log_prob.argtypes = [vp, dp, u64, u32, u64, dp]
    lib.fl_embed_log_prob.restype = ctypes.c_int
    lib.fl_embed_sample.argtypes = [vp, u64, u64, dp]
    lib.fl_embed_sample.restype = ctypes.c_int
    lib.fl_embed_error.argtypes = []
    lib.fl_embed_error.restype = ctypes.c_char_p
    _lib = lib
    return lib


def _check(lib, status):
    if status != 0:
        msg = lib.fl_embed_error()
        raise FlowlabError(status, msg.decode("utf-8", "replace") if msg else "")


def _numbers(values):
    """A CSV column as a float array when every cell is a number, else as
    an object array of strings (empty cells: NaN / '')."""
    try:
        return np.array([float(v) if v != "" else np.nan for v in values], dtype=float)
    except ValueError:
        return np.array(values, dtype=object)


def _read_table(path):
    """A CSV file as a pandas DataFrame, or without pandas an ordered dict
    {column: NumPy array}."""
    if _pd is not None:
        return _pd.read_csv(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    head, body = rows[0], rows[1:]
    return {h: _numbers([r[i] if i < len(r) else "" for r in body]) for i, h in enumerate(head)}


def _read_config(path):
    """config.ini as {section: {key: value string}} (flowlab writes one
    value per key; ';' starts a comment)."""
    cp = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None,
                                   comment_prefixes=(";", "#"), strict=False)
    cp.optionxform = str  # keys keep their case
    cp.read(path)
    return {s: dict(cp[s]) for s in cp.sections()}


class Run:
    """A trained run directory: its files, and its model through libflowlab.

    config   {section: {key: value}} from config.ini (strings, as written)
    result   result.json as a dict (None while the run is unfinished)
    metrics  metrics.csv (DataFrame with pandas, else {column: array})
    task     "density", "vae" or "vi"
    dim      values per data row (0 for vi)

    The model is loaded on first use of log_prob or sample and freed by
    close() (or `with flowlab.load_run(...) as run:`)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        cfg = os.path.join(self.path, "config.ini")
        if not os.path.isfile(cfg):
            raise FlowlabError(3, "%s: not a run directory (no config.ini)" % self.path)
        self.config = _read_config(cfg)
        self.task = self.config.get("experiment", {}).get("task", "")
        res = os.path.join(self.path, "result.json")
        self.result = None
        if os.path.isfile(res):
            with open(res) as f:
                self.result = json.load(f)
        met = os.path.join(self.path, "metrics.csv")
        self.metrics = _read_table(met) if os.path.isfile(met) else None
        self._h = None

    def _handle(self):
        if self._h is None:
            lib = _library()
            h = ctypes.c_void_p()
            _check(lib, lib.fl_embed_open(self.path.encode(), ctypes.byref(h)))
            self._h = h
        return self._h

    @property
    def dim(self):
        return int(_library().fl_embed_dim(self._handle()))

    def log_prob(self, x, k=0):
        """log p(x) in nats of each row of x ((n, dim) or one row (dim,)), a
        float64 array of n values: what `flowlab logprob RUN --in FILE
        [--k K]` prints (density exact; vae IWAE-k with k = the run's
        [eval] k when 0)."""
        lib = _library()
        h = self._handle()
        a = np.ascontiguousarray(x, dtype=np.float64)
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if a.ndim != 2:
            raise ValueError("log_prob expects rows: an array of shape (n, dim)")
        out = np.empty(a.shape[0], dtype=np.float64)
        dp = ctypes.POINTER(ctypes.c_double)
        _check(lib, lib.fl_embed_log_prob(h, a.ctypes.data_as(dp), a.shape[0], a.shape[1],
                                          int(k), out.ctypes.data_as(dp)))
        return out

    def sample(self, n, seed=0):
        """n samples as an (n, dim) float64 array, drawn from `seed` as
        `flowlab sample RUN -n N --seed S` draws them."""
        lib = _library()
        h = self._handle()
        d = int(lib.fl_embed_sample_dim(h))
        out = np.empty((int(n), d), dtype=np.float64)
        _check(lib, lib.fl_embed_sample(h, int(n), int(seed),
                                        out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
        return out

    def close(self):
        """Frees the model (the files' contents stay)."""
        if self._h is not None and _lib is not None:
            _lib.fl_embed_close(self._h)
        self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self):
        return "flowlab.Run(%r, task=%r)" % (self.path, self.task)


def load_run(path):
    """A run directory written by `flowlab run` as a Run."""
    return Run(path)


def load_sweep(path):
    """A sweep's report table (SWEEP_DIR/report.csv, written by `flowlab
    sweep` or `flowlab report`): a DataFrame with pandas, else {column:
    array}."""
    rep = os.path.join(os.fspath(path), "report.csv")
    if not os.path.isfile(rep):
        raise FlowlabError(3, "%s: no report.csv (run `flowlab report %s`)" % (path, path))
    return _read_table(rep)
