"""Stochastic gradient descent with momentum, Nesterov and weight decay (torch.optim.SGD's rule).

For each parameter ``p`` with gradient ``g`` (torch's ``_single_tensor_sgd``)::

    g = -g                         if maximize
    g = g + weight_decay * p                      (L2 penalty, coupled)
    b = g                          first step      (momentum buffer, a copy)
    b = momentum * b + (1 - dampening) * g        later steps
    g = g + momentum * b  if nesterov else  b      (only when momentum != 0)
    p = p - lr * g

State per parameter: ``"momentum_buffer"`` (only when momentum != 0). Parameters
with ``requires_grad=False`` or no gradient are skipped.
"""

from __future__ import annotations

import numpy as np

from .._errors import value_error
from .optimizer import Optimizer, as_float, check_non_negative


class SGD(Optimizer):
    _state_names = ("momentum_buffer",)

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _check_group(self, group: dict) -> dict:
        for name in ("lr", "momentum", "dampening", "weight_decay"):
            group[name] = as_float("SGD", name, group[name])
        group["nesterov"], group["maximize"] = bool(group["nesterov"]), bool(group["maximize"])
        check_non_negative("SGD", group, "lr", "momentum", "weight_decay")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise value_error("SGD", "nesterov needs momentum > 0 and dampening = 0",
                              momentum=group["momentum"], dampening=group["dampening"])
        return group

    def _update(self, p, g, group, state) -> None:
        # Python floats (a group value may have been set to a NumPy scalar by hand): a NumPy
        # float64 scalar would promote float32 arithmetic to float64 (NEP 50).
        lr, momentum = float(group["lr"]), float(group["momentum"])
        weight_decay = float(group["weight_decay"])
        if group["maximize"]:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * p.data
        if momentum != 0:
            b = state.get("momentum_buffer")
            if b is None:
                b = state["momentum_buffer"] = np.array(g, copy=True)
            else:
                b *= momentum
                b += (1 - float(group["dampening"])) * g
            g = g + momentum * b if group["nesterov"] else b
        p.data += -lr * g
