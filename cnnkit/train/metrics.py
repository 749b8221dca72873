"""Classification metrics from logits and integer labels.

All take ``logits`` (N, C) and ``labels`` (N,); the confusion matrix has true
classes as rows and predicted classes as columns.
"""

from __future__ import annotations

import numpy as np


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose top-1 class is the label (NaN for an empty batch)."""
    return float(np.mean(logits.argmax(axis=1) == labels)) if len(labels) else float("nan")


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Fraction of samples whose label is among the ``k`` highest logits (ties as argpartition)."""
    if not len(labels):
        return float("nan")
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean((top == labels[:, None]).any(axis=1)))


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    return np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class: the diagonal over the row sums (NaN for a class never seen)."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)


class Accumulator:
    """Running loss and accuracy over batches, plus the stored logits' predictions."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.loss_sum = 0.0
        self.count = 0
        self.correct = 0
        self.top5 = 0
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, loss: float, logits: np.ndarray, labels: np.ndarray) -> None:
        n = len(labels)
        pred = logits.argmax(axis=1)
        self.loss_sum += float(loss) * n
        self.count += n
        self.correct += int((pred == labels).sum())
        self.top5 += int(round(top_k_accuracy(logits, labels, 5) * n)) if n else 0
        self.confusion += confusion_matrix(pred, labels, self.num_classes)

    def result(self, prefix: str = "") -> dict:
        n = max(self.count, 1)
        out = {f"{prefix}loss": self.loss_sum / n, f"{prefix}accuracy": self.correct / n}
        if self.num_classes > 5:
            out[f"{prefix}top5"] = self.top5 / n
        return out
