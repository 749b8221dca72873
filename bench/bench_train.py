"""One epoch of LeNet-5 (``lenet5_modern``) training on Fashion-MNIST, cnnkit vs PyTorch.

Both train in the same process on the same number of threads, from the same
initial weights (cnnkit's, copied into an equivalent ``torch.nn.Sequential`` by
``state_dict`` name), on the same batches in the same order, with the same
optimizer (SGD, lr 0.01, momentum 0.9, batch 64). Prints each library's epoch
time, images/s, the ratio ours/PyTorch, and the final training loss of both
(the mean over the last 100 batches, and the last batch's), which should be close
since only float32 rounding separates the two runs. Writes the table to
bench/results_train.md.

Before the epoch, each library trains a throwaway copy of its model on two batches (cnnkit
loads its Numba-compiled kernels then, about 0.7 s once per process); that warm-up is
printed and written, not counted in the epoch.

The two libraries take turns every ``--segment`` batches (50; the first to go alternates),
each running every batch of the epoch in order, and each library's epoch time is the
sum of its turns: load from other jobs on this shared machine then falls on both alike.
``--segment 0`` runs one whole epoch after the other, as earlier versions did.

Each turn starts after a 0.25 s pause (``_common.settle``: the other library's idle threads
stop spinning), then the library trains its throwaway copy (below) for 0.1 s, untimed and
on the turn's own batches, as ``_common.warm_up`` does in the other benchmarks: an epoch
runs its batches back to back, and batches right after the pause measure this virtual
machine waking up instead (for some 25 ms the host runs the two woken virtual CPUs one
after the other; see bench_steps.py). The real models never see the warm-up batches.
Measured in session 13, before the warm-up existed: default turns 1.06-1.14, ``--segment
200`` 1.02, ``--segment 0`` 1.05, the same code minutes apart. ``--cold`` leaves the warm-up out.

As bench_kernels.py, this script unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for
its own process (it re-executes itself before importing NumPy), and applies
``cnnkit.runtime.tune_malloc()``.

Usage: python bench/bench_train.py [--limit N] [--threads 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

from _common import limit_threads, reexec_without_openblas_overrides, settle, warm_up  # noqa: E402

reexec_without_openblas_overrides()

import platform  # noqa: E402
import time  # noqa: E402
from collections import OrderedDict  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics


def load_train(data_dir: str, limit: int):
    from cnnkit.data.idx import read_idx
    x = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    if limit:
        x, y = x[:limit], y[:limit]
    return ((x.astype(np.float32) / 255.0 - MEAN) / STD)[:, None], y  # (N, 1, 28, 28)


def torch_lenet5_modern(num_classes: int = 10, in_channels: int = 1):
    """cnnkit's lenet5_modern in torch.nn, with the same child names (so the same state_dict keys)."""
    import torch.nn as T
    return T.Sequential(OrderedDict(
        features=T.Sequential(T.Conv2d(in_channels, 6, 5, padding=2), T.ReLU(), T.MaxPool2d(2),
                              T.Conv2d(6, 16, 5), T.ReLU(), T.MaxPool2d(2)),
        avgpool=T.AdaptiveAvgPool2d(5),
        flatten=T.Flatten(),
        classifier=T.Sequential(T.Linear(400, 120), T.ReLU(), T.Linear(120, 84), T.ReLU(),
                                T.Linear(84, num_classes))))


def cnnkit_trainer(model, x, y, lr, momentum):
    """A function that trains ``model`` on a list of batches and returns the seconds it took
    and the batches' losses; called segment by segment, it keeps its optimizer state."""
    from cnnkit.nn import CrossEntropyLoss
    from cnnkit.optim import SGD
    loss_fn = CrossEntropyLoss()
    opt = SGD(model.parameters(), lr=lr, momentum=momentum)

    def train(batches):
        losses = []
        t0 = time.perf_counter()
        for idx in batches:
            opt.zero_grad()
            losses.append(float(loss_fn(model(x[idx]), y[idx])))
            model.needs_input_grad = False  # as the Trainer does; torch computes no image gradient either
            model.backward(loss_fn.backward())
            opt.step()
        return time.perf_counter() - t0, losses
    return train


def torch_trainer(model, x, y, lr, momentum):
    import torch
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)

    def train(batches):
        losses = []
        t0 = time.perf_counter()
        for idx in batches:
            opt.zero_grad()
            loss = loss_fn(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return time.perf_counter() - t0, losses
    return train


def interleaved_epoch(trainers, batches, segment, warmers=None):
    """Each trainer runs every batch, in order; the epoch is cut into segments of
    ``segment`` batches, and the trainers take turns segment by segment (the first to go
    alternates), so a burst of load from elsewhere on this shared machine falls on both
    libraries alike instead of on whichever happened to be running; each turn starts
    after a pause (``_common.settle``) and, given ``warmers`` (a trainer of a throwaway
    model per trainer), ``_common.warm_up`` of that one on the turn's batches, untimed.
    Returns, per trainer, (total seconds, losses)."""
    totals = [[0.0, []] for _ in trainers]
    for k, start in enumerate(range(0, len(batches), segment)):
        part = batches[start:start + segment]
        order = range(len(trainers)) if k % 2 == 0 else reversed(range(len(trainers)))
        for i in order:
            settle()  # (untimed: the other library's idle threads stop spinning first)
            if warmers:
                turn = itertools.cycle(part)
                warm_up(lambda: warmers[i]([next(turn)]))  # noqa: B023 (called right here)
            seconds, losses = trainers[i](part)
            totals[i][0] += seconds
            totals[i][1].extend(losses)
    return [tuple(t) for t in totals]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DATA, help="folder with Fashion-MNIST's train-*.gz files")
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only (0: all 60,000)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--segment", type=int, default=50,
                    help="batches per turn: the libraries alternate every SEGMENT batches "
                         "(0: one whole epoch each, cnnkit first)")
    ap.add_argument("--cold", action="store_true", help="no warm-up after each turn's pause")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results_train.md")))
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="keep glibc's default mmap threshold (see cnnkit/runtime.py)")
    args = ap.parse_args()
    tuned = limit_threads(args.threads, malloc_tuning=not args.no_malloc_tuning)
    import torch

    from cnnkit import models
    x, y = load_train(args.data, args.limit)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(x))
    batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    ours = models.get("lenet5_modern", rng=rng)
    theirs = torch_lenet5_modern()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    load_before = os.getloadavg()[0]

    # Warm-up, untimed in the epoch: each library trains a throwaway copy of its model on
    # the first two batches (cnnkit loads its compiled kernels - Numba and its cache, about
    # 0.7 s once per process -, both start their threads and allocators), as importing
    # torch is not timed either. The seconds it took are printed and written below.
    warm, warmers = [], []
    for make, trainer in ((lambda: models.get("lenet5_modern", rng=np.random.default_rng(args.seed)), cnnkit_trainer),
                          (torch_lenet5_modern, torch_trainer)):
        warmers.append(trainer(make(), x, y, args.lr, args.momentum))
        warm.append(warmers[-1](batches[:2])[0])
    print(f"warm-up (2 batches on a throwaway model, not in the epoch): cnnkit {warm[0]:.2f} s, "
          f"PyTorch {warm[1]:.2f} s", flush=True)
    trainers = [cnnkit_trainer(ours, x, y, args.lr, args.momentum),
                torch_trainer(theirs, x, y, args.lr, args.momentum)]
    segment = args.segment if args.segment > 0 else len(batches)  # one segment: an epoch each, cnnkit first
    (t_ours, loss_ours), (t_torch, loss_torch) = interleaved_epoch(trainers, batches, segment,
                                                                   None if args.cold else warmers)
    print(f"cnnkit  {t_ours:7.2f} s  {len(x) / t_ours:7.0f} img/s  final loss {np.mean(loss_ours[-100:]):.4f}",
          flush=True)
    print(f"PyTorch {t_torch:7.2f} s  {len(x) / t_torch:7.0f} img/s  final loss {np.mean(loss_torch[-100:]):.4f}",
          flush=True)
    load_after = os.getloadavg()[0]
    drift = max(float(np.abs(v - theirs.state_dict()[k].numpy()).max())
                for k, v in ours.state_dict().items())
    ratio = t_ours / t_torch
    print(f"ratio ours/PyTorch {ratio:.2f}; largest weight difference after the epoch {drift:.2e}; "
          f"1-min load average {load_before:.2f} before, {load_after:.2f} after")

    n_last = min(100, len(batches))
    lines = [f"One epoch of lenet5_modern on Fashion-MNIST ({len(x):,} images, batch {args.batch_size}, "
             f"SGD lr {args.lr} momentum {args.momentum}), same initial weights and batch order, "
             f"float32, {args.threads} threads, same process, "
             f"{f'taking turns every {segment} batches' if args.segment > 0 else 'one epoch after the other'}, "
             f"{'each turn right after a 0.25 s pause' if args.cold else 'each turn after a 0.25 s pause and 0.1 s of untimed batches on a throwaway copy'}; NumPy {np.__version__}, PyTorch {torch.__version__}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; malloc tuning "
             f"{'on' if tuned else 'off'}; 1-min load average {load_before:.2f} before, {load_after:.2f} after. "
             f"Command: `python bench/bench_train.py{f' --limit {args.limit}' if args.limit else ''}"
             f"{f' --segment {args.segment}' if args.segment != 50 else ''}{' --cold' if args.cold else ''}`.", "",
             f"| library | epoch s | images/s | ratio ours/PyTorch | mean loss, last {n_last} batches | "
             "last batch loss |",
             "|---|---:|---:|---:|---:|---:|",
             f"| cnnkit | {t_ours:.2f} | {len(x) / t_ours:,.0f} | {ratio:.2f} | {np.mean(loss_ours[-n_last:]):.4f} | "
             f"{loss_ours[-1]:.4f} |",
             f"| PyTorch | {t_torch:.2f} | {len(x) / t_torch:,.0f} | 1.00 | {np.mean(loss_torch[-n_last:]):.4f} | "
             f"{loss_torch[-1]:.4f} |", "",
             f"Largest absolute weight difference between the two models after the epoch: {drift:.2e}.", "",
             f"Not in the epoch times: a warm-up of 2 batches on a throwaway copy of each model, "
             f"cnnkit {warm[0]:.2f} s (loading its compiled kernels), PyTorch {warm[1]:.2f} s."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    if args.json:
        import json
        Path(args.json).write_text(json.dumps(dict(images=len(x), batch=args.batch_size, cnnkit_s=t_ours,
                                                   pytorch_s=t_torch, ratio=ratio)))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
