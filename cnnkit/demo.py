"""The main job until the trainer lands: train a LeNet-style CNN on Fashion-MNIST.

Run ``make demo`` (or ``python -m cnnkit.demo --epochs 2``). It reads the real
IDX files of Debian's ``dataset-fashion-mnist`` package (or ``--data DIR``), trains
with cnnkit's own forward and backward passes and SGD, and reports test accuracy
overall and per class.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import OrderedDict

import numpy as np

from .data.idx import read_idx
from .nn.activation import ReLU
from .nn.containers import Sequential
from .nn.conv import Conv2d
from .nn.linear import Flatten, Linear
from .nn.loss import CrossEntropyLoss
from .nn.pool import MaxPool2d
from .optim import SGD

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics


def load_split(data_dir: str, split: str):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    x = ((x.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]  # (N, 1, 28, 28)
    return x, y.astype(np.int64)


def lenet(rng: np.random.Generator) -> Sequential:
    """LeNet-5's shape with ReLU, max pooling and a softmax classifier."""
    return Sequential(OrderedDict(
        features=Sequential(Conv2d(1, 6, 5, padding=2, rng=rng), ReLU(), MaxPool2d(2),
                            Conv2d(6, 16, 5, rng=rng), ReLU(), MaxPool2d(2)),
        classifier=Sequential(Flatten(), Linear(16 * 5 * 5, 120, rng=rng), ReLU(),
                              Linear(120, 84, rng=rng), ReLU(), Linear(84, 10, rng=rng))))


def evaluate(model, x, y, batch=500):
    model.eval()
    pred = np.concatenate([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    model.train()
    return pred


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="folder with the four Fashion-MNIST .gz files")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/demo", help="where summary.json goes")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from .runtime import tune_malloc
    tune_malloc()

    x_train, y_train = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "test")
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    rng = np.random.default_rng(args.seed)
    model = lenet(rng)
    print(model)
    print(f"{model.num_parameters():,} parameters; {len(x_train):,} training and {len(x_test):,} test images")
    loss_fn = CrossEntropyLoss()
    opt = SGD(model.parameters(), lr=args.lr, momentum=0.9)

    history = []
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        seen, correct, total_loss, t0 = 0, 0, 0.0, time.perf_counter()
        bar = tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch}/{args.epochs}", unit="batch",
                   mininterval=1.0)
        for start in bar:
            idx = order[start:start + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            opt.zero_grad()
            logits = model(xb)
            loss = float(loss_fn(logits, yb))
            model.backward(loss_fn.backward())
            opt.step()
            seen += len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            total_loss += loss * len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        pred = evaluate(model, x_test, y_test)
        test_acc = float((pred == y_test).mean())
        history.append(dict(epoch=epoch, train_loss=total_loss / seen, train_acc=correct / seen,
                            test_acc=test_acc, seconds=time.perf_counter() - t0))
        print(f"epoch {epoch}: train loss {total_loss / seen:.4f}, train acc {correct / seen:.4f}, "
              f"test acc {test_acc:.4f} ({time.perf_counter() - t0:.0f} s)")

    print("\nper-class test accuracy:")
    for c, name in enumerate(CLASSES):
        mask = y_test == c
        print(f"  {name:12s} {float((pred[mask] == c).mean()):.3f}")
    print(f"\ntest accuracy: {test_acc:.4f}")
    os.makedirs(args.out, exist_ok=True)
    tmp = os.path.join(args.out, "summary.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(dict(model="lenet (ReLU, max pool)", dataset="fashion-mnist", history=history,
                       test_accuracy=test_acc, args=vars(args)), fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(args.out, "summary.json"))
    return test_acc


if __name__ == "__main__":
    main()
