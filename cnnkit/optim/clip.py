"""Gradient clipping, torch.nn.utils' ``clip_grad_norm_`` and ``clip_grad_value_``.

Both act in place on ``p.grad`` of every given parameter whose grad is not None
(as torch, they do not look at ``requires_grad``) and keep the grads' dtype.
"""

from __future__ import annotations

import numpy as np

from .._errors import message
from ..nn.module import Parameter


def _grads(parameters) -> list[np.ndarray]:
    params = [parameters] if isinstance(parameters, Parameter) else list(parameters)
    return [p.grad for p in params if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale all grads together so that their total norm is at most ``max_norm``.

    ``total_norm`` is the ``norm_type``-norm of the vector of every grad's norm (the
    norm of all grads concatenated); ``norm_type`` may be ``inf`` / ``'inf'``. Every
    grad is multiplied by ``min(max_norm / (total_norm + 1e-6), 1)``. Returns
    ``total_norm`` before clipping (0.0 when no parameter has a grad).

    Deviation: torch returns a 0-d tensor in the grads' dtype; this returns a Python
    float, computed in float64 (the grads themselves stay in their dtype).
    With ``error_if_nonfinite`` a nan/inf total norm raises RuntimeError, as torch.
    """
    grads = _grads(parameters)
    norm_type = float(norm_type)
    if not grads:
        return 0.0
    norms = [np.linalg.norm(g.ravel().astype(np.float64, copy=False), ord=norm_type) for g in grads]
    total_norm = float(np.linalg.norm(np.array(norms), ord=norm_type))
    if error_if_nonfinite and not np.isfinite(total_norm):
        raise RuntimeError(message(
            "clip_grad_norm_", f"the total norm of order {norm_type} of the gradients is "
            "non-finite, so it cannot be clipped; pass error_if_nonfinite=False to scale the "
            "gradients by it anyway", total_norm=total_norm))
    clip_coef = min(float(max_norm) / (total_norm + 1e-6), 1.0)
    with np.errstate(invalid="ignore"):  # inf * 0 = nan without a warning, as torch
        for g in grads:
            g *= clip_coef
    return total_norm


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clamp every grad element into ``[-clip_value, clip_value]``, in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        np.clip(g, -clip_value, clip_value, out=g)
