#!/usr/bin/python3
"""torch_vae.py - the PyTorch side of bench_vae, for same-run comparisons.

Not part of flowlab (nothing builds or imports it): the reference the
speed figures of bench/bench_vae.c are measured against, so both can run in
one session, alternating (this machine drifts by tens of percent over
minutes). The models match bench_vae's configurations:

  iwae   784-200-200-50 tanh VAE, Bernoulli decoder, IWAE k = 50, batch 20
  vae    the same, ELBO k = 1, batch 100
  iaf1   the same + 2 IAF steps (MADE with one hidden layer of 320, ELU,
         context h of 50 from the encoder, gated update, order reversed
         between steps)
  iaf    the same with two hidden layers per MADE (320-320)
  eval   IWAE-5000 log-likelihood of 1,000 test images (chunks of 5,000)

    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 \
    MALLOC_TOP_PAD_=268435456 OPENBLAS_CORETYPE=SkylakeX \
    /usr/bin/python3 bench/torch_vae.py CONFIG [DATA_DIR]

prints one line: CONFIG, examples per second (or seconds for eval).
Adam lr 1e-3, eps 1e-4, PyTorch's default init, float32, 2 threads, the
OpenMP OpenBLAS, and glibc told to keep freed memory (without that, every
step hands its tensors back to the OS: 17.2k instead of 25.7k examples/s
on the VAE here). bench_vae --torch runs it exactly like this.
"""
import gzip
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_common import blas_report, setup

FLUSH = setup()


def load(path):
    with gzip.open(path, "rb") as f:
        text = f.read()
    a = np.array(text.split(), dtype=np.float32)
    return torch.from_numpy(a.reshape(-1, 784))


class MADE(nn.Module):
    """[h | z] -> [m | s], autoregressive in z (natural order)."""

    def __init__(self, dim, ctx, hidden, layers):
        super().__init__()
        self.l1 = nn.Linear(dim + ctx, hidden)
        self.l2 = nn.Linear(hidden, hidden) if layers == 2 else None
        self.l3 = nn.Linear(hidden, 2 * dim)
        deg_in = torch.cat([torch.zeros(ctx), torch.arange(1, dim + 1).float()])
        deg_h = torch.arange(hidden).float() * dim / hidden  # 0 .. dim-1
        deg_h = deg_h.floor()
        deg_out = torch.arange(1, dim + 1).float().repeat(2)
        self.register_buffer("m1", (deg_h[:, None] >= deg_in[None, :]).float())
        self.register_buffer("m2", (deg_h[:, None] >= deg_h[None, :]).float())
        self.register_buffer("m3", (deg_out[:, None] > deg_h[None, :]).float())
        with torch.no_grad():
            self.l3.bias[dim:] = 1.5  # forget-gate bias

    def forward(self, z, h):
        x = torch.cat([h, z], 1)
        x = F.elu(F.linear(x, self.l1.weight * self.m1, self.l1.bias))
        if self.l2 is not None:
            x = F.elu(F.linear(x, self.l2.weight * self.m2, self.l2.bias))
        return F.linear(x, self.l3.weight * self.m3, self.l3.bias).chunk(2, 1)


class VAE(nn.Module):
    def __init__(self, iaf_steps=0, made_layers=2):
        super().__init__()
        ctx = 50 if iaf_steps else 0
        self.enc = nn.Sequential(nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(),
                                 nn.Linear(200, 100 + ctx))
        self.dec = nn.Sequential(nn.Linear(50, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(),
                                 nn.Linear(200, 784))
        self.iaf = nn.ModuleList([MADE(50, ctx, 320, made_layers) for _ in range(iaf_steps)])

    def log_w(self, x, k):
        """log p(x, z) - log q(z | x) for k samples per row: (n, k)."""
        n = x.shape[0]
        e = self.enc(x)
        mu, ls = e[:, :50], e[:, 50:100]
        eps = torch.randn(n, k, 50)
        z = mu[:, None] + ls.exp()[:, None] * eps
        lq = (-0.5 * eps.pow(2) - ls[:, None] - 0.5 * math.log(2 * math.pi)).sum(-1)
        z = z.reshape(n * k, 50)
        if len(self.iaf):
            h = e[:, 100:].repeat_interleave(k, 0)
            lq = lq.reshape(n * k)
            for i, made in enumerate(self.iaf):
                if i:
                    z = z.flip(1)
                m, s = made(z, h)
                g = torch.sigmoid(s)
                z = g * z + (1 - g) * m
                lq = lq - F.logsigmoid(s).sum(1)
            lq = lq.reshape(n, k)
        lpz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(1).reshape(n, k)
        logits = self.dec(z).reshape(n, k, 784)
        # log p(x | z) = x l - softplus(l), x broadcast over the k samples
        lpx = (x[:, None, :] * logits - F.softplus(logits)).sum(-1)
        return lpx + lpz - lq


def train(model, data, k, batch, steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)
    perm = torch.randperm(data.shape[0])
    t0 = None
    for step in range(steps + 20):
        if step == 20:
            t0 = time.perf_counter()
        i = (step * batch) % (data.shape[0] - batch)
        x = data[perm[i:i + batch]]
        lw = model.log_w(x, k)
        loss = -(torch.logsumexp(lw, 1) - math.log(k)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def evaluate(model, data, k=5000):
    t0 = time.perf_counter()
    with torch.no_grad():
        for x in data:
            lw = model.log_w(x[None], k)
            torch.logsumexp(lw, 1)
    return time.perf_counter() - t0


def main():
    cfg = sys.argv[1]
    d = sys.argv[2] if len(sys.argv) > 2 else "../shared/data/binarized_mnist"
    if cfg == "eval":
        test = load(os.path.join(d, "binarized_mnist_test.amat.gz"))[:1000]
        print("eval %.2f" % evaluate(VAE(), test))
        print(blas_report(FLUSH))
        return
    train_x = load(os.path.join(d, "binarized_mnist_train.amat.gz"))
    k, batch, steps, flows, layers = {"iwae": (50, 20, 300, 0, 0), "vae": (1, 100, 1500, 0, 0),
                                      "iaf1": (1, 100, 1000, 2, 1),
                                      "iaf": (1, 100, 1000, 2, 2)}[cfg]
    print("%s %.0f" % (cfg, train(VAE(flows, layers), train_x, k, batch, steps)))
    print(blas_report(FLUSH))


if __name__ == "__main__":
    main()
