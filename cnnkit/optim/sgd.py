"""Stochastic gradient descent with momentum, Nesterov and weight decay (PyTorch's rule).

For each parameter ``p`` with gradient ``g``::

    g = g + weight_decay * p                      (L2 penalty, coupled)
    b = g                          first step      (momentum buffer)
    b = momentum * b + (1 - dampening) * g        later steps
    g = g + momentum * b  if nesterov else  b
    p = p - lr * g

Parameters with ``requires_grad=False`` or no gradient yet are skipped.
"""

from __future__ import annotations

import numpy as np

from .._errors import value_error


class SGD:
    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False):
        for name, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not v >= 0.0:
                raise value_error("SGD", f"{name} must be non-negative", **{name: v})
        if nesterov and (momentum <= 0 or dampening != 0):
            raise value_error("SGD", "nesterov needs momentum > 0 and dampening = 0",
                              momentum=momentum, dampening=dampening)
        self.params = list(params)
        if not self.params:
            raise value_error("SGD", "got an empty parameter list")
        self.lr, self.momentum, self.dampening = float(lr), float(momentum), float(dampening)
        self.weight_decay, self.nesterov, self.maximize = float(weight_decay), bool(nesterov), bool(maximize)
        self.buffers: list[np.ndarray | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for k, p in enumerate(self.params):
            if p.grad is None or not p.requires_grad:
                continue
            g = p.grad if not self.maximize else -p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                b = self.buffers[k]
                if b is None:
                    b = self.buffers[k] = g.copy()
                else:
                    b *= self.momentum
                    b += (1.0 - self.dampening) * g
                g = g + self.momentum * b if self.nesterov else b
            p.data -= (self.lr * g).astype(p.data.dtype, copy=False)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov, "maximize": self.maximize,
                "buffers": [None if b is None else b.copy() for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        buffers = state["buffers"]
        if len(buffers) != len(self.params):
            raise value_error("SGD", "state has a different number of parameters",
                              expected=len(self.params), found=len(buffers))
        for p, b in zip(self.params, buffers):
            if b is not None and np.shape(b) != p.data.shape:
                raise value_error("SGD", "momentum buffer shape does not match its parameter",
                                  expected=p.data.shape, found=np.shape(b))
        for key in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"):
            setattr(self, key, state[key])
        self.buffers = [None if b is None else np.array(b, dtype=p.data.dtype) for p, b in zip(self.params, buffers)]
