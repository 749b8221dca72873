"""Pure array kernels: forward/backward pairs with an explicit cache.

``y, cache = <op>_forward(x, ...)`` and ``<op>_backward(dy, cache)``; the plain
``<op>(x, ...)`` returns the output alone. No state, and two deliberate exceptions
to "no globals", both for speed: the heavy kernels split their work over the worker
threads that ``cnnkit.runtime.set_num_threads`` configures, and conv2d memoizes its
per-shape geometry. Each part writes memory no other part touches and partial sums
are added in a fixed order, so results never depend on timing; a different thread
count can change how a sum is split, hence its last bits (tests bound this).
"""

from .activation import (add, elu, elu_backward, elu_forward, leaky_relu, leaky_relu_backward,
                         leaky_relu_forward, log_softmax, log_softmax_backward, log_softmax_forward,
                         relu, relu_backward, relu_forward, scaled_tanh, scaled_tanh_backward,
                         scaled_tanh_forward, sigmoid, sigmoid_backward, sigmoid_forward, softmax,
                         softmax_backward, softmax_forward, tanh, tanh_backward, tanh_forward)
from .conv import conv2d, conv2d_backward, conv2d_forward
from .regularization import dropout, dropout_backward, dropout_forward
from .dense import flatten, flatten_backward, flatten_forward, linear, linear_backward, linear_forward
from .loss import (cross_entropy, cross_entropy_backward, cross_entropy_forward, mse_loss,
                   mse_loss_backward, mse_loss_forward, nll_loss, nll_loss_backward, nll_loss_forward)
from .norm import (alexnet_alpha_to_torch, batch_norm, batch_norm_backward, batch_norm_forward,
                   local_response_norm, local_response_norm_backward, local_response_norm_forward)
from .pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward,
                   avg_pool2d, avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d, max_pool2d,
                   max_pool2d_backward, max_pool2d_forward, max_pool2d_indices)
from .window import conv_out_size, resolve_padding

__all__ = [name for name in dir() if not name.startswith("_") and name not in (
    "activation", "conv", "dense", "loss", "norm", "pool", "regularization", "window")]
