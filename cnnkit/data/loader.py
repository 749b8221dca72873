"""Mini-batches from an in-memory data set, reproducible and resumable.

The loader is a cursor ``(epoch, batch)``. Iterating it yields the batches from the
cursor to the end of that epoch, moving the cursor as each batch is handed out;
when the epoch is used up the cursor moves to ``(epoch + 1, 0)``. Leaving a loop
early leaves the cursor where it stopped, so the next loop goes on from there
(``set_epoch(e)`` moves it to another epoch; ``set_epoch(e, batch=0)`` restarts one).

Randomness (all from ``seed``, a non-negative int):

- epoch ``e``'s order is ``np.random.default_rng([seed, e]).permutation(N)`` when
  ``shuffle=True`` (else ``0..N-1``), so any epoch can be rebuilt on its own;
- batch ``b`` of epoch ``e`` gets the Generator
  ``np.random.default_rng([seed, e, b, TRANSFORM_STREAM])`` for its transform, so
  augmentation does not depend on what ran before. (The constant last word keeps
  the two streams apart: NumPy's SeedSequence treats ``[seed, e]`` and
  ``[seed, e, 0, 0]`` alike.)

``state_dict()`` is ``{"epoch", "batch", "seed", ...}``, plain JSON. A new loader
on the same data given ``load_state_dict(state)`` yields exactly the batches the
interrupted one had left in that epoch, then the same later epochs, with the same
augmentation.
"""

from __future__ import annotations

import numpy as np

from .._errors import type_error, value_error
from .transforms import ToFloat

__all__ = ["DataLoader", "TRANSFORM_STREAM"]

TRANSFORM_STREAM = 0x7F  # last word of the transform Generator's seed (see the module docstring)
STATE_VERSION = 1


class DataLoader:
    """Batches ``(x, y)`` of ``dataset``: x float32 (B, C, H, W) after ``transform``, y int64 (B,).

    ``dataset`` is an ``ArrayDataset`` (anything with ``.images`` (N, C, H, W) and
    ``.labels`` (N,)), or any object with ``len`` and ``ds[i] -> (image, label)``.
    ``transform(x_uint8_batch, rng)`` must return floating pixels; without one the
    pixels are only scaled to [0, 1] (``ToFloat``). Pass a training transform with
    augmentation to the training loader and a plain one to the evaluation loader.

    ``len(loader)`` is the number of batches per epoch: ``ceil(N / batch_size)``, or
    ``floor`` with ``drop_last=True`` (which drops the last, partial batch).
    """

    def __init__(self, dataset, batch_size: int = 64, shuffle: bool = False, drop_last: bool = False,
                 transform=None, seed: int = 0):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise value_error("DataLoader", "batch_size must be a positive int", batch_size=batch_size)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise value_error("DataLoader", "seed must be a non-negative int", seed=seed)
        if transform is not None and not callable(transform):
            raise type_error("DataLoader", "transform must be callable as transform(x, rng)",
                             transform=repr(transform))
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.transform = transform if transform is not None else ToFloat()
        self.seed = int(seed)
        self.epoch = 0
        self.batch = 0  # the next batch to hand out in self.epoch

    # ---- sizes and order -------------------------------------------------------------------
    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (a permutation when shuffling, else ``arange``)."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(n)

    def batch_rng(self, epoch: int, batch: int) -> np.random.Generator:
        """The Generator that batch ``batch`` of ``epoch`` passes to the transform."""
        return np.random.default_rng([self.seed, int(epoch), int(batch), TRANSFORM_STREAM])

    def _gather(self, idx: np.ndarray):
        ds = self.dataset
        if hasattr(ds, "images") and hasattr(ds, "labels"):
            return ds.images[idx], np.asarray(ds.labels[idx], dtype=np.int64)
        items = [ds[int(i)] for i in idx]
        return np.stack([np.asarray(x) for x, _ in items]), np.asarray([y for _, y in items], dtype=np.int64)

    def get_batch(self, epoch: int, batch: int):
        """Batch ``batch`` of ``epoch``, computed on its own (the cursor does not move)."""
        if not 0 <= batch < len(self):
            raise value_error("DataLoader", "batch index out of range", batch=batch, batches=len(self))
        idx = self.order(epoch)[batch * self.batch_size:(batch + 1) * self.batch_size]
        return self._make(idx, epoch, batch)

    def _make(self, idx, epoch, batch):
        x, y = self._gather(idx)
        x = self.transform(x, self.batch_rng(epoch, batch))
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise type_error("DataLoader", "the transform must return floating pixels; add ToFloat()",
                             dtype=str(x.dtype), transform=repr(self.transform))
        return x.astype(np.float32, copy=False), y

    # ---- iteration -------------------------------------------------------------------------
    def __iter__(self):
        epoch = self.epoch
        order = self.order(epoch)
        while self.epoch == epoch and self.batch < len(self):
            b = self.batch
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            self.batch = b + 1  # advance before handing out: a state saved now resumes after this batch
            yield self._make(idx, epoch, b)
        if self.epoch == epoch and self.batch >= len(self):
            self.epoch, self.batch = epoch + 1, 0

    def set_epoch(self, epoch: int, batch: int | None = None) -> None:
        """Move the cursor to ``epoch`` (at ``batch``).

        Without ``batch``: the start of ``epoch``, unless the cursor is already in
        ``epoch``, where it keeps its batch. So the usual ``set_epoch(e)`` at the top
        of each epoch (PyTorch's sampler habit) does not undo a mid-epoch
        ``load_state_dict``. Pass ``batch=0`` to restart an epoch from its first batch.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise value_error("DataLoader", "epoch must be a non-negative int", epoch=epoch)
        if batch is None:
            batch = self.batch if int(epoch) == self.epoch else 0
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or not 0 <= batch <= len(self):
            raise value_error("DataLoader", "batch must be an int in 0..len(loader)", batch=batch,
                              batches=len(self))
        self.epoch, self.batch = int(epoch), int(batch)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The cursor as plain JSON: epoch, next batch, seed, and the settings that fix the order."""
        return dict(version=STATE_VERSION, epoch=self.epoch, batch=self.batch, seed=self.seed,
                    batch_size=self.batch_size, shuffle=self.shuffle, drop_last=self.drop_last,
                    num_samples=len(self.dataset))

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``: the next iteration yields the rest of the saved epoch.

        The seed is taken from the state. Batch size, shuffling, ``drop_last`` and the
        data set size must match, or the batches could not be the same: a mismatch
        raises ``ValueError``.
        """
        if not isinstance(state, dict) or not {"epoch", "batch", "seed"} <= set(state):
            raise value_error("DataLoader.load_state_dict", "expected a dict with epoch, batch and seed",
                              state=repr(state))
        for key, mine in (("batch_size", self.batch_size), ("shuffle", self.shuffle),
                          ("drop_last", self.drop_last), ("num_samples", len(self.dataset))):
            if key in state and state[key] != mine:
                raise value_error("DataLoader.load_state_dict", f"the saved {key} differs from this loader's",
                                  saved=state[key], loader=mine)
        epoch, batch, seed = state["epoch"], state["batch"], state["seed"]
        for key, v in (("epoch", epoch), ("batch", batch), ("seed", seed)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise value_error("DataLoader.load_state_dict", f"{key} must be a non-negative int",
                                  **{key: v})
        if batch > len(self):
            raise value_error("DataLoader.load_state_dict", "batch is past the end of the epoch",
                              batch=batch, batches=len(self))
        self.epoch, self.batch, self.seed = epoch, batch, seed

    def __repr__(self):
        return (f"DataLoader(n={len(self.dataset)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed}, transform={self.transform!r})")
