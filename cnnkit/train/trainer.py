"""The training loop: ``Trainer.fit``, ``evaluate``, ``predict``, and resuming.

One step is the lecture's recipe written out::

    logits = model(x)                      # forward through every layer
    loss = loss_fn(logits, y)              # e.g. softmax cross-entropy
    model.backward(loss_fn.backward())     # delta = softmax - onehot, then every layer's backward
    optimizer.step()                       # w -= lr * dL/dw (with momentum, decay, ...)

Around it: a progress bar with loss, accuracy and images/s; metrics per epoch; a
guard that stops at the first non-finite loss or gradient and names the layer
where it first appeared; callbacks (checkpoints, history, early stopping).
"""

from __future__ import annotations

import time

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint
from .metrics import Accumulator, per_class_accuracy


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf; the message names the first layer where it appeared."""


class Trainer:
    """Fits ``model`` with ``loss_fn`` and ``optimizer``.

    Args:
        scheduler: an ``optim.lr_scheduler`` object, stepped once per epoch.
        callbacks: objects with any of ``on_train_begin(trainer)``,
            ``on_epoch_end(trainer, logs)``, ``on_train_end(trainer)``; one may set
            ``trainer.stop = True``.
        num_classes: for the confusion matrix (default: the logits' width).
        grad_clip: clip the global gradient 2-norm to this value (None: no clipping).
        progress: show a tqdm progress bar per epoch.

    Creating a Trainer configures the process as the ``cnnkit`` command does: worker
    threads on every core (unless ``runtime.set_num_threads`` was called already) and
    ``runtime.tune_malloc()`` (skipped with ``CNNKIT_NO_MALLOC_TUNING=1``).
    """

    def __init__(self, model, loss_fn, optimizer, *, scheduler=None, callbacks=(), num_classes=None,
                 grad_clip: float | None = None, progress: bool = True):
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        self.callbacks = list(callbacks)
        self.num_classes, self.grad_clip, self.progress = num_classes, grad_clip, progress
        self.epoch = 0          # epochs completed
        self.step = 0           # optimizer steps taken
        self.history: list[dict] = []
        self.stop = False
        self.train_loader = None
        from ..runtime import configured, set_num_threads, tune_malloc
        if not configured():  # kernels on every core, unless the user chose a count
            set_num_threads()
        tune_malloc()  # large temporaries reuse heap memory instead of fresh, faulting mmap pages

    # ---- training ---------------------------------------------------------------
    def fit(self, train_loader, val_loader=None, epochs: int = 1) -> list[dict]:
        """Train until ``epochs`` epochs are completed (counting resumed ones); returns the history."""
        self.train_loader, self.stop = train_loader, False
        self._call("on_train_begin")
        while self.epoch < epochs and not self.stop:
            t0 = time.perf_counter()
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(self.epoch)
            train = self._train_epoch(train_loader, epochs)
            logs = {"epoch": self.epoch + 1, **train, "lr": self._lr()}
            if val_loader is not None:
                logs.update(self.evaluate(val_loader, prefix="val_", detail=False))
            logs["seconds"] = time.perf_counter() - t0
            if self.scheduler is not None:
                self.scheduler.step()
            self.epoch += 1
            self.history.append(logs)
            self._call("on_epoch_end", logs)
        self._call("on_train_end")
        return self.history

    def _train_epoch(self, loader, epochs: int) -> dict:
        model, loss_fn, opt = self.model, self.loss_fn, self.optimizer
        model.train()
        acc = None
        seen, t0 = 0, time.perf_counter()
        bar = self._bar(loader, f"epoch {self.epoch + 1}/{epochs}")
        for x, y in bar:
            logits = model(x)
            loss = float(loss_fn(logits, y))
            if not np.isfinite(loss):
                raise NonFiniteError(self._diagnose(x, y, f"loss is {loss}"))
            opt.zero_grad()
            model.needs_input_grad = False  # the images need no gradient: the first conv skips dx
            model.backward(loss_fn.backward())
            if not _grads_finite(model):
                raise NonFiniteError(self._diagnose(x, y, "a gradient is not finite"))
            if self.grad_clip is not None:
                from ..optim.clip import clip_grad_norm_
                clip_grad_norm_(model.parameters(), self.grad_clip)
            opt.step()
            self.step += 1
            acc = acc or Accumulator(self.num_classes or logits.shape[1])
            acc.update(loss, logits, y)
            seen += len(y)
            if hasattr(bar, "set_postfix"):
                r = acc.result()
                bar.set_postfix(loss=f"{r['loss']:.4f}", acc=f"{r['accuracy']:.4f}",
                                img_s=f"{seen / max(time.perf_counter() - t0, 1e-9):.0f}", refresh=False)
        out = acc.result("train_") if acc else {}
        out["images_per_s"] = seen / max(time.perf_counter() - t0, 1e-9)
        return out

    # ---- evaluation ---------------------------------------------------------------
    def evaluate(self, loader, prefix: str = "", detail: bool = True) -> dict:
        """Loss, accuracy (and top-5 for > 5 classes) over ``loader`` in eval mode.

        With ``detail``: also ``confusion`` (rows: true class) and ``per_class_accuracy``.
        """
        was_training = self.model.training
        self.model.eval()
        acc = None
        try:
            for x, y in loader:
                logits = self.model(x)
                loss = float(self.loss_fn(logits, y))
                acc = acc or Accumulator(self.num_classes or logits.shape[1])
                acc.update(loss, logits, y)
        finally:
            self.model.train(was_training)
        if acc is None:
            return {}
        out = acc.result(prefix)
        if detail:
            out[f"{prefix}confusion"] = acc.confusion.tolist()
            out[f"{prefix}per_class_accuracy"] = per_class_accuracy(acc.confusion).tolist()
        return out

    def predict(self, data, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (softmax of the logits) for an array (N, C, H, W) or a loader."""
        was_training = self.model.training
        self.model.eval()
        try:
            batches = ((data[i:i + batch_size], None) for i in range(0, len(data), batch_size)) \
                if isinstance(data, np.ndarray) else data
            probs = []
            for x, _ in batches:
                z = self.model(x)
                z = np.exp(z - z.max(axis=1, keepdims=True))
                probs.append(z / z.sum(axis=1, keepdims=True))
        finally:
            self.model.train(was_training)
        return np.concatenate(probs) if probs else np.zeros((0, 0), np.float32)

    # ---- resuming -----------------------------------------------------------------
    def state(self) -> dict:
        """Everything besides arrays that a checkpoint needs to continue exactly."""
        return {"epoch": self.epoch, "step": self.step, "history": self.history,
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "loader": self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None,
                "rng": {name: g.bit_generator.state for name, g in model_generators(self.model)}}

    def restore(self, path: str, train_loader=None) -> dict:
        """Load a checkpoint written by ``callbacks.Checkpoint`` and continue from it."""
        meta, model_state, optim_state = load_checkpoint(path)
        self.model.load_state_dict(model_state)
        if meta.get("optimizer") is not None:
            self.optimizer.load_state_dict({"hyper": meta["optimizer"], "state": optim_state})
        if self.scheduler is not None and meta.get("scheduler") is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        loader = train_loader if train_loader is not None else self.train_loader
        if loader is not None and meta.get("loader") is not None and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(meta["loader"])
        gens = dict(model_generators(self.model))
        for name, state in (meta.get("rng") or {}).items():
            if name not in gens:
                raise CheckpointError(f"{path}: random generator {name!r} of the checkpoint is not in the model")
            gens[name].bit_generator.state = state
        self.epoch, self.step = int(meta.get("epoch", 0)), int(meta.get("step", 0))
        self.history = list(meta.get("history") or [])
        return meta

    # ---- helpers ------------------------------------------------------------------
    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)

    def _lr(self):
        groups = getattr(self.optimizer, "param_groups", None)
        return groups[0]["lr"] if groups else getattr(self.optimizer, "lr", None)

    def _bar(self, loader, desc):
        if not self.progress:
            return loader
        from tqdm import tqdm
        return tqdm(loader, desc=desc, unit="batch", mininterval=1.0, leave=True)

    def _diagnose(self, x, y, what: str) -> str:
        where = locate_nonfinite(self.model, self.loss_fn, x, y)
        return (f"training stopped at epoch {self.epoch + 1}, step {self.step + 1}: {what}; {where}. "
                "The last checkpoint was not overwritten. Try a smaller learning rate or gradient clipping.")


def model_generators(model):
    """``(dotted name, Generator)`` for every layer that owns a random generator (Dropout)."""
    for name, m in model.named_modules():
        g = m.__dict__.get("rng")
        if isinstance(g, np.random.Generator):
            yield (name or "<root>"), g


def _grads_finite(model) -> bool:
    total = 0.0
    for p in model.parameters():
        if p.grad is not None:
            total += float(np.sum(p.grad))
    return bool(np.isfinite(total))  # a NaN or Inf anywhere makes the sum non-finite


def locate_nonfinite(model, loss_fn, x, y) -> str:
    """Re-run one batch with every leaf layer watched; name where NaN/Inf first appear.

    Reports the first non-finite parameter, the first leaf layer (in execution
    order) whose output is non-finite, and the first one (in backward order) whose
    input gradient or parameter gradient is non-finite. Parameters are not updated.
    """
    for name, p in model.named_parameters():
        if not np.all(np.isfinite(p.data)):
            return f"parameter '{name}' already holds NaN/Inf"
    found = {"forward": None, "backward": None}
    leaves = [(n, m) for n, m in model.named_modules() if not m._children]
    saved = [(p, p.grad) for p in model.parameters()]

    def watch(name, m):
        fwd, bwd = m.forward, m.backward

        def forward(*a):
            out = fwd(*a)
            if found["forward"] is None and not all(np.all(np.isfinite(o)) for o in _as_tuple(out)):
                found["forward"] = f"'{name}' ({type(m).__name__})"
            return out

        def backward(dy):
            dx = bwd(dy)
            bad = not all(d is None or np.all(np.isfinite(d)) for d in _as_tuple(dx))
            bad = bad or any(p.grad is not None and not np.all(np.isfinite(p.grad)) for p in m._parameters.values()
                             if p is not None)
            if found["backward"] is None and bad:
                found["backward"] = f"'{name}' ({type(m).__name__})"
            return dx
        m.__dict__["forward"], m.__dict__["backward"] = forward, backward

    for name, m in leaves:
        watch(name or "<root>", m)
    try:
        with np.errstate(all="ignore"):
            logits = model(x)
            loss_fn(logits, y)
            model.backward(loss_fn.backward())
    except Exception as e:  # the diagnosis must not hide the original problem
        found["error"] = f"{type(e).__name__}: {e}"
    finally:
        for _, m in leaves:
            m.__dict__.pop("forward", None)
            m.__dict__.pop("backward", None)
        for p, g in saved:
            p.grad = g
    parts = []
    if found["forward"]:
        parts.append(f"first non-finite output in layer {found['forward']}")
    if found["backward"]:
        parts.append(f"first non-finite gradient (backward order) in layer {found['backward']}")
    if not parts:
        parts.append("every layer's output and gradient is finite on a re-run (the loss itself overflowed)")
    return "; ".join(parts)


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)
