"""``Conv2d``: a filter bank of learned kernels slid over the input.

Parameters: ``W = K*K*C*N`` weights (``(N, C/groups, kH, kW)``) and ``B = N`` biases,
the lecture's count (with groups, each filter sees only C/groups channels).
"""

from __future__ import annotations

import numpy as np

from .._errors import value_error
from ..functional._check import pair
from ..functional.conv import conv2d_backward, conv2d_forward
from ..functional.window import check_padding_spec
from .init import uniform_fan_in
from .module import Layer, Parameter


class Conv2d(Layer):
    """2-D convolution (correlation, as every CNN library computes it).

    Args (as ``torch.nn.Conv2d``): in_channels, out_channels, kernel_size, stride=1,
        padding=0 (int, pair, (top, bottom, left, right), 'valid' or 'same' for any
        stride), dilation=1, groups=1, bias=True, padding_mode='zeros' (the only
        mode implemented). Keyword-only: ``flip`` (a true convolution, kernel rotated
        180 degrees, for teaching), ``rng`` (a numpy Generator for the default
        Kaiming-uniform init), ``dtype`` (float32 or float64).

    Shape:
        Input (N, C_in, H, W); output (N, C_out, H_out, W_out) with
        ``H_out = floor((H + P_top + P_bottom - dilation*(kH - 1) - 1)/stride + 1)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 flip: bool = False, rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        where = type(self).__name__
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise value_error(where, f"{name} must be a positive int", **{name: v})
        if in_channels % groups:
            raise value_error(where, "in_channels must be divisible by groups",
                              in_channels=in_channels, groups=groups)
        if out_channels % groups:
            raise value_error(where, "out_channels must be divisible by groups",
                              out_channels=out_channels, groups=groups)
        if padding_mode != "zeros":
            raise value_error(where, "only padding_mode='zeros' is implemented", padding_mode=padding_mode)
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = pair(kernel_size, "kernel_size", where, minimum=1)
        self.stride = pair(stride, "stride", where, minimum=1)
        self.dilation = pair(dilation, "dilation", where, minimum=1)
        check_padding_spec(padding, where)
        self.padding = padding if isinstance(padding, str) else (
            tuple(int(p) for p in padding) if isinstance(padding, (tuple, list)) and len(padding) == 4
            else pair(padding, "padding", where))
        self.padding_mode = padding_mode
        self.flip = bool(flip)
        # Set by cnnkit.nn.fuse_for_inference when a ReLU followed: max(y, 0) applied while
        # the output is in cache; such a layer is for inference (its backward refuses).
        self.fused_relu = False
        # With fused_relu, the ReLU's cap: 6.0 where the layer was a ReLU6 (min(max(y, 0), 6)).
        self.fused_relu_max = None
        # Set by cnnkit.nn.fuse_for_inference where an Add read this conv's output alone: the
        # conv then takes the Add's other input as a second one and adds it (before the ReLU).
        self.fused_add = False
        fan_in = (in_channels // groups) * self.kernel_size[0] * self.kernel_size[1]
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(uniform_fan_in(shape, fan_in, rng, dtype))
        if bias:
            self.bias = Parameter(uniform_fan_in((out_channels,), fan_in, rng, dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        if (residual is not None) != self.fused_add:
            raise value_error(self.label(), "a second input (the residual added to the output) is taken "
                              "exactly when fused_add is set (cnnkit.nn.fuse_for_inference)",
                              fused_add=self.fused_add, residual=None if residual is None else np.shape(residual))
        b = self.bias.data if self.bias is not None else None
        y, self._cache = conv2d_forward(x, self.weight.data, b, self.stride, self.padding,
                                        self.dilation, self.groups, self.flip, relu=self.fused_relu,
                                        relu_max=self.fused_relu_max if self.fused_relu else None,
                                        residual=residual, where=self.label())
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self.fused_relu or self.fused_add:
            act = "a ReLU6" if self.fused_relu_max == 6 else "a ReLU" if self.fused_relu_max is None else "a clamp"
            what = act if not self.fused_add else "a residual Add" + (" and " + act if self.fused_relu else "")
            raise value_error(self.label(), f"this conv has {what} fused into it for inference "
                              "(cnnkit.nn.fuse_for_inference / onnx.load(optimize=True)) and has no "
                              "backward; train the unfused model", fused_relu=self.fused_relu,
                              fused_add=self.fused_add)
        dx, dw, db = conv2d_backward(dy, self._take_cache(), need_dx=self.needs_input_grad,
                                     need_dw=self.weight.requires_grad)
        if dw is not None:
            self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if isinstance(self.padding, str) or any(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.flip:
            s += ", flip=True"
        if self.fused_add:
            s += ", fused_add=True"
        if self.fused_relu:
            s += ", fused_relu=True"
            if self.fused_relu_max is not None:
                s += f", fused_relu_max={self.fused_relu_max:g}"
        return s
