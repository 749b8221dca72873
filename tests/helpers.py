"""Shared test oracles: float64 central differences and PyTorch conversion."""

from __future__ import annotations

import numpy as np


def numeric_grad(f, x: np.ndarray, dy: np.ndarray | None = None, eps: float = 1e-6) -> np.ndarray:
    """d(sum(f(x) * dy))/dx by float64 central differences (f returns an array or a scalar).

    ``x`` is perturbed in place and restored; it must be float64.
    """
    if x.dtype != np.float64:
        raise TypeError("numeric_grad needs float64 input")
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)  # views: x must be contiguous
    if not np.shares_memory(flat, x):
        raise ValueError("numeric_grad needs a contiguous x")
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        diff = np.asarray(fp, dtype=np.float64) - np.asarray(fm, dtype=np.float64)
        gflat[i] = (diff * (1.0 if dy is None else dy)).sum() / (2 * eps)
    return g


def assert_close(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def to_torch(a: np.ndarray, requires_grad: bool = False):
    import torch
    t = torch.from_numpy(np.ascontiguousarray(a).copy())
    return t.requires_grad_(requires_grad)


def to_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy()
