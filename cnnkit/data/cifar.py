"""Reader for the **binary** version of CIFAR-10 and CIFAR-100 (never the pickled one).

Record layout (https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version"):

- CIFAR-10: 1 label byte (0..9), then 3072 pixel bytes: 1024 red, 1024 green,
  1024 blue, each a 32x32 image in row-major order. So a record is already CHW.
  Files: ``cifar-10-batches-bin/data_batch_1.bin`` .. ``data_batch_5.bin`` (10,000
  records each), ``test_batch.bin``; class names in ``batches.meta.txt``.
- CIFAR-100: 2 label bytes, coarse (0..19) then fine (0..99), then 3072 pixel bytes.
  Files: ``cifar-100-binary/train.bin`` (50,000), ``test.bin`` (10,000); names in
  ``coarse_label_names.txt`` and ``fine_label_names.txt``. cnnkit uses the fine labels.

Every check raises :class:`CIFARError` (a ``ValueError``) naming the file and what was
expected versus found: an empty file, a size that is not a whole number of records,
a label out of range, a names file with the wrong number of names.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

__all__ = ["CIFARError", "CIFAR10_CLASSES", "FORMATS", "read_cifar_bin", "read_names", "cifar_files",
           "load_cifar"]

PIXELS = 3 * 32 * 32  # 3072 bytes per image: R, G, B planes of 32x32

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# name -> sub-folder, label bytes per record, (classes per label byte), train files, test files, names file
FORMATS = {
    "cifar10": dict(folder="cifar-10-batches-bin", label_bytes=1, num_classes=(10,),
                    train=[f"data_batch_{i}.bin" for i in range(1, 6)], test=["test_batch.bin"],
                    names="batches.meta.txt"),
    "cifar100": dict(folder="cifar-100-binary", label_bytes=2, num_classes=(20, 100),
                     train=["train.bin"], test=["test.bin"], names="fine_label_names.txt"),
}


class CIFARError(ValueError):
    """A CIFAR binary file is malformed: the message names the file, the expectation and the finding."""


def _fail(path, what: str, expected, found) -> CIFARError:
    return CIFARError(f"{os.fspath(path)}: {what}: expected {expected}, found {found}")


def read_cifar_bin(path, label_bytes: int = 1, num_classes=(10,), label_index: int = -1):
    """Read one CIFAR binary file -> ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.

    ``label_bytes`` is 1 for CIFAR-10 and 2 for CIFAR-100 (coarse, fine);
    ``num_classes`` gives the number of classes of each label byte, and
    ``label_index`` picks which label byte is returned (the last: CIFAR-100's fine label).
    """
    path = os.fspath(path)
    record = label_bytes + PIXELS
    with open(path, "rb") as fh:
        raw = fh.read()
    if len(raw) == 0:
        raise _fail(path, "empty file", f"a multiple of the {record}-byte record", "0 bytes")
    if len(raw) % record:
        n, extra = divmod(len(raw), record)
        raise _fail(path, f"size is not a whole number of {record}-byte records "
                          f"({label_bytes} label byte{'s' if label_bytes > 1 else ''} + {PIXELS} pixel bytes)",
                    f"a multiple of {record} bytes", f"{len(raw)} bytes = {n} records + {extra} bytes")
    data = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)  # (N, label_bytes + 3072)
    for j, k in enumerate(num_classes):
        bad = np.flatnonzero(data[:, j] >= k)
        if bad.size:
            which = f"label byte {j} of record {int(bad[0])}" if label_bytes > 1 else f"label of record {int(bad[0])}"
            raise _fail(path, f"{which} is out of range ({bad.size} bad records)", f"0..{k - 1}",
                        int(data[bad[0], j]))
    labels = data[:, :label_bytes][:, label_index].astype(np.int64)  # (N,)
    images = data[:, label_bytes:].reshape(-1, 3, 32, 32).copy()  # (N, C, H, W): the planes are R, G, B
    return images, labels


def read_names(path, count: int) -> list[str]:
    """Class names, one a line (blank lines dropped); exactly ``count`` of them."""
    with open(path, encoding="utf-8") as fh:
        names = [line.strip() for line in fh if line.strip()]
    if len(names) != count:
        raise _fail(path, "wrong number of class names", count, len(names))
    return names


def cifar_files(folder, name: str, split: str):
    """Where the files of ``name``/``split`` would lie under ``folder``: ``(data_dir, [bin paths], names path)``.

    The files may sit in the archive's own sub-folder (``folder/cifar-10-batches-bin/``)
    or directly in ``folder``; the sub-folder wins when it exists.
    """
    fmt = FORMATS[name]
    sub = os.path.join(folder, fmt["folder"])
    data_dir = sub if os.path.isdir(sub) else folder
    return data_dir, [os.path.join(data_dir, f) for f in fmt[split]], os.path.join(data_dir, fmt["names"])


def load_cifar(folder, name: str, split: str):
    """Read every file of ``name`` (``cifar10``/``cifar100``) and ``split`` -> ``(images, labels, classes)``."""
    fmt = FORMATS[name]
    _, paths, names_path = cifar_files(folder, name, split)
    parts = [read_cifar_bin(p, fmt["label_bytes"], fmt["num_classes"]) for p in paths]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    count = fmt["num_classes"][-1]
    if os.path.exists(names_path):
        classes = read_names(names_path, count)
    elif name == "cifar10":
        classes = list(CIFAR10_CLASSES)
    else:
        warnings.warn(f"{names_path} is missing: class names will be '0'..'{count - 1}'", stacklevel=3)
        classes = [str(i) for i in range(count)]
    return images, labels, classes
