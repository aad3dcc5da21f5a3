#!/usr/bin/python3
"""The PyTorch anchor's network doing ganfleet's step, for a like-for-like ratio 1.

The anchor (../shared/anchors/torch_gan.py) runs the seed's step: two D updates
(real, then fake), G run twice (once without gradients for D's fake batch, once
for G's update). ganfleet's step does less: both D gradients are taken at the
same D, in one round, and one G forward pass serves both rounds (README,
Training semantics). This script takes the anchor's network and data loading
as they are, and times that step: D's gradients on BCE(D(x), 1) and on
BCE(D(G(z)), 0), then two D updates with them, real first, then a G update on
BCE(D(G(z)), 1) through the updated D, with the same z and G(z). Prints one
JSON line like the anchor's.
Usage: /usr/bin/python3 torch_matched.py --anchor ../shared/anchors/torch_gan.py --mnist DIR
"""
import argparse, importlib.util, json, os, time

import torch
import torch.nn as nn

from torch_d_updates import d_updates_from_one_round


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--anchor", required=True)
    p.add_argument("--mnist", required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()
    spec = importlib.util.spec_from_file_location("torch_gan", args.anchor)
    anchor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchor)

    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)
    X = anchor.load_idx_images(os.path.join(args.mnist, "train-images-idx3-ubyte"))
    X = torch.from_numpy(X.astype("float32") / 127.5 - 1.0)
    G, D = anchor.build()
    optD = torch.optim.Adam(D.parameters(), lr=1e-3, eps=1e-7)
    optG = torch.optim.Adam(G.parameters(), lr=1e-3, eps=1e-7)
    bce = nn.BCELoss()
    B = args.batch
    ones, zeros = torch.ones(B, 1), torch.zeros(B, 1)

    def step():
        real = X[torch.randint(0, X.shape[0], (B,))]
        z = torch.randn(B, 100)
        fake = G(z)
        d_updates_from_one_round(D, optD, bce, ((real, ones), (fake.detach(), zeros)))
        optG.zero_grad()
        for q in D.parameters():
            q.requires_grad_(False)
        bce(D(fake), ones).backward()
        optG.step()
        for q in D.parameters():
            q.requires_grad_(True)

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = (time.perf_counter() - t0) / args.steps
    print(json.dumps({"anchor": "pytorch-ganfleet-step", "torch": torch.__version__, "threads_per_proc": args.threads,
                      "batch_per_proc": B, "ms_per_step": round(dt * 1000, 3), "images_per_s": round(B / dt, 1)}))


if __name__ == "__main__":
    main()
