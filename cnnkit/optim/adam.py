"""Adam (coupled L2 weight decay) and AdamW (decoupled weight decay), torch.optim's rules.

Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2015), Algorithm 1;
Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (2019), Algorithm 2.
For each parameter ``p`` with gradient ``g``, in torch's order (``_single_tensor_adam``)::

    g = -g                                    if maximize
    t = t + 1
    p = p * (1 - lr * weight_decay)           AdamW (decoupled)
    g = g + weight_decay * p                  Adam  (coupled L2)
    m = lerp(m, g, 1 - beta1)                 = m + (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g * g
    v_max = max(v_max, v);  v_hat = v_max     if amsgrad, else v_hat = v
    denom = sqrt(v_hat) / sqrt(1 - beta2^t) + eps
    p = p - (lr / (1 - beta1^t)) * m / denom

State per parameter: ``"step"`` (0-d float64, torch keeps a float tensor),
``"exp_avg"`` (m), ``"exp_avg_sq"`` (v) and, with amsgrad, ``"max_exp_avg_sq"``.
"""

from __future__ import annotations

import numpy as np

from .._errors import type_error, value_error
from .optimizer import Optimizer, as_float, check_non_negative


class Adam(Optimizer):
    _state_names = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _scalar_names = ("step",)
    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _check_group(self, group: dict) -> dict:
        where = type(self).__name__
        for name in ("lr", "eps", "weight_decay"):
            group[name] = as_float(where, name, group[name])
        check_non_negative(where, group, "lr", "eps", "weight_decay")
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise type_error(where, "betas must be a pair (beta1, beta2)", betas=betas)
        betas = tuple(as_float(where, "betas", b) for b in betas)
        for k, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise value_error(where, f"betas[{k}] must be in [0, 1)", betas=betas)
        group["betas"] = betas
        group["amsgrad"], group["maximize"] = bool(group["amsgrad"]), bool(group["maximize"])
        return group

    def _missing_state(self, arrays: dict) -> list[str]:
        return [n for n in ("step", "exp_avg", "exp_avg_sq") if n not in arrays]

    def _update(self, p, g, group, state) -> None:
        # Python floats keep float32 arithmetic in float32 (a NumPy float64 scalar would promote it)
        lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        if not state:
            state["step"] = np.zeros((), dtype=np.float64)
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = np.zeros_like(p.data)
        m, v = state["exp_avg"], state["exp_avg_sq"]

        if group["maximize"]:
            g = -g
        state["step"] += 1
        if weight_decay != 0:
            if self._decoupled:
                p.data *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p.data
        _lerp_(m, g, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * g * g                       # torch's addcmul: (value * g) * g

        step = float(state["step"])
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        step_size = lr / bias_correction1
        if group["amsgrad"]:
            np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            denom = np.sqrt(state["max_exp_avg_sq"]) / bias_correction2_sqrt
        else:
            denom = np.sqrt(v) / bias_correction2_sqrt
        denom += eps
        p.data += (-step_size * m) / denom             # torch's addcdiv: (value * m) / denom


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr * weight_decay`` before the Adam step."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start += weight * (end - start)`` in place, with ATen's two-sided formula
    (``end - (end - start) * (1 - weight)`` when ``|weight| >= 0.5``)."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        one_minus = start.dtype.type(1) - start.dtype.type(weight)  # in the array's dtype, as ATen
        start[...] = end - (end - start) * one_minus
