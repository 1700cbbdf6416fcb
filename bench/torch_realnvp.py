#!/usr/bin/python3
"""torch_realnvp.py - the PyTorch reference of the Real NVP recipe of
experiments/images/realnvp-fashion.ini (docs: the images design, issue 15),
for same-run comparisons with flowlab (bench/bench_realnvp.sh runs both,
alternating). Not part of flowlab: nothing builds or imports it.

The model, layer for layer as flowlab's INI file writes it:
  scale 1 (1x28x28): 3 x conv-coupling checkerboard (parity 0,1,0), squeeze
                     (4x14x14), 3 x conv-coupling channel (parity 0,1,0),
                     split (keep 2x14x14, the rest to the base)
  scale 2 (2x14x14): 3 x checkerboard, squeeze (8x7x7), 3 x channel, split
                     (keep 4x7x7)
  final   (4x7x7):   4 x checkerboard (parity 0,1,0,1)
  coupling: affine, y = x*mask + (1 - mask) (x exp(s) + t), s = scale *
  tanh(raw_s), scale a learned per-channel parameter starting at 1; the
  s/t net reads x*mask: conv3x3 c->F, B ResNet blocks x + conv3x3(relu(
  conv3x3(x))), relu, conv3x3 F->2c zero-initialised (raw_s, then t);
  weight norm (g = 1 at the start, as flowlab's FL_CONV_WEIGHT_NORM) on
  every convolution but the last; PyTorch's default init elsewhere
  (U(+-1/sqrt(fan_in)), flowlab's FANIN). Squeeze: channel (dy*2 + dx)*c +
  ch of pixel (i, j) is input (ch, 2i+dy, 2j+dx). Base N(0, I).
Data: Fashion-MNIST (idx gz), uniform dequantization u = (k + U(0,1))/256,
x = logit(alpha + (1 - 2 alpha) u), alpha = 0.05; bits/dim = (-log p(x) -
log|dx/du| + D log 256) / (D ln 2), D = 784. Adam lr 1e-3, batch 64.

    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \\
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 \\
    MALLOC_TOP_PAD_=268435456 OMP_WAIT_POLICY=passive \\
    /usr/bin/python3 bench/torch_realnvp.py [--steps N] [--features F]
        [--blocks B] [--batch 64] [--test N|all] [--layout nchw|nhwc]
        [--seed S] [--data DIR]

prints one line
    torch_realnvp steps=N batch=64 images/s=R test_bpd=B se=E test_n=N layout=L
and the '# torch ...' report of torch_common (what BLAS and kernels ran).
images/s counts the training loop only (data, forward, backward, Adam),
after one warm-up step. The test bits/dim is the mean over the test images
(all 10,000, or a seeded random subset) with one dequantization each, its
standard error the standard deviation over images / sqrt(n).
"""
import argparse
import gzip
import math
import os
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import blas_report, setup  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ALPHA = 0.05
D = 784


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic != 0x803:
        sys.exit("torch_realnvp: %s is not an idx3 image file" % path)
    rows, cols = struct.unpack(">II", data[8:16])
    a = np.frombuffer(data, dtype=np.uint8, offset=16)
    if a.size != n * rows * cols:
        sys.exit("torch_realnvp: %s is truncated" % path)
    return torch.from_numpy(a.reshape(n, 1, rows, cols).astype(np.float32))


def preprocess(k, gen):
    """Grey levels k (n x 1 x 28 x 28) -> x, and log|dx/du| per image."""
    u = (k + torch.rand(k.shape, generator=gen)) / 256.0
    s = ALPHA + (1 - 2 * ALPHA) * u
    x = torch.log(s) - torch.log1p(-s)
    ldj = (math.log(1 - 2 * ALPHA) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
    return x, ldj


def wn_conv(cin, cout):
    c = nn.utils.weight_norm(nn.Conv2d(cin, cout, 3, padding=1), dim=0)
    with torch.no_grad():
        c.weight_g.fill_(1.0)  # unit-norm filters at the start, as flowlab
    return c


class ResBlock(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.c1 = wn_conv(f, f)
        self.c2 = wn_conv(f, f)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x)))


class STNet(nn.Module):
    def __init__(self, c, f, blocks):
        super().__init__()
        self.inp = wn_conv(c, f)
        self.blocks = nn.ModuleList(ResBlock(f) for _ in range(blocks))
        self.out = nn.Conv2d(f, 2 * c, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = b(h)
        return self.out(F.relu(h))


def make_mask(kind, parity, c, h, w):
    if kind == "checkerboard":
        ij = torch.arange(h)[:, None] + torch.arange(w)[None, :]
        m = ((ij + parity) % 2 == 0).float()[None].expand(c, h, w)
    else:
        m = torch.zeros(c, h, w)
        half = c // 2
        if parity == 0:
            m[:half] = 1
        else:
            m[half:] = 1
    return m.contiguous()[None]


class Coupling(nn.Module):
    def __init__(self, kind, parity, c, h, w, f, blocks):
        super().__init__()
        self.register_buffer("mask", make_mask(kind, parity, c, h, w))
        self.net = STNet(c, f, blocks)
        self.scale = nn.Parameter(torch.ones(1, c, 1, 1))
        self.c = c

    def forward(self, x):
        m = self.mask
        st = self.net(x * m)
        s = self.scale * torch.tanh(st[:, : self.c]) * (1 - m)
        t = st[:, self.c:] * (1 - m)
        y = x * m + (1 - m) * (x * torch.exp(s) + t)
        return y, s.flatten(1).sum(1)


def squeeze(x):
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(n, 4 * c, h // 2, w // 2)


class RealNVP(nn.Module):
    def __init__(self, f, blocks):
        super().__init__()
        self.s1a = nn.ModuleList(Coupling("checkerboard", p, 1, 28, 28, f, blocks) for p in (0, 1, 0))
        self.s1b = nn.ModuleList(Coupling("channel", p, 4, 14, 14, f, blocks) for p in (0, 1, 0))
        self.s2a = nn.ModuleList(Coupling("checkerboard", p, 2, 14, 14, f, blocks) for p in (0, 1, 0))
        self.s2b = nn.ModuleList(Coupling("channel", p, 8, 7, 7, f, blocks) for p in (0, 1, 0))
        self.fin = nn.ModuleList(Coupling("checkerboard", p, 4, 7, 7, f, blocks) for p in (0, 1, 0, 1))

    def log_prob(self, x):
        """log p(x) per image under the flow and the N(0, I) base."""
        ld = torch.zeros(x.shape[0], device=x.device)
        zs = []
        for group in (("s1a", "s1b", 2), ("s2a", "s2b", 4)):
            for layer in getattr(self, group[0]):
                x, l = layer(x)
                ld = ld + l
            x = squeeze(x)
            for layer in getattr(self, group[1]):
                x, l = layer(x)
                ld = ld + l
            keep = group[2]
            zs.append(x[:, keep:].flatten(1))
            x = x[:, :keep]
        for layer in self.fin:
            x, l = layer(x)
            ld = ld + l
        zs.append(x.flatten(1))
        z = torch.cat(zs, 1)
        return -0.5 * (z * z).sum(1) - 0.5 * D * math.log(2 * math.pi) + ld


def bpd(logp, ldj):
    return (-logp - ldj + D * math.log(256)) / (D * math.log(2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--test", default="all", help="'all' or a number of test images")
    ap.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--log-every", type=int, default=0,
                    help="print the mean training loss of every N steps (0: never)")
    a = ap.parse_args()
    flush = setup()
    torch.manual_seed(a.seed)
    train_k = read_idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"))
    test_k = read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz"))
    gen = torch.Generator().manual_seed(a.seed)
    fmt = torch.channels_last if a.layout == "nhwc" else torch.contiguous_format
    model = RealNVP(a.features, a.blocks).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        idx = torch.randint(0, train_k.shape[0], (a.batch,), generator=gen)
        x, ldj = preprocess(train_k[idx], gen)
        x = x.contiguous(memory_format=fmt)
        loss = bpd(model.log_prob(x), ldj).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    step()  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    run = 0.0
    for i in range(2, a.steps + 1):
        loss = step()
        if a.log_every:
            run += loss.item()
            if i % a.log_every == 0:
                print("torch_realnvp: step %d loss %.4f bits/dim (mean of the last %d)"
                      % (i, run / a.log_every, a.log_every), flush=True)
                run = 0.0
    rate = (a.steps - 1) * a.batch / (time.perf_counter() - t0)
    if not math.isfinite(loss.item()):
        sys.exit("torch_realnvp: the loss is not finite")
    # test bits/dim: all images, or a seeded subset; one dequantization each
    tg = torch.Generator().manual_seed(a.seed + 1000)
    if a.test == "all":
        sel = torch.arange(test_k.shape[0])
    else:
        sel = torch.randperm(test_k.shape[0], generator=tg)[: int(a.test)]
    vals = []
    with torch.no_grad():
        for i in range(0, sel.numel(), 500):
            x, ldj = preprocess(test_k[sel[i:i + 500]], tg)
            vals.append(bpd(model.log_prob(x.contiguous(memory_format=fmt)), ldj))
    v = torch.cat(vals).double()
    se = v.std().item() / math.sqrt(v.numel())
    print("torch_realnvp steps=%d batch=%d images/s=%.1f test_bpd=%.4f se=%.4f test_n=%d layout=%s"
          % (a.steps, a.batch, rate, v.mean().item(), se, v.numel(), a.layout))
    print(blas_report(flush))


if __name__ == "__main__":
    main()
