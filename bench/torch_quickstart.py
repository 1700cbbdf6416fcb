#!/usr/bin/python3
"""torch_quickstart.py - the PyTorch side of bench_vae's quickstart row:
experiments/quickstart.ini in PyTorch, for same-run speed comparisons.

Not part of flowlab (nothing builds or imports it). The model is the
quickstart's: Real NVP on two moons (noise 0.05, a fresh batch of 512 rows
every step, the moons alternating by row and angles uniform), 8 affine
coupling layers alternating which of the two coordinates is conditioned on
(even layers condition on x0 and transform x1, odd ones the reverse),
separate s and t networks 1-64-64-1 ReLU with PyTorch's default
initialisation and their last layer at zero (the layer starts as the
identity), s = tanh(raw) (scale_bound = 1), y_t = x_t exp(s) + t, standard
normal base, loss the mean negative log-likelihood, Adam lr 1e-3 (eps
1e-8), and the exponential moving average of the parameters (decay 0.99)
updated after every step as flowlab's train.ema does.

    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 \
    MALLOC_TOP_PAD_=268435456 /usr/bin/python3 bench/torch_quickstart.py [STEPS]

prints "quickstart STEPS_PER_SECOND" (training steps only, after 20 warm-up
steps; no evaluation) and the '#' line of torch_common.blas_report.
"""
import math
import sys
import time

import torch
import torch.nn as nn

from torch_common import blas_report, setup

FLUSH = setup()


def net():
    m = nn.Sequential(nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    nn.init.zeros_(m[4].weight)
    nn.init.zeros_(m[4].bias)
    return m


class Coupling(nn.Module):
    def __init__(self, odd):
        super().__init__()
        self.c, self.t = (1, 0) if odd else (0, 1)
        self.snet, self.tnet = net(), net()

    def forward(self, x):
        xc, xt = x[:, self.c:self.c + 1], x[:, self.t:self.t + 1]
        s = torch.tanh(self.snet(xc))
        yt = xt * torch.exp(s) + self.tnet(xc)
        y = torch.cat([xc, yt], 1) if self.c == 0 else torch.cat([yt, xc], 1)
        return y, s.sum(1)


class RealNVP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Coupling(i % 2 == 1) for i in range(8)])

    def nll(self, x):
        logdet = torch.zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return (0.5 * x.pow(2).sum(1) + math.log(2 * math.pi) - logdet).mean()


def moons(n):
    """make_moons' two arcs (rows alternate), angles uniform, noise 0.05."""
    a = math.pi * torch.rand(n)
    upper = (torch.arange(n) % 2 == 0)
    x = torch.where(upper, torch.cos(a), 1 - torch.cos(a))
    y = torch.where(upper, torch.sin(a), 0.5 - torch.sin(a))
    return torch.stack([x, y], 1) + 0.05 * torch.randn(n, 2)


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    model = RealNVP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    t0 = None
    for step in range(steps + 20):
        if step == 20:
            t0 = time.perf_counter()
        loss = model.nll(moons(512))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(ema, 0.99)
            torch._foreach_add_(ema, params, alpha=0.01)
    print("quickstart %.1f" % (steps / (time.perf_counter() - t0)))
    print(blas_report(FLUSH))


if __name__ == "__main__":
    main()
