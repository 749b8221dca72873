"""Small data set files in the real on-disk formats, written with NumPy for the data tests."""

from __future__ import annotations

import os

import numpy as np

from cnnkit.data.idx import write_idx


def cifar_records(images: np.ndarray, *label_columns) -> bytes:
    """CIFAR binary records: the label bytes, then the 3072 pixel bytes (R, G, B planes) of each image."""
    n = len(images)
    labels = np.stack([np.asarray(c, np.uint8) for c in label_columns], axis=1).reshape(n, -1)
    return np.concatenate([labels, images.reshape(n, -1).astype(np.uint8)], axis=1).tobytes()


def write_cifar10(folder, per_batch=(3, 2, 4, 1, 2), n_test=3, seed=0, names=None, subfolder=True):
    """A CIFAR-10 binary folder; returns (train_images, train_labels, test_images, test_labels, names)."""
    rng = np.random.default_rng(seed)
    d = os.path.join(folder, "cifar-10-batches-bin") if subfolder else os.fspath(folder)
    os.makedirs(d, exist_ok=True)
    names = names or [f"class{i}" for i in range(10)]
    with open(os.path.join(d, "batches.meta.txt"), "w") as fh:
        fh.write("\n".join(names) + "\n\n")
    imgs, labs = [], []
    for i, n in enumerate(per_batch, start=1):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n)
        with open(os.path.join(d, f"data_batch_{i}.bin"), "wb") as fh:
            fh.write(cifar_records(x, y))
        imgs.append(x)
        labs.append(y)
    xt = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    yt = rng.integers(0, 10, n_test)
    with open(os.path.join(d, "test_batch.bin"), "wb") as fh:
        fh.write(cifar_records(xt, yt))
    return np.concatenate(imgs), np.concatenate(labs), xt, yt, names


def write_cifar100(folder, n_train=5, n_test=2, seed=1):
    """A CIFAR-100 binary folder; returns (train_images, coarse, fine, test_images, test_fine, fine_names)."""
    rng = np.random.default_rng(seed)
    d = os.path.join(folder, "cifar-100-binary")
    os.makedirs(d, exist_ok=True)
    fine_names = [f"fine{i:02d}" for i in range(100)]
    with open(os.path.join(d, "fine_label_names.txt"), "w") as fh:
        fh.write("\n".join(fine_names) + "\n")
    with open(os.path.join(d, "coarse_label_names.txt"), "w") as fh:
        fh.write("\n".join(f"coarse{i}" for i in range(20)) + "\n")
    x = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    coarse, fine = rng.integers(0, 20, n_train), rng.integers(0, 100, n_train)
    with open(os.path.join(d, "train.bin"), "wb") as fh:
        fh.write(cifar_records(x, coarse, fine))
    xt = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    ct, ft = rng.integers(0, 20, n_test), rng.integers(0, 100, n_test)
    with open(os.path.join(d, "test.bin"), "wb") as fh:
        fh.write(cifar_records(xt, ct, ft))
    return x, coarse, fine, xt, ft, fine_names


def write_mnist(folder, n_train=12, n_test=5, seed=0, gz=True, dotted=False, shape=(28, 28)):
    """The four MNIST IDX files; returns {split: (images (N, H, W), labels)}."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        sep = "." if dotted else "-"
        suffix = ".gz" if gz else ""
        write_idx(os.path.join(folder, f"{prefix}-images{sep}idx3-ubyte{suffix}"), x)
        write_idx(os.path.join(folder, f"{prefix}-labels{sep}idx1-ubyte{suffix}"), y)
        out[split] = (x, y)
    return out
