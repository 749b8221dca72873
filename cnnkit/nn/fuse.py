"""Inference-only rewrites of a trained model, as ONNX Runtime applies to its graphs.

``fuse_for_inference(model)`` changes ``model`` in place and returns what it did:

- **BatchNorm folded into the convolution before it.** In evaluation mode a BatchNorm is
  a per-channel affine map ``y = x * scale + shift`` with ``scale = gamma / sqrt(var + eps)``
  and ``shift = beta - mean * scale``. When its input is a ``Conv2d`` output that nothing
  else reads, ``scale`` goes into the conv's weights (one factor per output channel) and
  ``shift`` into its bias, and the BatchNorm becomes an ``Identity``: one pass over the
  activation fewer, and no copy kept for a backward.
- **ReLU in place** (``ReLU``/``ReLU6`` with ``inplace=True``) where its input is a
  ``Conv2d`` output (through such an Identity) that nothing else reads: the conv keeps
  no reference to its output, so overwriting it loses nothing.

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
from .conv import Conv2d
from .module import Layer, Parameter
from .norm import BatchNorm2d

__all__ = ["fuse_for_inference", "fold_batchnorm"]


def fold_batchnorm(conv: Conv2d, bn: BatchNorm2d) -> None:
    """Fold ``bn`` (evaluation mode, running statistics) into ``conv``'s weight and bias, in place."""
    mean, var = bn._buffers["running_mean"], bn._buffers["running_var"]
    scale = 1.0 / np.sqrt(var.astype(np.float64) + bn.eps)                     # (F,)
    if bn.weight is not None:
        scale = scale * bn.weight.data
    shift = -mean.astype(np.float64) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.data
    w = conv.weight.data
    conv.weight.data = (w.astype(np.float64) * scale[:, None, None, None]).astype(w.dtype)
    old_bias = 0.0 if conv.bias is None else conv.bias.data.astype(np.float64)
    conv.bias = Parameter((old_bias * scale + shift).astype(w.dtype))


def _foldable(bn, conv) -> bool:
    return (isinstance(bn, BatchNorm2d) and isinstance(conv, Conv2d) and not bn.training
            and bn._buffers.get("running_mean") is not None)


def fuse_for_inference(model: Layer) -> dict:
    """Fold BatchNorms into convolutions and run ReLUs in place (see the module docstring).
    Returns ``{"batchnorm_folded": n, "relu_in_place": m}``."""
    counts = {"batchnorm_folded": 0, "relu_in_place": 0}
    _fuse(model, counts)
    return counts


def _fuse(layer: Layer, counts: dict) -> None:
    if isinstance(layer, Graph):
        _fuse_graph(layer, counts)
    elif isinstance(layer, Sequential):
        _fuse_sequential(layer, counts)
    for _, child in layer.named_children():
        _fuse(child, counts)


def _fuse_sequential(seq: Sequential, counts: dict) -> None:
    names = [n for n, _ in seq.named_children()]
    source = {}  # child name -> the Conv2d whose output it passes on unchanged, if any
    for i, name in enumerate(names):
        layer = seq._children[name]
        prev = seq._children[names[i - 1]] if i > 0 else None
        if prev is not None and _foldable(layer, prev):
            fold_batchnorm(prev, layer)
            seq._children[name] = layer = Identity().train(False)
            counts["batchnorm_folded"] += 1
        if isinstance(layer, Conv2d):
            source[name] = layer
        elif isinstance(layer, Identity) and i > 0:
            source[name] = source.get(names[i - 1])
        elif isinstance(layer, (ReLU, ReLU6)) and i > 0 and source.get(names[i - 1]) is not None \
                and not layer.inplace:
            layer.inplace = True
            counts["relu_in_place"] += 1


def _fuse_graph(graph: Graph, counts: dict) -> None:
    readers: dict[str, int] = {}
    for _, inputs in graph.nodes:
        for i in inputs:
            readers[i] = readers.get(i, 0) + 1
    for o in graph.output_names:
        readers[o] = readers.get(o, 0) + 1  # an output is read by the caller
    source = {}  # node name -> the Conv2d whose output it holds, unchanged
    for name, inputs in graph.nodes:
        layer = graph._children[name]
        src = inputs[0] if len(inputs) == 1 else None
        single = src is not None and src in graph._children and readers.get(src) == 1
        if single and _foldable(layer, graph._children[src]):
            fold_batchnorm(graph._children[src], layer)
            graph._children[name] = layer = Identity().train(False)
            counts["batchnorm_folded"] += 1
        if isinstance(layer, Conv2d):
            source[name] = layer
        elif isinstance(layer, Identity) and single:
            source[name] = source.get(src)
        elif isinstance(layer, (ReLU, ReLU6)) and single and source.get(src) is not None and not layer.inplace:
            layer.inplace = True
            counts["relu_in_place"] += 1
