"""Loss kernels: cross-entropy from logits, negative log-likelihood, mean squared error.

Semantics are PyTorch's (``torch.nn.functional.cross_entropy`` / ``nll_loss`` /
``mse_loss``). A loss is a pair like every kernel: ``loss, cache = <op>_forward(...)``
and ``dx = <op>_backward(dloss, cache)``, where ``dloss`` is a scalar for the
reductions ``'mean'``/``'sum'`` (1 starts the chain) and a scalar or an array of the
loss's shape for ``'none'``. Reduced losses are NumPy scalars of the input's dtype.

# N: batch size, C: classes, d1, ...: extra axes (pixels), M: N * d1 * ... positions
"""

from __future__ import annotations

import numbers

import numpy as np

from .._errors import type_error, value_error
from ._check import check_array, check_same_dtype
from .activation import _check_dy, _check_float, _check_number

REDUCTIONS = ("mean", "sum", "none")


# ---- argument checks ----------------------------------------------------------------
def check_loss_options(where: str, *, reduction="mean", ignore_index=-100,
                       label_smoothing=0.0) -> tuple[str, int, float]:
    """Validate the options shared by the loss kernels and layers."""
    if reduction not in REDUCTIONS:
        raise value_error(where, "reduction must be 'mean', 'sum' or 'none'", reduction=reduction)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise type_error(where, "ignore_index must be an int", ignore_index=ignore_index)
    eps = _check_number(label_smoothing, "label_smoothing", where)
    if not 0.0 <= eps <= 1.0:
        raise value_error(where, "label_smoothing must be between 0.0 and 1.0",
                          label_smoothing=label_smoothing)
    return reduction, int(ignore_index), eps


def _check_weight(weight, n_classes: int, x: np.ndarray, where: str) -> None:
    if weight is None:
        return
    check_array(weight, where, ndim=1, name="weight", layout="C")
    check_same_dtype(where, input=x, weight=weight)
    if weight.shape[0] != n_classes:
        raise value_error(where, f"weight must have one entry per class (C = {n_classes})",
                          weight=tuple(weight.shape), input=tuple(x.shape))


def _class_axis_shape(shape: tuple) -> tuple:
    """The shape of a class-index target for an input of ``shape``: drop the class axis."""
    return () if len(shape) == 1 else (shape[0],) + tuple(shape[2:])


def _check_index_target(target: np.ndarray, x: np.ndarray, ignore_index: int, where: str):
    """Class indices of shape ``(N, d1, ...)``, each in ``[0, C)`` or ``== ignore_index``.

    Returns ``(y, valid)``: the indices with ignored entries set to 0 (safe to gather
    with) and the mask of entries that count.
    """
    expected = _class_axis_shape(x.shape)
    if target.shape != expected:
        raise value_error(where, f"target must have shape {expected} (class indices) or "
                          f"{tuple(x.shape)} (class probabilities) for this input",
                          input=tuple(x.shape), target=tuple(target.shape))
    if target.dtype.kind not in "iu":
        raise type_error(where, "a class-index target must be an integer array "
                         "(a float target must have the input's shape: class probabilities)",
                         **{"target.dtype": str(target.dtype)})
    n_classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= n_classes))
    if bad.any():
        value = int(target[bad].flat[0])
        raise value_error(where, f"target {value} is out of bounds: class indices must be in "
                          f"[0, {n_classes - 1}] or equal ignore_index",
                          target_value=value, num_classes=n_classes, ignore_index=ignore_index)
    return np.where(valid, target, 0).astype(np.intp), valid


def _check_prob_target(target: np.ndarray, x: np.ndarray, where: str) -> None:
    if target.shape != x.shape:
        raise value_error(where, "a class-probability target must have the input's shape",
                          input=tuple(x.shape), target=tuple(target.shape))
    if target.dtype.kind != "f":
        raise type_error(where, "a class-probability target (the input's shape) must be "
                         "float; class indices have no class axis",
                         **{"target.dtype": str(target.dtype)})
    check_same_dtype(where, input=x, target=target)


def _check_target_array(target, where: str) -> np.ndarray:
    if not isinstance(target, np.ndarray):
        raise type_error(where, "target must be a numpy.ndarray", target=type(target).__name__)
    return target


# ---- reductions and the incoming gradient --------------------------------------------
def _reduce(loss: np.ndarray, reduction: str, denom, dtype):
    """``'none'``: the array; ``'sum'``: its sum; ``'mean'``: sum / denom (NaN for 0/0)."""
    if reduction == "none":
        return loss
    total = loss.sum(dtype=dtype)
    if reduction == "sum":
        return dtype.type(total)
    with np.errstate(divide="ignore", invalid="ignore"):
        return dtype.type(total / denom)


def _grad_scale(dloss, reduction: str, denom, loss_shape: tuple, dtype, where: str):
    """``d total / d loss_i``: a scalar (``dloss`` or ``dloss / denom``) or, for
    ``'none'``, an array of ``loss_shape`` (a scalar ``dloss`` is broadcast)."""
    if np.ndim(dloss) == 0:
        if isinstance(dloss, np.ndarray):
            dloss = dloss.item()
        g = dtype.type(_check_number(dloss, "dloss", where))
    elif reduction == "none":
        g = _check_dy(dloss, loss_shape, dtype, where)
    else:
        raise value_error(where, f"the gradient of a reduced ('{reduction}') loss must be a "
                          "scalar", dloss=tuple(np.shape(dloss)))
    if reduction == "mean":
        with np.errstate(divide="ignore", invalid="ignore"):
            g = dtype.type(g / denom)
    return g


def _per_position(g):
    """Put a per-position gradient ``(N, d1, ...)`` on the class axis: ``(N, 1, d1, ...)``."""
    return g if np.ndim(g) == 0 else np.expand_dims(g, 1)


def _as_batched(x: np.ndarray, target: np.ndarray):
    """An unbatched ``(C,)`` input becomes ``(1, C)`` (its target gets the batch axis too)."""
    if x.ndim == 1:
        return x[None], target[None], True
    return x, target, False


# ---- cross-entropy ------------------------------------------------------------------
def cross_entropy_forward(logits: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                          *, ignore_index: int = -100, reduction: str = "mean",
                          label_smoothing: float = 0.0):
    """Softmax cross-entropy from logits, ``torch.nn.functional.cross_entropy``.

    With ``p = softmax(x)`` over the class axis and a target distribution ``q`` per
    position, ``loss_n = -sum_c q_nc log p_nc``, where

    * class indices ``y``: ``q_nc = w_{y_n} (1 - eps) [c == y_n] + (eps / C) w_c``,
      and ``q_n = 0`` where ``y_n == ignore_index``;
    * class probabilities ``t``: ``q_nc = w_c ((1 - eps) t_nc + eps / C)``;

    ``w`` is ``weight`` (all ones if None) and ``eps`` is ``label_smoothing``. ``'mean'``
    divides the sum by ``sum_n w_{y_n}`` over the counted positions for class indices
    (the weighted mean of PyTorch) and by the number of positions ``M`` for
    probabilities; an empty or fully ignored batch gives NaN, as PyTorch.

    The gradient is the lecture's ``delta = a - y``: ``dx = softmax(x) * sum_c q - q``,
    which is ``softmax(x) - onehot(y)`` for plain class indices, scaled by the
    reduction (``1/N`` for ``'mean'``).

    Shape:
        logits ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``; target ``(N,)``,
        ``(N, d1, ...)`` or ``()`` of integer class indices, or float probabilities of
        the logits' shape; weight ``(C,)``. Loss: a scalar, or ``(N, d1, ...)`` for
        ``'none'``.
    """
    where = "cross_entropy"
    x = _check_float(logits, where, min_ndim=1)
    target = _check_target_array(target, where)
    reduction, ignore_index, eps = check_loss_options(
        where, reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)
    n_classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    _check_weight(weight, n_classes, x, where)
    probs = target.ndim == x.ndim
    if not probs and weight is None and eps == 0 and x.ndim == 2 and target.shape == (x.shape[0],) \
            and target.dtype.kind in "iu" and target.size and 0 <= target.min() and target.max() < n_classes \
            and not 0 <= ignore_index < n_classes:
        return _cross_entropy_plain(x, target, reduction)
    if probs:
        _check_prob_target(target, x, where)
    else:
        y, valid = _check_index_target(target, x, ignore_index, where)
    loss_shape = _class_axis_shape(x.shape)

    x, target, unbatched = _as_batched(x, target)
    if not probs and unbatched:
        y, valid = y[None], valid[None]
    z = x - x.max(axis=1, keepdims=True)                         # (N, C, d1, ...)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))     # (N, C, d1, ...)
    w = None if weight is None else weight.reshape((1, n_classes) + (1,) * (x.ndim - 2))

    if probs:
        q = target * (1.0 - eps) + eps / n_classes if eps > 0 else target
        q = q if w is None else q * w                            # (N, C, d1, ...)
        denom = x.dtype.type(x.size // max(n_classes, 1))        # M positions
    else:
        w_y = valid.astype(x.dtype) if weight is None else np.where(valid, weight[y], 0)
        q = np.zeros_like(x)                                     # (N, C, d1, ...)
        np.put_along_axis(q, y[:, None], ((1.0 - eps) * w_y)[:, None], axis=1)
        if eps > 0:
            counted = np.expand_dims(valid, 1).astype(x.dtype)  # (N, 1, d1, ...)
            q += (eps / n_classes) * (counted if w is None else counted * w)
        denom = w_y.sum(dtype=x.dtype)                          # sum of counted weights

    loss = -(q * log_p).sum(axis=1).reshape(loss_shape)          # (N, d1, ...)
    cache = (np.exp(log_p), q, reduction, denom, loss_shape, unbatched)
    return _reduce(loss, reduction, denom, x.dtype), cache


def _cross_entropy_plain(x: np.ndarray, y: np.ndarray, reduction: str):
    """cross_entropy_forward for the common case, (N, C) logits and class indices all in
    range, no weight, no smoothing: the same arithmetic without the one-hot matrix q
    (its products with 0 and 1 change no bit), so the same loss and gradient bits. A
    LeNet-5 batch of 64: forward + backward 167 -> 70 us."""
    z = x - x.max(axis=1, keepdims=True)                          # (N, C)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(x.shape[0])
    loss = -log_p[rows, y]                                        # (N,)
    denom = x.dtype.type(x.shape[0])
    cache = (np.exp(log_p), y.astype(np.intp, copy=False), reduction, denom, loss.shape, False)
    return _reduce(loss, reduction, denom, x.dtype), cache


def cross_entropy_backward(dloss, cache) -> np.ndarray:
    """``dx = (softmax(x) * sum_c q - q) * dloss`` (divided by the mean's denominator)."""
    p, q, reduction, denom, loss_shape, unbatched = cache
    g = _grad_scale(dloss, reduction, denom, loss_shape, p.dtype, "cross_entropy_backward")
    if q.dtype.kind in "iu":  # (_cross_entropy_plain: q holds the class indices) p - onehot(y)
        dx = p.copy()
        dx[np.arange(len(q)), q] -= 1
    else:
        dx = p * q.sum(axis=1, keepdims=True) - q                # (N, C, d1, ...): a - y
    dx *= _per_position(g)
    return dx[0] if unbatched else dx


def cross_entropy(logits: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                  *, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0):
    return cross_entropy_forward(logits, target, weight, ignore_index=ignore_index,
                                 reduction=reduction, label_smoothing=label_smoothing)[0]


# ---- negative log-likelihood ----------------------------------------------------------
def nll_loss_forward(log_probs: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                     *, ignore_index: int = -100, reduction: str = "mean"):
    """``loss_n = -w_{y_n} * x[n, y_n]`` (0 where ``y_n == ignore_index``),
    ``torch.nn.functional.nll_loss``; ``'mean'`` divides by ``sum_n w_{y_n}`` over the
    counted positions. ``x`` is expected to hold log-probabilities (``log_softmax``).

    Shape:
        log_probs ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``; target ``(N,)``,
        ``(N, d1, ...)`` or ``()`` of integer class indices; weight ``(C,)``.
        Loss: a scalar, or ``(N, d1, ...)`` for ``'none'``.
    """
    where = "nll_loss"
    x = _check_float(log_probs, where, min_ndim=1)
    target = _check_target_array(target, where)
    reduction, ignore_index, _ = check_loss_options(where, reduction=reduction,
                                                    ignore_index=ignore_index)
    n_classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    _check_weight(weight, n_classes, x, where)
    y, valid = _check_index_target(target, x, ignore_index, where)
    loss_shape = _class_axis_shape(x.shape)

    x, y, unbatched = _as_batched(x, y)
    valid = valid[None] if unbatched else valid
    w_y = valid.astype(x.dtype) if weight is None else np.where(valid, weight[y], 0)
    picked = np.take_along_axis(x, y[:, None], axis=1)[:, 0]    # (N, d1, ...): x[n, y_n]
    with np.errstate(invalid="ignore"):                          # 0 * -inf where ignored
        loss = np.where(valid, -w_y * picked, 0).astype(x.dtype, copy=False)
    denom = w_y.sum(dtype=x.dtype)
    cache = (y, w_y, x.shape, x.dtype, reduction, denom, loss_shape, unbatched)
    return _reduce(loss.reshape(loss_shape), reduction, denom, x.dtype), cache


def nll_loss_backward(dloss, cache) -> np.ndarray:
    """``dx[n, y_n] = -w_{y_n} * dloss`` (divided by the mean's denominator), 0 elsewhere."""
    y, w_y, shape, dtype, reduction, denom, loss_shape, unbatched = cache
    g = _grad_scale(dloss, reduction, denom, loss_shape, dtype, "nll_loss_backward")
    dx = np.zeros(shape, dtype=dtype)                            # (N, C, d1, ...)
    np.put_along_axis(dx, y[:, None], -(w_y[:, None] * _per_position(g)), axis=1)
    return dx[0] if unbatched else dx


def nll_loss(log_probs: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
             *, ignore_index: int = -100, reduction: str = "mean"):
    return nll_loss_forward(log_probs, target, weight, ignore_index=ignore_index,
                            reduction=reduction)[0]


# ---- mean squared error -------------------------------------------------------------
def mse_loss_forward(input: np.ndarray, target: np.ndarray, *, reduction: str = "mean"):
    """``loss_i = (x_i - t_i)^2``; ``'mean'`` averages over all elements
    (``torch.nn.functional.mse_loss``; an empty input gives NaN).

    Shape: input ``(*)``, target ``(*)``, the same shape (no broadcasting); loss a
    scalar, or ``(*)`` for ``'none'``.
    """
    where = "mse_loss"
    x = _check_float(input, where)
    target = _check_float(target, where, name="target")
    reduction, _, _ = check_loss_options(where, reduction=reduction)
    if target.shape != x.shape:
        raise value_error(where, "target must have the input's shape (no broadcasting)",
                          input=tuple(x.shape), target=tuple(target.shape))
    check_same_dtype(where, input=x, target=target)
    diff = x - target
    denom = x.dtype.type(x.size)
    return _reduce(diff * diff, reduction, denom, x.dtype), (diff, reduction, denom)


def mse_loss_backward(dloss, cache) -> np.ndarray:
    """``dx = 2 (x - t) * dloss`` (divided by the element count for ``'mean'``)."""
    diff, reduction, denom = cache
    g = _grad_scale(dloss, reduction, denom, diff.shape, diff.dtype, "mse_loss_backward")
    return diff * (2 * g)


def mse_loss(input: np.ndarray, target: np.ndarray, *, reduction: str = "mean"):
    return mse_loss_forward(input, target, reduction=reduction)[0]
