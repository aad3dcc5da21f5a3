#!/usr/bin/python3
"""The PyTorch anchor's MLP GAN trained for quality, with ganfleet's differences as switches.

README (Models and quality) compares what the seed's step and ganfleet's train
to: this trains the anchor's network (../shared/anchors/torch_gan.py: z 100,
Dense 128 + LeakyReLU 0.01, tanh / sigmoid, Adam lr 1e-3, eps 1e-7, batch 128,
G's update on the D step's noise) and writes 10,000 samples of G in tanh range
to a .npy, which `ganfleet eval --images FILE` scores with ganfleet's classifier.
  --init keras       Glorot-uniform kernels and zero biases, as Keras and ganfleet;
                     default: PyTorch's own
  --d-updates 2      the seed's step: D's Adam steps on the real batch, then on the
                     generated batch taken at the updated D (two train_on_batch calls)
  --d-updates 2s     ganfleet's: both halves' gradients taken at the same D, as one
                     data-parallel round returns them, then the same two Adam steps
  --d-updates 1      one Adam step on 1/2(BCE(D(x), 1) + BCE(D(G(z)), 0))
Usage: /usr/bin/python3 torch_d_updates.py --mnist DIR --out samples.npy [--steps 10000] [--seed 1]
"""
import argparse, os, struct, time

import numpy as np
import torch
import torch.nn as nn


def d_updates_from_one_round(D, optD, loss, batches):
    """ganfleet's D round: each (x, y) batch's gradient of loss(D(x), y), all at the same D, then an Adam step on each in turn."""
    halves = []
    for x, y in batches:
        optD.zero_grad()
        loss(D(x), y).backward()
        halves.append([q.grad.clone() for q in D.parameters()])
    for grads in halves:
        for q, g in zip(D.parameters(), grads):
            q.grad = g
        optD.step()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mnist", required=True, help="directory with train-images-idx3-ubyte")
    p.add_argument("--out", required=True, help="the .npy of 10,000 samples to write")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--init", choices=["torch", "keras"], default="torch")
    p.add_argument("--d-updates", choices=["1", "2", "2s"], default="2")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    with open(os.path.join(a.mnist, "train-images-idx3-ubyte"), "rb") as f:
        magic, n, r, c = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, magic
        X = torch.from_numpy(np.frombuffer(f.read(), dtype=np.uint8).reshape(n, r * c).astype(np.float32) / 127.5 - 1.0)
    G = nn.Sequential(nn.Linear(100, 128), nn.LeakyReLU(0.01), nn.Linear(128, 784), nn.Tanh())
    D = nn.Sequential(nn.Linear(784, 128), nn.LeakyReLU(0.01), nn.Linear(128, 1), nn.Sigmoid())
    if a.init == "keras":
        for m in list(G) + list(D):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    optD = torch.optim.Adam(D.parameters(), lr=1e-3, eps=1e-7)
    optG = torch.optim.Adam(G.parameters(), lr=1e-3, eps=1e-7)
    bce = nn.BCELoss()
    B = 128
    ones, zeros = torch.ones(B, 1), torch.zeros(B, 1)
    t0 = time.time()
    for _ in range(a.steps):
        real = X[torch.randint(0, X.shape[0], (B,))]
        z = torch.randn(B, 100)
        with torch.no_grad():
            fake = G(z)
        if a.d_updates == "2":
            for x, y in ((real, ones), (fake, zeros)):
                optD.zero_grad()
                bce(D(x), y).backward()
                optD.step()
        elif a.d_updates == "2s":
            d_updates_from_one_round(D, optD, bce, ((real, ones), (fake, zeros)))
        else:
            optD.zero_grad()
            (0.5 * (bce(D(real), ones) + bce(D(fake), zeros))).backward()
            optD.step()
        optG.zero_grad()
        for q in D.parameters():
            q.requires_grad_(False)
        bce(D(G(z)), ones).backward()
        optG.step()
        for q in D.parameters():
            q.requires_grad_(True)
    with torch.no_grad():
        samples = G(torch.randn(10000, 100)).reshape(10000, 28, 28).numpy().astype(np.float32)
    np.save(a.out, samples)
    print(f"{a.steps} steps in {time.time() - t0:.1f} s; 10000 samples in {a.out}")


if __name__ == "__main__":
    main()
