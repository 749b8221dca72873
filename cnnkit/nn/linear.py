"""``Linear`` (fully connected) and ``Flatten`` layers."""

from __future__ import annotations

import numbers

import numpy as np

from .._errors import type_error, value_error
from ..functional import dense as F
from ..functional._check import check_same_dtype
from ..functional.activation import _check_float
from .init import uniform_fan_in
from .module import Layer, Parameter


def _check_features(value, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise type_error(where, f"{name} must be an int", **{name: value})
    if value < 0:
        raise value_error(where, f"{name} must be non-negative", **{name: value})
    return int(value)


class Linear(Layer):
    """``y = x @ weight.T + bias`` (``torch.nn.Linear``).

    ``weight`` ``(out_features, in_features)`` and ``bias`` ``(out_features,)`` start as
    ``U(-1/sqrt(in_features), 1/sqrt(in_features))``, PyTorch's default, drawn from
    ``rng`` (weight first, then bias). Parameters: ``out * in + out`` (``out * in``
    without bias).

    Shape: input ``(N, *, in_features)``, output ``(N, *, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        self.in_features = _check_features(in_features, "in_features", name)
        self.out_features = _check_features(out_features, "out_features", name)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise type_error(name, "dtype must be float32 or float64", dtype=str(dtype))
        rng = np.random.default_rng() if rng is None else rng
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(uniform_fan_in(shape, self.in_features, rng, dtype))
        if bias:
            bias_init = uniform_fan_in((self.out_features,), self.in_features, rng, dtype)
            self.bias = Parameter(bias_init)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: np.ndarray) -> np.ndarray:
        where = self.label()
        _check_float(x, where, min_ndim=1)
        if x.shape[-1] != self.in_features:
            raise value_error(where, f"expected an input with in_features={self.in_features} "
                              f"in its last dimension, got {x.shape[-1]}",
                              input=tuple(x.shape), in_features=self.in_features)
        b = None if self.bias is None else self.bias.data
        check_same_dtype(where, input=x, weight=self.weight.data, bias=b)
        y, self._cache = F.linear_forward(x, self.weight.data, b)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx, dw, db = F.linear_backward(dy, self._take_cache(), need_dx=self.needs_input_grad,
                                       need_dw=self.weight.requires_grad)
        if dw is not None:
            self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Layer):
    """Merge the axes ``start_dim..end_dim`` into one (``torch.nn.Flatten``); backward
    reshapes the gradient back.

    Shape: input ``(N, *dims)``, output ``(N, prod(*dims))`` for the defaults.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        for name, d in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(d, bool) or not isinstance(d, numbers.Integral):
                raise type_error(type(self).__name__, f"{name} must be an int", **{name: d})
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_float(x, self.label())
        F._flat_dims(self.start_dim, self.end_dim, x.ndim, self.label())  # errors name the layer
        y, self._cache = F.flatten_forward(x, self.start_dim, self.end_dim)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return F.flatten_backward(dy, self._take_cache())

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
