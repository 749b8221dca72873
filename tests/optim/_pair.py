"""Run a cnnkit optimizer and its torch.optim twin side by side on the same gradients."""

from __future__ import annotations

import numpy as np
import torch

from cnnkit.nn.module import Parameter

SHAPES = ((3, 4), (5,), (2, 3, 2))
RTOL = {np.float64: 1e-12, np.float32: 1e-6}


def make_params(rng, dtype, shapes=SHAPES):
    """Our Parameters and torch leaf tensors with the same starting values."""
    values = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    return ours, theirs


def set_grads(rng, ours, theirs, skip=()):
    """Fresh random grads on both sides; indices in ``skip`` get no grad (None)."""
    for k, (p, tp) in enumerate(zip(ours, theirs)):
        if k in skip:
            p.grad, tp.grad = None, None
            continue
        g = rng.standard_normal(p.data.shape).astype(p.data.dtype)
        p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())


def assert_params_close(ours, theirs, dtype, what=""):
    """Elementwise rtol (1e-12 float64, 1e-6 float32), with atol = rtol * max|param| for the
    elements that cancel to near zero (torch fuses a multiply-add where NumPy rounds twice)."""
    rtol = RTOL[np.dtype(dtype).type]
    for k, (p, tp) in enumerate(zip(ours, theirs)):
        expected = tp.detach().numpy()
        assert p.data.dtype == np.dtype(dtype), f"{what} param {k}: dtype {p.data.dtype}"
        np.testing.assert_allclose(p.data, expected, rtol=rtol,
                                   atol=rtol * max(1.0, float(np.abs(expected).max())),
                                   err_msg=f"{what} param {k}")
