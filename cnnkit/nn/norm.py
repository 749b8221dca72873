"""Normalization layers: ``BatchNorm1d``, ``BatchNorm2d`` and ``LocalResponseNorm``.

Constructor signatures, attribute, parameter and buffer names follow ``torch.nn``
(2.x) so that a torchvision ``state_dict`` loads by name: parameters ``weight``
(gamma, ones) and ``bias`` (beta, zeros); buffers ``running_mean`` (zeros),
``running_var`` (ones) and ``num_batches_tracked`` (a 0-d int64 array). The math
lives in :mod:`cnnkit.functional.norm`.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._errors import type_error, value_error
from ..functional._check import FLOAT_DTYPES, check_array, check_same_dtype
from ..functional.norm import (batch_norm_backward, batch_norm_forward, check_batch_size,
                               check_lrn_args, local_response_norm_backward,
                               local_response_norm_forward)
from .module import Layer, Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "LocalResponseNorm"]


def _check_bool(value, name: str, where: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise type_error(where, f"{name} must be a bool", **{name: value})
    return bool(value)


class _BatchNorm(Layer):
    """Shared body of ``BatchNorm1d``/``BatchNorm2d`` (they differ only in the input rank).

    Training (``layer.train()``, the default): normalize with the batch's mean and
    biased variance per channel, then, if ``track_running_stats``, update the
    running statistics and ``num_batches_tracked``; the update factor is
    ``momentum`` (exponential moving average) or, with ``momentum=None``,
    ``1 / num_batches_tracked`` (cumulative moving average). Evaluation
    (``layer.eval()``): normalize with the running statistics, or with the
    batch's statistics when ``track_running_stats=False``. See
    :func:`cnnkit.functional.norm.batch_norm_forward` for the formulas.
    """

    _ranks: tuple[int, ...] = ()
    _layout: str = ""
    _eval_when_frozen = True  # frozen (Layer.freeze): running statistics, kept unchanged

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *,
                 bias: bool = True, dtype=np.float32):
        super().__init__()
        where = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral):
            raise type_error(where, "num_features must be an int", num_features=num_features)
        if num_features < 1:
            raise value_error(where, "num_features must be positive", num_features=num_features)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
            raise type_error(where, "eps must be a real number", eps=eps)
        if not eps >= 0:
            raise value_error(where, "eps must be >= 0", eps=eps)
        if momentum is not None:
            if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
                raise type_error(where, "momentum must be a real number or None", momentum=momentum)
            if not 0 <= momentum <= 1:
                raise value_error(where, "momentum must be in [0, 1], or None for a "
                                  "cumulative moving average", momentum=momentum)
        affine = _check_bool(affine, "affine", where)
        track_running_stats = _check_bool(track_running_stats, "track_running_stats", where)
        use_bias = _check_bool(bias, "bias", where)
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise type_error(where, "dtype must be float32 or float64", dtype=str(dtype))

        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))       # gamma
            if use_bias:
                self.bias = Parameter(np.zeros(num_features, dtype=dtype))    # beta
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    # Buffers are replaced by load_state_dict and .to(), so they are always read
    # through self._buffers at the time of use, never kept in a local attribute.
    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0 (in place)."""
        if self.track_running_stats:
            self._buffers["running_mean"][...] = 0
            self._buffers["running_var"][...] = 1
            self._buffers["num_batches_tracked"][...] = 0

    def reset_parameters(self) -> None:
        """Running statistics reset, gamma = 1, beta = 0 (as at construction)."""
        self.reset_running_stats()
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        # A ReLU that alone reads this output, applied here (set by Sequential and Graph for
        # this call only: see cnnkit.nn.containers._relu_after)
        relu = self.__dict__.pop("_relu_once", False)
        where = self.label()
        check_array(x, where, ndim=self._ranks, layout=self._layout)
        if x.shape[1] != self.num_features:
            raise value_error(where, f"expected {self.num_features} channels (num_features) "
                              f"in dim 1 of the input, got {x.shape[1]}",
                              input=tuple(x.shape), num_features=self.num_features)
        weight = None if self.weight is None else self.weight.data
        bias = None if self.bias is None else self.bias.data
        running_mean = self._buffers["running_mean"]
        running_var = self._buffers["running_var"]
        check_same_dtype(where, input=x, weight=weight, bias=bias,
                         running_mean=running_mean, running_var=running_var)
        batch_stats = self.training or running_mean is None
        if batch_stats:
            check_batch_size(x, where)
        update = self.training and self.track_running_stats
        factor = 0.0
        if update:
            # momentum=None: cumulative moving average, running = mean of all batch stats
            tracked = self._buffers["num_batches_tracked"]
            factor = 1.0 / float(tracked + 1) if self.momentum is None else self.momentum
        y, cache = batch_norm_forward(x, weight, bias, running_mean, running_var,
                                      training=self.training, momentum=factor, eps=self.eps, relu=relu)
        if update:  # counted only once the kernel succeeded: a failed forward changes nothing
            self._buffers["num_batches_tracked"][...] += 1
        self._cache = cache
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        cache = self._take_cache()
        dx, dweight, dbias = batch_norm_backward(dy, cache)
        if self.weight is not None:
            self.weight.accumulate(dweight)
        if self.bias is not None:
            self.bias.accumulate(dbias)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    r"""Batch normalization of (N, C) or (N, C, L) input (Ioffe & Szegedy, ICML 2015).

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta``, statistics per channel
    over N (and L). ``BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, bias=True, dtype=np.float32)`` as ``torch.nn``
    (``bias=False`` keeps gamma but drops beta, as in PyTorch 2.x).

    Shape:
        - Input: (N, C) or (N, C, L), C = num_features.
        - Output: the same shape and dtype.
    """

    _ranks = (2, 3)
    _layout = "N, C[, L]"


class BatchNorm2d(_BatchNorm):
    r"""Batch normalization of (N, C, H, W) input (Ioffe & Szegedy, ICML 2015).

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta``, statistics per channel
    over N, H and W ("spatial" batch norm, section 3.2 of the paper).
    ``BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, bias=True, dtype=np.float32)`` as ``torch.nn``.

    Shape:
        - Input: (N, C, H, W), C = num_features.
        - Output: the same shape and dtype.
    """

    _ranks = (4,)
    _layout = "N, C, H, W"


class LocalResponseNorm(Layer):
    r"""Local response normalization across channels (PyTorch/ONNX/Caffe convention).

    ``b_c = a_c / (k + alpha/n * sum_{c' in window(c)} a_{c'}^2)^beta``, a window of
    ``n = size`` channels, zero-padded with ``n//2`` channels before and
    ``(n-1)//2`` after. AlexNet (Krizhevsky et al., NeurIPS 2012, section 3.3)
    writes alpha without ``/n`` (k=2, n=5, alpha=1e-4, beta=0.75): the equivalent
    here is ``LocalResponseNorm(5, alpha=alexnet_alpha_to_torch(1e-4, 5), beta=0.75,
    k=2.0)``, i.e. alpha=5e-4 (see :mod:`cnnkit.functional.norm`).

    No parameters, so no ``dtype`` argument: the output has the input's dtype.

    Shape:
        - Input: (N, C, *) with at least one trailing axis, e.g. (N, C, H, W).
        - Output: the same shape and dtype.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        where = type(self).__name__
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise type_error(where, "size must be an int", size=size)
        if size < 1:
            raise value_error(where, "size must be at least 1 (the number of channels in "
                              "the window)", size=size)
        for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise type_error(where, f"{name} must be a real number", **{name: v})
        self.size = int(size)
        self.alpha = alpha
        self.beta = beta
        self.k = k

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_lrn_args(x, self.size, self.alpha, self.beta, self.k, self.label())
        y, cache = local_response_norm_forward(x, self.size, self.alpha, self.beta, self.k)
        self._cache = cache
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return local_response_norm_backward(dy, self._take_cache())

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
