"""Plots of a run folder: training curves (``history.json``) and the confusion matrix
(``test_metrics.json``), as written by ``cnnkit train``/``finetune``."""

from __future__ import annotations

import json
import os

import numpy as np

from .._errors import value_error
from ._common import pyplot, save_figure


def read_json(run_dir: str, name: str):
    path = os.path.join(run_dir, name)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise value_error("cnnkit viz", f"{name} not found: expected a run folder written by cnnkit train",
                          path=path) from None
    except ValueError as e:
        raise value_error("cnnkit viz", f"{name} is not valid JSON ({e})", path=path) from None


def run_classes(run_dir: str, n: int) -> list[str]:
    """Class names recorded in the run's checkpoint (``last.json``), else ``'0'``..``'n-1'``."""
    try:
        with open(os.path.join(run_dir, "last.json"), encoding="utf-8") as fh:
            classes = (json.load(fh).get("data") or {}).get("classes")
    except (OSError, ValueError):
        classes = None
    return [str(c) for c in classes] if classes and len(classes) == n else [str(i) for i in range(n)]


def curves_figure(history: list[dict]):
    """Loss and accuracy per epoch, train and validation (and the learning rate if recorded)."""
    if not history:
        raise value_error("cnnkit viz curves", "the history has no epochs")
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    epochs = [r["epoch"] for r in history]
    has_lr = any(r.get("lr") is not None for r in history)
    fig, axes = plt.subplots(1, 3 if has_lr else 2, figsize=(12 if has_lr else 9, 3.6))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split, style in (("train_", "-o"), ("val_", "-s")):
            values = [r.get(split + metric) for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], style,
                        label=split.rstrip("_"), markersize=4)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if has_lr:
        axes[2].plot(epochs, [np.nan if r.get("lr") is None else r["lr"] for r in history], "-o",
                     color="tab:green", markersize=4)
        axes[2].set_xlabel("epoch")
        axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[2].set_title("learning rate")
        axes[2].grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_curves(run_dir: str, path: str, dpi: int = 100) -> str:
    """``curves`` of ``run_dir/history.json`` to ``path`` (.png or .svg)."""
    return save_figure(curves_figure(read_json(run_dir, "history.json")), path, dpi=dpi)


def confusion_figure(confusion, classes):
    """Counts in each cell, shaded by the row's rate (rows: true class, columns: predicted)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise value_error("cnnkit viz confusion", "the confusion matrix must be square", shape=confusion.shape)
    n = len(confusion)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 0.55 * n, 1.2 + 0.55 * n))
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    labels = [c[:12] for c in classes]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(confusion) / max(confusion.sum(), 1)
    ax.set_title(f"confusion matrix (accuracy {acc:.4f})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_confusion(run_dir: str, path: str, dpi: int = 100) -> str:
    """The confusion matrix of ``run_dir/test_metrics.json`` to ``path`` (.png or .svg)."""
    metrics = read_json(run_dir, "test_metrics.json")
    if "confusion" not in metrics:
        raise value_error("cnnkit viz confusion", "test_metrics.json has no confusion matrix", run=run_dir)
    confusion = metrics["confusion"]
    return save_figure(confusion_figure(confusion, run_classes(run_dir, len(confusion))), path, dpi=dpi)
