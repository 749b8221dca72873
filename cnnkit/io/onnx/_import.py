"""Read an ONNX model into a :class:`cnnkit.nn.Graph` whose weights are trainable Parameters.

Steps: parse safely (:mod:`._security`), check the opset (7 to 21) and list every
unsupported operator in one error, then walk the nodes in order. A traced input
(ones of the declared shape; a symbolic batch axis gets ``trace_batch``) runs through
each new layer, so shapes are known at every node: ``Shape`` of a computed tensor and
any node whose inputs are all constant (Constant, ConstantOfShape, Gather, Slice,
Concat, Unsqueeze, Cast, arithmetic) are folded to constants at load time with
``onnx.reference``. Every other node becomes one Graph node (see :mod:`._ops`).

A Reshape whose target was folded from ``Shape`` keeps a symbolic batch: an entry equal
to the traced batch size in position 0 follows the input's batch size at run time.
"""

from __future__ import annotations

import re

import numpy as np

from ...nn import Graph
from . import SUPPORTED_IMPORT_OPSETS, require_onnx
from ._ops import FOLD_ONLY, HANDLERS, Ctx
from ._security import OnnxFormatError, read_model, tensor_to_array


def load(path, *, trace_batch: int = 1) -> Graph:
    """Import the ONNX file ``path`` (see the module docstring); the model is in eval mode."""
    proto = read_model(path)
    return from_proto(proto, str(path), trace_batch=trace_batch)


def _opset(proto, where):
    versions = {o.domain: o.version for o in proto.opset_import}
    version = versions.get("", versions.get("ai.onnx"))
    if version is None:
        raise OnnxFormatError(f"{where}: the model imports no version of the default ONNX domain "
                              f"(found {sorted(versions)})")
    return int(version)


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _sanitize(name: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_")
    return s or "node"


def from_proto(proto, where: str = "<onnx>", *, trace_batch: int = 1) -> Graph:
    onnx = require_onnx()
    opset = _opset(proto, where)
    lo, hi = SUPPORTED_IMPORT_OPSETS
    g = proto.graph
    unsupported = sorted({f"{n.domain + '.' if n.domain not in ('', 'ai.onnx') else ''}{n.op_type}"
                          for n in g.node if n.domain not in ("", "ai.onnx")
                          or (n.op_type not in HANDLERS and n.op_type not in FOLD_ONLY)})
    if unsupported or not lo <= opset <= hi:
        parts = []
        if unsupported:
            parts.append(f"unsupported operators: {', '.join(unsupported)}")
        if not lo <= opset <= hi:
            parts.append(f"opset {opset} is outside the supported range {lo} to {hi}")
        raise OnnxFormatError(f"{where}: cannot import this model (opset {opset}): " + "; ".join(parts))

    inits = set()
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        consts[t.name] = tensor_to_array(t, f"{where}: initializer {t.name!r}")
        inits.add(t.name)
    real_inputs = [vi for vi in g.input if vi.name not in consts]
    if not real_inputs:
        raise OnnxFormatError(f"{where}: the graph has no inputs besides its initializers")

    used_names: set[str] = set()

    def unique(base):
        name, i = base, 1
        while name in used_names:
            name, i = f"{base}_{i}", i + 1
        used_names.add(name)
        return name

    values: dict[str, tuple[str, np.ndarray]] = {}  # ONNX name -> (Graph node name, traced array)
    in_names = []
    for vi in real_inputs:
        tt = vi.type.tensor_type
        if not tt.HasField("shape") or len(tt.shape.dim) == 0:
            raise OnnxFormatError(f"{where}: input {vi.name!r} declares no shape; cnnkit needs a static "
                                  "input shape (only the batch axis may be symbolic)")
        dims = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif i == 0:
                dims.append(int(trace_batch))
            else:
                raise OnnxFormatError(f"{where}: input {vi.name!r}: only the first (batch) axis may be "
                                      f"symbolic; dimension {i} is {d.dim_param or '?'}")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else np.float32
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise OnnxFormatError(f"{where}: input {vi.name!r}: only float32/float64 inputs are supported, "
                                  f"found {np.dtype(dtype).name}")
        gname = unique(_sanitize(vi.name))
        in_names.append(gname)
        values[vi.name] = (gname, np.ones(dims, dtype=dtype))  # ones: no 0/0 while tracing
    graph = Graph(inputs=tuple(in_names))
    batch_derived: set[str] = set()  # constants computed from a traced shape

    for index, node in enumerate(g.node):
        attrs = _attrs(node)
        for i, name in enumerate(node.input):
            if name and name not in consts and name not in values:
                raise OnnxFormatError(
                    f"{where}: node {node.name!r} ({node.op_type}) reads {name!r}, which is neither a graph "
                    f"input, an initializer nor the output of an earlier node (a missing initializer?)")
        present = [n for n in node.input if n]
        if node.op_type == "Shape" and present and present[0] in values:
            shape = np.array(values[present[0]][1].shape, dtype=np.int64)
            start, end = attrs.get("start", 0), attrs.get("end", None)
            consts[node.output[0]] = shape[start:end]
            batch_derived.add(node.output[0])
            continue
        if node.op_type == "Size" and present and present[0] in values:
            consts[node.output[0]] = np.array(values[present[0]][1].size, np.int64)
            batch_derived.add(node.output[0])
            continue
        if all(n in consts for n in present):
            outs = _fold(node, [consts[n] if n else None for n in node.input], opset, where)
            derived = any(n in batch_derived for n in present)
            for name, v in zip(node.output, outs):
                if name:
                    consts[name] = v
                    if derived:
                        batch_derived.add(name)
            continue
        if node.op_type in FOLD_ONLY:
            raise OnnxFormatError(f"{where}: node {node.name!r} ({node.op_type}) computes on a tensor whose "
                                  "value is not known at load time; only static shape arithmetic is supported")
        ctx = Ctx(node, attrs, consts, values, opset, where, inits)
        ctx.batch_derived, ctx.trace_batch = batch_derived, int(trace_batch)
        try:
            layer, dyn = HANDLERS[node.op_type](ctx)
            xs = [values[n][1] for n in dyn]
            gname = unique(_sanitize(node.name or f"{node.op_type}_{index}"))
            layer.eval()
            y = layer(*xs)
        except OnnxFormatError:
            raise
        except (ValueError, TypeError, IndexError, KeyError) as e:
            raise OnnxFormatError(f"{where}: node {node.name!r} ({node.op_type}): {e}") from None
        graph.add(gname, layer, inputs=[values[n][0] for n in dyn])
        values[node.output[0]] = (gname, y)

    outs = []
    for vi in g.output:
        if vi.name not in values:
            raise OnnxFormatError(f"{where}: graph output {vi.name!r} is "
                                  + ("a constant" if vi.name in consts else "not computed by any node"))
        outs.append(values[vi.name][0])
    graph.set_outputs(*outs)
    graph.eval()
    graph.onnx_opset = opset
    return graph


def _fold(node, inputs, opset, where):
    """Evaluate one node on constant inputs with ``onnx.reference`` (a one-node model)."""
    onnx = require_onnx()
    if node.op_type == "Constant":
        a = node.attribute[0]
        if a.name == "value":
            return [tensor_to_array(a.t, f"{where}: Constant {node.name!r}")]
        if a.name in ("value_float", "value_int"):
            return [np.array(onnx.helper.get_attribute_value(a),
                             dtype=np.float32 if a.name == "value_float" else np.int64)]
        if a.name in ("value_floats", "value_ints"):
            return [np.array(onnx.helper.get_attribute_value(a),
                             dtype=np.float32 if a.name == "value_floats" else np.int64)]
    from onnx.reference import ReferenceEvaluator
    in_names = [f"i{i}" if n else "" for i, n in enumerate(node.input)]
    out_names = [f"o{i}" for i in range(len(node.output))]
    n2 = onnx.helper.make_node(node.op_type, in_names, out_names, domain=node.domain)
    n2.attribute.extend(node.attribute)
    vis = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), None)
           for n, v in zip(in_names, inputs) if n]
    outs = [onnx.helper.make_tensor_value_info(n, 0, None) for n in out_names]
    m = onnx.helper.make_model(onnx.helper.make_graph([n2], "fold", vis, outs),
                               opset_imports=[onnx.helper.make_opsetid("", opset)])
    try:
        res = ReferenceEvaluator(m).run(None, {n: np.asarray(v) for n, v in zip(in_names, inputs) if n})
    except Exception as e:
        raise OnnxFormatError(f"{where}: node {node.name!r} ({node.op_type}): cannot fold constant inputs: "
                              f"{type(e).__name__}: {e}") from None
    return [np.asarray(r) for r in res]
