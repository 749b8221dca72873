"""The sliding window shared by convolution and pooling.

Letters: N batch, C channels, H/W input height/width, K kernel size, S stride,
D dilation, P padding (top/bottom/left/right), O output size.

A window at output position ``o`` covers input rows ``o*S - P_top + i*D`` for
``i in 0..K-1``. Instead of looping over output positions, every kernel here
loops over the K*K kernel offsets ``(i, j)``: for a fixed offset the input pixels
that all output positions see form one strided slice of the padded input,
``xp[..., i*D : i*D + S*(O-1) + 1 : S]`` (Chainer's ``im2col_cpu`` does the same).
Convolution copies those slices into columns and multiplies; max pooling keeps a
running maximum over them; average pooling sums them; every backward adds into
the same slices.
"""

from __future__ import annotations

import numbers
from typing import Iterator

import numpy as np

from .._errors import type_error, value_error
from ..runtime import jit_kernels, parallel_ranges
from ._check import pair


def conv_out_size(size: int, kernel: int, stride: int = 1, pad_before: int = 0,
                  pad_after: int = 0, dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a sliding window along one axis.

    ``O = floor((I + P_before + P_after - D*(K-1) - 1) / S) + 1``, the lecture's
    ``O = (I - K + 2P)/S + 1`` with dilation and asymmetric padding. With
    ``ceil_mode`` the division rounds up, but (as PyTorch) the last window must
    start inside the input or the leading padding. May return <= 0; callers check.
    """
    span = size + pad_before + pad_after - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1  # floor division, as PyTorch's div_rtn
    if ceil_mode and (out - 1) * stride >= size + pad_before:
        out -= 1
    return out


def resolve_padding(padding, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int], in_hw: tuple[int, int],
                    where: str) -> tuple[int, int, int, int]:
    """Normalize ``padding`` to ``(top, bottom, left, right)``.

    Accepts an int, a pair ``(ph, pw)``, a 4-tuple ``(top, bottom, left, right)``,
    ``'valid'`` (no padding) or ``'same'``: output = ceil(input / stride) with
    total padding ``max((O-1)*S + D*(K-1) + 1 - I, 0)``, the odd pixel going to the
    bottom/right (TensorFlow SAME = ONNX SAME_UPPER; PyTorch's ``'same'`` at stride 1).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            pads = []
            for size, k, s, d in zip(in_hw, kernel, stride, dilation):
                out = -(-size // s)  # ceil(size / s)
                total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        raise value_error(where, "padding must be an int, a pair, a 4-tuple, 'valid' or 'same'",
                          padding=padding)
    if (isinstance(padding, (tuple, list)) and len(padding) == 4
            and all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in padding)):
        pads = tuple(int(p) for p in padding)
    else:
        try:
            ph, pw = pair(padding, "padding", where)
        except TypeError:
            raise type_error(where, "padding must be an int, a pair, a 4-tuple "
                             "(top, bottom, left, right), 'valid' or 'same'", padding=padding) from None
        pads = (ph, ph, pw, pw)
    if min(pads) < 0:
        raise value_error(where, "padding must be non-negative", padding=padding)
    return pads


def check_padding_spec(padding, where: str) -> None:
    """Validate a padding argument without an input (constructors call this)."""
    resolve_padding(padding, (1, 1), (1, 1), (1, 1), (1, 1), where)


def output_hw(in_hw, kernel, stride, dilation, pads, where: str, *, ceil_mode: bool = False,
              input_shape=None, padding=None) -> tuple[int, int]:
    """``(H_out, W_out)``, or a ValueError that shows the formula with the numbers."""
    out = []
    for axis, size, k, s, d, pb, pa in (("height", in_hw[0], kernel[0], stride[0], dilation[0], *pads[:2]),
                                        ("width", in_hw[1], kernel[1], stride[1], dilation[1], *pads[2:])):
        o = conv_out_size(size, k, s, pb, pa, d, ceil_mode)
        if o < 1:
            k_eff = d * (k - 1) + 1
            formula = (f"(I - K + 2P)/S + 1 = ({size} - {k_eff} + {pb + pa})/{s} + 1"
                       + (f" (K = D*(k-1) + 1 = {k_eff} with dilation {d})" if d > 1 else ""))
            raise value_error(where, f"output {axis} would be {o}: {formula}; the kernel is larger "
                              "than the padded input",
                              input=tuple(input_shape) if input_shape is not None else None,
                              kernel_size=tuple(kernel), padding=padding if padding is not None else pads,
                              stride=tuple(stride), dilation=tuple(dilation))
        out.append(o)
    return out[0], out[1]


def window_slices(kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                  out_hw: tuple[int, int]) -> Iterator[tuple[int, int, tuple[slice, slice]]]:
    """For each kernel offset ``(i, j)`` in row-major order, the (rows, cols) slices
    of the padded input that the ``out_hw`` output positions see at that offset."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
        for j in range(kw):
            yield i, j, (rows, slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def padded_size(out_hw, kernel, stride, dilation) -> tuple[int, int]:
    """The padded input size that ``out_hw`` windows exactly need."""
    return tuple((o - 1) * s + d * (k - 1) + 1 for o, k, s, d in zip(out_hw, kernel, stride, dilation))


def is_channel_major(x: np.ndarray) -> bool:
    """True when an (N, C, H, W) array is stored as (C, N, H, W) in memory."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(1, 0, 2, 3).flags.c_contiguous


def planes(a: np.ndarray):
    """``(flat, sn, sc)``: a 1-D array over a's memory in which plane (n, c) of a (N, C,
    H, W) starts at ``n*sn + c*sc``, rows contiguous. NCHW and channel-major (C, N, H, W)
    memory are used as they are; other layouts are copied to NCHW first."""
    n, c, h, w = a.shape
    if is_channel_major(a):
        return a.transpose(1, 0, 2, 3).reshape(-1), h * w, n * h * w
    return np.ascontiguousarray(a).reshape(-1), c * h * w, h * w


class Planes:
    """An (N, C, H, W) array kept by reference, with its memory as :func:`planes` gives it:
    the source of the kernels that read x in place of a padded copy (conv's
    ``_jit.im2col_unpadded``, Winograd's ``_jit.winograd_input_from_x``), which the
    backward reads again (as BatchNorm and the 1x1 conv keep their input)."""

    __slots__ = ("x", "flat", "sn", "sc")

    def __init__(self, x: np.ndarray):
        self.x = x
        self.flat, self.sn, self.sc = planes(x)


def pad_channel_major(x: np.ndarray, pads, size_hw, fill: float = 0.0) -> np.ndarray:
    """Copy an (N, C, H, W) array into a (C, N, Hp, Wp) buffer filled with ``fill``.

    ``size_hw`` is the buffer's (Hp, Wp): the padded size, cropped or extended to
    what the windows need (ceil mode reaches past the bottom/right padding).
    """
    n, c, h, w = x.shape
    top, _, left, _ = pads
    hp, wp = size_hw
    needs_fill = top or left or hp > top + h or wp > left + w
    if not needs_fill:  # windows stay inside the input: read it in place
        return x.transpose(1, 0, 2, 3)[:, :, :hp, :wp]  # (C, N, Hp, Wp) view
    xp = np.empty((c, n, hp, wp), dtype=x.dtype)  # (C, N, Hp, Wp)
    x_cn = x.transpose(1, 0, 2, 3)
    jit = jit_kernels() if x.dtype in (np.float32, np.float64) else None
    if jit is not None:  # the same copy, a row at a time (NumPy's strided copies pay per row)
        value = x.dtype.type(fill)
        parallel_ranges(lambda c0, c1: jit.pad_channel_major(x_cn, xp, top, left, value, c0, c1), c, xp.size)
        return xp
    hh, ww = min(h, hp - top), min(w, wp - left)

    def copy(c0, c1):  # the borders filled, the inside copied: each element written once
        part = xp[c0:c1]
        part[:, :, :top] = fill
        part[:, :, top + hh:] = fill
        part[:, :, top:top + hh, :left] = fill
        part[:, :, top:top + hh, left + ww:] = fill
        part[:, :, top:top + hh, left:left + ww] = x_cn[c0:c1, :, :hh, :ww]
    parallel_ranges(copy, c, xp.size)  # by channels, on cnnkit's worker threads (b1 64@56: serial)
    return xp


def as_nchw(y_cn: np.ndarray) -> np.ndarray:
    """A (C, N, H, W) buffer seen as (N, C, H, W) (a view, no copy).

    Kernels return this view: the caller sees PyTorch's NCHW axes, while the
    memory stays channel-major, which is what the next convolution wants.
    """
    return y_cn.transpose(1, 0, 2, 3)


def crop_channel_major(xp: np.ndarray, pads, in_hw) -> np.ndarray:
    """Crop a (C, N, Hp, Wp) gradient buffer back to the input and view it as NCHW.

    Input rows/columns that no window reached (beyond the buffer) get zero gradient.
    """
    top, _, left, _ = pads
    h, w = in_hw
    hh, ww = min(h, xp.shape[2] - top), min(w, xp.shape[3] - left)
    if (hh, ww) == (h, w):
        return as_nchw(xp[:, :, top:top + h, left:left + w])
    out = np.zeros((xp.shape[0], xp.shape[1], h, w), dtype=xp.dtype)  # (C, N, H, W)
    out[:, :, :hh, :ww] = xp[:, :, top:top + hh, left:left + ww]
    return as_nchw(out)


__all__ = ["conv_out_size", "resolve_padding", "output_hw", "window_slices", "padded_size",
           "pad_channel_major", "crop_channel_major", "as_nchw", "is_channel_major", "planes", "Planes"]
