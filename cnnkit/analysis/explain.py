"""``cnnkit explain``: the lecture's formulas with the numbers plugged in.

Each function returns an :class:`Explanation`, the numbers as fields and ``.text``
as the lecture writes the formulas::

    >>> e = explain_conv(input=227, kernel=11, stride=4, padding=0, in_channels=3, filters=96)
    >>> e.output, e.weights, e.parameters
    ((55, 55), 34848, 34944)
    >>> print(e.text.splitlines()[2])
      O = (I - K + 2P)/S + 1 = (227 - 11 + 0)/4 + 1 = 55

Letters (the lecture's): I input size, K kernel size, S stride, P padding, D dilation,
C input channels, N filters (output channels), G groups, O output size, F units of a
fully connected layer. Output sizes and 'same' padding come from
``cnnkit.functional.window`` (``conv_out_size``, ``resolve_padding``, ``output_hw``),
the functions the kernels use, so an explanation never disagrees with a layer, and an
impossible layer raises the kernels' error, which shows the formula with the numbers.

Counting convention: a multiplication means one multiply-add (the lecture's word;
MACs); FLOPs = 2 x MACs. Biases, activations, pooling and normalization are not counted.

The sliding window (text and PNG) is in :mod:`cnnkit.analysis.window_plot`;
``explain_window`` and ``save_window_png`` are re-exported here.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from .._errors import type_error, value_error
from ..functional._check import pair
from ..functional.pool import check_pool_spec
from ..functional.window import conv_out_size, output_hw, resolve_padding


# ---- the result -------------------------------------------------------------------
@dataclass(frozen=True)
class Explanation:
    """What one ``explain_*`` call found: ``values`` (also readable as attributes,
    ``e.parameters``), the printed ``lines`` (``.text`` joins them) and ``warnings``
    (also printed, as ``warning: ...`` lines)."""

    topic: str
    values: dict = field(default_factory=dict)
    lines: tuple = ()
    warnings: tuple = ()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __getattr__(self, name):  # only called when normal lookup fails
        values = self.__dict__.get("values")
        if name.startswith("_") or values is None or name not in values:
            known = ", ".join(sorted(values)) if values else ""
            raise AttributeError(f"explain {self.__dict__.get('topic', '?')}: no field {name!r}; "
                                 f"fields: {known}")
        return values[name]

    def __str__(self) -> str:
        return self.text


def n(value: int) -> str:
    """A count with thousands separators: ``34944 -> '34,944'``."""
    return f"{value:,}"


def _positive(value, name: str, where: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise type_error(where, f"{name} must be an int", **{name: value})
    if value < 1:
        raise value_error(where, f"{name} must be positive", **{name: value})
    return int(value)


def _plural(count: int, noun: str) -> str:
    return f"{n(count)} {noun}{'' if count == 1 else 's'}"


def _hw(h: int, w: int) -> str:
    return f"{h}x{w}"


def _decimal(num: int, den: int) -> str:
    return f"{round(num / den, 4):g}"


# ---- one axis of a sliding window ---------------------------------------------------
@dataclass(frozen=True)
class _Axis:
    """The sliding window along one axis (rows or columns)."""

    size: int
    kernel: int
    stride: int
    dilation: int
    pad_begin: int
    pad_end: int
    ceil_mode: bool = False

    @property
    def k_eff(self) -> int:  # the span of a dilated kernel
        return self.dilation * (self.kernel - 1) + 1

    @property
    def span(self) -> int:  # I - K + 2P, the numerator of the lecture's formula
        return self.size + self.pad_begin + self.pad_end - self.k_eff

    @property
    def exact(self) -> bool:
        return self.span % self.stride == 0

    @property
    def out(self) -> int:
        return conv_out_size(self.size, self.kernel, self.stride, self.pad_begin, self.pad_end,
                             self.dilation, self.ceil_mode)

    @property
    def out_floor(self) -> int:
        return conv_out_size(self.size, self.kernel, self.stride, self.pad_begin, self.pad_end,
                             self.dilation, False)

    @property
    def out_ceil(self) -> int:
        return conv_out_size(self.size, self.kernel, self.stride, self.pad_begin, self.pad_end,
                             self.dilation, True)

    def unseen(self) -> list[int]:
        """Input indices (0-based) that no window of this axis reads."""
        seen = set()
        for o in range(self.out):
            for i in range(self.kernel):
                seen.add(o * self.stride + i * self.dilation - self.pad_begin)
        return [r for r in range(self.size) if r not in seen]

    def formula(self, pad_names=("P_top", "P_bottom"), letter="O") -> str:
        """``O = (I - K + 2P)/S + 1 = (227 - 11 + 0)/4 + 1 = 55``."""
        k_sym = "K" if self.dilation == 1 else "K_eff"
        if self.pad_begin == self.pad_end:
            p_sym, p_val = "2P", f"{self.pad_begin + self.pad_end}"
        else:
            p_sym, p_val = f"{pad_names[0]} + {pad_names[1]}", f"{self.pad_begin} + {self.pad_end}"
        text = (f"{letter} = (I - {k_sym} + {p_sym})/S + 1 = "
                f"({self.size} - {self.k_eff} + {p_val})/{self.stride} + 1")
        if not self.exact:
            rounding = "ceil" if self.ceil_mode else "floor"
            text += f" = {rounding}({_decimal(self.span, self.stride)}) + 1"
        return f"{text} = {self.out}"

    def k_eff_line(self) -> str:
        return (f"K_eff = D*(K - 1) + 1 = {self.dilation}*({self.kernel} - 1) + 1 = {self.k_eff} "
                f"(dilation {self.dilation}: the kernel's taps are {self.dilation} apart)")

    def same_pads(self) -> tuple[int, int, int]:
        """(total, begin, end) of 'same' padding, as ``resolve_padding`` computes it."""
        begin, end, _, _ = resolve_padding("same", (self.kernel, 1), (self.stride, 1),
                                           (self.dilation, 1), (self.size, 1), "explain")
        return begin + end, begin, end

    def same_line(self, names=("top", "bottom")) -> str:
        total, begin, end = self.same_pads()
        target = -(-self.size // self.stride)
        k_sym = "K" if self.dilation == 1 else "K_eff"
        line = (f"total = max((ceil(I/S) - 1)*S + {k_sym} - I, 0) = max(({target} - 1)*{self.stride} + "
                f"{self.k_eff} - {self.size}, 0) = {total}: {names[0]} {begin}, {names[1]} {end}")
        if total % 2:
            line += " (the odd pixel at the end: TensorFlow SAME = ONNX SAME_UPPER = cnnkit 'same')"
        return line


def _ranges(idx: list[int], limit: int = 6) -> str:
    runs = []
    for i in idx:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    if len(runs) > limit:
        parts.append(f"... ({len(runs)} runs)")
    return ", ".join(parts)


def _coverage(ax: _Axis, noun: str, nouns: str, op: str) -> list[str]:
    """What the division's remainder does: floor vs ceil and the pixels no window sees."""
    lines = []
    if ax.exact:
        lines.append(f"({ax.size} - {ax.k_eff} + {ax.pad_begin + ax.pad_end})/{ax.stride} = "
                     f"{ax.span // ax.stride} exactly: the last window ends on the last padded {noun}.")
    else:
        floor_, ceil_ = ax.out_floor, ax.out_ceil
        lines.append(f"({ax.size} - {ax.k_eff} + {ax.pad_begin + ax.pad_end})/{ax.stride} = "
                     f"{_decimal(ax.span, ax.stride)} is not whole. Floor (convolution everywhere; pooling "
                     f"by default): O = {ax.span // ax.stride} + 1 = {floor_}.")
        ceil_line = (f"  Ceil (pooling with ceil_mode=True, Caffe pooling): O = {-(-ax.span // ax.stride)} + 1"
                     f" = {-(-ax.span // ax.stride) + 1}")
        if ceil_ != -(-ax.span // ax.stride) + 1:
            ceil_line += f", less one = {ceil_}: a last window starting in the end padding is dropped (PyTorch)"
        else:
            overhang = (ceil_ - 1) * ax.stride + ax.k_eff - (ax.size + ax.pad_begin + ax.pad_end)
            ceil_line += f": the last window hangs {overhang} past the padded input, read as padding"
        lines.append(ceil_line + ".")
    unseen = ax.unseen()
    mode = "ceil" if ax.ceil_mode else "floor"
    if unseen:
        why = []
        if not ax.exact and not ax.ceil_mode:
            why.append("the remainder is dropped")
        if ax.stride > ax.k_eff:
            why.append(f"stride {ax.stride} > kernel {ax.k_eff} leaves gaps")
        if ax.dilation > 1:
            why.append(f"dilation {ax.dilation} skips inputs inside a window")
        lines.append(f"In {mode} mode the {op} never sees input {nouns} {_ranges(unseen)} "
                     f"({len(unseen)} of {ax.size}{': ' + ', '.join(why) if why else ''}).")
    else:
        lines.append(f"In {mode} mode every input {noun} is seen by some window.")
    return lines


def _axes(input, kernel, stride, padding, dilation, where, *, ceil_mode=False, pool=False):
    """Check the arguments and return (pads, height axis, width axis, square?)."""
    ih, iw = pair(input, "input", where, minimum=1)
    if pool:
        (kh, kw), (sh, sw), (dh, dw) = check_pool_spec(kernel, stride, padding, dilation, where,
                                                       max_pool=True)
    else:
        kh, kw = pair(kernel, "kernel", where, minimum=1)
        sh, sw = pair(stride, "stride", where, minimum=1)
        dh, dw = pair(dilation, "dilation", where, minimum=1)
    pads = resolve_padding(padding, (kh, kw), (sh, sw), (dh, dw), (ih, iw), where)
    output_hw((ih, iw), (kh, kw), (sh, sw), (dh, dw), pads, where, ceil_mode=ceil_mode,
              input_shape=(ih, iw), padding=padding)  # raises, with the formula, when O < 1
    ax_h = _Axis(ih, kh, sh, dh, pads[0], pads[1], ceil_mode)
    ax_w = _Axis(iw, kw, sw, dw, pads[2], pads[3], ceil_mode)
    square = (ih, kh, sh, dh, pads[0], pads[1]) == (iw, kw, sw, dw, pads[2], pads[3])
    return pads, ax_h, ax_w, square


def _size_lines(ax_h: _Axis, ax_w: _Axis, square: bool) -> list[str]:
    lines = []
    if square:
        if ax_h.dilation > 1:
            lines.append("  " + ax_h.k_eff_line())
        lines.append("  " + ax_h.formula())
    else:
        for label, ax, names in (("height", ax_h, ("P_top", "P_bottom")), ("width", ax_w, ("P_left", "P_right"))):
            if ax.dilation > 1:
                lines.append(f"  {label}: " + ax.k_eff_line())
            lines.append(f"  {label}: " + ax.formula(names, "O_h" if label == "height" else "O_w"))
    return lines


def _coverage_lines(ax_h: _Axis, ax_w: _Axis, square: bool, op: str) -> list[str]:
    if square:
        return ["  " + s for s in _coverage(ax_h, "row (and column)", "rows (and columns)", op)]
    return (["  height: " + s for s in _coverage(ax_h, "row", "rows", op)]
            + ["  width: " + s for s in _coverage(ax_w, "column", "columns", op)])


def _same_lines(ax_h: _Axis, ax_w: _Axis, square: bool) -> list[str]:
    target = (-(-ax_h.size // ax_h.stride), -(-ax_w.size // ax_w.stride))
    head = f"'same' padding (output ceil(I/S) = {target[0] if square else _hw(*target)}):"
    if square:
        return [head, "  " + ax_h.same_line(("top", "bottom")) + "; left and right alike"]
    return [head, "  height: " + ax_h.same_line(("top", "bottom")),
            "  width: " + ax_w.same_line(("left", "right"))]


def _pads_text(pads) -> str:
    top, bottom, left, right = pads
    if top == bottom == left == right:
        return f"padding {top}"
    return f"padding (top {top}, bottom {bottom}, left {left}, right {right})"


def _kk(kh: int, kw: int) -> tuple[str, str]:
    """The kernel-area factor, as symbols and as numbers."""
    return ("K*K", f"{kh}*{kw}") if kh == kw else ("K_h*K_w", f"{kh}*{kw}")


def _oo(oh: int, ow: int) -> tuple[str, str]:
    return ("O*O", f"{oh}*{ow}") if oh == ow else ("O_h*O_w", f"{oh}*{ow}")


# ---- conv -----------------------------------------------------------------------------
def explain_conv(input, kernel, stride=1, padding=0, in_channels: int = 1, filters: int = 1, *,
                 dilation=1, groups: int = 1, bias: bool = True) -> Explanation:
    """Output size, weights, biases, parameters and multiplications of a conv layer.

    ``input``, ``kernel``, ``stride``, ``dilation``: an int or ``(h, w)``; ``padding``:
    an int, ``(ph, pw)``, ``(top, bottom, left, right)``, ``'valid'`` or ``'same'``.
    Fields: input, kernel, stride, dilation, padding (4-tuple), in_channels, filters,
    groups, output ``(H_out, W_out)``, output_ceil (ceil mode, for comparison), weights,
    biases, parameters, multiplications, same_padding (4-tuple), unseen_rows, unseen_cols.
    """
    where = "explain conv"
    c = _positive(in_channels, "in_channels", where)
    f = _positive(filters, "filters", where)
    g = _positive(groups, "groups", where)
    if c % g or f % g:
        raise value_error(where, "in_channels and filters must be divisible by groups",
                          in_channels=c, filters=f, groups=g)
    pads, ax_h, ax_w, square = _axes(input, kernel, stride, padding, dilation, where)
    oh, ow = ax_h.out, ax_w.out
    kh, kw = ax_h.kernel, ax_w.kernel
    cg = c // g
    weights = kh * kw * cg * f
    biases = f if bias else 0
    mults = oh * ow * weights

    extra = (f", dilation {ax_h.dilation if square else _hw(ax_h.dilation, ax_w.dilation)}"
             if (ax_h.dilation, ax_w.dilation) != (1, 1) else "") + (f", groups {g}" if g > 1 else "")
    stride_text = ax_h.stride if ax_h.stride == ax_w.stride else _hw(ax_h.stride, ax_w.stride)
    lines = [f"Convolution: input {_hw(ax_h.size, ax_w.size)}x{c}, {_plural(f, 'filter')} of {_hw(kh, kw)}x{cg}, "
             f"stride {stride_text}, {_pads_text(pads)}{extra}",
             "Output size"]
    lines += _size_lines(ax_h, ax_w, square)
    lines.append(f"  output {_hw(oh, ow)}x{f}: {_plural(f, 'feature map')} of {_hw(oh, ow)} ({n(oh * ow * f)} values)")

    k_sym, k_num = _kk(kh, kw)
    c_sym, c_num = ("C", f"{c}") if g == 1 else ("(C/G)", f"({c}/{g})")
    lines += ["Parameters",
              f"  W = {k_sym}*{c_sym}*N = {k_num}*{c_num}*{f} = {n(weights)}"
              + (f" (each filter sees C/G = {cg} of the {c} channels)" if g > 1 else ""),
              f"  B = N = {n(biases)}" if bias else "  B = 0 (bias=False)",
              f"  P = W + B = {n(weights)} + {n(biases)} = {n(weights + biases)}"]
    o_sym, o_num = _oo(oh, ow)
    lines += ["Multiplications (multiply-adds; FLOPs = 2x)",
              f"  {o_sym}*{k_sym}*{c_sym}*N = {o_num}*{k_num}*{c_num}*{f} = {n(mults)}"]
    lines.append("Rounding and coverage")
    lines += _coverage_lines(ax_h, ax_w, square, "convolution")
    lines += _same_lines(ax_h, ax_w, square)
    same = ax_h.same_pads()[1:] + ax_w.same_pads()[1:]
    values = dict(input=(ax_h.size, ax_w.size), kernel=(kh, kw), stride=(ax_h.stride, ax_w.stride),
                  dilation=(ax_h.dilation, ax_w.dilation), padding=pads, in_channels=c, filters=f,
                  groups=g, output=(oh, ow), output_ceil=(ax_h.out_ceil, ax_w.out_ceil), weights=weights,
                  biases=biases, parameters=weights + biases, multiplications=mults,
                  same_padding=same, unseen_rows=ax_h.unseen(), unseen_cols=ax_w.unseen())
    return Explanation("conv", values, tuple(lines))


# ---- depthwise separable ----------------------------------------------------------------
def explain_separable(input, kernel, in_channels: int, filters: int, *, stride=1, padding=0,
                      dilation=1, bias: bool = True) -> Explanation:
    """A standard convolution against depthwise + pointwise (MobileNet), counted.

    Fields: output, standard_multiplications, depthwise_multiplications,
    pointwise_multiplications, separable_multiplications, ratio (= 1/N + 1/K^2),
    standard_parameters, depthwise_parameters, pointwise_parameters, separable_parameters.
    """
    where = "explain separable"
    c = _positive(in_channels, "in_channels", where)
    f = _positive(filters, "filters", where)
    pads, ax_h, ax_w, square = _axes(input, kernel, stride, padding, dilation, where)
    oh, ow = ax_h.out, ax_w.out
    kh, kw = ax_h.kernel, ax_w.kernel
    b = 1 if bias else 0
    k_sym, k_num = _kk(kh, kw)
    o_sym, o_num = _oo(oh, ow)
    std = oh * ow * kh * kw * c * f
    dw = oh * ow * kh * kw * c
    pw = oh * ow * c * f
    std_p, dw_p, pw_p = kh * kw * c * f + b * f, kh * kw * c + b * c, c * f + b * f
    lines = [f"Depthwise separable convolution: input {_hw(ax_h.size, ax_w.size)}x{c}, {f} filters of "
             f"{_hw(kh, kw)}, stride {ax_h.stride if ax_h.stride == ax_w.stride else _hw(ax_h.stride, ax_w.stride)}"
             f", {_pads_text(pads)}"]
    lines += _size_lines(ax_h, ax_w, square)
    bias_sym = lambda s: f" + {s}" if bias else ""  # noqa: E731
    lines += [f"Standard: {f} filters of {_hw(kh, kw)}x{c} give {_hw(oh, ow)}x{f}",
              f"  multiplications = {o_sym}*{k_sym}*C*N = {o_num}*{k_num}*{c}*{f} = {n(std)}",
              f"  parameters = {k_sym}*C*N{bias_sym('N')} = {k_num}*{c}*{f}{bias_sym(f)} = {n(std_p)}",
              f"Step 1, depthwise: {c} filters of {_hw(kh, kw)}x1, one per input channel, give "
              f"{_hw(oh, ow)}x{c}",
              f"  multiplications = {o_sym}*{k_sym}*C = {o_num}*{k_num}*{c} = {n(dw)}",
              f"  parameters = {k_sym}*C{bias_sym('C')} = {k_num}*{c}{bias_sym(c)} = {n(dw_p)}",
              f"Step 2, pointwise: {f} filters of 1x1x{c} give {_hw(oh, ow)}x{f}",
              f"  multiplications = {o_sym}*C*N = {o_num}*{c}*{f} = {n(pw)}",
              f"  parameters = C*N{bias_sym('N')} = {c}*{f}{bias_sym(f)} = {n(pw_p)}",
              f"Depthwise + pointwise: {n(dw)} + {n(pw)} = {n(dw + pw)} multiplications, "
              f"{n(dw_p)} + {n(pw_p)} = {n(dw_p + pw_p)} parameters"]
    if (oh, ow, kh, kw, c, f) == (8, 8, 5, 5, 3, 256):
        lines.append("  (the lecture's slide prints 52,952: a typo, 4,800 + 49,152 = 53,952)")
    lines.append(f"Ratio: {n(dw + pw)} / {n(std)} = {(dw + pw) / std:.5f} = 1/N + 1/({k_sym}) = "
                 f"1/{f} + 1/{kh * kw}: {std / (dw + pw):.1f}x fewer multiplications")
    values = dict(input=(ax_h.size, ax_w.size), kernel=(kh, kw), in_channels=c, filters=f,
                  output=(oh, ow), standard_multiplications=std, depthwise_multiplications=dw,
                  pointwise_multiplications=pw, separable_multiplications=dw + pw,
                  ratio=(dw + pw) / std, standard_parameters=std_p, depthwise_parameters=dw_p,
                  pointwise_parameters=pw_p, separable_parameters=dw_p + pw_p)
    return Explanation("separable", values, tuple(lines))


# ---- pool ----------------------------------------------------------------------------
def explain_pool(input, kernel, stride=None, padding=0, *, channels: int = 1, mode: str = "max",
                 ceil_mode: bool = False) -> Explanation:
    """Output size (floor/ceil), overlap, parameters (none) and work per output of a pooling layer.

    ``stride`` defaults to ``kernel`` (PyTorch). ``mode``: ``'max'`` or ``'avg'``.
    Fields: output, output_floor, output_ceil, overlapping, parameters (0),
    operations_per_output, operations, unseen_rows, unseen_cols.
    """
    where = "explain pool"
    if mode not in ("max", "avg"):
        raise value_error(where, "mode must be 'max' or 'avg'", mode=mode)
    c = _positive(channels, "channels", where)
    pads, ax_h, ax_w, square = _axes(input, kernel, stride, padding, 1, where, ceil_mode=bool(ceil_mode),
                                     pool=True)
    oh, ow = ax_h.out, ax_w.out
    kh, kw = ax_h.kernel, ax_w.kernel
    name = "Max pooling" if mode == "max" else "Average pooling"
    stride_text = ax_h.stride if ax_h.stride == ax_w.stride else _hw(ax_h.stride, ax_w.stride)
    lines = [f"{name}: input {_hw(ax_h.size, ax_w.size)}x{c}, window {_hw(kh, kw)}, stride {stride_text}, "
             f"{_pads_text(pads)}{', ceil_mode' if ceil_mode else ''}",
             "Output size"]
    lines += _size_lines(ax_h, ax_w, square)
    lines.append(f"  output {_hw(oh, ow)}x{c} (each channel is pooled on its own)")
    overlap = []
    for label, ax in (("", ax_h),) if square else (("rows: ", ax_h), ("columns: ", ax_w)):
        if ax.kernel > ax.stride:
            overlap.append(f"  {label}overlapping: window {ax.kernel} > stride {ax.stride}, neighbouring windows "
                           f"share {ax.kernel - ax.stride} (AlexNet pools 3x3 with stride 2)")
        elif ax.kernel == ax.stride:
            overlap.append(f"  {label}not overlapping: window {ax.kernel} = stride {ax.stride}, the windows tile")
        else:
            overlap.append(f"  {label}gaps: window {ax.kernel} < stride {ax.stride}, "
                           f"{ax.stride - ax.kernel} skipped between windows")
    lines += overlap
    ops = kh * kw - 1
    total = oh * ow * c * ops
    o_sym, o_num = _oo(oh, ow)
    k_sym = "K*K" if kh == kw else "K_h*K_w"
    lines.append("  parameters: 0 (pooling learns nothing: no weights, no biases)")
    if mode == "max":
        lines += [f"  comparisons: {k_sym} - 1 = {ops} per output; {o_sym}*C*({k_sym} - 1) = "
                  f"{o_num}*{c}*{ops} = {n(total)}",
                  "  backward: each output's gradient goes to the argmax of its window, 0 elsewhere"]
    else:
        lines += [f"  additions: {k_sym} - 1 = {ops} and one division by {kh * kw} per output; "
                  f"{o_sym}*C*({k_sym} - 1) = {o_num}*{c}*{ops} = {n(total)} additions",
                  f"  backward: each output's gradient is spread over its window, divided by {kh * kw}"]
    lines.append("Rounding and coverage")
    lines += _coverage_lines(ax_h, ax_w, square, "pooling")
    values = dict(input=(ax_h.size, ax_w.size), kernel=(kh, kw), stride=(ax_h.stride, ax_w.stride),
                  padding=pads, channels=c, mode=mode, ceil_mode=bool(ceil_mode), output=(oh, ow),
                  output_floor=(ax_h.out_floor, ax_w.out_floor), output_ceil=(ax_h.out_ceil, ax_w.out_ceil),
                  overlapping=ax_h.kernel > ax_h.stride or ax_w.kernel > ax_w.stride, parameters=0,
                  operations_per_output=ops, operations=total, unseen_rows=ax_h.unseen(),
                  unseen_cols=ax_w.unseen())
    return Explanation("pool", values, tuple(lines))


# ---- fully connected -----------------------------------------------------------------------
def explain_fc(input, in_channels: int, units: int, *, bias: bool = True) -> Explanation:
    """Weights, biases, parameters and multiply-adds of a fully connected layer.

    ``input`` is the spatial size of the incoming maps (6 after AlexNet's last pool;
    1 after another FC layer), ``in_channels`` their number, ``units`` the layer's F.
    Fields: in_features, units, weights, biases, parameters, multiplications.
    """
    where = "explain fc"
    ih, iw = pair(input, "input", where, minimum=1)
    c = _positive(in_channels, "in_channels", where)
    f = _positive(units, "units", where)
    in_features = ih * iw * c
    weights, biases = in_features * f, (f if bias else 0)
    if (ih, iw) == (1, 1):
        head = f"Fully connected: {c} inputs -> {n(f)} units"
        w_line = f"  W = F_prev*F = {c}*{f} = {n(weights)} (the lecture's W_ff = F_-1 x F)"
    else:
        i_sym = "I*I" if ih == iw else "I_h*I_w"
        head = (f"Fully connected: {_hw(ih, iw)}x{c} inputs (flattened: {n(in_features)}) -> {n(f)} units")
        w_line = (f"  W = {i_sym}*C*F = {ih}*{iw}*{c}*{f} = {n(weights)} "
                  f"(the lecture's W_Cf = O^2 x N x F, O = {ih if ih == iw else _hw(ih, iw)} the map size)")
    lines = [head, w_line,
             f"  B = F = {n(biases)}" if bias else "  B = 0 (bias=False)",
             f"  P = W + B = {n(weights)} + {n(biases)} = {n(weights + biases)}",
             f"  multiply-adds per image = W = {n(weights)} (each weight is used once per image; "
             "a conv weight is used O*O times)"]
    values = dict(input=(ih, iw), in_channels=c, in_features=in_features, units=f, weights=weights,
                  biases=biases, parameters=weights + biases, multiplications=weights)
    return Explanation("fc", values, tuple(lines))


# ---- 'same' conventions ---------------------------------------------------------------------
def explain_same(input: int, kernel: int, stride: int = 1, dilation: int = 1) -> Explanation:
    """'same' padding of one axis under four conventions, side by side.

    TensorFlow SAME = ONNX SAME_UPPER (= cnnkit 'same'): total
    ``max((ceil(I/S) - 1)*S + D*(K - 1) + 1 - I, 0)``, the odd pixel at the end;
    ONNX SAME_LOWER: the odd pixel at the start; PyTorch ``padding='same'``: stride 1
    only, total ``D*(K - 1)``, the odd pixel at the end (right/bottom); Caffe-style
    symmetric ``pad = floor((D*(K - 1))/2)`` on both sides, which is not always 'same'.
    Fields: target (ceil(I/S)), total, same_upper, same_lower, pytorch (None when
    stride > 1), caffe: each ``(pad_begin, pad_end, output)``.
    """
    where = "explain same"
    i = _positive(input, "input", where)
    k = _positive(kernel, "kernel", where)
    s = _positive(stride, "stride", where)
    d = _positive(dilation, "dilation", where)
    ax = _Axis(i, k, s, d, 0, 0)
    target = -(-i // s)
    total, ub, ue = ax.same_pads()

    def out(b, e):
        return conv_out_size(i, k, s, b, e, d)

    upper = (ub, ue, out(ub, ue))
    lower = (ue, ub, out(ue, ub))  # the odd pixel at the start
    pytorch = None
    if s == 1:
        t = d * (k - 1)
        pytorch = (t // 2, t - t // 2, out(t // 2, t - t // 2))
    cp = (ax.k_eff - 1) // 2
    caffe = (cp, cp, out(cp, cp))
    k_sym = "K" if d == 1 else "K_eff"
    lines = [f"'same' padding: I = {i}, K = {k}, S = {s}, D = {d}; target output ceil(I/S) = {target}"]
    if d > 1:
        lines.append("  " + ax.k_eff_line())
    lines.append(f"  total = max((ceil(I/S) - 1)*S + {k_sym} - I, 0) = max(({target} - 1)*{s} + {ax.k_eff} - {i}, 0)"
                 f" = {total}")
    rows = [("TensorFlow SAME / ONNX SAME_UPPER / cnnkit", upper),
            ("ONNX SAME_LOWER", lower),
            ("PyTorch padding='same'", pytorch),
            ("Caffe-style symmetric (K-1)//2", caffe)]
    lines.append(f"  {'convention':<44}{'begin':>6}{'end':>6}{'output':>8}")
    for label, r in rows:
        if r is None:
            lines.append(f"  {label:<44}  n/a: torch rejects padding='same' for stride > 1")
        else:
            lines.append(f"  {label:<44}{r[0]:>6}{r[1]:>6}{r[2]:>8}")
    warnings = []
    if total % 2:
        cause = "even kernel" if ax.k_eff % 2 == 0 else f"stride {s}"
        warnings.append(f"SAME_UPPER and SAME_LOWER disagree ({cause}: odd total {total}): same size, but the "
                        "windows sit one pixel apart, so the same weights give shifted outputs")
    if caffe[2] != target:
        warnings.append(f"Caffe-style symmetric padding gives {caffe[2]}, not {target}: not 'same' "
                        f"({'even kernel' if ax.k_eff % 2 == 0 else f'stride {s}'})")
    elif caffe[:2] != upper[:2]:
        warnings.append(f"Caffe-style {caffe[:2]} and TensorFlow {upper[:2]} give the same size but windows one "
                        "pixel apart: weights ported between them need the explicit padding")
    if s > 1:
        warnings.append(f"PyTorch's padding='same' exists only for stride 1 (stride {s} raises); pad explicitly")
    lines += [f"warning: {w}" for w in warnings]
    values = dict(input=i, kernel=k, stride=s, dilation=d, target=target, total=total, same_upper=upper,
                  same_lower=lower, pytorch=pytorch, caffe=caffe)
    return Explanation("same", values, tuple(lines), tuple(warnings))


# ---- a zoo model -------------------------------------------------------------------------
def explain_model(model, input=None, *, num_classes: int | None = None) -> Explanation:
    """Per-layer parameters and multiply-adds of a model's conv and FC layers, and the
    fractions the lecture talks about ("FC layers comprise >90% of parameters").

    ``model``: a zoo name (``cnnkit.models.names()``) or a built Layer. ``input``:
    ``(C, H, W)`` (``C`` may be None for the zoo default); default: the zoo model's
    native input. Shapes and multiply-adds come from ``infer_shapes`` (no convolution is
    run), the same records ``cnnkit summary`` shows; a conv/FC layer that the walk does
    not reach keeps its parameters and gets 0 multiply-adds. Fields: rows (dicts: name, type, kernel, output, parameters,
    macs), parameters (= sum of p.size), conv_parameters, fc_parameters, other_parameters,
    fc_parameter_fraction, conv_macs, fc_macs, macs, conv_mac_fraction, input.
    """
    from ..nn.conv import Conv2d
    from ..nn.lenet_layers import SparseConv2d
    from ..nn.linear import Linear
    from ..nn.module import Layer

    where = "explain model"
    if isinstance(model, str):
        from .. import models
        from .command import native_spec  # the zoo's native input, shared with `cnnkit summary`
        name = model
        if name not in models.names():
            raise value_error(where, f"unknown model name; known names: {', '.join(models.names())}", name=name)
        *native, classes = native_spec(name)
        native = tuple(native)
        chw = tuple(input) if input is not None else native
        if chw[0] is None:
            chw = (native[0],) + tuple(chw[1:])
        if len(chw) != 3:
            raise value_error(where, "input must be (C, H, W)", input=tuple(input))
        chw = tuple(_positive(v, "input", where) for v in chw)
        classes = classes if num_classes is None else _positive(num_classes, "num_classes", where)
        model = models.get(name, num_classes=classes, in_channels=chw[0], rng=np.random.default_rng(0))
    elif isinstance(model, Layer):
        name = type(model).__name__
        if input is None or len(input) != 3 or None in tuple(input):
            raise value_error(where, "a built model needs input=(C, H, W)", input=input)
        chw = tuple(_positive(v, "input", where) for v in input)
    else:
        raise type_error(where, "model must be a zoo name or a cnnkit Layer", model=type(model).__name__)

    from .shapes import infer_shapes
    records = {r.name: dict(output=tuple(r.output_shapes[0][1:]), macs=r.macs)
               for r in infer_shapes(model, chw, 1) if r.leaf}
    modules = dict(model.named_modules())
    owned: dict = {}  # module name -> its parameters' size
    for pname, p in model.named_parameters():
        owner = pname.rsplit(".", 1)[0] if "." in pname else ""
        owned[owner] = owned.get(owner, 0) + p.data.size
    total = sum(owned.values())

    rows, not_run = [], 0
    counted = [(nm, m) for nm, m in modules.items() if isinstance(m, (Conv2d, SparseConv2d, Linear))]
    order = {nm: i for i, nm in enumerate(records)}
    counted.sort(key=lambda item: order.get(item[0], len(order)))
    for nm, m in counted:
        kind = "fc" if isinstance(m, Linear) else "conv"
        if kind == "conv":
            kh, kw = m.kernel_size
            st = getattr(m, "stride", (1, 1))
            kernel = f"{kh}x{kw}/{st[0] if st[0] == st[1] else _hw(*st)}"
            if getattr(m, "groups", 1) > 1:
                kernel += f" g{m.groups}"
        else:
            kernel = ""
        rec = records.get(nm)
        not_run += rec is None
        rows.append(dict(name=nm, type=type(m).__name__, kind=kind, kernel=kernel,
                         output=rec["output"] if rec else None, parameters=owned.get(nm, 0),
                         macs=rec["macs"] if rec else 0))
    conv_p = sum(r["parameters"] for r in rows if r["kind"] == "conv")
    fc_p = sum(r["parameters"] for r in rows if r["kind"] == "fc")
    other_p = total - conv_p - fc_p
    conv_m = sum(r["macs"] for r in rows if r["kind"] == "conv")
    fc_m = sum(r["macs"] for r in rows if r["kind"] == "fc")
    macs = conv_m + fc_m

    def pct(a, b):
        return 100.0 * a / b if b else 0.0

    width = max([len(r["name"]) for r in rows] + [5])
    shape = "x".join(str(v) for v in chw)
    lines = [f"Model {name}, input {shape} (C x H x W, batch 1), conv and fully connected layers:",
             f"  {'layer':<{width}}  {'type':<12} {'kernel/stride':<14} {'output':<14} {'params':>12} {'MACs':>15}"]
    for r in rows:
        out = "x".join(str(v) for v in r["output"]) if r["output"] else "not run"
        lines.append(f"  {r['name']:<{width}}  {r['type']:<12} {r['kernel']:<14} {out:<14} "
                     f"{n(r['parameters']):>12} {n(r['macs']):>15}")
    lines += [f"Parameters: {n(total)} (sum of p.size over model.parameters())",
              f"  conv  {n(conv_p):>15} {pct(conv_p, total):7.2f}%",
              f"  FC    {n(fc_p):>15} {pct(fc_p, total):7.2f}%"]
    if other_p:
        kinds: dict = {}
        for owner, size in owned.items():
            m = modules.get(owner)
            if m is not None and not isinstance(m, (Conv2d, SparseConv2d, Linear)):
                kinds[type(m).__name__] = kinds.get(type(m).__name__, 0) + size
        detail = ", ".join(f"{k} {n(v)}" for k, v in sorted(kinds.items()))
        lines.append(f"  other {n(other_p):>15} {pct(other_p, total):7.2f}%  ({detail})")
    frac = pct(fc_p, total)
    lines.append(f'  The lecture: "Fully connected layers comprise >90% of parameters": {frac:.2f}% here, '
                 f"so it {'holds' if frac > 90 else 'does not hold'} for this model.")
    lines += [f"Multiply-adds: {n(macs)} (conv and FC layers only; FLOPs = 2x; pooling, normalization, "
              "activations and biases not counted)",
              f"  conv  {n(conv_m):>15} {pct(conv_m, macs):7.2f}%",
              f"  FC    {n(fc_m):>15} {pct(fc_m, macs):7.2f}%"]
    if not_run:
        lines.append(f"  {not_run} layer(s) not reached from the input: parameters counted, multiply-adds 0")
    values = dict(name=name, input=chw, rows=rows, parameters=total, conv_parameters=conv_p,
                  fc_parameters=fc_p, other_parameters=other_p, fc_parameter_fraction=fc_p / total if total else 0.0,
                  conv_macs=conv_m, fc_macs=fc_m, macs=macs, conv_mac_fraction=conv_m / macs if macs else 0.0)
    return Explanation("model", values, tuple(lines))


# window_plot imports Explanation from this module: import it after Explanation exists.
from .window_plot import explain_window, save_window_png  # noqa: E402

__all__ = ["Explanation", "explain_conv", "explain_separable", "explain_pool", "explain_fc", "explain_same",
           "explain_model", "explain_window", "save_window_png", "n"]
