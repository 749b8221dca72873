"""Batch transforms: each works on a whole batch ``x`` of shape (B, C, H, W) at once.

Every transform is called as ``t(x, rng)``. ``rng`` is a ``numpy.random.Generator``;
the deterministic transforms (``ToFloat``, ``Normalize``, ``Resize``) ignore it, the
random ones (``RandomCrop``, ``RandomHorizontalFlip``) require it and draw one value
per image, so every image in a batch gets its own crop offset and flip. A transform
never writes into the array it is given.

Augmentation is the caller's choice: build one transform for training, with the
random transforms, and one for evaluation, without them::

    train_tf = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToFloat(), Normalize(mean, std)])
    eval_tf = Compose([ToFloat(), Normalize(mean, std)])

``DataLoader`` hands each batch a Generator derived from (seed, epoch, batch index),
so the augmentation of any batch is reproducible, also after a resume.
"""

from __future__ import annotations

import numpy as np

from .._errors import type_error, value_error

__all__ = ["Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "RepeatChannels", "Resize", "ToFloat"]


def _check_batch(where: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise value_error(where, "expected a batch of shape (B, C, H, W)", shape=x.shape)
    return x


def _check_rng(where: str, rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise type_error(where, "a random transform needs a numpy.random.Generator as its second argument",
                         rng=type(rng).__name__)
    return rng


def _pair(where: str, name: str, v) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(e) for e in v)
    if len(v) != 2 or min(v) < 1:
        raise value_error(where, f"{name} must be a positive int or a pair (height, width)", **{name: v})
    return v


class ToFloat:
    """uint8 in [0, 255] -> float32 in [0, 1] (``x / 255``). Deterministic."""

    def __call__(self, x, rng=None):
        x = _check_batch("ToFloat", x)
        if x.dtype != np.uint8:
            raise type_error("ToFloat", "expected uint8 pixels in [0, 255]", dtype=str(x.dtype))
        return x.astype(np.float32) / np.float32(255)

    def __repr__(self):
        return "ToFloat()"


class Normalize:
    """Per-channel standardization, torchvision's formula ``(x - mean[c]) / std[c]``. Deterministic.

    Takes floating input (apply ``ToFloat`` first: mean and std are in [0, 1] units,
    as ``ArrayDataset.mean_std()`` returns them); the dtype is kept.
    """

    def __init__(self, mean, std):
        self.mean = tuple(float(m) for m in np.atleast_1d(mean))
        self.std = tuple(float(s) for s in np.atleast_1d(std))
        if len(self.mean) != len(self.std):
            raise value_error("Normalize", "mean and std need one value per channel", mean=self.mean, std=self.std)
        if min(self.std) <= 0:
            raise value_error("Normalize", "std must be positive", std=self.std)

    def __call__(self, x, rng=None):
        x = _check_batch("Normalize", x)
        if not np.issubdtype(x.dtype, np.floating):
            raise type_error("Normalize", "expected floating input; apply ToFloat() first", dtype=str(x.dtype))
        if x.shape[1] != len(self.mean):
            raise value_error("Normalize", "the number of channels does not match mean/std",
                              input=x.shape, mean=self.mean)
        mean = np.asarray(self.mean, x.dtype).reshape(1, -1, 1, 1)  # (1, C, 1, 1)
        std = np.asarray(self.std, x.dtype).reshape(1, -1, 1, 1)
        return (x - mean) / std

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"


class RandomCrop:
    """Crop a ``size`` window at a random offset from each image, after zero padding.

    Each image is first padded with ``padding`` zeros on all four sides, then a window
    of ``size = (h, w)`` is cut at ``top ~ U{0..H + 2p - h}``, ``left ~ U{0..W + 2p - w}``,
    drawn per image as ``top = rng.integers(0, H + 2p - h + 1, B)`` and then
    ``left = rng.integers(0, W + 2p - w + 1, B)``. Works on any dtype. Augmentation:
    use it in the training transform only.

    Shape: (B, C, H, W) -> (B, C, h, w).
    """

    def __init__(self, size, padding: int = 0):
        self.size = _pair("RandomCrop", "size", size)
        if int(padding) < 0:
            raise value_error("RandomCrop", "padding must be >= 0", padding=padding)
        self.padding = int(padding)

    def __call__(self, x, rng=None):
        x = _check_batch("RandomCrop", x)
        rng = _check_rng("RandomCrop", rng)
        B, C, H, W = x.shape
        p, (h, w) = self.padding, self.size
        if h > H + 2 * p or w > W + 2 * p:
            raise value_error("RandomCrop", "the crop is larger than the padded image",
                              input=x.shape, size=self.size, padding=p)
        top = rng.integers(0, H + 2 * p - h + 1, size=B)
        left = rng.integers(0, W + 2 * p - w + 1, size=B)
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x  # (B, C, H+2p, W+2p)
        rows = top[:, None] + np.arange(h)  # (B, h)
        cols = left[:, None] + np.arange(w)  # (B, w)
        b = np.arange(B)[:, None, None, None]
        c = np.arange(C)[None, :, None, None]
        return xp[b, c, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, h, w)

    def __repr__(self):
        pad = f", padding={self.padding}" if self.padding else ""
        return f"RandomCrop(size={self.size}{pad})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p`` (drawn per image: ``rng.random(B) < p``).

    Augmentation: use it in the training transform only.
    """

    def __init__(self, p: float = 0.5):
        if not 0.0 <= float(p) <= 1.0:
            raise value_error("RandomHorizontalFlip", "p must be in [0, 1]", p=p)
        self.p = float(p)

    def __call__(self, x, rng=None):
        x = _check_batch("RandomHorizontalFlip", x)
        rng = _check_rng("RandomHorizontalFlip", rng)
        flip = rng.random(x.shape[0]) < self.p  # (B,)
        return np.where(flip[:, None, None, None], x[..., ::-1], x)

    def __repr__(self):
        return "RandomHorizontalFlip()" if self.p == 0.5 else f"RandomHorizontalFlip(p={self.p})"


def _bilinear_taps(n_in: int, n_out: int):
    """Source indices and weights along one axis, half-pixel centers (align_corners=False).

    ``src = (dst + 0.5) * n_in / n_out - 0.5``, clamped below at 0, as PyTorch's
    ``F.interpolate(mode="bilinear", align_corners=False)`` computes it.
    """
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    return i0, i1, frac


class Resize:
    """Bilinear resize to ``size = (h, w)``, in NumPy. Deterministic.

    Matches ``torch.nn.functional.interpolate(x, (h, w), mode="bilinear",
    align_corners=False)``: half-pixel centers, edge pixels repeated, no
    antialiasing when shrinking (torchvision's tensor ``Resize`` antialiases by
    default; this one does not). Float input keeps its dtype; uint8 input is
    computed in float32, rounded and clipped back to uint8.

    Shape: (B, C, H, W) -> (B, C, h, w).
    """

    def __init__(self, size):
        self.size = _pair("Resize", "size", size)

    def __call__(self, x, rng=None):
        x = _check_batch("Resize", x)
        h, w = self.size
        is_uint8 = x.dtype == np.uint8
        if not (is_uint8 or np.issubdtype(x.dtype, np.floating)):
            raise type_error("Resize", "expected uint8 or floating input", dtype=str(x.dtype))
        if x.size == 0:
            if min(x.shape[2:]) == 0 and x.shape[0] * x.shape[1] > 0:
                raise value_error("Resize", "cannot resize an image with no pixels", input=x.shape)
            return np.zeros(x.shape[:2] + self.size, x.dtype)
        xf = x.astype(np.float32) if is_uint8 else x
        r0, r1, fr = _bilinear_taps(x.shape[2], h)
        c0, c1, fc = _bilinear_taps(x.shape[3], w)
        fr = fr.astype(xf.dtype)[:, None]  # (h, 1)
        fc = fc.astype(xf.dtype)  # (w,)
        rows = xf[:, :, r0] * (1 - fr) + xf[:, :, r1] * fr  # (B, C, h, W)
        out = rows[..., c0] * (1 - fc) + rows[..., c1] * fc  # (B, C, h, w)
        if is_uint8:
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out

    def __repr__(self):
        return f"Resize(size={self.size})"


class RepeatChannels:
    """Grey to colour: repeat a one-channel batch ``n`` times along C (``n=3``: the grey image
    as RGB, how an ImageNet-pretrained model is fine-tuned on grey images). Deterministic."""

    def __init__(self, n: int = 3):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise value_error("RepeatChannels", "n must be a positive int", n=n)
        self.n = int(n)

    def __call__(self, x, rng=None):
        x = _check_batch("RepeatChannels", x)
        if x.shape[1] != 1:
            raise value_error("RepeatChannels", "expected a one-channel batch", shape=x.shape)
        return np.repeat(x, self.n, axis=1)

    def __repr__(self):
        return f"RepeatChannels(n={self.n})"


class Compose:
    """Apply transforms in order, passing the same Generator to each: ``Compose([a, b])(x, rng) = b(a(x, rng), rng)``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise type_error("Compose", f"transform {i} is not callable", transform=repr(t))

    def __call__(self, x, rng=None):
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])" if inner else "Compose([])"
