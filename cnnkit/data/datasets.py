"""In-memory image data sets, and the standard ones by name.

``load_dataset("fashion-mnist", split="train")`` returns an :class:`ArrayDataset`:
``.images`` uint8 (N, C, H, W), ``.labels`` int64 (N,), ``.classes`` (names).

Where a data set is looked for, in order (the first folder that holds the split's
files wins):

1. ``root``, when given. It is then the only place looked: an explicit folder
   that lacks the files is an error, never a silent fall-back to another copy.
2. ``$CNNKIT_DATA/<name>`` when the ``CNNKIT_DATA`` environment variable is set.
3. ``~/.cache/cnnkit/<name>`` (where ``cnnkit data fetch NAME`` puts it by default).
4. For ``fashion-mnist``: ``/usr/share/datasets/fashion-mnist``, from Debian's
   ``dataset-fashion-mnist`` package.

Files per data set: ``mnist`` and ``fashion-mnist`` are the four IDX files
``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, gzip-compressed (``.gz``) or raw
(the ``train-images.idx3-ubyte`` spelling is accepted too). ``cifar10`` and
``cifar100`` are CIFAR's binary version (see :mod:`cnnkit.data.cifar`), in the
archive's own sub-folder (``cifar-10-batches-bin/``, ``cifar-100-binary/``) or
directly in the folder.

A data set found nowhere raises :class:`DatasetNotFoundError` listing every place
looked and what was missing there, and the command that gets it. Files with the
wrong content raise :class:`DatasetError` (or the readers' ``IDXError`` / ``CIFARError``).
"""

from __future__ import annotations

import os

import numpy as np

from .._errors import type_error, value_error
from . import cifar
from .idx import read_idx

__all__ = ["ArrayDataset", "DatasetError", "DatasetNotFoundError", "DATASETS", "load_dataset",
           "search_paths", "default_root"]

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]

# name -> how it is stored, and the folders that system packages install it to
DATASETS = {
    "fashion-mnist": dict(kind="idx", classes=FASHION_MNIST_CLASSES,
                          system_dirs=["/usr/share/datasets/fashion-mnist"], apt="dataset-fashion-mnist"),
    "mnist": dict(kind="idx", classes=[str(d) for d in range(10)], system_dirs=[], apt=None),
    "cifar10": dict(kind="cifar", system_dirs=[], apt=None),
    "cifar100": dict(kind="cifar", system_dirs=[], apt=None),
}
SPLITS = ("train", "test")


class DatasetError(ValueError):
    """A data set's files are readable but their content is wrong (names the file, expected vs found)."""


class DatasetNotFoundError(FileNotFoundError):
    """No folder searched holds the data set; the message lists each place looked and how to get it."""


class ArrayDataset:
    """Images and labels held in memory.

    ``images``: uint8 (N, C, H, W) (an (N, H, W) array gets C = 1); ``labels``: integer
    (N,), stored as int64, each in ``0..len(classes) - 1``; ``classes``: the class names
    (default ``'0'``, ``'1'``, ...); ``name`` shows in errors and the repr.

    ``ds[i]`` is ``(image uint8 (C, H, W), label int)``.
    """

    def __init__(self, images, labels, classes=None, name: str = "dataset"):
        where = f"ArrayDataset {name!r}"
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim == 3:
            images = images[:, None]  # (N, 1, H, W)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise type_error(where, "images must be uint8 of shape (N, C, H, W)",
                             dtype=str(images.dtype), shape=images.shape)
        if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
            raise type_error(where, "labels must be a 1-D integer array", dtype=str(labels.dtype),
                             shape=labels.shape)
        if len(labels) != len(images):
            raise value_error(where, "images and labels differ in length", images=images.shape,
                              labels=labels.shape)
        labels = labels.astype(np.int64)
        if classes is None:
            classes = [str(c) for c in range(int(labels.max()) + 1 if labels.size else 0)]
        classes = [str(c) for c in classes]
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise value_error(where, f"labels must lie in 0..{len(classes) - 1} (one per class name)",
                              min_label=int(labels.min()), max_label=int(labels.max()), classes=len(classes))
        self.images, self.labels, self.classes, self.name = images, labels, classes, name

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        if not isinstance(i, (int, np.integer)):
            raise type_error(f"ArrayDataset {self.name!r}", "index with an int; use subset(indices) for many",
                             index=type(i).__name__)
        return self.images[i], int(self.labels[i])

    def __repr__(self):
        return (f"ArrayDataset(name={self.name!r}, n={len(self)}, image_shape={tuple(self.images.shape[1:])}, "
                f"classes={len(self.classes)})")

    def class_counts(self) -> np.ndarray:
        """Images per class, int64 (len(classes),)."""
        return np.bincount(self.labels, minlength=len(self.classes))

    def subset(self, indices) -> "ArrayDataset":
        """A new data set of the images at ``indices`` (copied), with the same classes and name."""
        indices = np.asarray(indices)
        if indices.dtype == bool or not (np.issubdtype(indices.dtype, np.integer) or indices.size == 0):
            raise type_error(f"ArrayDataset {self.name!r}", "subset() takes integer indices",
                             dtype=str(indices.dtype))
        indices = indices.astype(np.int64).reshape(-1)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise value_error(f"ArrayDataset {self.name!r}", "subset index out of range",
                              min_index=int(indices.min()), max_index=int(indices.max()), n=len(self))
        return ArrayDataset(self.images[indices], self.labels[indices], self.classes, self.name)

    def select_classes(self, classes) -> "ArrayDataset":
        """Only the images of ``classes`` (class ids or names, in the order given), relabelled
        ``0..len(classes) - 1`` in that order: e.g. Fashion-MNIST's classes 5-9 as a task of
        their own for transfer learning."""
        where = f"ArrayDataset {self.name!r}.select_classes"
        ids = []
        for c in classes:
            if isinstance(c, str) and c in self.classes:
                ids.append(self.classes.index(c))
            elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < len(self.classes):
                ids.append(int(c))
            else:
                raise value_error(where, f"unknown class; known: ids 0..{len(self.classes) - 1} or names "
                                  + ", ".join(self.classes), received=c)
        if not ids or len(set(ids)) != len(ids):
            raise value_error(where, "give one or more distinct classes", classes=list(classes))
        relabel = np.full(len(self.classes), -1, np.int64)
        relabel[ids] = np.arange(len(ids))
        keep = np.flatnonzero(relabel[self.labels] >= 0)
        return ArrayDataset(self.images[keep], relabel[self.labels[keep]], [self.classes[i] for i in ids],
                            self.name)

    def split(self, n_val: int, seed: int = 0, stratify: bool = False):
        """Split off ``n_val`` images at random -> ``(train, val)``, reproducible from ``seed``.

        The validation indices are drawn with ``np.random.default_rng(seed)``. With
        ``stratify=True`` each class contributes in proportion to its size (largest
        remainders get the leftover slots). Both parts keep the original order.
        """
        n_val = int(n_val)
        if not 0 <= n_val <= len(self):
            raise value_error(f"ArrayDataset {self.name!r}", "n_val must lie in 0..len(dataset)",
                              n_val=n_val, n=len(self))
        rng = np.random.default_rng(seed)
        if not stratify:
            val = rng.permutation(len(self))[:n_val]
        else:
            counts = self.class_counts()
            ideal = n_val * counts / max(len(self), 1)
            take = np.floor(ideal).astype(np.int64)
            order = np.argsort(-(ideal - take), kind="stable")  # largest remainder first
            take[order[:n_val - int(take.sum())]] += 1
            val = np.concatenate([rng.permutation(np.flatnonzero(self.labels == c))[:take[c]]
                                  for c in range(len(counts))] or [np.zeros(0, np.int64)])
        mask = np.zeros(len(self), bool)
        mask[val] = True
        return self.subset(np.flatnonzero(~mask)), self.subset(np.flatnonzero(mask))

    def mean_std(self, chunk: int = 4096):
        """Per-channel mean and standard deviation of the pixels in [0, 1] units -> two float64 (C,) arrays.

        The population standard deviation (ddof=0), accumulated in float64 over chunks
        of ``chunk`` images. Feed them to ``Normalize`` after ``ToFloat``.
        """
        C = self.images.shape[1]
        total, total_sq = np.zeros(C), np.zeros(C)
        for i in range(0, len(self), chunk):
            x = self.images[i:i + chunk].astype(np.float64)  # (b, C, H, W)
            total += x.sum(axis=(0, 2, 3))
            total_sq += np.square(x).sum(axis=(0, 2, 3))
        count = len(self) * self.images.shape[2] * self.images.shape[3]
        if count == 0:
            raise value_error(f"ArrayDataset {self.name!r}", "mean_std() of an empty data set", n=len(self))
        mean = total / count
        var = np.maximum(total_sq / count - mean ** 2, 0.0)
        return mean / 255.0, np.sqrt(var) / 255.0


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(key, key)
    if key not in DATASETS:
        raise value_error("load_dataset", "unknown data set", name=name, known=tuple(DATASETS))
    return key


def default_root(name: str) -> str:
    """Where ``fetch`` puts ``name`` by default: ``$CNNKIT_DATA/<name>``, else ``~/.cache/cnnkit/<name>``."""
    name = _canonical(name)
    base = os.environ.get("CNNKIT_DATA")
    return os.path.join(base, name) if base else os.path.join(os.path.expanduser("~"), ".cache", "cnnkit", name)


def search_paths(name: str, root=None) -> list[str]:
    """Every folder ``load_dataset(name, root=root)`` looks in, in order."""
    name = _canonical(name)
    if root is not None:
        return [os.fspath(root)]
    paths = []
    if os.environ.get("CNNKIT_DATA"):
        paths.append(os.path.join(os.environ["CNNKIT_DATA"], name))
    paths.append(os.path.join(os.path.expanduser("~"), ".cache", "cnnkit", name))
    paths += DATASETS[name]["system_dirs"]
    return paths


def _idx_candidates(folder: str, split: str, what: str) -> list[str]:
    prefix = "train" if split == "train" else "t10k"
    kind = "images-idx3" if what == "images" else "labels-idx1"
    dotted = kind.replace("-", ".")
    return [os.path.join(folder, f"{prefix}-{k}-ubyte{gz}") for k in (kind, dotted) for gz in ("", ".gz")]


def _locate(folder: str, name: str, split: str):
    """-> (files, None) when ``folder`` holds the split, else (None, why not)."""
    if not os.path.isdir(folder):
        return None, "no such folder" if not os.path.exists(folder) else "not a folder"
    if DATASETS[name]["kind"] == "idx":
        files, missing = [], []
        for what in ("images", "labels"):
            cands = _idx_candidates(folder, split, what)
            found = next((c for c in cands if os.path.isfile(c)), None)
            if found:
                files.append(found)
            else:
                missing.append(os.path.basename(cands[0]) + "[.gz]")
        return (files, None) if not missing else (None, "missing " + ", ".join(missing))
    data_dir, paths, _ = cifar.cifar_files(folder, name, split)
    missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
    if missing:
        sub = cifar.FORMATS[name]["folder"]
        return None, f"missing {', '.join(missing)} (looked in {sub}/ and the folder itself)"
    return paths, None


def _how_to_get(name: str) -> str:
    text = f"Get it with `cnnkit data fetch {name}` (or `python -m cnnkit.cli data fetch {name}`)"
    if DATASETS[name]["apt"]:
        text += f", or `apt-get install {DATASETS[name]['apt']}` (Debian)"
    return text + ", or set CNNKIT_DATA to a folder that holds " + f"{name}/, or pass root=."


def _load_idx(name: str, files: list[str]):
    images_path, labels_path = files
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DatasetError(f"{images_path}: not an image file: expected uint8 of shape (N, H, W), "
                           f"found {images.dtype} of shape {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(f"{labels_path}: not a label file: expected uint8 of shape (N,), "
                           f"found {labels.dtype} of shape {labels.shape}")
    if len(labels) != len(images):
        raise DatasetError(f"{labels_path}: label count does not match {os.path.basename(images_path)}: "
                           f"expected {len(images)}, found {len(labels)}")
    classes = DATASETS[name]["classes"]
    if labels.size and labels.max() >= len(classes):
        raise DatasetError(f"{labels_path}: label out of range: expected 0..{len(classes) - 1}, "
                           f"found {int(labels.max())}")
    return images[:, None], labels, list(classes)  # (N, 1, H, W)


def load_dataset(name: str, split: str = "train", root=None) -> ArrayDataset:
    """Load a standard data set by name: ``fashion-mnist``, ``mnist``, ``cifar10`` or ``cifar100``.

    ``split`` is ``"train"`` or ``"test"``. ``root`` is the folder holding the files;
    without it the places listed in this module's docstring are searched.
    Raises :class:`DatasetNotFoundError` when no place has the files.
    """
    key = _canonical(name)
    if split not in SPLITS:
        raise value_error("load_dataset", "split must be 'train' or 'test'", split=split)
    reasons = []
    for folder in search_paths(key, root):
        files, why = _locate(folder, key, split)
        if files is None:
            reasons.append(f"  - {folder}: {why}")
            continue
        if DATASETS[key]["kind"] == "idx":
            images, labels, classes = _load_idx(key, files)
        else:
            images, labels, classes = cifar.load_cifar(folder, key, split)
        return ArrayDataset(images, labels, classes, name=key)
    raise DatasetNotFoundError(f"load_dataset: data set {key!r} (split {split!r}) not found. Looked in:\n"
                               + "\n".join(reasons) + "\n" + _how_to_get(key))
