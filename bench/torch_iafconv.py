#!/usr/bin/python3
"""torch_iafconv.py - the PyTorch reference of the convolutional IAF VAEs of
experiments/iaf-conv (the diagonal and the IAF depth-2 width-320 rows), for
same-run speed comparisons with flowlab (bench/iafconv_bench.py runs both,
alternating).

Not part of flowlab. The model is layer for layer the one flowlab builds
from experiments/iaf-conv/short/fashion-{diagonal,iaf-d2-w320}.ini:

  encoder  3x3 conv 1->16; per level (2): ResNet block (x + conv(elu(conv x))),
           3x3 stride-2 conv 16->16; ELU; dense 16*7*7 -> 2*32 (+ h of 32)
  decoder  dense 32 -> 16*7*7; ELU; per level: ResNet block, nearest 2x
           upsampling; ResNet block, ELU, 3x3 conv 16->1, a bias per pixel
  every convolution weight-normalised; Bernoulli likelihood; ELBO k = 1,
  batch 100, Adam lr 1e-3 eps 1e-4; Fashion-MNIST binarized afresh per batch
  iaf      + 2 IAF steps: MADE 32+32 -> 320 -> 320 -> 2*32 (ELU), context h,
           gated update, order reversed between steps

PyTorch at its best here (torch_common.py): 2 threads, denormals flushed,
the OpenMP OpenBLAS and glibc's allocator settings through the environment
(iafconv_bench.py sets them for this child only), ATen's AVX-512 kernels,
channels-last tensors (mkldnn's preferred layout on CPU; not yet measured
against NCHW here: TORCH_IAFCONV_NCHW=1 runs NCHW).

    /usr/bin/python3 bench/torch_iafconv.py diagonal|iaf [STEPS] [FASHION_DIR]

prints one line: CONFIG, training examples per second (after 10 warm-up
steps), then torch_common's report line.
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
from torch.nn.utils import weight_norm

from torch_common import blas_report, setup

FLUSH = setup()
LATENT, CH, CTX = 32, 16, 32
NHWC = os.environ.get("TORCH_IAFCONV_NCHW") != "1"


def load_idx(path):
    with gzip.open(path, "rb") as f:
        b = f.read()
    n, h, w = int.from_bytes(b[4:8], "big"), int.from_bytes(b[8:12], "big"), int.from_bytes(b[12:16], "big")
    a = np.frombuffer(b, dtype=np.uint8, offset=16).reshape(n, 1, h, w).astype(np.float32) / 255
    return torch.from_numpy(a)


def conv(cin, cout, stride=1):
    return weight_norm(nn.Conv2d(cin, cout, 3, stride=stride, padding=1))


class ResNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.c2 = conv(c, c), conv(c, c)

    def forward(self, x):
        return x + self.c2(F.elu(self.c1(x)))


class MADE(nn.Module):
    """[h | z] -> [m | s], autoregressive in z (natural order), 2 hidden layers."""

    def __init__(self, dim, ctx, hidden):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(dim + ctx, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 2 * dim)
        deg_in = torch.cat([torch.zeros(ctx), torch.arange(1, dim + 1).float()])
        deg_h = (torch.arange(hidden).float() * dim / hidden).floor()
        deg_out = torch.arange(1, dim + 1).float().repeat(2)
        self.register_buffer("m1", (deg_h[:, None] >= deg_in[None, :]).float())
        self.register_buffer("m2", (deg_h[:, None] >= deg_h[None, :]).float())
        self.register_buffer("m3", (deg_out[:, None] > deg_h[None, :]).float())
        with torch.no_grad():
            self.l3.bias[dim:] = 1.5  # forget-gate bias

    def forward(self, z, h):
        x = torch.cat([h, z], 1)
        x = F.elu(F.linear(x, self.l1.weight * self.m1, self.l1.bias))
        x = F.elu(F.linear(x, self.l2.weight * self.m2, self.l2.bias))
        return F.linear(x, self.l3.weight * self.m3, self.l3.bias).chunk(2, 1)


class ConvVAE(nn.Module):
    def __init__(self, iaf_steps):
        super().__init__()
        ctx = CTX if iaf_steps else 0
        self.enc = nn.Sequential(conv(1, CH), ResNet(CH), conv(CH, CH, 2), ResNet(CH), conv(CH, CH, 2), nn.ELU())
        self.enc_out = nn.Linear(CH * 7 * 7, 2 * LATENT + ctx)
        self.dec_in = nn.Linear(LATENT, CH * 7 * 7)
        self.dec = nn.Sequential(nn.ELU(), ResNet(CH), nn.Upsample(scale_factor=2), ResNet(CH),
                                 nn.Upsample(scale_factor=2), ResNet(CH), nn.ELU(), conv(CH, 1))
        self.bias = nn.Parameter(torch.zeros(1, 1, 28, 28))
        self.iaf = nn.ModuleList([MADE(LATENT, ctx, 320) for _ in range(iaf_steps)])

    def loss(self, x):
        n = x.shape[0]
        e = self.enc_out(self.enc(x).flatten(1))
        mu, ls = e[:, :LATENT], e[:, LATENT:2 * LATENT]
        eps = torch.randn(n, LATENT)
        z = mu + ls.exp() * eps
        lq = (-0.5 * eps.pow(2) - ls - 0.5 * math.log(2 * math.pi)).sum(1)
        h = e[:, 2 * LATENT:]
        for i, made in enumerate(self.iaf):
            if i:
                z = z.flip(1)
            m, s = made(z, h)
            g = torch.sigmoid(s)
            z = g * z + (1 - g) * m
            lq = lq - F.logsigmoid(s).sum(1)
        lpz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(1)
        t = self.dec_in(z).view(n, CH, 7, 7)
        if NHWC:
            t = t.contiguous(memory_format=torch.channels_last)
        logits = (self.dec(t) + self.bias).flatten(1)
        lpx = -F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
        return -(lpx + lpz - lq).mean()


def train(model, data, batch, steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)
    perm = torch.randperm(data.shape[0])
    t0 = None
    for step in range(steps + 10):
        if step == 10:
            t0 = time.perf_counter()
        i = (step * batch) % (data.shape[0] - batch)
        x = torch.bernoulli(data[perm[i:i + batch]])  # dynamic binarization
        if NHWC:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = model.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main():
    cfg = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    d = sys.argv[3] if len(sys.argv) > 3 else "/usr/share/datasets/fashion-mnist"
    data = load_idx(os.path.join(d, "train-images-idx3-ubyte.gz"))
    model = ConvVAE({"diagonal": 0, "iaf": 2}[cfg])
    if NHWC:
        model = model.to(memory_format=torch.channels_last)
    print("%s %.1f" % (cfg, train(model, data, 100, steps)))
    print(blas_report(FLUSH))


if __name__ == "__main__":
    main()
