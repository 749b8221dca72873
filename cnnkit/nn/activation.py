"""Activation layers: thin owners of the kernels in ``cnnkit.functional.activation``.

None of them has parameters. Each ``forward`` validates its input, calls the kernel
and keeps the cache for exactly one ``backward(dy)``, which returns ``dx``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..functional import activation as F
from ..functional.activation import _check_dy, _check_float, _check_number
from .module import Layer


_APPLIED = ("applied by a neighbouring layer",)  # a ReLU's cache when another layer applied it


class ReLU(Layer):
    """``y = max(x, 0)``; ``inplace=True`` overwrites the input with the output.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x: np.ndarray) -> np.ndarray:
        # Applied by the batch norm or Add before it, or by the max pool after it (set by
        # Sequential and Graph for this call only: cnnkit.nn.containers._relu_pairs)
        if self.__dict__.pop("_applied_once", False):
            self._cache = _APPLIED
            return x
        _check_float(x, self.label())
        y, self._cache = F.relu_forward(x, self.inplace)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        cache = self._take_cache()
        if cache is _APPLIED:  # that layer's backward takes the ReLU's gradient
            return dy
        return F.relu_backward(dy, cache)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class ReLU6(Layer):
    """``y = min(max(x, 0), 6)`` (MobileNetV2's activation, Sandler et al. 2018, section 3.2:
    robust under low-precision arithmetic). The gradient is ``dy`` where ``0 < x < 6`` and 0
    elsewhere, including exactly at 0 and 6, as ``torch.nn.ReLU6`` (hardtanh's rule).
    ``inplace=True`` overwrites the input with the output.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_float(x, self.label())
        inside = (x > 0) & (x < 6)                       # the mask before any in-place write
        y = np.clip(x, 0, 6, out=x if self.inplace else None)
        self._cache = (inside, y.shape, y.dtype)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        inside, shape, dtype = self._take_cache()
        _check_dy(dy, shape, dtype, self.label())
        return dy * inside

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Layer):
    """``y = x if x > 0 else negative_slope * x``.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False):
        super().__init__()
        _check_number(negative_slope, "negative_slope", type(self).__name__)
        self.negative_slope = negative_slope       # as given, so that the repr is PyTorch's
        self.inplace = bool(inplace)

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_float(x, self.label())
        y, self._cache = F.leaky_relu_forward(x, self.negative_slope, self.inplace)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return F.leaky_relu_backward(dy, self._take_cache())

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(Layer):
    """``y = x if x > 0 else alpha * (exp(x) - 1)`` (Clevert et al. 2015).

    Shape: input ``(*)``, output ``(*)``, same shape.
    """

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        _check_number(alpha, "alpha", type(self).__name__)
        self.alpha = alpha
        self.inplace = bool(inplace)

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_float(x, self.label())
        y, self._cache = F.elu_forward(x, self.alpha, self.inplace)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return F.elu_backward(dy, self._take_cache())

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class _Elementwise(Layer):
    """A parameter-free layer ``y = f(x)`` given by a kernel pair (no options)."""

    _forward = None   # the kernel pair, set by each subclass
    _backward = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_float(x, self.label())
        y, self._cache = type(self)._forward(x)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return type(self)._backward(dy, self._take_cache())


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + exp(-x))``, stable for any ``|x|``.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """

    _forward, _backward = staticmethod(F.sigmoid_forward), staticmethod(F.sigmoid_backward)


class Tanh(_Elementwise):
    """``y = tanh(x)``.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """

    _forward, _backward = staticmethod(F.tanh_forward), staticmethod(F.tanh_backward)


class ScaledTanh(_Elementwise):
    """``y = 1.7159 * tanh(2x/3)``: LeNet-5's squashing function (LeCun et al. 1998),
    with ``f(1) = 1`` and ``f(-1) = -1``. Not in ``torch.nn``.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """

    _forward, _backward = staticmethod(F.scaled_tanh_forward), staticmethod(F.scaled_tanh_backward)


def _legacy_softmax_dim(ndim: int, name: str) -> int:
    """PyTorch's rule for ``dim=None`` (``torch.nn.functional._get_softmax_dim``):
    axis 0 for a 0-, 1- or 3-D input, else axis 1. It warns, as PyTorch does, because a
    3-D input gets axis 0 (the batch axis for ``(N, C, L)``)."""
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                  "Change the call to include dim=X as an argument.", UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


class _SoftmaxFamily(Layer):
    """Shared body of Softmax and LogSoftmax: a kernel pair applied along ``dim``."""

    _op = ""  # kernel name, for the legacy-dim warning

    def __init__(self, dim: int | None = None):
        super().__init__()
        self.dim = dim

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_float(x, self.label())
        dim = _legacy_softmax_dim(x.ndim, self._op) if self.dim is None else self.dim
        y, self._cache = getattr(F, f"{self._op}_forward")(x, dim)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return getattr(F, f"{self._op}_backward")(dy, self._take_cache())

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_SoftmaxFamily):
    """``y_i = exp(x_i) / sum_j exp(x_j)`` along ``dim`` (max-subtracted, stable).

    ``dim=None`` follows PyTorch's deprecated legacy rule: axis 0 for 0-, 1- and 3-D
    input, else axis 1 (with a ``UserWarning``). Pass ``dim`` explicitly.

    Shape: input ``(*)``, output ``(*)``, same shape; slices along ``dim`` sum to 1.
    """

    _op = "softmax"


class LogSoftmax(_SoftmaxFamily):
    """``y_i = x_i - log sum_j exp(x_j)`` along ``dim`` (max-subtracted, stable).

    ``dim=None`` follows PyTorch's deprecated legacy rule: axis 0 for 0-, 1- and 3-D
    input, else axis 1 (with a ``UserWarning``). Pass ``dim`` explicitly.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """

    _op = "log_softmax"


class Identity(Layer):
    """``y = x``, ``dx = dy`` (the very same arrays). Like ``torch.nn.Identity`` it
    ignores any constructor arguments, so it can stand in for a removed layer
    (e.g. a classifier replaced for transfer learning).

    Shape: input ``(*)``, output ``(*)``, same shape.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_float(x, self.label())
        self._cache = (x.shape,)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self._take_cache()
        return dy
