"""cnnkit: convolutional neural networks from first principles, in readable NumPy.

    import numpy as np, cnnkit
    from cnnkit import nn
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
    y = model(np.zeros((8, 1, 28, 28), np.float32))
    dx = model.backward(np.ones_like(y))
"""

import os as _os
import sys as _sys

# OpenBLAS's idle threads spin for about 0.1 s after each multi-threaded GEMM before they
# sleep; cnnkit's worker threads (runtime.set_num_threads) then share the cores with them.
# OpenBLAS reads OPENBLAS_THREAD_TIMEOUT (spin 2**value cycles, 4..30; default 28) once,
# when NumPy loads it, so this default is set here, before cnnkit imports NumPy, and only
# then (a value already in the environment wins; CNNKIT_NO_BLAS_TUNING=1 leaves it alone).
# It changes no result, only how long idle threads wait. Measured (bench_steps.py, 2
# threads): MobileNet v1's training step at batch 8 254 -> 203 ms; ResNet-20's and the
# batch-1 ONNX imports' within noise. cnnkit.runtime.blas_thread_timeout() tells what
# this process's OpenBLAS got.
if "numpy" not in _sys.modules and not _os.environ.get("CNNKIT_NO_BLAS_TUNING"):
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import functional, nn, optim  # noqa: E402
from .functional.window import conv_out_size  # noqa: E402

__version__ = "0.1.0"
__all__ = ["functional", "nn", "optim", "conv_out_size", "summary", "__version__"]


def summary(model, input_shape, batch: int = 1, depth=None):
    """Layer-by-layer output shapes, parameters, multiply-adds and receptive fields, computed
    without running the convolutions: :func:`cnnkit.analysis.summary` (imported on first use)."""
    from .analysis import summary as _summary
    return _summary(model, input_shape, batch=batch, depth=depth)
