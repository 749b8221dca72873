"""Shape inference without computing: every layer's output shape, window geometry and
multiply-adds, from the layers' attributes alone.

Letters: N batch, C channels, H/W height/width, K kernel, S stride, D dilation,
P padding (top, bottom, left, right), O output size, G groups.

``infer_shapes(model, input_shape)`` walks ``Sequential`` and ``Graph`` containers
recursively (the same dotted names as ``named_modules``) and applies a *shape rule*
to each leaf layer: a function of the layer and its input shapes that returns a
:class:`LayerShape` (output shape, how output positions map onto input positions,
the sliding window as applied, multiply-adds). Output sizes come from
``cnnkit.functional.window`` (``resolve_padding``, ``output_hw``), the functions the
kernels themselves call, so the numbers and the error messages are the kernels' own:
an impossible layer raises ``Conv2d 'features.0': output height would be 0: (I - K +
2P)/S + 1 = (5 - 7 + 0)/1 + 1 ...``.

Rules are looked up by layer type along the class hierarchy (a subclass inherits its
base's rule); :func:`register_shape_rule` adds one. A leaf layer whose type has no
rule is run once, forward on zeros of its input shape, to get its output shape; its
record says so (``from_forward=True``), its multiply-adds count as 0 and its spatial
mapping (for receptive fields) is unknown. No rule ever runs a convolution.

Multiply-add convention (one multiply-add = one MAC; FLOPs = 2 x MACs), for one forward
at the given batch (batch 1 is the papers' per-image figure):

- convolution: ``N * H_out * W_out * C_out * (kH * kW * C_in / G)``: every product of a
  weight with an input position, padded positions included (as the papers count);
- LeNet-5's sparse convolution: ``N * H_out * W_out * (connected kernels) * kH * kW``,
  only the connected input maps;
- fully connected: ``rows * in_features * out_features`` (rows = N for a vector input);
- LeNet-5's trainable subsampling: one per output (the coefficient times the 2x2 sum);
- LeNet-5's Euclidean RBF output: ``N * in * out`` (one squared difference accumulated
  per prototype entry);
- excluded (0): bias additions, batch normalization, activations, pooling, LRN,
  dropout, additions of residual branches, concatenation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .._errors import type_error, value_error
from ..functional import pool as P
from ..functional.window import output_hw, resolve_padding
from ..nn import activation as A
from ..nn.containers import Add, Concat, Graph, Sequential
from ..nn.conv import Conv2d
from ..nn.dropout import Dropout
from ..nn.lenet_layers import EuclideanRBF, PadTo, SparseConv2d, Subsampling
from ..nn.linear import Flatten, Linear
from ..nn.module import Layer
from ..nn.norm import BatchNorm1d, BatchNorm2d, LocalResponseNorm
from ..nn.pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

Shape = tuple[int, ...]

# How a layer's output positions relate to its (first) input's positions; the
# receptive-field tool reads this.
SPATIAL_KINDS = {
    "identity": "same grid, one input position per output position (element-wise ops, BN, LRN)",
    "window": "a sliding window over the input (conv, pooling, padding, subsampling): see window",
    "adaptive": "adaptive pooling with bins of unequal start spacing (floor/ceil bins)",
    "flatten": "spatial axes merged into features; each feature is one input unit",
    "global": "every output sees every input position (FC, global pooling)",
    "merge": "several inputs on the same grid (Add, Concat)",
    "unknown": "no rule: shape found by running the layer's forward",
}


@dataclass(frozen=True)
class Window:
    """A sliding window as applied to one input (after resolving ``'same'`` etc.).

    ``pads`` is ``(top, bottom, left, right)``; a window at output position ``o``
    covers input positions ``o*S - P_before + i*D`` for ``i = 0 .. K-1``.
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilation: tuple[int, int] = (1, 1)


@dataclass
class LayerShape:
    """What a shape rule returns for one leaf layer.

    ``output``: the output shape (batch included). ``spatial``: a key of
    ``SPATIAL_KINDS``. ``window``: the window as applied (``spatial='window'``, and the
    nominal window of adaptive pooling). ``groups``: channel groups of a convolution.
    ``macs``: multiply-adds of one forward at this batch (module docstring).
    """

    output: Shape
    spatial: str = "identity"
    window: Window | None = None
    groups: int | None = None
    macs: int = 0


@dataclass
class LayerRecord:
    """One layer (or container) of the walked model, in ``named_modules`` pre-order.

    ``name`` is the dotted path (``''`` for the model itself), ``depth`` its number of
    parts (0 for the model). Values flowing between layers are named by *value ids*:
    the name of the leaf layer that computed them, or ``'<input>'`` (``'<NAME>'`` for
    each input NAME of a multi-input Graph) for the model's inputs. ``inputs`` /
    ``outputs`` are the value ids a record reads and produces (a leaf produces its own
    name; a container produces its output nodes' values).
    """

    name: str
    layer: Layer
    depth: int
    leaf: bool
    inputs: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    outputs: tuple[str, ...] = ()
    output_shapes: tuple[Shape, ...] = ()
    spatial: str = "identity"
    window: Window | None = None
    groups: int | None = None
    macs: int = 0
    from_forward: bool = False
    children: list[str] = field(default_factory=list)

    @property
    def type(self) -> str:
        return type(self.layer).__name__

    @property
    def output_shape(self) -> Shape | tuple[Shape, ...]:
        """The output shape, or a tuple of shapes for a container with several outputs."""
        return self.output_shapes[0] if len(self.output_shapes) == 1 else tuple(self.output_shapes)


# ---- the rule registry ----------------------------------------------------------------
Rule = Callable[[Layer, tuple, str], LayerShape]
_RULES: dict[type, Rule] = {}


def register_shape_rule(*layer_types: type) -> Callable[[Rule], Rule]:
    """Decorator: ``rule(layer, input_shapes, where) -> LayerShape`` for these layer types
    (and their subclasses, unless a subclass has its own rule). ``where`` is the layer's
    label for error messages."""
    for t in layer_types:
        if not (isinstance(t, type) and issubclass(t, Layer)):
            raise type_error("register_shape_rule", "rules are registered for Layer subclasses",
                             layer_type=repr(t))

    def decorator(rule: Rule) -> Rule:
        for t in layer_types:
            _RULES[t] = rule
        return rule

    return decorator


def shape_rule(layer_type: type) -> Rule | None:
    """The rule for ``layer_type`` (the nearest registered base class), or None."""
    for base in layer_type.__mro__:
        if base in _RULES:
            return _RULES[base]
    return None


# ---- the walker -------------------------------------------------------------------------
def infer_shapes(model: Layer, input_shape, batch: int = 1) -> list[LayerRecord]:
    """Per-layer records of ``model`` applied to a ``batch`` of inputs of ``input_shape``.

    ``input_shape`` is one input's shape without the batch axis, e.g. ``(3, 224, 224)``
    (a list of such shapes for a Graph with several inputs). Returns one
    :class:`LayerRecord` per container and leaf layer in pre-order, the model itself
    first (depth 0). Shapes in the records include the batch axis.

    Containers (``Sequential``, ``Graph`` and their subclasses) are walked; every other
    layer is a leaf, handled by its type's shape rule; a leaf without a rule is run
    forward on zeros of its input shape (``from_forward=True``; see the module docstring).

    Raises ValueError with the layer's name for a layer that cannot take its input
    (output size below 1, channel or feature mismatch).
    """
    if not isinstance(model, Layer):
        raise type_error("infer_shapes", "model must be a cnnkit Layer", model=type(model).__name__)
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise value_error("infer_shapes", "batch must be a positive int", batch=batch)
    shapes = _input_shapes(model, input_shape)
    names = _model_input_names(model, len(shapes))
    full = tuple((int(batch),) + s for s in shapes)
    walker = _Walker(_float_dtype(model))
    walker.walk(model, "", 0, tuple(names), full)
    return walker.records


def _input_shapes(model: Layer, input_shape) -> list[Shape]:
    def one(s) -> Shape:
        if (not isinstance(s, (tuple, list)) or not s
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in s)):
            raise value_error("infer_shapes", "input_shape must be a tuple of positive ints without the "
                              "batch axis, e.g. (3, 224, 224)", input_shape=input_shape)
        return tuple(int(v) for v in s)

    if isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (tuple, list)):
        return [one(s) for s in input_shape]
    return [one(input_shape)]


def _model_input_names(model: Layer, count: int) -> list[str]:
    if isinstance(model, Graph):
        if len(model.input_names) != count:
            raise value_error("infer_shapes", f"the model takes {len(model.input_names)} input(s)",
                              inputs=model.input_names, input_shapes_given=count)
        return ["<input>"] if count == 1 else [f"<{n}>" for n in model.input_names]
    if count != 1:
        raise value_error("infer_shapes", "the model takes one input", input_shapes_given=count)
    return ["<input>"]


def _float_dtype(model: Layer):
    for p in model.parameters():
        if p.data.dtype.kind == "f":
            return p.data.dtype
    return np.dtype(np.float32)


class _Walker:
    def __init__(self, dtype):
        self.dtype = dtype
        self.records: list[LayerRecord] = []

    def walk(self, layer: Layer, name: str, depth: int, values: tuple[str, ...],
             shapes: tuple[Shape, ...]) -> tuple[tuple[str, ...], tuple[Shape, ...]]:
        """Record ``layer`` reading ``values`` (ids) of ``shapes``; return its output ids and shapes."""
        rec = LayerRecord(name, layer, depth, leaf=not isinstance(layer, (Sequential, Graph)),
                          inputs=values, input_shapes=shapes)
        self.records.append(rec)
        child = lambda key: f"{name}.{key}" if name else key  # noqa: E731
        if isinstance(layer, Sequential):
            out_v, out_s = values, shapes
            for key, sub in layer.named_children():
                rec.children.append(child(key))
                out_v, out_s = self.walk(sub, child(key), depth + 1, out_v, out_s)
        elif isinstance(layer, Graph):
            if len(values) != len(layer.input_names):
                raise value_error(layer.label() or "Graph", f"expected {len(layer.input_names)} input(s)",
                                  inputs=layer.input_names, received=len(values))
            env = {n: (v, s) for n, v, s in zip(layer.input_names, values, shapes)}
            for key, inputs in layer.nodes:
                rec.children.append(child(key))
                v, s = self.walk(layer._children[key], child(key), depth + 1,
                                 tuple(env[i][0] for i in inputs), tuple(env[i][1] for i in inputs))
                if len(v) != 1:
                    raise value_error(layer.label() or "Graph", "a node must produce one value", node=key)
                env[key] = (v[0], s[0])
            out_v = tuple(env[o][0] for o in layer.output_names)
            out_s = tuple(env[o][1] for o in layer.output_names)
        else:
            where = layer.label()
            rule = shape_rule(type(layer))
            if rule is None:
                out = LayerShape(self._forward_shape(layer, shapes), spatial="unknown")
                rec.from_forward = True
            else:
                out = rule(layer, shapes, where)
            rec.spatial, rec.window, rec.groups, rec.macs = out.spatial, out.window, out.groups, int(out.macs)
            out_v, out_s = (name or "<model>",), (tuple(int(v) for v in out.output),)
        rec.outputs, rec.output_shapes = out_v, out_s
        if not rec.leaf:
            rec.macs = sum(r.macs for r in self.records if r.leaf and _inside(r.name, name))
        return out_v, out_s

    def _forward_shape(self, layer: Layer, shapes) -> Shape:
        xs = [np.zeros(s, dtype=self.dtype) for s in shapes]
        was = layer.training
        layer.eval()  # no running-statistics update, no dropout mask
        try:
            y = layer(*xs)
        finally:
            layer.train(was)
            object.__setattr__(layer, "_cache", None)
        if isinstance(y, tuple):
            raise value_error(layer.label(), "a layer without a shape rule must return one array "
                              "(register a rule with register_shape_rule)", outputs=len(y))
        return tuple(np.shape(y))


def _inside(name: str, prefix: str) -> bool:
    return not prefix or name == prefix or name.startswith(prefix + ".")


# ---- rules ---------------------------------------------------------------------------
def _one_input(shapes, where: str, ndim: int | None = None, layout: str = "") -> Shape:
    if len(shapes) != 1:
        raise value_error(where, "expected one input", inputs=len(shapes))
    s = shapes[0]
    if ndim is not None and len(s) != ndim:
        raise value_error(where, f"expected a {ndim}-D input ({layout}), got {len(s)}-D", input=s)
    return s


def _check_channels(s: Shape, expected: int, what: str, where: str) -> None:
    if s[1] != expected:
        raise value_error(where, f"input has {s[1]} channels, but the layer expects {expected} ({what})",
                          input=s)


@register_shape_rule(Conv2d)
def _conv2d(layer: Conv2d, shapes, where: str) -> LayerShape:
    s = _one_input(shapes, where, 4, "N, C, H, W")
    _check_channels(s, layer.in_channels, "in_channels", where)
    k, st, d = layer.kernel_size, layer.stride, layer.dilation
    pads = resolve_padding(layer.padding, k, st, d, s[2:], where)
    ho, wo = output_hw(s[2:], k, st, d, pads, where, input_shape=s, padding=layer.padding)
    per_output = k[0] * k[1] * (layer.in_channels // layer.groups)  # K*K*C/G products per output value
    return LayerShape((s[0], layer.out_channels, ho, wo), "window", Window(k, st, pads, d), layer.groups,
                      macs=s[0] * ho * wo * layer.out_channels * per_output)


@register_shape_rule(SparseConv2d)
def _sparse_conv2d(layer: SparseConv2d, shapes, where: str) -> LayerShape:
    s = _one_input(shapes, where, 4, "N, C, H, W")
    _check_channels(s, layer.in_channels, "in_channels", where)
    k = layer.kernel_size
    ho, wo = output_hw(s[2:], k, (1, 1), (1, 1), (0, 0, 0, 0), where, input_shape=s, padding=0)
    connected = sum(len(c) for c in layer.connections)  # kernels actually present (LeNet-5 C3: 60)
    return LayerShape((s[0], layer.out_channels, ho, wo), "window", Window(k, (1, 1), (0, 0, 0, 0)),
                      macs=s[0] * ho * wo * connected * k[0] * k[1])


def _pool(layer, shapes, where, dilation, max_pool: bool) -> LayerShape:
    s = _one_input(shapes, where, 4, "N, C, H, W")
    k, st, d = P.check_pool_spec(layer.kernel_size, layer.stride, layer.padding, dilation, where,
                                 max_pool=max_pool)
    pads = resolve_padding(layer.padding, k, st, d, s[2:], where)
    ho, wo = output_hw(s[2:], k, st, d, pads, where, ceil_mode=layer.ceil_mode, input_shape=s,
                       padding=layer.padding)
    return LayerShape((s[0], s[1], ho, wo), "window", Window(k, st, pads, d))


@register_shape_rule(MaxPool2d)
def _max_pool(layer: MaxPool2d, shapes, where: str) -> LayerShape:
    return _pool(layer, shapes, where, layer.dilation, max_pool=True)


@register_shape_rule(AvgPool2d)
def _avg_pool(layer: AvgPool2d, shapes, where: str) -> LayerShape:
    return _pool(layer, shapes, where, 1, max_pool=False)


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling bins ``[floor(i*I/O), ceil((i+1)*I/O))`` along one axis."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


@register_shape_rule(AdaptiveAvgPool2d)
def _adaptive_avg_pool(layer: AdaptiveAvgPool2d, shapes, where: str) -> LayerShape:
    s = _one_input(shapes, where, 4, "N, C, H, W")
    size = layer.output_size
    size = (size, size) if size is None or isinstance(size, (int, np.integer)) else tuple(size)
    out = tuple(int(i if o is None else o) for i, o in zip(s[2:], size))
    shape = (s[0], s[1]) + out
    if out == (1, 1):
        return LayerShape(shape, "global")
    if all(i % o == 0 for i, o in zip(s[2:], out)):  # equal bins: an ordinary pooling window
        k = tuple(i // o for i, o in zip(s[2:], out))
        return LayerShape(shape, "window", Window(k, k, (0, 0, 0, 0)))
    kmax = tuple(max(b - a for a, b in adaptive_bins(i, o)) for i, o in zip(s[2:], out))
    return LayerShape(shape, "adaptive", Window(kmax, (0, 0), (0, 0, 0, 0)))


@register_shape_rule(Linear)
def _linear(layer: Linear, shapes, where: str) -> LayerShape:
    s = _one_input(shapes, where)
    if not s or s[-1] != layer.in_features:
        raise value_error(where, f"expected an input with in_features={layer.in_features} in its last "
                          f"dimension, got {s[-1] if s else None}", input=s, in_features=layer.in_features)
    rows = math.prod(s[:-1])
    return LayerShape(s[:-1] + (layer.out_features,), "global",
                      macs=rows * layer.in_features * layer.out_features)


@register_shape_rule(Flatten)
def _flatten(layer: Flatten, shapes, where: str) -> LayerShape:
    from ..functional.dense import _flat_dims
    s = _one_input(shapes, where)
    a, b = _flat_dims(layer.start_dim, layer.end_dim, len(s), where)
    out = s[:a] + (math.prod(s[a:b + 1]),) + s[b + 1:]
    if out == s:
        return LayerShape(out, "identity")  # e.g. (N, F) stays (N, F)
    return LayerShape(out, "flatten" if len(s) == 4 and (a, b) == (1, 3) else "unknown")


@register_shape_rule(BatchNorm1d, BatchNorm2d)
def _batch_norm(layer, shapes, where: str) -> LayerShape:
    s = _one_input(shapes, where)
    if len(s) not in layer._ranks:
        raise value_error(where, f"expected a {' or '.join(f'{r}-D' for r in layer._ranks)} input "
                          f"({layer._layout}), got {len(s)}-D", input=s)
    _check_channels(s, layer.num_features, "num_features", where)
    return LayerShape(s, "identity")


@register_shape_rule(A.ReLU, A.ReLU6, A.LeakyReLU, A.ELU, A.Sigmoid, A.Tanh, A.ScaledTanh, A.Softmax,
                     A.LogSoftmax, A.Identity, Dropout, LocalResponseNorm)
def _elementwise(layer, shapes, where: str) -> LayerShape:
    s = _one_input(shapes, where)
    if isinstance(layer, (A.Softmax, A.LogSoftmax)) and len(s) > 2:
        return LayerShape(s, "unknown")  # a softmax over spatial axes mixes positions
    return LayerShape(s, "identity")


@register_shape_rule(Add)
def _add(layer: Add, shapes, where: str) -> LayerShape:
    if not shapes:
        raise value_error(where, "Add needs at least one input")
    try:
        out = tuple(int(v) for v in np.broadcast_shapes(*shapes))
    except ValueError:
        raise value_error(where, "input shapes do not broadcast", shapes=tuple(shapes)) from None
    return LayerShape(out, "merge")


@register_shape_rule(Concat)
def _concat(layer: Concat, shapes, where: str) -> LayerShape:
    if not shapes:
        raise value_error(where, "Concat needs at least one input")
    ref = shapes[0]
    dim = layer.dim % len(ref)
    if any(len(s) != len(ref) or any(a != b for i, (a, b) in enumerate(zip(s, ref)) if i != dim)
           for s in shapes):
        raise value_error(where, f"inputs must match except along dim {layer.dim}", shapes=tuple(shapes))
    out = ref[:dim] + (sum(s[dim] for s in shapes),) + ref[dim + 1:]
    return LayerShape(out, "merge" if dim == 1 or len(ref) < 3 else "unknown")


@register_shape_rule(PadTo)
def _pad_to(layer: PadTo, shapes, where: str) -> LayerShape:
    s = _one_input(shapes, where, 4, "N, C, H, W")
    h, w = s[2:]
    if h > layer.size or w > layer.size:
        raise value_error(where, f"input must be at most {layer.size}x{layer.size}", shape=s)
    top, left = (layer.size - h) // 2, (layer.size - w) // 2
    pads = (top, layer.size - h - top, left, layer.size - w - left)
    return LayerShape(s[:2] + (layer.size, layer.size), "window", Window((1, 1), (1, 1), pads))


@register_shape_rule(Subsampling)
def _subsampling(layer: Subsampling, shapes, where: str) -> LayerShape:
    s = _one_input(shapes, where, 4, "N, C, H, W")
    _check_channels(s, layer.channels, "channels", where)
    ho, wo = s[2] // 2, s[3] // 2
    if ho < 1 or wo < 1:
        raise value_error(where, "input must be at least 2x2", shape=s)
    out = (s[0], s[1], ho, wo)
    return LayerShape(out, "window", Window((2, 2), (2, 2), (0, 0, 0, 0)), macs=math.prod(out))


@register_shape_rule(EuclideanRBF)
def _rbf(layer: EuclideanRBF, shapes, where: str) -> LayerShape:
    s = _one_input(shapes, where, 2, "N, features")
    if s[1] != layer.in_features:
        raise value_error(where, "input features differ from the layer's", expected=layer.in_features, shape=s)
    return LayerShape((s[0], layer.out_features), "global", macs=s[0] * layer.in_features * layer.out_features)


def _register_model_layers() -> None:
    """Rules for layers defined next to their models (imported lazily: the zoo imports nn)."""
    from ..models.resnet import ShortcutA

    @register_shape_rule(ShortcutA)
    def _shortcut_a(layer: ShortcutA, shapes, where: str) -> LayerShape:
        s = _one_input(shapes, where, 4, "N, C, H, W")
        _check_channels(s, layer.in_channels, "in_channels", where)
        st = layer.stride
        out = (s[0], layer.out_channels, -(-s[2] // st), -(-s[3] // st))  # x[:, :, ::s, ::s]
        return LayerShape(out, "window", Window((1, 1), (st, st), (0, 0, 0, 0)))


_register_model_layers()

__all__ = ["infer_shapes", "register_shape_rule", "shape_rule", "LayerRecord", "LayerShape", "Window",
           "SPATIAL_KINDS", "adaptive_bins"]
