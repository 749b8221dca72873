"""Shared plumbing of the plots: the Agg backend, atomic PNG/SVG writes, image
preprocessing as ``cnnkit predict`` does it, and capturing one layer's activations
and output gradients during a forward/backward pass."""

from __future__ import annotations

import io
import os
from contextlib import contextmanager

import numpy as np

from .._atomic import atomic_write_bytes
from .._errors import type_error, value_error

FORMATS = ("png", "svg")


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_bytes(fig, fmt: str = "png", dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG or SVG bytes and close it."""
    if fmt not in FORMATS:
        raise value_error("cnnkit.viz", "format must be png or svg", format=fmt)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=dpi)
    finally:
        pyplot().close(fig)
    return buf.getvalue()


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Write ``fig`` atomically to ``path``; the format follows the suffix (.png or .svg)."""
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in FORMATS:
        pyplot().close(fig)
        raise value_error("cnnkit.viz", "the output file must end in .png or .svg", path=path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic_write_bytes(path, figure_bytes(fig, fmt, dpi))
    return path


def normalize01(a: np.ndarray, axis=None) -> np.ndarray:
    """Scale to [0, 1] by min and max over ``axis`` (a constant array becomes 0.5)."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = a.min(axis=axis, keepdims=True), a.max(axis=axis, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1), 0.5)


# ---- images -------------------------------------------------------------------------
def data_meta(meta: dict | None, model) -> dict:
    """A checkpoint's ``data`` entry with defaults for what it lacks (mean 0, std 1)."""
    data = dict((meta or {}).get("data") or {})
    c = int(data.get("input_shape", [getattr(model, "config", {}).get("in_channels", 1)])[0])
    data.setdefault("mean", [0.0] * c)
    data.setdefault("std", [1.0] * c)
    return data


def load_image(path: str, input_shape) -> np.ndarray:
    """Read a PNG/JPEG as float32 (C, H, W) in [0, 1], grey for C = 1, resized bilinearly
    to the model's input (as ``cnnkit predict`` does)."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = (int(v) for v in input_shape)
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as e:
        raise value_error("cnnkit viz", f"cannot read the image: {e}", path=path) from None
    return a[None] if c == 1 else a.transpose(2, 0, 1)  # (C, H, W)


def standardize(images01: np.ndarray, data: dict) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> the model's input: ``(x - mean) / std`` per channel."""
    x = np.asarray(images01, dtype=np.float32)
    mean = np.asarray(data["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(data["std"], np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def show_image(ax, img01: np.ndarray, **kw) -> None:
    """Draw a (C, H, W) image in [0, 1]: grey for one channel, RGB for three."""
    img = np.clip(np.asarray(img01, dtype=np.float64), 0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, **kw)
    else:
        ax.imshow(img[:3].transpose(1, 2, 0), **kw)
    ax.set_xticks([])
    ax.set_yticks([])


# ---- layers -------------------------------------------------------------------------
def find_layer(model, name: str, where: str = "cnnkit.viz"):
    modules = dict(model.named_modules())
    if name not in modules:
        shown = [n for n in modules if n][:30]
        raise value_error(where, f"no layer of that name; layers: {', '.join(shown)}", layer=name)
    return modules[name]


def conv_layers(model) -> list[tuple[str, object]]:
    """``(name, layer)`` of every layer with a 4-D ``weight`` (convolutions), in model order."""
    out = []
    for name, layer in model.named_modules():
        w = layer._parameters.get("weight") if hasattr(layer, "_parameters") else None
        if name and w is not None and w.data.ndim == 4:
            out.append((name, layer))
    return out


@contextmanager
def capture(model, names):
    """Record the output (``"out"``) and, after a backward, the output gradient (``"grad"``)
    of each named layer: ``with capture(model, ["features.0"]) as rec: ...``; then
    ``rec["features.0"]["out"]``. The layers' own forward/backward run unchanged."""
    layers = {n: find_layer(model, n) for n in names}
    rec = {n: {} for n in names}

    def wrap(name, layer):
        fwd, bwd = layer.forward, layer.backward

        def forward(*xs):
            y = fwd(*xs)
            rec[name]["out"] = y
            return y

        def backward(dy):
            rec[name]["grad"] = dy
            return bwd(dy)
        object.__setattr__(layer, "forward", forward)
        object.__setattr__(layer, "backward", backward)

    for n, layer in layers.items():
        if "forward" in layer.__dict__ or "backward" in layer.__dict__:
            raise type_error("cnnkit.viz.capture", "the layer is already being captured", layer=n)
        wrap(n, layer)
    try:
        yield rec
    finally:
        for layer in layers.values():
            layer.__dict__.pop("forward", None)
            layer.__dict__.pop("backward", None)
