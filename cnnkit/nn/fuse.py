"""Inference-only rewrites of a trained model, as ONNX Runtime applies to its graphs.

``fuse_for_inference(model)`` changes ``model`` in place and returns what it did:

- **BatchNorm folded into the convolution before it.** In evaluation mode a BatchNorm is
  a per-channel affine map ``y = x * scale + shift`` with ``scale = gamma / sqrt(var + eps)``
  and ``shift = beta - mean * scale``. When its input is a ``Conv2d`` output that nothing
  else reads, ``scale`` goes into the conv's weights (one factor per output channel) and
  ``shift`` into its bias, and the BatchNorm becomes an ``Identity``: one pass over the
  activation fewer, and no copy kept for a backward.
- **ReLU fused into the convolution** where its input is a ``Conv2d`` output (through
  such an Identity) that nothing else reads: the conv applies ``max(y, 0)`` to each part
  of its output while that part is in cache (``Conv2d.fused_relu``), and the ReLU becomes
  an ``Identity``. Measured at batch 1 (in-process A/B against ReLUs run in place after
  the conv, same outputs): ResNet-50 142 -> 138 ms; MobileNet v1 no change (41.4 vs
  42.7 ms, within the noise of this machine).
- **ReLU6 in place** (``inplace=True``) in the same position: the conv keeps no
  reference to its output, so overwriting it loses nothing.

Where the dataflow is known: a ``Sequential`` (each child feeds only the next) and a
``Graph`` (its node list), recursively; the children of other layers are visited, but
pairs inside a hand-written ``forward`` are left alone.

The result computes the same function in evaluation mode (up to float rounding: the
folded weights are rounded once more), but it is for inference: the BatchNorms are gone,
so ``train()`` would train a different model. Call it on a copy if you want to keep the
original, e.g. a fresh ``cnnkit.onnx.load`` (whose ``optimize=True`` calls it).
"""

from __future__ import annotations

import numpy as np

from .activation import Identity, ReLU, ReLU6
from .containers import Graph, Sequential
from ..functional.norm import running_affine
from .conv import Conv2d
from .module import Layer, Parameter
from .norm import BatchNorm2d

__all__ = ["fuse_for_inference", "fold_batchnorm"]


def fold_batchnorm(conv: Conv2d, bn: BatchNorm2d) -> None:
    """Fold ``bn`` (evaluation mode, running statistics) into ``conv``'s weight and bias, in place."""
    _, scale, shift = running_affine(None if bn.weight is None else bn.weight.data,
                                     None if bn.bias is None else bn.bias.data,
                                     bn._buffers["running_mean"], bn._buffers["running_var"], bn.eps)
    w = conv.weight.data
    conv.weight.data = (w.astype(np.float64) * scale[:, None, None, None]).astype(w.dtype)
    old_bias = 0.0 if conv.bias is None else conv.bias.data.astype(np.float64)
    conv.bias = Parameter((old_bias * scale + shift).astype(w.dtype))


def _foldable(bn, conv) -> bool:
    return (isinstance(bn, BatchNorm2d) and isinstance(conv, Conv2d) and not bn.training
            and bn._buffers.get("running_mean") is not None)


def fuse_for_inference(model: Layer) -> dict:
    """Fold BatchNorms into convolutions, fuse ReLUs into them and run ReLU6s in place (see
    the module docstring). Returns ``{"batchnorm_folded": n, "relu_fused": m,
    "relu_in_place": k}``."""
    counts = {"batchnorm_folded": 0, "relu_fused": 0, "relu_in_place": 0}
    _fuse(model, counts)
    return counts


def _fuse(layer: Layer, counts: dict) -> None:
    if isinstance(layer, Graph):
        _fuse_steps(layer, _graph_steps(layer), counts)
    elif isinstance(layer, Sequential):
        names = [n for n, _ in layer.named_children()]
        _fuse_steps(layer, list(zip(names, [None] + names[:-1])), counts)  # each reads the one before
    for _, child in layer.named_children():
        _fuse(child, counts)


def _graph_steps(graph: Graph) -> list:
    """``(node, source)`` in order: source is the node whose output this one alone reads, else None."""
    readers: dict[str, int] = {}
    for _, inputs in graph.nodes:
        for i in inputs:
            readers[i] = readers.get(i, 0) + 1
    for o in graph.output_names:
        readers[o] = readers.get(o, 0) + 1  # an output is read by the caller
    return [(name, inputs[0] if len(inputs) == 1 and inputs[0] in graph._children
             and readers.get(inputs[0]) == 1 else None) for name, inputs in graph.nodes]


def _fuse_steps(container: Layer, steps: list, counts: dict) -> None:
    """Fold and set in place along ``steps``: ``(child name, source)`` in execution order,
    where ``source`` names the only child whose output this child reads, if nothing else
    reads it (None otherwise)."""
    children = container._children
    source = {}  # child name -> the Conv2d whose output it holds, unchanged
    for name, src in steps:
        layer = children[name]
        if src is not None and _foldable(layer, children[src]):
            fold_batchnorm(children[src], layer)
            children[name] = layer = Identity().train(False)
            counts["batchnorm_folded"] += 1
        if isinstance(layer, Conv2d):
            source[name] = layer
        elif isinstance(layer, Identity) and src is not None:
            source[name] = source.get(src)
        elif type(layer) is ReLU and source.get(src) is not None and not source[src].fused_relu:
            source[src].fused_relu = True
            children[name] = Identity().train(False)
            source[name] = source[src]
            counts["relu_fused"] += 1
        elif isinstance(layer, ReLU6) and source.get(src) is not None and not layer.inplace:
            layer.inplace = True
            counts["relu_in_place"] += 1
