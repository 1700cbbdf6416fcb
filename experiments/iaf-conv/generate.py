#!/usr/bin/env python3
"""Writes experiments/iaf-conv/*.ini: the rows of the IAF paper's Table 1
(Kingma et al. 2016) with convolutional ResNet encoders and decoders, on
static binarized MNIST (mnist-*) and dynamically binarized Fashion-MNIST
(fashion-*), full and short (short/) budgets. Run it from this folder after
changing the shared settings below; the .ini files are what flowlab reads."""
import os

ROWS = [  # name, posterior, flow (depth, MADE width) or None
    ("diagonal", "gaussian-diag", None),
    ("full-covariance", "gaussian-full", None),
    ("iaf-d2-w320", "gaussian-diag", (2, 320)),
    ("iaf-d2-w1920", "gaussian-diag", (2, 1920)),
    ("iaf-d4-w1920", "gaussian-diag", (4, 1920)),
    ("iaf-d8-w1920", "gaussian-diag", (8, 1920)),
]
DATA = {
    "mnist": ("static binarized MNIST (Larochelle's .amat files; set [data] dir)",
              "type = binarized-mnist\n"),
    "fashion": ("dynamically binarized Fashion-MNIST",
                "type = fashion-mnist\nbinarize = dynamic\n"),
}
# The budgets: the same steps for every row (the table's rule).
FULL = dict(steps=None, epochs=200, eval_every=5000, eval="k = 5000\nbatch = 1000\n")
SHORT = dict(steps=600, epochs=None, eval_every=200,
             eval="k = 500\nn = 500\npick = random\nbatch = 100\nvalid_n = 200\nvalid_k = 20\n")


def text(data, row, short):
    name, post, flow = row
    desc, dsec = DATA[data]
    b = SHORT if short else FULL
    depth = f"IAF depth {flow[0]}, MADE width {flow[1]}" if flow else post
    out = [f"; IAF paper (Kingma et al. 2016) Table 1, row {name} ({depth}),", f"; on {desc};",
           "; a convolutional ResNet VAE: encoder 3x3 conv, per level a ResNet block and a",
           "; 3x3 stride-2 conv (28 -> 14 -> 7), a dense layer to the posterior (and h);",
           "; decoder: dense to 7x7, ResNet blocks and 2x upsampling back to 28x28, Bernoulli.",
           "; ELU, weight normalization; latent 32; ELBO k = 1, batch 100, Adam.",
           (f"; short budget: {b['steps']} steps (the same for every row), IWAE-500 on 500 "
            "random test points" if short else "; full budget: 200 epochs, IWAE-5000 on the "
            "whole test set"),
           ";", f";   flowlab run experiments/iaf-conv/{'short/' if short else ''}{data}-{name}.ini"
           + (" --set data.dir=/path/to/binarized_mnist" if data == "mnist" else ""), "",
           "[experiment]", f"name = iaf-conv-{data}-{name}{'-short' if short else ''}",
           "task = vae", "seed = 1", "", "[data]", dsec.rstrip("\n"), "",
           "[encoder]", "net = conv", "latent = 32", "channels = 16", "blocks = 1", "levels = 2",
           "act = elu", "weight_norm = true", f"context = {32 if flow else 0}", "",
           "[decoder]", "net = conv", "channels = 16", "blocks = 1", "levels = 2", "act = elu",
           "weight_norm = true", "", "[posterior]", f"type = {post}", ""]
    if flow:
        out += ["[flow.1]", "type = iaf", f"repeat = {flow[0]}", "permute = reverse",
                f"hidden = {flow[1]},{flow[1]}", "activation = elu", "gate = gated",
                "forget_bias = 1.5", ""]
    out += ["[likelihood]", "type = bernoulli", "", "[prior]", "type = normal", "",
            "[estimator]", "type = elbo", "k = 1", "", "[train]", "batch = 100"]
    out += [f"steps = {b['steps']}"] if b["steps"] else [f"epochs = {b['epochs']}"]
    out += ["lr = 1e-3", "eps = 1e-4", f"eval_every = {b['eval_every']}", "", "[eval]",
            b["eval"].rstrip("\n")]
    return "\n".join(out) + "\n"


here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(here, "short"), exist_ok=True)
for data in DATA:
    for row in ROWS:
        for short in (False, True):
            p = os.path.join(here, "short" if short else "", f"{data}-{row[0]}.ini")
            with open(p, "w") as f:
                f.write(text(data, row, short))
