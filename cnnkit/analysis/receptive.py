"""Receptive fields of every layer's output, for any graph of layers.

For each axis (height, width) an output unit ``u`` of a layer sees the input pixels
centred on ``start + u * jump`` over ``size`` pixels (pixel centres are at 0 .. I-1;
a field may reach into the padding, i.e. below 0 or past I-1). Starting from the
input (size 1, jump 1, start 0), a sliding window with kernel K, stride S, dilation
D and leading padding P_before (K' = D*(K-1) + 1 the dilated kernel) gives::

    size'  = size + (K' - 1) * jump
    jump'  = jump * S
    start' = start + ((K' - 1)/2 - P_before) * jump     # padding shifts the start

(Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019, equations for a single path.) Element-wise layers (BN, LRN,
activations, dropout) keep the field. Where paths meet (``Add`` of a residual block,
``Concat`` of an inception module) the field is the union of the branches' fields:
unit 0's interval is ``[min(start_b - (size_b - 1)/2), max(start_b + (size_b - 1)/2)]``
over the branches ``b``, so every path counts; the branches must share the jump (they
do when their outputs share a grid), otherwise the result is marked inexact.

Layers that mix every position (fully connected layers, global/adaptive-to-1 pooling,
LeNet-5's RBF layer) see the union of all their input units' fields, clipped to the
input: the whole input, less any border that strided windows never reach.
``Flatten`` keeps each feature's field (feature = one input unit). Adaptive pooling
with unequal bins (e.g. 8 -> 7) is approximated with its widest bin and a jump of
``I/O``, and marked inexact; with equal bins it is an ordinary window.

Values are exact fractions (a 2x2 pool centres its unit between two pixels, start
0.5); :class:`ReceptiveField` converts them for display.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .._errors import value_error
from ..nn.module import Layer
from .shapes import LayerRecord, adaptive_bins, infer_shapes

F = Fraction


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of one layer's output units, in input pixels, per axis (h, w).

    ``size``: extent of one unit's field; ``jump``: distance between neighbouring units'
    fields (the effective stride; 0 for a layer that sees the whole input); ``start``:
    centre of unit (0, 0)'s field; ``units``: number of output units along each axis;
    ``input_hw``: the model input's (H, W); ``whole``: every unit sees the union of all
    positions (FC, global pooling); ``exact``: False where an approximation was needed
    (unequal adaptive bins, merged branches with different jumps).
    """

    size: tuple[Fraction, Fraction]
    jump: tuple[Fraction, Fraction]
    start: tuple[Fraction, Fraction]
    units: tuple[int, int]
    input_hw: tuple[int, int]
    whole: bool = False
    exact: bool = True

    def center_unit(self) -> tuple[int, int]:
        """The middle output unit, ``(units - 1) // 2`` on each axis."""
        return tuple((n - 1) // 2 for n in self.units)

    def center(self, unit=None) -> tuple[Fraction, Fraction]:
        """Input coordinate of the centre of ``unit``'s field (default: the middle unit)."""
        unit = self.center_unit() if unit is None else tuple(unit)
        return tuple(c + u * j for c, u, j in zip(self.start, unit, self.jump))

    def region(self, unit=None, clip: bool = False) -> tuple[tuple[Fraction, Fraction], ...]:
        """``((top, bottom), (left, right))``: the first and last input row/column (inclusive)
        of ``unit``'s field (default: the middle unit); ``clip=True`` intersects it with the
        input (``None`` on an axis where nothing is left)."""
        out = []
        for c, r, n in zip(self.center(unit), self.size, self.input_hw):
            lo, hi = c - (r - 1) / 2, c + (r - 1) / 2
            if clip:
                lo, hi = max(lo, F(0)), min(hi, F(n - 1))
                if lo > hi:
                    out.append(None)
                    continue
            out.append((lo, hi))
        return tuple(out)

    def as_dict(self) -> dict:
        """Plain numbers (ints where exact integers, else floats) for JSON."""
        num = lambda v: int(v) if v.denominator == 1 else float(v)  # noqa: E731
        return {"size": [num(v) for v in self.size], "jump": [num(v) for v in self.jump],
                "start": [num(v) for v in self.start], "units": list(self.units),
                "whole_input": self.whole, "exact": self.exact}


def receptive_fields(model_or_records, input_shape=None) -> dict[str, ReceptiveField | None]:
    """Receptive field of every layer's output, by dotted name (``''``: the model's output).

    ``model_or_records``: a model (then ``input_shape`` is one input's shape without the
    batch axis, e.g. ``(3, 224, 224)``) or the records of
    :func:`cnnkit.analysis.infer_shapes`. A container's field is that of its (first)
    output. ``None`` where the model input is not an image (N, C, H, W) or a layer's
    spatial mapping is unknown (a layer without a shape rule, and everything after it).
    """
    if isinstance(model_or_records, Layer):
        if input_shape is None:
            raise value_error("receptive_fields", "input_shape is needed with a model")
        records = infer_shapes(model_or_records, input_shape)
    else:
        records = list(model_or_records)
    if not records or not all(isinstance(r, LayerRecord) for r in records):
        raise value_error("receptive_fields", "expected a model or the records of infer_shapes")
    root = records[0]
    values: dict[str, ReceptiveField | None] = {}
    for v, s in zip(root.inputs, root.input_shapes):
        hw = tuple(s[2:]) if len(s) == 4 else None
        values[v] = None if hw is None else ReceptiveField((F(1), F(1)), (F(1), F(1)), (F(0), F(0)), hw, hw)
    for rec in records:
        if rec.leaf:
            values[rec.outputs[0]] = _leaf(rec, [values.get(v) for v in rec.inputs])
    return {rec.name: values.get(rec.outputs[0]) for rec in records}


def _leaf(rec: LayerRecord, fields: list) -> ReceptiveField | None:
    if not fields or any(f is None for f in fields) or rec.spatial == "unknown":
        return None
    out = rec.output_shapes[0]
    rf = fields[0]
    kind = rec.spatial
    if kind in ("identity", "flatten"):
        return rf
    if kind == "global":
        return _whole(rf)
    if kind == "merge":
        return _union(fields, out)
    if rf.whole:  # a window over a 1x1 map that already sees everything
        return ReceptiveField(rf.size, rf.jump, rf.start, tuple(out[2:]), rf.input_hw, True, rf.exact)
    w = rec.window
    size, jump, start = [], [], []
    for axis in range(2):
        r, j, c = rf.size[axis], rf.jump[axis], rf.start[axis]
        if kind == "window":
            k_eff = w.dilation[axis] * (w.kernel[axis] - 1) + 1
            size.append(r + (k_eff - 1) * j)
            jump.append(j * w.stride[axis])
            start.append(c + (F(k_eff - 1, 2) - w.pads[2 * axis]) * j)
        else:  # adaptive pooling, unequal bins: the widest bin, jump I/O
            n_in, n_out = rec.input_shapes[0][2 + axis], out[2 + axis]
            first_end = adaptive_bins(n_in, n_out)[0][1]
            size.append(r + (w.kernel[axis] - 1) * j)
            jump.append(j * F(n_in, n_out))
            start.append(c + F(first_end - 1, 2) * j)
    return ReceptiveField(tuple(size), tuple(jump), tuple(start), tuple(out[2:]), rf.input_hw,
                          exact=rf.exact and kind == "window")


def _bounds(rf: ReceptiveField, axis: int, all_units: bool) -> tuple[Fraction, Fraction]:
    """Interval of unit 0's field, or of the union of every unit's field."""
    half = (rf.size[axis] - 1) / 2
    last = (rf.units[axis] - 1) * rf.jump[axis] if all_units and not rf.whole else 0
    return rf.start[axis] - half, rf.start[axis] + last + half


def _whole(rf: ReceptiveField) -> ReceptiveField:
    """Union over all units, clipped to the input: what an FC unit or a global pool sees."""
    size, start = [], []
    for axis in range(2):
        lo, hi = _bounds(rf, axis, all_units=True)
        lo, hi = max(lo, F(0)), min(hi, F(rf.input_hw[axis] - 1))
        size.append(hi - lo + 1)
        start.append((lo + hi) / 2)
    return ReceptiveField(tuple(size), (F(0), F(0)), tuple(start), (1, 1), rf.input_hw, True, rf.exact)


def _union(fields: list, out) -> ReceptiveField:
    """Fields of several branches meeting in one output grid (Add, Concat)."""
    units = tuple(out[2:]) if len(out) == 4 else fields[0].units
    if any(f.whole for f in fields):
        whole = [_whole(f) if not f.whole else f for f in fields]
        merged = _union_of(whole, whole[0].jump)
        return ReceptiveField(merged.size, merged.jump, merged.start, units, merged.input_hw, True,
                              all(f.exact for f in fields))
    jumps = {f.jump for f in fields}
    jump = fields[0].jump if len(jumps) == 1 else tuple(max(f.jump[a] for f in fields) for a in range(2))
    merged = _union_of(fields, jump)
    return ReceptiveField(merged.size, jump, merged.start, units, merged.input_hw,
                          exact=len(jumps) == 1 and all(f.exact for f in fields))


def _union_of(fields: list, jump) -> ReceptiveField:
    size, start = [], []
    for axis in range(2):
        lo = min(_bounds(f, axis, False)[0] for f in fields)
        hi = max(_bounds(f, axis, False)[1] for f in fields)
        size.append(hi - lo + 1)
        start.append((lo + hi) / 2)
    return ReceptiveField(tuple(size), tuple(jump), tuple(start), fields[0].units, fields[0].input_hw)


__all__ = ["ReceptiveField", "receptive_fields"]
