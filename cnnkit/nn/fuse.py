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
- **ReLU fused into an Add** (a residual join, ``y = relu(F(x) + x)``) that nothing
  else reads: the sum is clamped in the same pass (``Add.fused_relu``), and the ReLU
  becomes an ``Identity``. One pass instead of two: (1, 256, 56, 56) 0.39 -> 0.25 ms at
  batch 1; the whole ResNet-50 at batch 1 (16 such joins, in-process A/B) did not change
  measurably (136.8 vs 137.3 ms), its joins' time being mostly the inputs' cache misses.
- **Residual Adds fused into the convolution before them**: in a Graph, an ``Add`` of
  two inputs one of which is a ``Conv2d`` output that nothing else reads (after the
  folds above: ResNet's ``bn3`` or ``bn2`` conv) becomes part of that conv, which takes
  the Add's other input as a second one and adds it in its GEMM epilogue, with the Add's
  ReLU (``Conv2d.fused_add``; the conv's node moves to the Add's place, the Add goes).
  One pass over the output instead of two, while it is in cache: the ResNet-50 ONNX
  import at batch 1 (16 joins), in-process A/B, 34.5 -> 31.9 ms (0.93), the same bits.
- **ReLU6 fused into the convolution** in the same position (counted as ``relu_fused``):
  the conv clamps to [0, 6] as it stores its output (``Conv2d.fused_relu_max = 6``; the
  1x1, im2col and 3x3 depthwise kernels in the same pass, other paths one more), and
  the ReLU6 (which took three passes: its mask, then the clip) becomes an ``Identity``.
  MobileNet v2's ONNX import at batch 1: see the README.
- **ReLU6 in place** (``inplace=True``) where its input is a ``Linear`` output that
  nothing else reads: the layer keeps no reference to its output, so overwriting it
  loses nothing.
- **Constant scales and shifts folded into the conv or linear layer before them** (ONNX
  Runtime's Conv-Mul/Conv-Add fusions): an imported ``x * c``, ``x / c``, ``x + c`` or
  ``x - c`` whose constant holds one finite value per output channel (or one in all), of
  the layer's dtype, on a ``Conv2d`` or ``Linear`` output that nothing else reads (LeNet-5's
  scaled tanh, ``1.7159 * tanh(2/3 * a)``, exports such a Mul after each layer).
- **Constant scales folded into the conv or linear layer after them**: an imported
  ``x * c`` or ``x / c`` read by a ``Conv2d`` alone (c one value in all, or one per
  input channel when the conv has one group: its zero padding stays zero) or by a
  ``Linear`` (one value in all, or one per input feature) scales the layer's weights.
- **Constant scales moved past average pools and flattens** (both linear): a Graph's
  ``x * c`` or ``x / c`` with one value in all, read by an ``AvgPool2d``, ``Flatten`` or
  imported Flatten alone, comes after it instead, where the rules here can fold it.
- **Runs of constant scales and shifts merged**: a Graph's chain of imported ``Mul``,
  ``Div``, ``Add`` and ``Sub`` by constants (``c - x`` too), each read only by the next,
  is ``x * s + t``: one Mul and one Add (fewer when s = 1 or t = 0). LeNet-5's imported
  graph at batch 1 (scaled tanh and the trainable pooling's scale and bias): 32 -> 24
  nodes with the folds above.
- **Zero padding folded into the conv after it**: an imported constant-0 ``Pad`` of the
  spatial axes only, read by a ``Conv2d`` alone, becomes part of the conv's ``padding``.
- **Inference-only convs' weights frozen**: the weights and biases of every conv with a
  fused ReLU or Add (which has no backward) become read-only arrays of their own, treated
  as constants: a 3x3 conv that runs as Winograd keeps its filter transform instead of
  making it at every call, as ONNX Runtime prepacks constant weights
  (``cnnkit.functional.winograd.prepared_filter``), and so runs Winograd from 48 tiles on
  (14x14 at batch 1). ResNet-50's ONNX import at batch 1: see the README. Assign a new
  array to ``.data`` to change one.
- **Identity nodes dropped from a Graph** (their readers read their input; a Graph output
  stays): each costs a call per forward. Sequential children keep their places.

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
from .containers import Add, Graph, Sequential
from ..functional.norm import running_affine
from .conv import Conv2d
from .linear import Linear
from .module import Layer, Parameter
from .norm import BatchNorm2d

__all__ = ["fuse_for_inference", "fold_batchnorm", "fold_constant", "fold_scale_into_next", "fold_pad"]


def fold_batchnorm(conv: Conv2d, bn: BatchNorm2d) -> None:
    """Fold ``bn`` (evaluation mode, running statistics) into ``conv``'s weight and bias, in place."""
    _, scale, shift = running_affine(None if bn.weight is None else bn.weight.data,
                                     None if bn.bias is None else bn.bias.data,
                                     bn._buffers["running_mean"], bn._buffers["running_var"], bn.eps)
    w = conv.weight.data
    conv.weight.data = (w.astype(np.float64) * scale[:, None, None, None]).astype(w.dtype)
    old_bias = 0.0 if conv.bias is None else conv.bias.data.astype(np.float64)
    conv.bias = Parameter((old_bias * scale + shift).astype(w.dtype))


def fold_constant(target, op) -> bool:
    """Fold ``op``, an imported ``Binary`` computing ``y * c``, ``y / c``, ``y + c`` or
    ``y - c`` of ``target``'s output y, into ``target`` (a Conv2d without a fused ReLU, or a
    Linear), in place. Returns False (and changes nothing) unless the constant is finite
    (and non-zero for a division), of the weights' dtype, and holds one value per output
    channel or one in all, so that the result's shape and dtype stay the same."""
    from ..io.onnx._layers import Binary
    if type(op) is not Binary or op.weight is None or not isinstance(target, (Conv2d, Linear)):
        return False
    if isinstance(target, Conv2d) and target.fused_relu or op.op not in ("Mul", "Div", "Add", "Sub"):
        return False
    if op.op in ("Div", "Sub") and op.const_pos != 1:  # c / y and c - y are not affine in y's weights' way
        return False
    w = target.weight.data
    c = np.asarray(op._const())
    out_ndim, f = (4 if isinstance(target, Conv2d) else 2), w.shape[0]
    if c.dtype != w.dtype or c.ndim > out_ndim:
        return False
    c = c.reshape((1,) * (out_ndim - c.ndim) + c.shape)  # as broadcasting aligns it with y
    if any(size != 1 for axis, size in enumerate(c.shape) if axis != 1) or c.shape[1] not in (1, f):
        return False
    vec = np.broadcast_to(c.reshape(-1).astype(np.float64), (f,))
    if not np.isfinite(vec).all() or op.op == "Div" and not vec.all():
        return False
    if op.op in ("Mul", "Div"):
        scale = 1.0 / vec if op.op == "Div" else vec
        target.weight.data = (w.astype(np.float64) * scale.reshape((f,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        if target.bias is not None:
            target.bias.data = (target.bias.data.astype(np.float64) * scale).astype(w.dtype)
    else:
        old_bias = 0.0 if target.bias is None else target.bias.data.astype(np.float64)
        target.bias = Parameter((old_bias + (-vec if op.op == "Sub" else vec)).astype(w.dtype))
    return True


def _scale_of(op, dtype=None):
    """The float64 factor of ``op``, an imported Binary computing ``x * c`` or ``x / c``
    (1/c for a division), by ``_affine_of``'s rules, if its constant is of ``dtype`` (any
    float dtype when None); else None."""
    if getattr(op, "op", None) not in ("Mul", "Div"):
        return None
    affine = _affine_of(op)
    if affine is None or dtype is not None and np.asarray(op._const()).dtype != dtype:
        return None
    return affine[0]


def fold_scale_into_next(op, target, *, scalar_only: bool = False) -> bool:
    """Fold ``op``, an imported Binary computing ``x * c`` or ``x / c`` whose output only
    ``target`` reads, into ``target``'s weights, in place: a Conv2d (c one value in all,
    or one per input channel with one group: zero padding of ``c * x`` is still zero) or
    a Linear (one value in all, or one per input feature). ``scalar_only``: c must hold
    one value (a Flatten in between). Returns False (and changes nothing) otherwise."""
    if not isinstance(target, (Conv2d, Linear)):
        return False
    w = target.weight.data
    c = _scale_of(op, w.dtype)
    if c is None:
        return False
    if c.size == 1:
        factor = c.reshape(())
    elif scalar_only:
        return False
    elif isinstance(target, Conv2d):
        if target.groups != 1 or c.ndim > 4 or c.size != w.shape[1]:
            return False
        shaped = c.reshape((1,) * (4 - c.ndim) + c.shape)
        if shaped.shape != (1, w.shape[1], 1, 1):
            return False
        factor = shaped.reshape(1, -1, 1, 1)
    else:
        if c.shape[-1] != w.shape[1] or c.size != w.shape[1]:
            return False
        factor = c.reshape(1, -1)
    target.weight.data = (w.astype(np.float64) * factor).astype(w.dtype)
    return True


def _affine_of(op):
    """``(s, t)`` with ``op(x) = x * s + t`` (float64 constants), for an imported Binary
    by a finite constant: Mul, Div (``x / c``), Add, Sub (``x - c`` and ``c - x``); else None."""
    from ..io.onnx._layers import Binary
    if type(op) is not Binary or op.weight is None or op.op not in _BINARY_OPS:
        return None
    c = np.asarray(op._const())
    if c.dtype.kind != "f" or not np.isfinite(c).all():
        return None
    c64 = c.astype(np.float64)
    if op.op == "Mul":
        return c64, 0.0
    if op.op == "Div":
        return (1.0 / c64, 0.0) if op.const_pos == 1 and c.all() else None
    if op.op == "Add":
        return 1.0, c64
    return (1.0, -c64) if op.const_pos == 1 else (-1.0, c64)


_BINARY_OPS = ("Mul", "Div", "Add", "Sub")


def _readers(graph: Graph) -> dict:
    """How many nodes (or the caller, for an output) read each value of ``graph``."""
    readers: dict[str, int] = {}
    for _, inputs in graph.nodes:
        for i in inputs:
            readers[i] = readers.get(i, 0) + 1
    for o in graph.output_names:
        readers[o] = readers.get(o, 0) + 1
    return readers


def _move_scales_past_pools(graph: Graph) -> int:
    """Swap ``scale -> pool`` into ``pool -> scale`` where ``scale`` multiplies (or
    divides) by one constant value, its output is read by ``pool`` alone, and ``pool`` is
    an AvgPool2d or a flatten (linear maps: ``pool(c * x) = c * pool(x)``). Returns how
    many moved."""
    from ..io.onnx._layers import Binary
    from .pool import AvgPool2d
    linear_maps = (AvgPool2d,) + _flatten_types()
    moved, changed = 0, True
    while changed:
        changed = False
        readers = _readers(graph)
        for k in range(len(graph.nodes) - 1):
            (sname, sin), (pname, pin) = graph.nodes[k], graph.nodes[k + 1]
            scale, pool = graph._children[sname], graph._children[pname]
            if pin != (sname,) or readers.get(sname) != 1 or len(sin) != 1 \
                    or type(pool) not in linear_maps or type(scale) is not Binary \
                    or scale.weight is None:
                continue
            c = _scale_of(scale)
            if c is None or np.ndim(scale._const()) > 1 or c.size != 1:  # ((1, 1, 1) could broadcast)
                continue
            # pool now reads scale's input; scale reads pool; pool's readers read scale
            graph.nodes[k], graph.nodes[k + 1] = (pname, sin), (sname, (pname,))
            graph.nodes[k + 2:] = [(n, tuple(sname if i == pname else i for i in ins))
                                   for n, ins in graph.nodes[k + 2:]]
            if graph._outputs is not None:
                graph._outputs = tuple(sname if o == pname else o for o in graph._outputs)
            moved, changed = moved + 1, True
            break
    return moved


def _merge_constant_chains(graph: Graph) -> int:
    """Rewrite each run of imported constant Binaries (each read only by the next) as at
    most two: ``x * s`` then ``+ t``. Returns how many Binaries became Identities."""
    from ..io.onnx._layers import Binary
    readers, merged = _readers(graph), 0
    k = 0
    while k < len(graph.nodes):
        run = []
        for name, inputs in graph.nodes[k:]:
            op = graph._children[name]
            if _affine_of(op) is None or len(inputs) != 1:
                break
            if run and (inputs[0] != run[-1] or readers.get(run[-1]) != 1):
                break
            run.append(name)
        if len(run) < 2:
            k += 1
            continue
        ops = [graph._children[n] for n in run]
        dtype = np.asarray(ops[0]._const()).dtype
        if any(np.asarray(o._const()).dtype != dtype for o in ops):
            k += 1
            continue
        s, t = np.float64(1.0), np.float64(0.0)
        for o in ops:
            so, to = _affine_of(o)
            s, t = s * so, t * so + to
        s, t = np.asarray(s), np.asarray(t)
        new = []
        if not (s == 1.0).all():
            new.append(Binary("Mul", s.astype(dtype)))
        if not (t == 0.0).all() or not new:
            new.append(Binary("Add", t.astype(dtype)))
        for i, name in enumerate(run):  # (adopted: the new Binaries' errors name their node)
            graph._adopt(name, (new[i] if i < len(new) else Identity()).train(False))
        merged += len(run) - len(new)
        k += len(run)
    return merged


def fold_pad(pad, conv: Conv2d) -> bool:
    """Fold an imported constant-0 ``Pad`` of the two spatial axes of a 4-D input into
    ``conv``'s padding (numeric, not 'same'/'valid'), in place; False if it does not qualify."""
    p = list(pad.pads)
    if len(p) != 8 or pad.value != 0.0 or any(p[i] for i in (0, 1, 4, 5)) or isinstance(conv.padding, str):
        return False
    top, bottom, left, right = (conv.padding if len(conv.padding) == 4 else
                                (conv.padding[0], conv.padding[0], conv.padding[1], conv.padding[1]))
    conv.padding = (top + p[2], bottom + p[6], left + p[3], right + p[7])
    return True


def _drop_identities(graph: Graph) -> int:
    """Remove ``graph``'s Identity nodes (not its outputs), their readers reading their
    input instead; returns how many."""
    if graph._outputs is None:
        graph._outputs = graph.output_names  # (the last node's name, before nodes go)
    outputs, alias, kept = set(graph.output_names), {}, []
    for name, inputs in graph.nodes:
        inputs = tuple(alias.get(i, i) for i in inputs)
        if type(graph._children[name]) is Identity and len(inputs) == 1 and name not in outputs:
            alias[name] = inputs[0]
            del graph._children[name]
            continue
        kept.append((name, inputs))
    removed = len(graph.nodes) - len(kept)
    graph.nodes[:] = kept
    return removed


def _fuse_residual_adds(graph: Graph) -> int:
    """Fold each two-input ``Add`` with a ``Conv2d`` input that nothing else reads (and that
    is no output) into that conv (``fused_add``; the Add's ``fused_relu`` moves along): the
    conv's node moves to just before the Add, reading its own input and the Add's other
    one, and the Add becomes an Identity of it. Moving the conv later is safe: its own
    input comes before its old place, and its one reader is the Add. Returns how many."""
    readers, children, fused = _readers(graph), graph._children, 0
    for name, inputs in list(graph.nodes):
        add = children[name]
        if type(add) is not Add or len(inputs) != 2 or inputs[0] == inputs[1]:
            continue
        for k in (0, 1):
            src, other = inputs[k], inputs[1 - k]
            conv = children.get(src)
            if (type(conv) is Conv2d and readers.get(src) == 1 and not conv.training
                    and not conv.fused_relu and not conv.fused_add):
                break
        else:
            continue
        at = [n for n, _ in graph.nodes].index(src)
        conv_inputs = graph.nodes.pop(at)[1]
        at = [n for n, _ in graph.nodes].index(name)
        graph.nodes[at:at + 1] = [(src, tuple(conv_inputs) + (other,)), (name, (src,))]
        conv.fused_add, conv.fused_relu = True, add.fused_relu
        children[name] = Identity().train(False)
        fused += 1
    return fused


def _foldable(bn, conv) -> bool:
    return (isinstance(bn, BatchNorm2d) and isinstance(conv, Conv2d) and not bn.training
            and bn._buffers.get("running_mean") is not None)


def _flatten_types() -> tuple:
    from ..io.onnx._layers import OnnxFlatten
    from .linear import Flatten
    return (Flatten, OnnxFlatten)


def fuse_for_inference(model: Layer) -> dict:
    """Fold BatchNorms, constant scales/shifts and zero padding into convolutions, fuse
    ReLUs into them and into residual Adds, and those Adds into convolutions, run ReLU6s in
    place and drop a Graph's Identity nodes (see the module docstring). Returns how many of
    each: ``{"batchnorm_folded": .., "relu_fused": .., "add_relu_fused": .., "add_fused":
    .., "relu_in_place": .., "constant_folded": ..,
    "scale_moved": .., "constants_merged": .., "pad_folded": .., "identity_removed": ..,
    "weights_frozen": ..}``
    (``constant_folded`` counts the scales and shifts folded into the layer before them
    and the scales folded into the one after; ``weights_frozen`` the inference-only convs
    whose weights became read-only, see the module docstring)."""
    counts = {"batchnorm_folded": 0, "relu_fused": 0, "add_relu_fused": 0, "add_fused": 0, "relu_in_place": 0,
              "constant_folded": 0, "scale_moved": 0, "constants_merged": 0, "pad_folded": 0,
              "identity_removed": 0}
    _fuse(model, counts)
    counts["weights_frozen"] = _freeze_inference_convs(model)
    return counts


def _freeze_inference_convs(model: Layer) -> int:
    """Make the weights and biases of the convs that are now inference-only (a fused ReLU
    or Add: their backward refuses) read-only arrays of their own, so that the conv can
    keep what it derives from them (the Winograd filter transform,
    ``cnnkit.functional.winograd.prepared_filter``). To change such a weight, assign a
    new array to ``.data``; in-place writes raise. Returns how many convs had a weight or
    bias not frozen before."""
    from ..functional.winograd import frozen
    count = 0
    for layer in model.modules():
        if not (isinstance(layer, Conv2d) and (layer.fused_relu or layer.fused_add)):
            continue
        thawed = [p for p in (layer.weight, layer.bias) if p is not None and not frozen(p.data)]
        for p in thawed:
            p.data = np.array(p.data, copy=True)
            p.data.flags.writeable = False
        count += bool(thawed)
    return count


def _fuse(layer: Layer, counts: dict) -> None:
    if isinstance(layer, Graph):
        counts["scale_moved"] += _move_scales_past_pools(layer)
        counts["constants_merged"] += _merge_constant_chains(layer)
        _fuse_steps(layer, _graph_steps(layer), counts)
        counts["identity_removed"] += _drop_identities(layer)
        counts["add_fused"] += _fuse_residual_adds(layer)
        _drop_identities(layer)  # (the fused Adds: not counted again)
    elif isinstance(layer, Sequential):
        names = [n for n, _ in layer.named_children()]
        _fuse_steps(layer, list(zip(names, [None] + names[:-1])), counts)  # each reads the one before
    for _, child in layer.named_children():
        _fuse(child, counts)


def _graph_steps(graph: Graph) -> list:
    """``(node, source)`` in order: source is the node whose output this one alone reads, else None."""
    readers = _readers(graph)
    return [(name, inputs[0] if len(inputs) == 1 and inputs[0] in graph._children
             and readers.get(inputs[0]) == 1 else None) for name, inputs in graph.nodes]


def _fuse_steps(container: Layer, steps: list, counts: dict) -> None:
    """Fold and set in place along ``steps``: ``(child name, source)`` in execution order,
    where ``source`` names the only child whose output this child reads, if nothing else
    reads it (None otherwise)."""
    from ..io.onnx._layers import Pad  # (imported layers; no ONNX package needed)
    children = container._children
    src_of = dict(steps)
    source = {}  # child name -> the Conv2d or Linear whose output it holds, unchanged
    for name, src in steps:
        layer = children[name]
        if src is not None and _foldable(layer, children[src]):
            fold_batchnorm(children[src], layer)
            children[name] = layer = Identity().train(False)
            counts["batchnorm_folded"] += 1
        elif source.get(src) is not None and fold_constant(source[src], layer):
            children[name] = layer = Identity().train(False)
            counts["constant_folded"] += 1
        if src is not None and fold_scale_into_next(children[src], layer):
            children[src] = Identity().train(False)
            counts["constant_folded"] += 1
        elif isinstance(layer, Linear) and src is not None and type(children[src]) in _flatten_types() \
                and src_of.get(src) is not None and fold_scale_into_next(children[src_of[src]], layer,
                                                                         scalar_only=True):
            children[src_of[src]] = Identity().train(False)
            counts["constant_folded"] += 1
        if isinstance(layer, Conv2d) and src is not None and type(children[src]) is Pad \
                and fold_pad(children[src], layer):
            children[src] = Identity().train(False)
            counts["pad_folded"] += 1
        if isinstance(layer, (Conv2d, Linear)):
            source[name] = layer
        elif isinstance(layer, Identity) and src is not None:
            source[name] = source.get(src)
        elif type(layer) is ReLU and isinstance(source.get(src), Conv2d) and not source[src].fused_relu:
            source[src].fused_relu = True
            children[name] = Identity().train(False)
            source[name] = source[src]
            counts["relu_fused"] += 1
        elif type(layer) is ReLU and src is not None and type(children[src]) is Add and not children[src].fused_relu:
            children[src].fused_relu = True
            children[name] = Identity().train(False)
            counts["add_relu_fused"] += 1
        elif type(layer) is ReLU6 and isinstance(source.get(src), Conv2d) and not source[src].fused_relu:
            source[src].fused_relu, source[src].fused_relu_max = True, 6.0
            children[name] = Identity().train(False)
            source[name] = source[src]
            counts["relu_fused"] += 1
        elif isinstance(layer, ReLU6) and source.get(src) is not None and not layer.inplace:
            layer.inplace = True
            counts["relu_in_place"] += 1
