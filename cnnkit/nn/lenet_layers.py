"""The layers of the original LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based
learning applied to document recognition", section II.B), which ``torch.nn`` lacks.

- ``Subsampling``: S2/S4. Each map's non-overlapping 2x2 windows are summed, multiplied
  by one trainable coefficient and shifted by one trainable bias (2 parameters per map).
- ``SparseConv2d``: C3. Output map ``j`` sees only the input maps ``connections[j]``
  (the paper's Table I); only the connected kernels are parameters.
- ``EuclideanRBF``: the output layer. ``y_i = sum_j (x_j - w_ij)^2`` with fixed
  (non-trainable) prototypes ``w`` stored as a buffer.
- ``PadTo``: zero-pads 28x28 inputs symmetrically to the paper's 32x32 field.

Each layer has an explicit forward/backward (``tests/models/test_lenet5.py`` checks
them against float64 central differences).
"""

from __future__ import annotations

import numpy as np

from .._errors import type_error, value_error
from ..functional._check import pair
from ..functional.conv import conv2d_backward, conv2d_forward
from .init import uniform_fan_in
from .module import Layer, Parameter


def _check_input(x, ndim: int, where: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise type_error(where, "input must be a floating numpy.ndarray", input=type(x).__name__)
    if x.ndim != ndim:
        raise value_error(where, f"input must be {ndim}-D", shape=x.shape)
    return x


class Subsampling(Layer):
    """LeNet-5's trainable subsampling (S2, S4): ``y = w_c * (sum of a 2x2 window) + b_c``.

    Windows do not overlap (stride 2); an odd trailing row/column is dropped, as a
    2x2 pooling with floor would. The squashing function is a separate layer
    (``ScaledTanh``). Parameters: ``weight`` (C,) and ``bias`` (C,), so 2*C in all.
    Init: ``U(-1/2, 1/2)`` for both (the fan-in is 4 inputs).

    Shape: input ``(N, C, H, W)``, output ``(N, C, H//2, W//2)``.
    """

    def __init__(self, channels: int, *, rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        if not isinstance(channels, (int, np.integer)) or isinstance(channels, bool) or channels < 1:
            raise value_error("Subsampling", "channels must be a positive int", channels=channels)
        self.channels = int(channels)
        self.weight = Parameter(uniform_fan_in((self.channels,), 4, rng, dtype))
        self.bias = Parameter(uniform_fan_in((self.channels,), 4, rng, dtype))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _check_input(x, 4, self.label())
        n, c, h, w = x.shape
        if c != self.channels:
            raise value_error(self.label(), "input channels differ from the layer's", expected=self.channels,
                              shape=x.shape)
        ho, wo = h // 2, w // 2
        if ho < 1 or wo < 1:
            raise value_error(self.label(), "input must be at least 2x2", shape=x.shape)
        # The window sums as two adds of strided views, rows then columns: the first reads
        # whole rows (contiguous). (A 6-D reshape summed over two axes took 1.8 ms for a
        # (64, 6, 28, 28) batch, 9x longer: NumPy's multi-axis reduction and, for a
        # channel-major input, a copy for the reshape.)
        rows = x[:, :, 0:2 * ho:2, :2 * wo] + x[:, :, 1:2 * ho:2, :2 * wo]      # (N, C, Ho, 2*Wo)
        s = rows[..., 0::2] + rows[..., 1::2]                                     # (N, C, Ho, Wo)
        y = s * self.weight.data[None, :, None, None]
        y += self.bias.data[None, :, None, None]
        self._cache = (s, x.shape)
        return y.astype(x.dtype, copy=False)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        s, shape = self._take_cache()
        self.weight.accumulate(np.einsum("nchw,nchw->c", dy, s))
        self.bias.accumulate(np.einsum("nchw->c", dy))
        ds = dy * self.weight.data[None, :, None, None]                            # (N, C, Ho, Wo)
        n, c, h, w = shape
        ho, wo = ds.shape[2:]
        dx = np.empty(shape, dtype=dy.dtype)  # each input of a window gets the window's gradient
        for p in range(2):
            for q in range(2):
                dx[:, :, p:2 * ho:2, q:2 * wo:2] = ds
        dx[:, :, 2 * ho:] = 0  # the dropped odd row/column (if any)
        dx[:, :, :, 2 * wo:] = 0
        return dx

    def extra_repr(self) -> str:
        return f"{self.channels}"


class SparseConv2d(Layer):
    """A convolution whose output map ``j`` reads only the input maps ``connections[j]``.

    LeNet-5's C3 (section II.B, Table I): 16 maps over the 6 maps of S2, 60 connected
    5x5 kernels. ``weight`` holds only the connected kernels, packed in the order of
    ``connections`` (shape ``(sum(len(c) for c in connections), kH, kW)``); ``bias``
    has one entry per output map. Forward scatters the packed kernels into a dense
    zero-filled ``(out, in, kH, kW)`` kernel and runs the ordinary convolution;
    backward gathers the dense kernel gradient at the connected positions, so the
    unconnected kernels stay exactly zero (they are not parameters).

    Init: ``U(-1/sqrt(F), 1/sqrt(F))`` per output map with ``F = len(connections[j]) * kH * kW``
    its actual fan-in (PyTorch's default rule applied to the sparse layer).

    Shape: input ``(N, in_channels, H, W)``, output ``(N, out_channels, H - kH + 1, W - kW + 1)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, connections, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        where = "SparseConv2d"
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise value_error(where, f"{name} must be a positive int", **{name: v})
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", where, minimum=1)
        if not isinstance(connections, (list, tuple)) or len(connections) != out_channels:
            raise value_error(where, "connections must list the input maps of each output map",
                              out_channels=out_channels, connections=connections)
        outs, ins = [], []
        for j, cons in enumerate(connections):
            cons = [int(i) for i in cons]
            if not cons or len(set(cons)) != len(cons) or min(cons) < 0 or max(cons) >= in_channels:
                raise value_error(where, "each output map needs distinct input maps in [0, in_channels)",
                                  output_map=j, inputs=cons, in_channels=in_channels)
            outs += [j] * len(cons)
            ins += cons
        self.connections = [list(map(int, c)) for c in connections]
        self._out_idx, self._in_idx = np.array(outs), np.array(ins)
        rng = np.random.default_rng() if rng is None else rng
        kh, kw = self.kernel_size
        w = np.empty((len(outs), kh, kw), dtype=dtype)
        b = np.empty((out_channels,), dtype=dtype)
        start = 0
        for j, cons in enumerate(self.connections):
            fan_in = len(cons) * kh * kw
            w[start:start + len(cons)] = uniform_fan_in((len(cons), kh, kw), fan_in, rng, dtype)
            b[j] = uniform_fan_in((1,), fan_in, rng, dtype)[0]
            start += len(cons)
        self.weight = Parameter(w)
        if bias:
            self.bias = Parameter(b)
        else:
            self.register_parameter("bias", None)

    def dense_weight(self) -> np.ndarray:
        """The equivalent dense ``(out, in, kH, kW)`` kernel (zeros where unconnected)."""
        w = self.weight.data
        dense = np.zeros((self.out_channels, self.in_channels) + w.shape[1:], dtype=w.dtype)
        dense[self._out_idx, self._in_idx] = w
        return dense

    def forward(self, x: np.ndarray) -> np.ndarray:
        b = self.bias.data if self.bias is not None else None
        y, self._cache = conv2d_forward(x, self.dense_weight(), b, 1, 0, 1, 1, where=self.label())
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx, dw, db = conv2d_backward(dy, self._take_cache())
        self.weight.accumulate(dw[self._out_idx, self._in_idx])
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"connections={len(self._out_idx)} of {self.in_channels * self.out_channels}")


class EuclideanRBF(Layer):
    """Euclidean radial basis function units: ``y_i = sum_j (x_j - w_ij)^2``.

    LeNet-5's output layer (section II.B, eq. 7). ``prototypes`` (``(out, in)``) are
    fixed: they are a buffer named ``weight`` (saved in ``state_dict``, never trained),
    not a Parameter. The outputs are squared distances: smaller means a better match.
    ``negate=True`` returns ``-y`` instead, usable as logits for cross-entropy (the
    softmax of ``-y`` is a Gibbs distribution over the distances; the paper used a
    related criterion, eq. 9, with the RBF outputs as energies).

    Shape: input ``(N, in_features)``, output ``(N, out)``.
    """

    def __init__(self, in_features: int, prototypes, *, negate: bool = False, dtype=np.float32):
        super().__init__()
        p = np.asarray(prototypes)
        if p.ndim != 2 or p.shape[1] != in_features:
            raise value_error("EuclideanRBF", "prototypes must be (out_features, in_features)",
                              in_features=in_features, shape=p.shape)
        self.in_features, self.out_features = int(in_features), int(p.shape[0])
        self.negate = bool(negate)
        self.register_buffer("weight", np.array(p, dtype=dtype))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _check_input(x, 2, self.label())
        if x.shape[1] != self.in_features:
            raise value_error(self.label(), "input features differ from the layer's",
                              expected=self.in_features, shape=x.shape)
        w = self.weight.astype(x.dtype, copy=False)
        diff = x[:, None, :] - w[None, :, :]                                      # (N, out, in)
        y = (diff * diff).sum(axis=2)
        self._cache = diff
        return -y if self.negate else y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        diff = self._take_cache()
        g = -dy if self.negate else dy
        return 2.0 * np.einsum("no,noi->ni", g, diff)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fixed prototypes" + (
            ", negate=True" if self.negate else "")


class PadTo(Layer):
    """Zero-pad ``(N, C, H, W)`` symmetrically up to ``size x size`` (identity when already
    that size; extra odd pixel at the bottom/right). LeNet-5 reads a 32x32 field: a 28x28
    MNIST digit padded by 2 on each side (section II.B)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _check_input(x, 4, self.label())
        h, w = x.shape[2:]
        if h > self.size or w > self.size:
            raise value_error(self.label(), f"input must be at most {self.size}x{self.size}", shape=x.shape)
        top, left = (self.size - h) // 2, (self.size - w) // 2
        self._cache = (top, left, h, w)
        if h == w == self.size:
            return x
        y = np.zeros(x.shape[:2] + (self.size, self.size), dtype=x.dtype)
        y[:, :, top:top + h, left:left + w] = x
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        top, left, h, w = self._take_cache()
        return np.array(dy[:, :, top:top + h, left:left + w])

    def extra_repr(self) -> str:
        return f"{self.size}"


__all__ = ["Subsampling", "SparseConv2d", "EuclideanRBF", "PadTo"]
