"""Pooling layers: ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d`` (no parameters)."""

from __future__ import annotations

import numpy as np

from .._errors import value_error
from ..functional import pool as P
from .module import Layer


class MaxPool2d(Layer):
    """Max over each window (as ``torch.nn.MaxPool2d``; ``stride`` defaults to the kernel).

    Overlapping pooling (AlexNet) is ``MaxPool2d(3, stride=2)``. With
    ``return_indices=True`` forward returns ``(y, indices)``, indices flat into H*W.

    Shape:
        ``H_out = floor_or_ceil((H + 2P - dilation*(kH - 1) - 1)/stride) + 1``.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = bool(return_indices), bool(ceil_mode)
        P.check_pool_spec(kernel_size, stride, padding, dilation, type(self).__name__, max_pool=True)

    def forward(self, x: np.ndarray):
        # the ReLU before it, applied here to the pooled output (set by Sequential and Graph
        # for this call only; see cnnkit.nn.containers._pool_after_relu)
        relu = self.__dict__.pop("_relu_before_once", False)
        y, self._cache = P.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                              self.dilation, self.ceil_mode, relu=relu, where=self.label())
        if self.return_indices:
            return y, P.max_pool2d_indices(x, self.kernel_size, self.stride, self.padding,
                                           self.dilation, self.ceil_mode)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return P.max_pool2d_backward(dy, self._take_cache())

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Layer):
    """Mean over each window (as ``torch.nn.AvgPool2d``)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.ceil_mode = padding, bool(ceil_mode)
        self.count_include_pad, self.divisor_override = bool(count_include_pad), divisor_override
        P.check_pool_spec(kernel_size, stride, padding, 1, type(self).__name__, max_pool=False)
        if divisor_override is not None and (not isinstance(divisor_override, (int, np.integer))
                                             or divisor_override < 1):
            raise value_error(type(self).__name__, "divisor_override must be a positive int",
                              divisor_override=divisor_override)

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, self._cache = P.avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                              self.ceil_mode, self.count_include_pad,
                                              self.divisor_override, where=self.label())
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return P.avg_pool2d_backward(dy, self._take_cache())

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Layer):
    """Average to a fixed output size; ``AdaptiveAvgPool2d(1)`` is global average pooling."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size
        P.adaptive_avg_pool2d_forward(np.zeros((0, 1, 8, 8), np.float32), output_size,
                                      where=type(self).__name__)

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, self._cache = P.adaptive_avg_pool2d_forward(x, self.output_size, where=self.label())
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return P.adaptive_avg_pool2d_backward(dy, self._take_cache())

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
