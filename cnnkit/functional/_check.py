"""Argument normalization and input checks shared by kernels and layers.

Every check takes ``where`` (an op name like ``"conv2d"`` or a layer label like
``"Conv2d 'features.0'"``) so that the same code gives both kinds of message.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._errors import type_error, value_error

FLOAT_DTYPES = (np.float32, np.float64)


def pair(value, name: str, where: str, *, minimum: int | None = None) -> tuple[int, int]:
    """An int or a pair of ints as ``(h, w)``, each ``>= minimum`` when given."""
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        out = value  # the common case, checked without the slower ABC isinstance
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        out = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        out = (int(value[0]), int(value[1]))
    else:
        raise type_error(where, f"{name} must be an int or a pair of ints", **{name: value})
    if minimum is not None and min(out) < minimum:
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise value_error(where, f"{name} must be {kind}", **{name: value})
    return out


def check_array(x, where: str, *, ndim: int | tuple[int, ...], name: str = "input",
                layout: str = "") -> np.ndarray:
    """A float32/float64 ndarray of the given rank (``layout`` names the axes)."""
    if not isinstance(x, np.ndarray):
        raise type_error(where, f"{name} must be a numpy.ndarray", **{name: type(x).__name__})
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim not in ranks:
        expect = " or ".join(f"{r}-D" for r in ranks)
        want = f" ({layout})" if layout else ""
        raise value_error(where, f"expected a {expect} {name}{want}, got {x.ndim}-D",
                          **{name: tuple(x.shape)})
    if x.dtype not in FLOAT_DTYPES:
        raise type_error(where, f"{name} must be float32 or float64", dtype=str(x.dtype))
    return x


def check_same_dtype(where: str, **arrays) -> None:
    """All given arrays (``None`` skipped) share one dtype."""
    present = {k: v for k, v in arrays.items() if v is not None}
    dtypes = {v.dtype for v in present.values()}  # dtype objects: str() of each costs ~10 us
    if len(dtypes) > 1:
        raise type_error(where, "dtype mismatch: all arrays must have the same dtype "
                         "(cast with .astype or the layer's .to(dtype))",
                         **{f"{k}.dtype": str(v.dtype) for k, v in present.items()})


_MEMO: dict = {}


def memo(fn, *args):
    """``fn(*args)``, remembered: for argument checks and plans that depend only on shapes
    and plain arguments (kernel sizes, strides, paddings, names). The key is ``repr(args)``,
    so lists work and ``True`` is not taken for ``1`` (as a dict key, ``(1, True) == (1, 1)``);
    errors are raised each time, never remembered. A forward of one small image spent
    half of its time in these checks (LeNet-5's average pools: 114 us a call, 3 of them
    in the arithmetic)."""
    key = (fn, repr(args))
    hit = _MEMO.get(key)
    if hit is None:
        if len(_MEMO) >= 4096:
            _MEMO.clear()
        hit = _MEMO[key] = fn(*args)
    return hit
