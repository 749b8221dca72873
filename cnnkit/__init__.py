"""cnnkit: convolutional neural networks from first principles, in readable NumPy.

    import numpy as np, cnnkit
    from cnnkit import nn
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
    y = model(np.zeros((8, 1, 28, 28), np.float32))
    dx = model.backward(np.ones_like(y))
"""

from . import functional, nn, optim
from .functional.window import conv_out_size

__version__ = "0.1.0"
__all__ = ["functional", "nn", "optim", "conv_out_size", "summary", "__version__"]


def summary(model, input_shape, batch: int = 1, depth=None):
    """Layer-by-layer output shapes, parameters, multiply-adds and receptive fields, computed
    without running the convolutions: :func:`cnnkit.analysis.summary` (imported on first use)."""
    from .analysis import summary as _summary
    return _summary(model, input_shape, batch=batch, depth=depth)
