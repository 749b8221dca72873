"""Callbacks for ``Trainer``: checkpoints (last and best), history files and curves,
early stopping. Each hook receives the trainer; ``on_epoch_end`` also gets that
epoch's logs (train and validation metrics, learning rate, seconds)."""

from __future__ import annotations

import csv
import io
import json
import math
import os

from .checkpoint import atomic_write_text, save_checkpoint


def _better(value, best, mode: str, min_delta: float = 0.0) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class Checkpoint:
    """Save ``last`` after every epoch and ``best`` when ``monitor`` improves.

    Both are (weights .safetensors + .json) pairs in ``folder``; see
    ``checkpoint.py`` for the format and the atomic-write guarantees.
    """

    def __init__(self, folder: str, monitor: str = "val_accuracy", mode: str = "max", extra: dict | None = None):
        if mode not in ("max", "min"):
            raise ValueError(f"Checkpoint: mode must be 'max' or 'min'. Received: mode={mode!r}")
        self.folder, self.monitor, self.mode, self.extra = folder, monitor, mode, dict(extra or {})
        self.best = None

    def on_train_begin(self, trainer):
        # After a resume, "best" is the best monitored value of the restored history.
        for logs in trainer.history:
            if _better(logs.get(self.monitor), self.best, self.mode):
                self.best = logs.get(self.monitor)

    def on_epoch_end(self, trainer, logs):
        meta = {**self.extra, **trainer.state(), "metrics": logs, "monitor": self.monitor}
        save_checkpoint(self.folder, "last", trainer.model, trainer.optimizer, meta)
        value = logs.get(self.monitor)
        if _better(value, self.best, self.mode):
            self.best = value
            save_checkpoint(self.folder, "best", trainer.model, trainer.optimizer, meta)


class History:
    """Write ``history.csv``, ``history.json`` and ``curves.png`` (loss and accuracy,
    train and validation) into ``folder`` after every epoch, atomically."""

    def __init__(self, folder: str, plot: bool = True):
        self.folder, self.plot = folder, plot

    def on_epoch_end(self, trainer, logs):
        os.makedirs(self.folder, exist_ok=True)
        rows = trainer.history
        keys = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(os.path.join(self.folder, "history.csv"), buf.getvalue())
        atomic_write_text(os.path.join(self.folder, "history.json"), json.dumps(rows, indent=2))
        if self.plot:
            plot_curves(rows, os.path.join(self.folder, "curves.png"))


def plot_curves(history: list[dict], path: str) -> None:
    """Loss and accuracy per epoch, train vs validation (and the learning rate), as a PNG
    (cnnkit.viz draws it; atomic write)."""
    from ..viz._common import save_figure
    from ..viz.run_plots import curves_figure
    save_figure(curves_figure(history), path)


class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, mode: str = "min", min_delta: float = 0.0):
        if mode not in ("max", "min") or patience < 1:
            raise ValueError(f"EarlyStopping: mode must be 'max' or 'min' and patience >= 1. "
                             f"Received: mode={mode!r}, patience={patience}")
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.best, self.wait = None, 0

    def on_epoch_end(self, trainer, logs):
        if _better(logs.get(self.monitor), self.best, self.mode, self.min_delta):
            self.best, self.wait = logs.get(self.monitor), 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop = True
