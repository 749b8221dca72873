"""``summary(model, input_shape)``: one row per layer with its output shape, window,
parameters, multiply-adds and receptive field, and the totals a reader checks a paper
against. Nothing is computed on arrays: shapes come from :func:`infer_shapes`.

Counting conventions:

- ``weights`` / ``biases``: the sizes of a layer's ``weight`` and ``bias`` Parameters
  (BatchNorm's gamma and beta are its ``weight`` and ``bias``, as in PyTorch);
  ``parameters``: all of a layer's Parameters; ``non_trainable``: its frozen
  Parameters plus its floating-point buffers (BatchNorm's running mean and variance,
  LeNet-5's fixed RBF prototypes), as Keras counts "non-trainable params". BatchNorm's
  integer ``num_batches_tracked`` counter is state, not a parameter, and is not counted.
- A container's row shows the sums over the layers inside it, so a row above the
  ``depth`` limit carries everything folded below it; totals are summed over the leaf
  layers, each Parameter once even if shared.
- Multiply-adds (MACs) follow :mod:`cnnkit.analysis.shapes`: conv
  ``H_out*W_out*C_out*(K*K*C_in/groups)``, FC ``in*out``, per image, times the batch;
  FLOPs = 2 x MACs; bias additions, BN, activations, pooling and LRN are excluded.
  MobileNet v1 at 224: 568,740,352; ResNet-50 at 224: 4,089,184,256.
- Parameter memory: bytes of the counted parameters (trainable and non-trainable) at
  their dtype. Activation memory: bytes of every leaf layer's output plus the input,
  for one forward at the given batch (what a training forward keeps for the backward,
  before any in-place reuse).
- Receptive field ``rf`` / ``jump`` / ``start`` of each output, in input pixels: see
  :mod:`cnnkit.analysis.receptive`.

Formats: ``to_table()`` (aligned text with thousands separators, the default
``str``), ``to_markdown()``, ``to_csv()`` (plain integers), ``to_json()``; the JSON
document follows ``JSON_SCHEMA`` below (a JSON Schema, draft 2020-12)::

    {"schema": "cnnkit.summary/1", "model": "Sequential", "model_name": "vgg_d" | null,
     "input_shapes": [[1, 3, 224, 224]], "batch": 1, "dtype": "float32", "depth": null | int,
     "rows": [{"name": "features.0", "depth": 2, "type": "Conv2d", "leaf": true,
               "output_shape": [[1, 64, 224, 224]], "kernel": [3, 3] | null, "stride": [1, 1] | null,
               "padding": [1, 1, 1, 1] | null, "dilation": [1, 1] | null, "groups": 1 | null,
               "weights": 1728, "biases": 64, "parameters": 1792, "non_trainable": 0,
               "macs": 86704128, "shape_from_forward": false,
               "receptive_field": null | {"size": [3, 3], "jump": [1, 1], "start": [0, 0],
                                          "units": [224, 224], "whole_input": false, "exact": true}},
              ...],
     "totals": {"trainable_parameters": ..., "non_trainable_parameters": ..., "total_parameters": ...,
                "parameter_bytes": ..., "activation_bytes": ..., "macs": ..., "flops": ...}}

``rows`` holds the rows up to ``depth`` (all rows when ``depth`` is null), in pre-order;
the model itself is the row named ``""`` at depth 0.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass

import numpy as np

from .._errors import value_error
from ..nn.module import Layer, Parameter
from .receptive import ReceptiveField, receptive_fields
from .shapes import LayerRecord, infer_shapes

_INT = {"type": "integer", "minimum": 0}
_PAIR = {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
_NUM_PAIR = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}

JSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "cnnkit.summary/1",
    "type": "object",
    "required": ["schema", "model", "model_name", "input_shapes", "batch", "dtype", "depth", "rows", "totals"],
    "additionalProperties": False,
    "properties": {
        "schema": {"type": "string", "enum": ["cnnkit.summary/1"]},
        "model": {"type": "string"},
        "model_name": {"type": ["string", "null"]},
        "input_shapes": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        "batch": {"type": "integer", "minimum": 1},
        "dtype": {"type": "string"},
        "depth": {"type": ["integer", "null"], "minimum": 0},
        "explain_counts": {"type": "string"},
        "rows": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "depth", "type", "leaf", "output_shape", "kernel", "stride", "padding",
                         "dilation", "groups", "weights", "biases", "parameters", "non_trainable", "macs",
                         "shape_from_forward", "receptive_field"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "depth": {"type": "integer", "minimum": 0},
                "type": {"type": "string"},
                "leaf": {"type": "boolean"},
                "output_shape": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
                "kernel": _PAIR, "stride": _PAIR, "dilation": _PAIR,
                "padding": {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
                "groups": {"type": ["integer", "null"], "minimum": 1},
                "weights": _INT, "biases": _INT, "parameters": _INT, "non_trainable": _INT, "macs": _INT,
                "shape_from_forward": {"type": "boolean"},
                "receptive_field": {"type": ["object", "null"],
                                    "required": ["size", "jump", "start", "units", "whole_input", "exact"],
                                    "additionalProperties": False,
                                    "properties": {"size": _NUM_PAIR, "jump": _NUM_PAIR, "start": _NUM_PAIR,
                                                   "units": {"type": "array", "items": {"type": "integer"}},
                                                   "whole_input": {"type": "boolean"},
                                                   "exact": {"type": "boolean"}}}}}},
        "totals": {"type": "object",
                   "required": ["trainable_parameters", "non_trainable_parameters", "total_parameters",
                                "parameter_bytes", "activation_bytes", "macs", "flops"],
                   "additionalProperties": False,
                   "properties": {k: _INT for k in ("trainable_parameters", "non_trainable_parameters",
                                                    "total_parameters", "parameter_bytes", "activation_bytes",
                                                    "macs", "flops")}},
    },
}

FORMATS = ("table", "markdown", "json", "csv")


@dataclass
class SummaryRow:
    """One layer or container (see the module docstring for the counting conventions)."""

    name: str
    depth: int
    type: str
    leaf: bool
    output_shapes: tuple
    kernel: tuple | None
    stride: tuple | None
    padding: tuple | None
    dilation: tuple | None
    groups: int | None
    weights: int
    biases: int
    parameters: int
    non_trainable: int
    macs: int
    from_forward: bool
    rf: ReceptiveField | None

    def as_dict(self) -> dict:
        lst = lambda t: None if t is None else list(t)  # noqa: E731
        return {"name": self.name, "depth": self.depth, "type": self.type, "leaf": self.leaf,
                "output_shape": [list(s) for s in self.output_shapes], "kernel": lst(self.kernel),
                "stride": lst(self.stride), "padding": lst(self.padding), "dilation": lst(self.dilation),
                "groups": self.groups, "weights": self.weights, "biases": self.biases,
                "parameters": self.parameters, "non_trainable": self.non_trainable, "macs": self.macs,
                "shape_from_forward": self.from_forward,
                "receptive_field": None if self.rf is None else self.rf.as_dict()}


class Summary:
    """The result of :func:`summary`: ``rows`` (every layer, pre-order), ``totals`` (a dict
    with the keys of the JSON ``totals``) and the formats (module docstring). ``depth``
    limits the rows that the formats show."""

    def __init__(self, rows, totals, *, model_type, model_name, input_shapes, batch, dtype, depth):
        self.rows: list[SummaryRow] = rows
        self.totals: dict = totals
        self.model_type, self.model_name = model_type, model_name
        self.input_shapes, self.batch, self.dtype, self.depth = input_shapes, batch, dtype, depth

    def __getitem__(self, name: str) -> SummaryRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def visible_rows(self) -> list[SummaryRow]:
        return [r for r in self.rows if self.depth is None or r.depth <= self.depth]

    # ---- formats --------------------------------------------------------------------
    def format(self, fmt: str = "table") -> str:
        if fmt not in FORMATS:
            raise value_error("Summary.format", f"format must be one of {', '.join(FORMATS)}", format=fmt)
        return getattr(self, f"to_{fmt}")()

    def __str__(self) -> str:
        return self.to_table()

    def to_dict(self) -> dict:
        return {"schema": "cnnkit.summary/1", "model": self.model_type, "model_name": self.model_name,
                "input_shapes": [list(s) for s in self.input_shapes], "batch": self.batch,
                "dtype": self.dtype, "depth": self.depth,
                "rows": [r.as_dict() for r in self.visible_rows()], "totals": dict(self.totals)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["name", "depth", "type", "leaf", "output_shape", "kernel", "stride", "padding",
                    "dilation", "groups", "weights", "biases", "parameters", "non_trainable", "macs",
                    "rf_size", "rf_jump", "rf_start", "rf_exact"])
        for r in self.visible_rows():
            rf = r.rf.as_dict() if r.rf is not None else None
            xs = lambda t: "" if t is None else "x".join(str(v) for v in t)  # noqa: E731
            w.writerow([r.name, r.depth, r.type, int(r.leaf), " ".join(xs(s) for s in r.output_shapes),
                        xs(r.kernel), xs(r.stride), xs(r.padding), xs(r.dilation),
                        "" if r.groups is None else r.groups, r.weights, r.biases, r.parameters,
                        r.non_trainable, r.macs,
                        "" if rf is None else xs(rf["size"]), "" if rf is None else xs(rf["jump"]),
                        "" if rf is None else xs(rf["start"]), "" if rf is None else int(rf["exact"])])
        return out.getvalue()

    _HEAD = ("Layer", "Type", "Output shape", "Kernel", "Stride", "Padding", "Dilation", "Groups",
             "Weights", "Biases", "Params", "Non-trainable", "MACs", "RF", "Jump", "Start")
    _RIGHT = {"Weights", "Biases", "Params", "Non-trainable", "MACs", "RF", "Jump", "Start", "Groups"}

    def _cells(self, row: SummaryRow, indent: bool) -> list[str]:
        name = row.name or "(model)"
        if indent:
            name = "  " * row.depth + name
        rf = row.rf
        if rf is None:
            rf_cells = ["?", "", ""]
        else:
            mark = "" if rf.exact else "~"
            rf_cells = [mark + _pair_text(rf.size), "-" if rf.whole else _pair_text(rf.jump),
                        _pair_text(rf.start)]
        count = lambda v: f"{v:,}" if v else ("0" if row.leaf else "")  # noqa: E731
        return [name, row.type + (" (forward)" if row.from_forward else ""),
                " ".join(_shape_text(s) for s in row.output_shapes),
                "" if row.kernel is None else "x".join(map(str, row.kernel)),
                "" if row.stride is None else _pair_text(row.stride),
                "" if row.padding is None else ",".join(map(str, row.padding)),
                "" if row.dilation is None else _pair_text(row.dilation),
                "" if row.groups is None else str(row.groups),
                count(row.weights), count(row.biases), count(row.parameters),
                f"{row.non_trainable:,}" if row.non_trainable else "", count(row.macs)] + rf_cells

    def _total_lines(self) -> list[str]:
        t = self.totals
        shapes = " ".join(_shape_text(s) for s in self.input_shapes)
        lines = [
            ("Input", f"{shapes} {self.dtype}"),
            ("Trainable parameters", f"{t['trainable_parameters']:,}"),
            ("Non-trainable parameters", f"{t['non_trainable_parameters']:,} (frozen parameters and "
                                         "floating buffers: BN running statistics, fixed prototypes)"),
            ("Total parameters", f"{t['total_parameters']:,}"),
            ("Parameter memory", f"{t['parameter_bytes']:,} bytes ({_mib(t['parameter_bytes'])})"),
            ("Activation memory", f"{t['activation_bytes']:,} bytes ({_mib(t['activation_bytes'])}; "
                                  f"batch {self.batch}, every layer's output and the input)"),
            ("Multiply-adds", f"{t['macs']:,} ({_si(t['macs'])} MACs at batch {self.batch}; "
                              f"FLOPs = 2 x MACs = {t['flops']:,})"),
        ]
        forward = [r.name for r in self.rows if r.from_forward]
        if forward:
            lines.append(("Shape from forward", ", ".join(forward) + " (no shape rule; MACs not counted)"))
        width = max(len(k) for k, _ in lines)
        return [f"{k + ':':<{width + 1}} {v}" for k, v in lines]

    def to_table(self) -> str:
        rows = [list(self._HEAD)] + [self._cells(r, indent=True) for r in self.visible_rows()]
        keep = [i for i in range(len(self._HEAD)) if any(row[i] for row in rows[1:])]  # drop empty columns
        widths = {i: max(len(row[i]) for row in rows) for i in keep}
        lines = []
        for n, row in enumerate(rows):
            cells = [row[i].rjust(widths[i]) if self._HEAD[i] in self._RIGHT else row[i].ljust(widths[i])
                     for i in keep]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        return "\n".join(lines + self._total_lines()) + "\n"

    def to_markdown(self) -> str:
        head = list(self._HEAD)
        out = ["| " + " | ".join(head) + " |",
               "|" + "|".join("---:" if h in self._RIGHT else "---" for h in head) + "|"]
        for r in self.visible_rows():
            cells = self._cells(r, indent=False)
            cells[0] = f"`{cells[0]}`"
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
        out += [f"- {line}" for line in self._total_lines()]
        return "\n".join(out) + "\n"


def _pair_text(p) -> str:
    num = lambda v: str(int(v)) if v == int(v) else f"{float(v):g}"  # noqa: E731
    a, b = num(p[0]), num(p[1])
    return a if a == b else f"{a}x{b}"


def _shape_text(s) -> str:
    return "(" + ", ".join(str(v) for v in s) + ")"


def _si(n: int) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.2f} MiB"


# ---- building the summary -----------------------------------------------------------
def summary(model: Layer, input_shape, batch: int = 1, depth: int | None = None) -> Summary:
    """Summarize ``model`` on a batch of ``batch`` inputs of ``input_shape`` (one input's
    shape without the batch axis, e.g. ``(3, 224, 224)``; a list of shapes for a Graph
    with several inputs). ``depth`` limits the rows the formats show (0: the model only,
    1: its children, ...); deeper layers are still counted in their ancestors' rows and
    in the totals. See the module docstring for the columns, conventions and formats.
    """
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0):
        raise value_error("summary", "depth must be None or an int >= 0", depth=depth)
    records = infer_shapes(model, input_shape, batch)
    fields = receptive_fields(records)
    own = {r.name: _own_counts(r.layer) for r in records if r.leaf}
    rows = []
    for rec in records:
        leaves = [own[r.name] for r in records if r.leaf and _inside(r.name, rec.name)]
        w, b, p, nt = _sum_unique(leaves)
        win = rec.window if rec.spatial == "window" else None
        rows.append(SummaryRow(
            name=rec.name, depth=rec.depth, type=rec.type, leaf=rec.leaf, output_shapes=rec.output_shapes,
            kernel=None if win is None else win.kernel, stride=None if win is None else win.stride,
            padding=None if win is None else win.pads, dilation=None if win is None else win.dilation,
            groups=rec.groups, weights=w, biases=b, parameters=p, non_trainable=nt, macs=rec.macs,
            from_forward=rec.from_forward, rf=fields.get(rec.name)))
    dtype = _dtype(records)
    totals = _totals(records, own, dtype)
    return Summary(rows, totals, model_type=type(model).__name__,
                   model_name=(getattr(model, "config", None) or {}).get("name"),
                   input_shapes=records[0].input_shapes, batch=int(batch), dtype=dtype.name,
                   depth=None if depth is None else int(depth))


def _inside(name: str, prefix: str) -> bool:
    return not prefix or name == prefix or name.startswith(prefix + ".")


def _own_counts(layer: Layer) -> dict:
    """Counting items of one leaf layer (and any sub-layers it keeps inside itself):
    ``items`` = [(id, size, trainable, nbytes, kind)], kind 'weight'/'bias'/'other'/'buffer'."""
    items = []
    for mod in layer.modules():
        for key, p in mod._parameters.items():
            if isinstance(p, Parameter):
                kind = key if (mod is layer and key in ("weight", "bias")) else "other"
                items.append((id(p), p.data.size, p.requires_grad, p.data.nbytes, kind))
        for b in mod._buffers.values():
            if b is not None and np.asarray(b).dtype.kind == "f":
                items.append((id(b), b.size, False, b.nbytes, "buffer"))
    return {"items": items}


def _sum_unique(counts: list[dict]) -> tuple[int, int, int, int]:
    seen, w, b, p, nt = set(), 0, 0, 0, 0
    for c in counts:
        for ident, size, trainable, _, kind in c["items"]:
            if ident in seen:
                continue
            seen.add(ident)
            if kind == "buffer":
                nt += size
                continue
            p += size
            w += size if kind == "weight" else 0
            b += size if kind == "bias" else 0
            nt += 0 if trainable else size
    return w, b, p, nt


def _dtype(records: list[LayerRecord]):
    for p in records[0].layer.parameters():
        if p.data.dtype.kind == "f":
            return p.data.dtype
    return np.dtype(np.float32)


def _totals(records: list[LayerRecord], own: dict, dtype) -> dict:
    seen, trainable, frozen, nbytes = set(), 0, 0, 0
    for rec in records:
        if not rec.leaf:
            continue
        for ident, size, is_trainable, size_bytes, _ in own[rec.name]["items"]:
            if ident in seen:
                continue
            seen.add(ident)
            nbytes += size_bytes
            if is_trainable:
                trainable += size
            else:
                frozen += size
    elements = sum(math.prod(s) for s in records[0].input_shapes)
    elements += sum(math.prod(s) for r in records if r.leaf for s in r.output_shapes)
    macs = sum(r.macs for r in records if r.leaf)
    return {"trainable_parameters": trainable, "non_trainable_parameters": frozen,
            "total_parameters": trainable + frozen, "parameter_bytes": nbytes,
            "activation_bytes": elements * dtype.itemsize, "macs": macs, "flops": 2 * macs}


__all__ = ["summary", "Summary", "SummaryRow", "JSON_SCHEMA", "FORMATS"]
