"""The sliding window, step by step: ``cnnkit explain window`` (text) and its PNG.

The lecture's example is its 5x5 image, zero-padded to 7x7::

    60 113  56 139  85
    73 121  54  84 128
   131  99  70 129 127
    80  57 115  69 134
   104 126 123  95 130

and the sliding-window dot product ``S(i, j) = sum_m sum_n I(i + m, j + n) K(m, n)``
(correlation: no kernel flip). The lecture's text keeps the image but not the kernel
of its figure, so the default kernel here is the 3x3 sharpen kernel
``[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]``: output (0, 0) is
``0*0 + 0*(-1) + 0*0 + 0*(-1) + 60*5 + 113*(-1) + 0*0 + 73*(-1) + 121*0 = 114``.

With stride S and dilation D the window of output (i, j) reads padded-input rows
``S*i + D*m`` and columns ``S*j + D*n`` (the lecture's stride slide writes
``I(i + s*m, j + s*n)``, which spaces the kernel taps: that indexing is dilation).
"""

from __future__ import annotations

import io

import numpy as np

from .._atomic import atomic_write_bytes
from .._errors import type_error, value_error
from ..functional._check import pair
from ..functional.window import output_hw, resolve_padding
from .explain import Explanation

LECTURE_IMAGE = np.array([[60, 113, 56, 139, 85],
                          [73, 121, 54, 84, 128],
                          [131, 99, 70, 129, 127],
                          [80, 57, 115, 69, 134],
                          [104, 126, 123, 95, 130]], dtype=np.float64)
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64)


def _num(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:g}"


def _factor(v) -> str:
    s = _num(v)
    return f"({s})" if s.startswith("-") else s


def _matrix(values: str, where: str, name: str) -> np.ndarray:
    """``'1 2 3 / 4 5 6'`` (rows split by '/' or ';', entries by spaces or commas) -> 2-D array."""
    rows = [r.replace(",", " ").split() for r in values.replace(";", "/").split("/")]
    rows = [r for r in rows if r]
    if not rows or len({len(r) for r in rows}) != 1:
        raise value_error(where, f"{name} rows must all have the same length", **{name: values})
    try:
        arr = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError:
        raise value_error(where, f"{name} must be numbers, rows split by '/'", **{name: values}) from None
    return arr


def window_arrays(input=None, input_values=None, kernel=None, kernel_values=None):
    """The command line's input and kernel: sizes and/or values, with the defaults.

    Input: the lecture's image for 5x5 (the default size); other sizes count 1, 2, 3, ...
    row by row. Kernel: the sharpen kernel for 3x3 (the default size), else ones.
    """
    where = "explain window"
    arrays = []
    for size, values, name, default_size in ((input, input_values, "input", 5), (kernel, kernel_values, "kernel", 3)):
        if values is not None:
            arr = _matrix(values, where, f"{name}_values")
            if size is not None and pair(size, name, where, minimum=1) != arr.shape:
                raise value_error(where, f"--{name} differs from the shape of --{name}-values",
                                  **{name: size, "shape": arr.shape})
        else:
            h, w = pair(default_size if size is None else size, name, where, minimum=1)
            if name == "input":
                counting = np.arange(1, h * w + 1, dtype=np.float64).reshape(h, w)
                arr = LECTURE_IMAGE.copy() if (h, w) == (5, 5) else counting
            else:
                arr = SHARPEN.copy() if (h, w) == (3, 3) else np.ones((h, w))
        arrays.append(arr)
    return arrays[0], arrays[1]


def _grid(arr: np.ndarray, marks: set, indent: str = "  ") -> list[str]:
    """Rows of right-aligned numbers; marked cells in brackets."""
    width = max(len(_num(v)) for v in arr.ravel())
    lines = []
    for r in range(arr.shape[0]):
        cells = [(f"[{_num(v):>{width}}]" if (r, c) in marks else f" {_num(v):>{width}} ")
                 for c, v in enumerate(arr[r])]
        lines.append(indent + " ".join(cells).rstrip())
    return lines


def explain_window(input=None, kernel=None, *, stride=1, padding=1, dilation=1, at=(0, 0)) -> Explanation:
    """The sliding-window dot product of one output position, with the whole output map.

    ``input`` (2-D, default the lecture's 5x5 image) and ``kernel`` (2-D, default the
    sharpen kernel) are array-likes; ``padding`` as for ``Conv2d`` (int, pair, 4-tuple,
    'same', 'valid'); ``at`` = (row, col) of the output to explain. Fields: input,
    kernel, padded, padding (4-tuple), output (the map), at, window (the K x K input
    values the kernel met), products, value (= output[at]), taps ((row, col) of the
    window in the padded input).
    """
    where = "explain window"
    x = LECTURE_IMAGE if input is None else np.asarray(input, dtype=np.float64)
    k = SHARPEN if kernel is None else np.asarray(kernel, dtype=np.float64)
    for name, arr in (("input", x), ("kernel", k)):
        if arr.ndim != 2 or arr.size == 0:
            raise value_error(where, f"{name} must be a non-empty 2-D array", **{name: arr.shape})
    s = pair(stride, "stride", where, minimum=1)
    d = pair(dilation, "dilation", where, minimum=1)
    pads = resolve_padding(padding, k.shape, s, d, x.shape, where)
    oh, ow = output_hw(x.shape, k.shape, s, d, pads, where, input_shape=x.shape, padding=padding)
    top, bottom, left, right = pads
    xp = np.pad(x, ((top, bottom), (left, right)))
    kh, kw = k.shape

    def taps(i, j):
        return [[(s[0] * i + d[0] * m, s[1] * j + d[1] * q) for q in range(kw)] for m in range(kh)]

    out = np.empty((oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[i, j] = sum(xp[r, c] * k[m, q] for m, row in enumerate(taps(i, j)) for q, (r, c) in enumerate(row))
    if not (isinstance(at, (tuple, list)) and len(at) == 2):
        raise type_error(where, "at must be (row, col)", at=at)
    ai, aj = int(at[0]), int(at[1])
    if not (0 <= ai < oh and 0 <= aj < ow):
        raise value_error(where, f"at must lie in the {oh}x{ow} output", at=tuple(at))
    tap = taps(ai, aj)
    window = np.array([[xp[r, c] for r, c in row] for row in tap])
    products = [[f"{_num(xp[r, c])}*{_factor(k[m, q])}" for q, (r, c) in enumerate(row)]
                for m, row in enumerate(tap)]

    from .explain import _Axis
    ax_h = _Axis(x.shape[0], kh, s[0], d[0], top, bottom)
    ax_w = _Axis(x.shape[1], kw, s[1], d[1], left, right)
    square = (x.shape[0], kh, s[0], d[0], top, bottom) == (x.shape[1], kw, s[1], d[1], left, right)
    pad_text = (f"padding {top}" if len(set(pads)) == 1
                else f"padding (top {top}, bottom {bottom}, left {left}, right {right})")
    lines = [f"Sliding window: input {x.shape[0]}x{x.shape[1]}, kernel {kh}x{kw}, stride "
             f"{s[0] if s[0] == s[1] else f'{s[0]}x{s[1]}'}, {pad_text}"
             + (f", dilation {d[0] if d[0] == d[1] else f'{d[0]}x{d[1]}'}" if d != (1, 1) else "")]
    if square:
        lines.append(f"  {ax_h.formula()}: output {oh}x{ow}")
    else:
        lines += [f"  height: {ax_h.formula(('P_top', 'P_bottom'), 'O_h')}",
                  f"  width: {ax_w.formula(('P_left', 'P_right'), 'O_w')}"]
    lines.append((f"Padded input {xp.shape[0]}x{xp.shape[1]} (the zeros around the edge are padding; "
                  if any(pads) else f"Input {xp.shape[0]}x{xp.shape[1]} (no padding; ")
                 + f"[ ] marks the window of output ({ai}, {aj})):")
    lines += _grid(xp, {rc for row in tap for rc in row})
    note = " (the sharpen kernel: the lecture's text does not keep its figure's kernel)" if (
        kernel is None or np.array_equal(k, SHARPEN)) else ""
    lines.append(f"Kernel {kh}x{kw}{note}:")
    lines += _grid(k, set())
    lines.append(f"Output ({ai}, {aj}) = sum_m sum_n I({s[0]}*{ai} + {d[0]}*m, {s[1]}*{aj} + {d[1]}*n) K(m, n)"
                 if (s, d) != ((1, 1), (1, 1)) else f"Output ({ai}, {aj}) = sum_m sum_n I({ai} + m, {aj} + n) K(m, n)")
    if s != (1, 1):
        lines.append("  (stride multiplies the output index; the lecture's stride slide writes I(i + s*m, j + s*n), "
                     "which spaces the kernel taps: that is dilation)")
    for m, row in enumerate(products):
        lines.append(("  = " if m == 0 else "  + ") + " + ".join(row))
    lines.append(f"  = {_num(out[ai, aj])}")
    lines.append(f"Output map {oh}x{ow} ([ ] marks ({ai}, {aj})):")
    lines += _grid(out, {(ai, aj)})
    values = dict(input=x, kernel=k, padded=xp, padding=pads, stride=s, dilation=d, output=out, at=(ai, aj),
                  window=window, products=products, value=float(out[ai, aj]),
                  taps=[rc for row in tap for rc in row])
    return Explanation("window", values, tuple(lines))


def save_window_png(e: Explanation, path: str, *, dpi: int = 100, figsize=(12.0, 4.5)) -> tuple[int, int]:
    """Draw ``explain_window``'s result: the padded input with the window's taps outlined,
    the kernel, and the output map with the explained position outlined. Written
    atomically; returns the image's (width, height) in pixels (``figsize * dpi``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if e.topic != "window":
        raise value_error("save_window_png", "expected the result of explain_window", topic=e.topic)
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw=dict(width_ratios=[e.padded.shape[1], e.kernel.shape[1] + 1,
                                                                 e.output.shape[1]]))
    top, _, left, _ = e.padding
    h, w = e.input.shape
    ai, aj = e.at
    panels = ((axes[0], e.padded, f"padded input (window of output ({ai}, {aj}))", "Blues", e.taps),
              (axes[1], e.kernel, "kernel", "Oranges", []),
              (axes[2], e.output, f"output: ({ai}, {aj}) = {_num(e.value)}", "Greens", [(ai, aj)]))
    for ax, arr, title, cmap, marks in panels:
        lo, hi = float(arr.min()), float(arr.max())
        ax.imshow(arr, cmap=cmap, vmin=lo, vmax=hi + 0.6 * (hi - lo) + 1e-9)  # light colours: text stays legible
        size = max(5.0, min(11.0, 70.0 / max(arr.shape)))
        for (r, c), v in np.ndenumerate(arr):
            ax.text(c, r, _num(v), ha="center", va="center", fontsize=size)
        for r, c in marks:
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, edgecolor="black",
                                linestyle="--", linewidth=1))  # the input inside its padding
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return int(round(figsize[0] * dpi)), int(round(figsize[1] * dpi))


__all__ = ["LECTURE_IMAGE", "SHARPEN", "explain_window", "save_window_png", "window_arrays"]
