"""Containers: ``Sequential`` (a chain) and ``Graph`` (a DAG of named nodes),
plus the two merge layers a DAG needs: ``Add`` (residual) and ``Concat`` (inception).

Backward contract: a layer's ``backward`` never writes into the ``dy`` it is given,
so one gradient array can be handed to several branches; where a value fans out
to several consumers, their gradients are summed (the multivariate chain rule).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .._errors import type_error, value_error
from ..functional import activation as F
from .activation import ReLU
from .module import Layer
from .norm import _BatchNorm
from .pool import MaxPool2d


class Sequential(Layer):
    """Layers applied one after the other; children are named ``"0"``, ``"1"``, ...

    ``Sequential(a, b, c)`` or ``Sequential(OrderedDict(name=layer, ...))``.
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (OrderedDict, dict)):
            items = list(layers[0].items())
        else:
            items = [(str(i), layer) for i, layer in enumerate(layers)]
        for name, layer in items:
            self.add_module(name, layer)

    def add_module(self, name: str, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise type_error(self.label(), "Sequential holds Layers only",
                             name=name, received=type(layer).__name__)
        self._adopt(str(name), layer)

    def append(self, layer: Layer) -> "Sequential":
        self.add_module(str(len(self._children)), layer)
        return self

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self):
        return iter(self._children.values())

    def __getitem__(self, idx):
        layers = list(self._children.values())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._children.items())[idx]))
        return layers[idx]

    def forward(self, x):
        layers = tuple(self._children.values())
        applied_at = deferred_at = -1  # a ReLU the batch norm before applies; a max pool that
        for i, layer in enumerate(layers):  # applies the ReLU before it
            if i == applied_at:
                object.__setattr__(layer, "_applied_once", True)
            elif i == deferred_at:
                object.__setattr__(layer, "_relu_before_once", True)
            elif i + 1 < len(layers) and _relu_after(layer, layers[i + 1]):
                object.__setattr__(layer, "_relu_once", True)
                applied_at = i + 1
            elif i + 1 < len(layers) and _pool_after_relu(layer, layers[i + 1]):
                object.__setattr__(layer, "_applied_once", True)
                deferred_at = i + 1
            x = layer(x)
        return x

    def backward(self, dy):
        layers = list(self._children.values())
        # reach[i]: does the input of layer i need a gradient? (something trainable before it,
        # or this Sequential's own input). Below the first trainable layer backward stops.
        reach = [self.needs_input_grad]
        for layer in layers[:-1]:
            reach.append(reach[-1] or layer.trainable())
        for layer, needed in zip(reversed(layers), reversed(reach)):
            if not needed and not layer.trainable():
                return None  # nothing at or below this layer wants a gradient
            object.__setattr__(layer, "needs_input_grad", needed)
            dy = layer.backward(dy)
        return dy


def _unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a gradient over the axes along which an input of ``shape`` was broadcast."""
    if g.shape == tuple(shape):
        return g
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _relu_after(layer: Layer, nxt: Layer) -> bool:
    """A batch norm followed by a ReLU: the batch norm applies the ReLU in its own pass
    (``batch_norm_forward(relu=True)``: one pass over the activation instead of two, and
    its backward takes the ReLU's gradient in its own passes), and the ReLU passes its
    input and its gradient through, for that call only (the layers are unchanged).
    Outputs and gradients are the same bits as the two layers' one after the other.
    Measured (training steps, 2 threads, in-process against separate passes): ResNet-20
    at batch 128 0.96-0.97, cnn_bn 0.96, MobileNet v1 at batch 8 0.91."""
    return type(nxt) is ReLU and isinstance(layer, _BatchNorm)


def _pool_after_relu(layer: Layer, nxt: Layer) -> bool:
    """A ReLU followed by a max pool: the pool takes the ReLU's input and applies the ReLU
    to its own output (``max_pool2d_forward(relu=True)``: a ReLU commutes with a max, and
    after a 2x2 pool it has a quarter of the elements), and the ReLU passes its input and
    its gradient through, for that call only. The same outputs, and gradients of the same
    values. Measured (forward + backward of conv -> ReLU -> max pool, 2 threads,
    in-process against separate passes): 64 channels at 112x112 batch 8, 2x2 pool 0.95;
    96 at 55x55 batch 32, 3x3 s2 pool (AlexNet's) 0.97; LeNet-5's step (6 and 16 channels,
    28x28 and 10x10) 1.01, within noise."""
    return type(layer) is ReLU and type(nxt) is MaxPool2d and not nxt.return_indices


def _relu_pairs(graph: "Graph") -> tuple[dict, dict]:
    """``({batch norm or Add node: ReLU node}, {ReLU node: max pool node})``: the second
    node of each pair is the first's only reader, and the first is not an output of the
    graph (see :func:`_relu_after`, :func:`_pool_after_relu`); a ReLU that the node before
    applies is in no pair with a pool. An Add of two inputs (a residual join) applies the
    ReLU after it in the same pass and keeps its mask (``functional.add_relu_forward``):
    the ResNet-20 training step, in-process, 0.99."""
    children = graph._children
    if not any(type(c) is ReLU for c in children.values()):  # every pair has a ReLU: none to find
        return {}, {}  # (LeNet-5's tanh graph at batch 1: 30 us of a 180 us forward)
    readers, node_inputs = {}, dict(graph.nodes)
    for name, inputs in graph.nodes:
        for i in inputs:
            readers[i] = name if i not in readers else None  # None: read more than once
    outputs = set(graph.output_names)
    pairs, pools = {}, {}
    for name, inputs in graph.nodes:
        src = inputs[0] if len(inputs) == 1 else None
        if src in children and readers.get(src) == name and src not in outputs:
            if _relu_after(children[src], children[name]) or (
                    type(children[name]) is ReLU and type(children[src]) is Add and not children[src].fused_relu
                    and len(node_inputs[src]) == 2):  # a residual join: add_relu_forward
                pairs[src] = name
            elif _pool_after_relu(children[src], children[name]) and src not in pairs.values():
                pools[src] = name
    return pairs, pools


class Add(Layer):
    """Element-wise sum of its inputs (NumPy broadcasting), e.g. a residual ``F(x) + x``.
    Two inputs of one shape are added on cnnkit's worker threads
    (:func:`cnnkit.functional.add`)."""

    def __init__(self):
        super().__init__()
        # Set by cnnkit.nn.fuse_for_inference when a ReLU followed: max(sum, 0) in the same
        # pass; such a layer is for inference (its backward refuses).
        self.fused_relu = False

    def forward(self, *xs):
        relu_once = self.__dict__.pop("_relu_once", False)  # (a Graph's ReLU after it: see _relu_pairs)
        if len(xs) < 1:
            raise value_error(self.label(), "Add needs at least one input")
        if relu_once and len(xs) == 2 and not self.fused_relu:  # max(a + b, 0), the ReLU's mask kept
            y, relu_cache = F.add_relu_forward(xs[0], xs[1])
            self._cache = (tuple(x.shape for x in xs), relu_cache)
            return y
        if len(xs) == 2:
            y = F.add(xs[0], xs[1], relu=self.fused_relu)
        else:
            y = xs[0]
            for x in xs[1:]:
                y = y + x
            if self.fused_relu:
                y = F.relu(y, inplace=len(xs) > 1)  # (one input: y is that input, not ours to overwrite)
        self._cache = (tuple(x.shape for x in xs), None)
        return y

    def backward(self, dy):
        if self.fused_relu:
            raise value_error(self.label(), "this Add has a ReLU fused into it for inference "
                              "(cnnkit.nn.fuse_for_inference / onnx.load(optimize=True)) and has no "
                              "backward; train the unfused model", fused_relu=True)
        shapes, relu_cache = self._take_cache()
        if relu_cache is not None:  # the ReLU after it, applied in its forward
            dy = F.relu_backward(dy, relu_cache)
        return tuple(_unbroadcast(dy, s) for s in shapes)

    def extra_repr(self) -> str:
        return "fused_relu=True" if self.fused_relu else ""


class Concat(Layer):
    """Concatenation along ``dim`` (channels by default), e.g. inception branches."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, *xs):
        if len(xs) < 1:
            raise value_error(self.label(), "Concat needs at least one input")
        ref = xs[0].shape
        for x in xs[1:]:
            if x.ndim != len(ref) or any(a != b for i, (a, b) in enumerate(zip(x.shape, ref))
                                         if i != self.dim % len(ref)):
                raise value_error(self.label(), f"inputs must match except along dim {self.dim}",
                                  shapes=tuple(tuple(v.shape) for v in xs))
        self._cache = [x.shape[self.dim] for x in xs]
        return np.concatenate(xs, axis=self.dim)

    def backward(self, dy):
        sizes = self._take_cache()
        return tuple(np.split(dy, np.cumsum(sizes)[:-1], axis=self.dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Graph(Layer):
    """A directed acyclic graph of named layers.

    Example, a residual block::

        g = Graph()                                   # one input, named "input"
        g.add("conv1", Conv2d(64, 64, 3, padding=1))  # input: the previous node
        g.add("relu1", ReLU())
        g.add("conv2", Conv2d(64, 64, 3, padding=1))
        g.add("add", Add(), inputs=["conv2", "input"])
        g.add("relu2", ReLU())                        # the last node is the output

    Nodes run in the order added (each node's inputs must exist already, so that
    order is topological); ``backward`` runs them in reverse and sums the gradients
    of every value that fans out. Node names are the children's names, so a node
    ``conv1`` holds ``conv1.weight`` in ``state_dict``. ``outputs`` may name several
    nodes; then forward returns a tuple and backward takes one.
    """

    def __init__(self, inputs=("input",), outputs=None):
        super().__init__()
        self.input_names = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        self.nodes: list[tuple[str, tuple[str, ...]]] = []  # (name, input names), topological
        self._outputs = None if outputs is None else ((outputs,) if isinstance(outputs, str) else tuple(outputs))

    @property
    def output_names(self) -> tuple[str, ...]:
        if self._outputs is not None:
            return self._outputs
        return (self.nodes[-1][0],) if self.nodes else self.input_names

    def set_outputs(self, *names: str) -> None:
        known = set(self.input_names) | {n for n, _ in self.nodes}
        for name in names:
            if name not in known:
                raise value_error(self.label(), "unknown output node", output=name, known=sorted(known))
        self._outputs = tuple(names)

    def add(self, name: str, layer: Layer, inputs=None) -> str:
        """Add node ``name`` computing ``layer(*inputs)``; returns ``name``."""
        where = self.label()
        if not isinstance(layer, Layer):
            raise type_error(where, "a node must be a Layer", name=name, received=type(layer).__name__)
        known = set(self.input_names) | {n for n, _ in self.nodes}
        if name in known or "." in name:
            raise value_error(where, "node names must be new and contain no '.'", name=name)
        if any(layer is l for l in self._children.values()):
            raise value_error(where, "a layer may appear only once in a Graph (it keeps one cache)",
                              name=name)
        if inputs is None:
            inputs = (self.nodes[-1][0],) if self.nodes else self.input_names[:1]
        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        for i in inputs:
            if i not in known:
                raise value_error(where, "input node is not defined yet (add nodes in order)",
                                  name=name, input=i)
        self._adopt(name, layer)
        self.nodes.append((name, inputs))
        return name

    def forward(self, *xs):
        if len(xs) != len(self.input_names):
            raise value_error(self.label(), f"expected {len(self.input_names)} input(s)",
                              inputs=self.input_names, received=len(xs))
        values = dict(zip(self.input_names, xs))
        children = self._children
        pairs, pools, applied, deferred = *_relu_pairs(self), set(), set()
        for name, inputs in self.nodes:
            if name in applied:
                object.__setattr__(children[name], "_applied_once", True)
            elif name in deferred:
                object.__setattr__(children[name], "_relu_before_once", True)
            elif name in pairs:
                object.__setattr__(children[name], "_relu_once", True)
                applied.add(pairs[name])
            elif name in pools:
                object.__setattr__(children[name], "_applied_once", True)
                deferred.add(pools[name])
            if len(inputs) == 1:  # (no generator to build: a few us per node at batch 1)
                values[name] = children[name](values[inputs[0]])
            else:
                values[name] = children[name](*[values[i] for i in inputs])
        outs = tuple(values[o] for o in self.output_names)
        self._cache = tuple((tuple(np.shape(x)), x.dtype) for x in xs)
        return outs[0] if len(outs) == 1 else outs

    def backward(self, dy):
        input_meta = self._take_cache()
        dys = (dy,) if len(self.output_names) == 1 else tuple(dy)
        grads: dict[str, np.ndarray] = {}
        for o, g in zip(self.output_names, dys):
            grads[o] = g if o not in grads else F.add(grads[o], g)
        # reach[v]: does value v need a gradient? (an input of this graph that needs one, or a
        # node that is trainable or reads such a value). Nodes that reach nothing are skipped.
        reach = {n: self.needs_input_grad for n in self.input_names}
        for name, inputs in self.nodes:
            reach[name] = self._children[name].trainable() or any(reach[i] for i in inputs)
        for name, inputs in reversed(self.nodes):
            if name not in grads:
                continue  # this node does not reach an output
            g = grads.pop(name)
            if not reach[name]:
                continue  # neither this node nor anything before it wants a gradient
            layer = self._children[name]
            object.__setattr__(layer, "needs_input_grad", any(reach[i] for i in inputs))
            dxs = layer.backward(g)
            if not layer.needs_input_grad:
                continue
            dxs = (dxs,) if len(inputs) == 1 else dxs
            for i, dx in zip(inputs, dxs):
                if reach[i]:
                    grads[i] = dx if i not in grads else F.add(grads[i], dx)  # (on the workers)
        if not self.needs_input_grad:
            return None
        dxs = tuple(grads[n] if n in grads else np.zeros(s, dtype=t)
                    for n, (s, t) in zip(self.input_names, input_meta))
        return dxs[0] if len(dxs) == 1 else dxs

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, inputs in self.nodes:
            child = repr(self._children[name]).replace("\n", "\n  ")
            lines.append(f"  ({name} <- {', '.join(inputs)}): {child}")
        return f"Graph(inputs={list(self.input_names)}, outputs={list(self.output_names)}\n" + \
            "\n".join(lines) + "\n)"
