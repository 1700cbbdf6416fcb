"""Tests of the flowlab Python package (python/flowlab) against the flowlab
command of the same build: runs made here, log_prob against `flowlab
logprob` to the last printed digit, sample against `flowlab sample`.

Needs FLOWLAB_EXE (the flowlab executable) and FLOWLAB_LIB (libflowlab.so),
as `meson test` sets them (tests/meson.build); run by python/tests/run.py,
under pytest when it is installed."""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import flowlab  # noqa: E402

EXE = os.environ.get("FLOWLAB_EXE", "")
ROOT = os.environ.get("FLOWLAB_SOURCE_ROOT",
                      os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ENV = dict(os.environ, FLOWLAB_PLUGIN_PATH="", OMP_NUM_THREADS="1")

_cache = {}


def fl(*args, ok=True):
    p = subprocess.run([EXE, "--quiet", *map(str, args)], capture_output=True, text=True, env=ENV)
    if ok and p.returncode != 0:
        raise AssertionError("flowlab %s: exit %d\n%s" % (" ".join(map(str, args)), p.returncode,
                                                           p.stderr))
    return p


def density_run(tmp):
    """The quickstart (two moons, Real NVP), 30 steps."""
    if "density" not in _cache:
        d = os.path.join(tmp, "density")
        fl("run", os.path.join(ROOT, "experiments", "quickstart.ini"), "--set", "train.steps=30",
           "--set", "data.test_size=500", "--out", d)
        _cache["density"] = d
    return _cache["density"]


def vae_run(tmp):
    """A small Gaussian VAE on a CSV file of 4 columns, 20 steps."""
    if "vae" not in _cache:
        rng = np.random.default_rng(5)
        data = os.path.join(tmp, "vae-data.csv")
        z = rng.normal(size=(600, 1))
        x = np.hstack([z, 2 * z, -z, z * z]) + 0.1 * rng.normal(size=(600, 4))
        np.savetxt(data, x, delimiter=",", header="a,b,c,d", comments="", fmt="%.5f")
        ini = os.path.join(tmp, "vae.ini")
        with open(ini, "w") as f:
            f.write("[experiment]\ntask = vae\nseed = 3\n[data]\ntype = csv\npath = %s\n"
                    "[encoder]\nlatent = 2\nhidden = 16\n[decoder]\nhidden = 16\n"
                    "[likelihood]\ntype = gaussian\n[estimator]\ntype = iwae\nk = 4\n"
                    "[train]\nsteps = 20\nbatch = 50\n[eval]\nk = 50\nn = 20\nvalid_n = 20\n"
                    % data)
        d = os.path.join(tmp, "vae")
        fl("run", ini, "--out", d)
        _cache["vae"] = d
    return _cache["vae"]


def cli_logprob(run, rows, tmp, name, k=None):
    src = os.path.join(tmp, name + ".csv")
    np.savetxt(src, rows, delimiter=",", fmt="%.9g")
    out = os.path.join(tmp, name + "-lp.csv")
    fl("logprob", run, "--in", src, "--out", out, *(["--k", k] if k else []))
    with open(out) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("row,log_prob")
    return [ln.split(",")[1] for ln in lines[1:]], src


def test_density_run_loads_with_its_files(tmp_path):
    run = flowlab.load_run(density_run(str(tmp_path)))
    assert run.task == "density"
    assert run.config["experiment"]["task"] == "density"
    assert run.config["train"]["steps"] == "30"
    assert run.result["steps"] == 30
    m = run.metrics
    steps = np.asarray(m["step"])
    assert steps[-1] == 30
    assert np.all(np.isfinite(np.asarray(m["test_nll"], dtype=float)))
    assert run.dim == 2
    run.close()


def test_density_log_prob_reproduces_flowlab_logprob(tmp_path):
    tmp = str(tmp_path)
    run = flowlab.load_run(density_run(tmp))
    rows = np.random.default_rng(1).normal(size=(37, 2))
    printed, _ = cli_logprob(run.path, rows, tmp, "dens")
    # the CSV holds the rows to 9 digits: give Python the same numbers
    ours = run.log_prob(np.loadtxt(os.path.join(tmp, "dens.csv"), delimiter=","))
    assert ["%.6f" % v for v in ours] == printed
    # one row alone gets the value it has in the batch's first place
    assert "%.6f" % run.log_prob(np.loadtxt(os.path.join(tmp, "dens.csv"),
                                            delimiter=",")[0])[0] == printed[0]
    run.close()


def test_vae_log_prob_reproduces_flowlab_logprob(tmp_path):
    tmp = str(tmp_path)
    with flowlab.load_run(vae_run(tmp)) as run:
        assert run.task == "vae" and run.dim == 4
        assert run.result is not None
        data = os.path.join(os.path.dirname(run.path), "vae-data.csv")
        rows = np.loadtxt(data, delimiter=",", skiprows=1)[:25]
        printed, src = cli_logprob(run.path, rows, tmp, "vae", k=7)
        x = np.loadtxt(src, delimiter=",")
        assert ["%.6f" % v for v in run.log_prob(x, k=7)] == printed
        # the run's own [eval] k by default, and k matters
        printed50, _ = cli_logprob(run.path, rows, tmp, "vae50")
        assert ["%.6f" % v for v in run.log_prob(x)] == printed50
        assert printed50 != printed


def test_sample_reproduces_flowlab_sample(tmp_path):
    tmp = str(tmp_path)
    for run_dir in (density_run(tmp), vae_run(tmp)):
        with flowlab.load_run(run_dir) as run:
            xs = run.sample(6, seed=3)
            assert xs.shape == (6, run.dim)
            out = os.path.join(tmp, "s.csv")
            fl("sample", run_dir, "-n", 6, "--seed", 3, "-o", out)
            with open(out) as f:
                lines = f.read().splitlines()[1:]
            assert [",".join("%.7g" % v for v in r) for r in xs] == lines


def test_errors_are_flowlabs_own_lines(tmp_path):
    tmp = str(tmp_path)
    with flowlab.load_run(density_run(tmp)) as run:
        try:
            run.log_prob(np.zeros((3, 5)))
        except flowlab.FlowlabError as e:
            assert e.status == 1
            assert "5 values" in str(e) and "2 per row" in str(e), str(e)
        else:
            raise AssertionError("a row of the wrong width was accepted")
        try:
            run.log_prob(np.zeros((3, 2)), k=5)
        except flowlab.FlowlabError as e:
            assert "--k does not apply" in str(e) or "exact" in str(e), str(e)
        else:
            raise AssertionError("k on a density run was accepted")
    try:
        flowlab.load_run(os.path.join(tmp, "no-such-run"))
    except flowlab.FlowlabError as e:
        assert "not a run directory" in str(e)
    else:
        raise AssertionError("a missing run loaded")
    # a directory with a config but no checkpoint: the library's own line
    bare = os.path.join(tmp, "bare")
    os.makedirs(bare)
    with open(os.path.join(density_run(tmp), "config.ini")) as src, \
            open(os.path.join(bare, "config.ini"), "w") as dst:
        dst.write(src.read())
    try:
        flowlab.load_run(bare).log_prob(np.zeros((1, 2)))
    except flowlab.FlowlabError as e:
        assert "checkpoint.flc" in str(e), str(e)
    else:
        raise AssertionError("a run without a checkpoint loaded")


def test_load_sweep_gives_the_report_table(tmp_path):
    tmp = str(tmp_path)
    ini = os.path.join(tmp, "sw.ini")
    with open(ini, "w") as f:
        f.write("[experiment]\nname = pysweep\ntask = density\n[data]\ntype = moons\n"
                "test_size = 200\n[flow.1]\ntype = affine-coupling\nrepeat = 2\nhidden = 8\n"
                "[train]\nsteps = 10\nbatch = 64\n[sweep]\nexperiment.seed = 1, 2\n"
                "metric = test_nll\n")
    out = os.path.join(tmp, "sweep")
    fl("sweep", ini, "--out", out, "--jobs", 1, "--threads", 1)
    table = flowlab.load_sweep(out)
    cols = list(table.keys()) if isinstance(table, dict) else list(table.columns)
    assert any("test_nll" in c for c in cols), cols
    with open(os.path.join(out, "report.csv")) as f:
        n_rows = len(f.read().splitlines()) - 1
    first = cols[0]
    assert len(table[first]) == n_rows >= 1
    try:
        flowlab.load_sweep(os.path.join(tmp, "nothing"))
    except flowlab.FlowlabError as e:
        assert "report.csv" in str(e)
    else:
        raise AssertionError("a folder without report.csv loaded")


def test_tables_without_pandas_are_dicts_of_arrays(tmp_path):
    p = os.path.join(str(tmp_path), "t.csv")
    with open(p, "w") as f:
        f.write("name,x\na,1.5\nb,\n")
    saved = flowlab._pd
    flowlab._pd = None
    try:
        t = flowlab._read_table(p)
    finally:
        flowlab._pd = saved
    assert list(t) == ["name", "x"]
    assert t["name"].tolist() == ["a", "b"]
    assert t["x"][0] == 1.5 and np.isnan(t["x"][1])
