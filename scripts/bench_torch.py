"""PyTorch side of `gpl bench engine`: images/s for a forward pass and a training step
(Adam, weighted cross-entropy) of the same nets gpl measures, on CPU with N threads, kept
warm in one process so gpl and PyTorch alternate round by round. Reads one command per line
on stdin and answers one JSON line:

  infer NET SECONDS  -> forward passes of NET for at least SECONDS; {"rate": images/s, "torch": version}
  train NET SECONDS  -> training steps likewise
  quit

Usage: bench_torch.py THREADS BATCH"""
import json
import sys
import time

import torch
import torch.nn as nn


def design_net():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4608, 128), nn.ReLU(), nn.Linear(128, 10))


def bigger_cnn():
    layers, cin = [], 3
    for f in [32, 64, 128, 128]:
        layers += [nn.Conv2d(cin, f, 3), nn.ReLU(), nn.BatchNorm2d(f, eps=1e-3, momentum=0.01), nn.MaxPool2d(2)]
        cin = f
    layers += [nn.Flatten(), nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)]
    return nn.Sequential(*layers)


def rate(fn, batch, seconds, warm_up=2):
    """Images/s of `fn` (one batch per call) over at least SECONDS and three calls, after
    `warm_up` untimed calls."""
    for _ in range(warm_up):
        fn()
    count, start = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 3:
            return count * batch / elapsed


def main():
    threads, batch = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 69, 69)
    y = torch.randint(0, 10, (batch,))
    w = torch.rand(batch)
    work = {}
    for name, build in [("design_net", design_net), ("bigger_cnn", bigger_cnn)]:
        model = build()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

        def infer(model=model):
            model.eval()
            with torch.no_grad():
                model(x).softmax(dim=1)

        def train(model=model, opt=opt):
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = (w * nn.functional.cross_entropy(model(x), y, reduction="none")).mean()
            loss.backward()
            opt.step()

        work[("infer", name)] = infer
        work[("train", name)] = train
    for line in sys.stdin:
        parts = line.split()
        if parts == ["quit"]:
            break
        what, net, seconds = parts[0], parts[1], float(parts[2])
        print(json.dumps({"rate": rate(work[(what, net)], batch, seconds), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
