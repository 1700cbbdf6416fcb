#!/usr/bin/python3
"""iafconv_bench.py - training throughput of the convolutional IAF VAEs,
flowlab against its PyTorch reference (torch_iafconv.py), run alternately
in one command so both see the same machine (a shared machine drifts by
tens of percent over minutes):

    /usr/bin/python3 bench/iafconv_bench.py [--rounds 3] [--steps 60] [--flowlab PATH]

For each round and each model (diagonal; IAF depth 2 width 320) it runs
`flowlab run experiments/iaf-conv/short/fashion-MODEL.ini` for --steps steps
(no periodic or final evaluation; examples/s from result.json, which counts
the training steps' time) and then torch_iafconv.py for the same steps
(after 10 untimed warm-up steps), and prints the images/s of both, then the
medians and their ratio. Needs Debian's python3-torch, libopenblas0-openmp
and dataset-fashion-mnist. The torch child gets torch_common's set-up: the
OpenMP OpenBLAS (LD_LIBRARY_PATH for it only), glibc's allocator settings,
2 threads; OPENBLAS_CORETYPE is removed for both sides so OpenBLAS picks
its own kernels.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = [("diagonal", "diagonal"), ("iaf-d2-w320", "iaf")]
TORCH_ENV = {"LD_LIBRARY_PATH": "/usr/lib/x86_64-linux-gnu/openblas-openmp",
             "MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824",
             "MALLOC_TOP_PAD_": "268435456"}


def run_flowlab(exe, model, steps, tmp, r):
    out = os.path.join(tmp, "fl-%s-%d" % (model, r))
    cmd = [exe, "run", os.path.join(ROOT, "experiments/iaf-conv/short/fashion-%s.ini" % model),
           "--out", out, "--set", "train.steps=%d" % steps, "--set", "train.eval_every=0",
           "--set", "eval.at_end=false", "--set", "eval.valid_n=1", "--set", "eval.valid_k=1"]
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "result.json")) as f:
        return float(json.load(f)["examples_per_second"])


def run_torch(cfg, steps):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.update(TORCH_ENV)
    p = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "torch_iafconv.py"), cfg, str(steps)],
                       check=True, env=env, capture_output=True, text=True)
    lines = p.stdout.splitlines()
    return float(lines[0].split()[1]), lines[1] if len(lines) > 1 else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--flowlab", default=os.path.join(ROOT, "build/framework/flowlab"))
    a = ap.parse_args()
    rates = {m: ([], []) for m, _ in MODELS}
    report = ""
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for model, cfg in MODELS:
                f = run_flowlab(a.flowlab, model, a.steps, tmp, r)
                t, report = run_torch(cfg, a.steps)
                rates[model][0].append(f)
                rates[model][1].append(t)
                print("round %d %-12s flowlab %8.1f images/s   pytorch %8.1f images/s" % (r + 1, model, f, t),
                      flush=True)
    print(report)
    for model, _ in MODELS:
        f, t = statistics.median(rates[model][0]), statistics.median(rates[model][1])
        print("median %-12s flowlab %8.1f   pytorch %8.1f   ratio %.2fx" % (model, f, t, f / t))


if __name__ == "__main__":
    sys.exit(main())
