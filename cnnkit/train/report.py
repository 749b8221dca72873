"""A short run report: ``report.md`` (+ ``confusion.png``, ``test_metrics.json``)."""

from __future__ import annotations

import json
import os

import numpy as np

from .checkpoint import atomic_write_text


def write_report(folder: str, recipe: dict, data: dict, history: list[dict], test: dict) -> str:
    """Write the report files into ``folder``; returns the path of report.md."""
    os.makedirs(folder, exist_ok=True)
    classes = data.get("classes") or [str(i) for i in range(len(test["confusion"]))]
    lines = [f"# cnnkit run: {recipe.get('model')} on {data.get('name')}", "",
             f"**test accuracy: {test['accuracy']:.4f}** (loss {test['loss']:.4f}"
             + (f", top-5 {test['top5']:.4f}" if "top5" in test else "") + ")", "",
             "## Recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in recipe.items()]
    lines += ["", "## Epochs", "", "| epoch | train loss | train acc | val loss | val acc | lr | seconds |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in history:
        cells = [r.get(k) for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")]
        lines.append(f"| {r['epoch']} | " + " | ".join("" if v is None else f"{v:.4g}" for v in cells) + " |")
    lines += ["", "![curves](curves.png)", "", "## Per-class test accuracy", "", "| class | accuracy |", "|---|---:|"]
    lines += [f"| {c} | {a:.4f} |" for c, a in zip(classes, test["per_class_accuracy"])]
    lines += ["", "## Confusion matrix (rows: true class, columns: predicted)", "",
              "| | " + " | ".join(c[:10] for c in classes) + " |", "|---|" + "---:|" * len(classes)]
    lines += [f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(classes, test["confusion"])]
    lines += ["", "![confusion matrix](confusion.png)", ""]
    path = os.path.join(folder, "report.md")
    atomic_write_text(path, "\n".join(lines))
    atomic_write_text(os.path.join(folder, "test_metrics.json"), json.dumps(test, indent=2))
    plot_confusion(np.asarray(test["confusion"]), classes, os.path.join(folder, "confusion.png"))
    return path


def plot_confusion(confusion: np.ndarray, classes, path: str) -> None:
    """The confusion matrix as a PNG (cnnkit.viz draws it; rows: true class, columns: predicted)."""
    from ..viz._common import save_figure
    from ..viz.run_plots import confusion_figure
    save_figure(confusion_figure(confusion, classes), path)
