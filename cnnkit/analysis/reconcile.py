"""``explain_counts(name)``: how a zoo model's parameter and multiply-add totals relate to
the figures published for it (papers, torchvision's model documentation, Keras).

Every cnnkit number below is computed from models built here (and their summaries);
only the published reference figure and its source are written down. Each line
shows the computed count, the reference and the difference, and where the two differ
the parts that make up the difference, each again computed from the models.

torchvision's documentation lists "GFLOPS" per model; its numbers are multiply-adds
(ResNet-50: 4.09), i.e. half of FLOPs in this project's convention (FLOPs = 2 x MACs).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .._errors import value_error
from ..nn.conv import Conv2d
from ..nn.linear import Linear
from ..nn.module import Layer
from ..nn.norm import BatchNorm2d
from .summary import summary

# Published figures: (value, source). Parameters are exact counts; MACs in G (2 decimals).
TORCHVISION_DOCS = "torchvision model documentation (weights' num_params / GFLOPS)"
TORCHVISION_PARAMS = {
    "alexnet_torchvision": 61_100_840, "googlenet_torchvision": 6_624_904, "mobilenet_v2": 3_504_872,
    "vgg_a": 132_863_336, "vgg_b": 133_047_848, "vgg_d": 138_357_544, "vgg_e": 143_667_240,
    "vgg_a+bn": 132_868_840, "vgg_b+bn": 133_053_736, "vgg_d+bn": 138_365_992, "vgg_e+bn": 143_678_248,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}
TORCHVISION_NAME = {"alexnet_torchvision": "alexnet", "googlenet_torchvision": "googlenet", "vgg_a": "vgg11",
                    "vgg_b": "vgg13", "vgg_d": "vgg16", "vgg_e": "vgg19"}
TORCHVISION_GMACS = {  # at 224x224
    "alexnet_torchvision": 0.71, "googlenet_torchvision": 1.50, "mobilenet_v2": 0.30, "vgg_a": 7.61,
    "vgg_b": 11.31, "vgg_d": 15.47, "vgg_e": 19.63, "resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09,
    "resnet101": 7.80, "resnet152": 11.51,
}
PAPER_RESNET_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}
PAPER_RESNET = "He et al. 2015, table 1 (its 'FLOPs' are multiply-adds)"
PAPER_CIFAR_RESNET = {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet56": 0.85e6}
PAPER_VGG = {"vgg_a": 133e6, "vgg_a_lrn": 133e6, "vgg_b": 133e6, "vgg_c": 134e6, "vgg_d": 138e6, "vgg_e": 144e6}
KERAS_MOBILENET_TOTAL = (4_253_864, "Keras applications MobileNet(alpha=1.0), model.summary() 'Total params'")
MOBILENET_PAPER = (4.2e6, 569e6, "Howard et al. 2017, table 8: 1.0 MobileNet-224, 569M mult-adds, 4.2M parameters")
ALEXNET_PAPER = (60e6, "Krizhevsky et al. 2012, section 1: '60 million parameters'")
LENET_PAPER = (60_000, 340_908, "LeCun et al. 1998, section II.B: 340,908 connections, 60,000 trainable parameters")

Builder = Callable[..., Layer]


def _default_build(name: str, **options) -> Layer:
    from .. import models
    return models.get(name, **_native_classes(name), **options)


def _native_classes(name: str) -> dict:
    from .command import native_spec
    c, _, _, classes = native_spec(name)
    return {"num_classes": classes, "in_channels": c}


def explain_counts(name: str, *, build: Builder | None = None, options: dict | None = None) -> str:
    """The reconciliation text for zoo model ``name`` (built with ``options``, e.g.
    ``{'batch_norm': True}``). ``build(name, **options)`` builds a model (default:
    ``cnnkit.models.get`` with the model's native classes and channels); tests pass a
    cheaper one. Models without a published reference get their computed totals only.
    """
    from .. import models
    if name not in models.names():
        raise value_error("explain_counts", f"unknown model name; known names: {', '.join(models.names())}",
                          name=name)
    build = _default_build if build is None else build
    options = dict(options or {})
    canonical = {"vgg11": "vgg_a", "vgg13": "vgg_b", "vgg16": "vgg_d", "vgg19": "vgg_e"}.get(name, name)
    model = build(name, **options)
    lines = [f"Counts of {name}" + (f" ({_opts(options)})" if options else "") + ", computed from the model:"]
    lines += _totals(model, name)
    if canonical == "mobilenet_v1":
        lines += _mobilenet_v1(model, options)
    elif canonical in ("googlenet", "googlenet_torchvision"):
        lines += _googlenet(build)
    elif canonical in ("alexnet", "alexnet_torchvision"):
        lines += _alexnet(build)
    elif canonical.startswith("vgg"):
        lines += _vgg(model, canonical, options)
    elif canonical in PAPER_RESNET_GMACS or canonical in PAPER_CIFAR_RESNET:
        lines += _resnet(model, canonical, name)
    elif canonical == "lenet5":
        lines += _lenet5(model)
    elif canonical == "mobilenet_v2":
        lines += _torchvision_lines(model, canonical, name)
    else:
        lines.append("No published reference figure is recorded for this model.")
    return "\n".join(lines) + "\n"


# ---- helpers -------------------------------------------------------------------------------
def _opts(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


def _n(v) -> str:
    return f"{v:,}"


def _params(model: Layer) -> int:
    return sum(p.data.size for p in model.parameters())


def _of(model: Layer, kind, attr: str) -> int:
    total = 0
    for m in model.modules():
        if isinstance(m, kind):
            p = getattr(m, attr)
            total += 0 if p is None else p.data.size
    return total


def _native_input(model: Layer, name: str) -> tuple:
    from .command import native_spec
    c, h, w, _ = native_spec(name)
    return (c, h, w)


def _macs(model: Layer, name: str) -> int:
    return summary(model, _native_input(model, name)).totals["macs"]


def _compare(label: str, computed: int, reference: int, source: str) -> str:
    """An exact published count against the computed one."""
    diff = computed - int(reference)
    verdict = "equal" if diff == 0 else f"difference {diff:+,}"
    return f"  {label}: {_n(computed)} vs {_n(int(reference))} ({source}): {verdict}"


def _rounded(label: str, computed: int, reference: float, digits: int, source: str) -> str:
    """A figure published in millions with ``digits`` decimals (e.g. 4.2M) against the computed count."""
    mine = round(computed / 1e6, digits)
    verdict = "equal when rounded" if mine == round(reference / 1e6, digits) else "differs"
    return (f"  {label}: {_n(computed)} = {mine:.{digits}f}M vs {reference / 1e6:.{digits}f}M "
            f"({source}): {verdict}")


def _totals(model: Layer, name: str) -> list[str]:
    s = summary(model, _native_input(model, name))
    t = s.totals
    hw = "x".join(str(v) for v in s.input_shapes[0][1:])
    return [f"  trainable parameters {_n(t['trainable_parameters'])}, non-trainable "
            f"{_n(t['non_trainable_parameters'])} (total {_n(t['total_parameters'])}); "
            f"multiply-adds at {hw}: {_n(t['macs'])}"]


def _torchvision_lines(model: Layer, key: str, name: str, bn: bool = False) -> list[str]:
    out = []
    pkey = key + ("+bn" if bn else "")
    tv = TORCHVISION_NAME.get(key, key) + ("_bn" if bn else "")
    if pkey in TORCHVISION_PARAMS:
        out.append(_compare(f"parameters vs torchvision {tv}", _params(model), TORCHVISION_PARAMS[pkey],
                            TORCHVISION_DOCS))
    if key in TORCHVISION_GMACS and not bn:
        macs = _macs(model, name)
        ref = TORCHVISION_GMACS[key]
        same = round(macs / 1e9, 2) == ref
        out.append(f"  multiply-adds {_n(macs)} = {macs / 1e9:.2f} G vs torchvision {tv} {ref:.2f} "
                   f"'GFLOPS' ({TORCHVISION_DOCS}; they are multiply-adds): "
                   + ("equal to 2 decimals" if same else f"differs by {macs / 1e9 - ref:+.2f} G"))
    return out


# ---- families ------------------------------------------------------------------------------
def _mobilenet_v1(model: Layer, options: dict) -> list[str]:
    if options.get("alpha", 1.0) != 1.0 or options.get("num_classes", 1000) != 1000:
        return ["  (the published figures are for alpha=1, 1000 classes)"]
    conv_fc = sum(_of(model, k, a) for k in (Conv2d, Linear) for a in ("weight", "bias"))
    bn_affine = _of(model, BatchNorm2d, "weight") + _of(model, BatchNorm2d, "bias")
    running = sum(m._buffers["running_mean"].size + m._buffers["running_var"].size
                  for m in model.modules() if isinstance(m, BatchNorm2d))
    trainable = _params(model)
    macs = _macs(model, "mobilenet_v1")
    rows = [("conv + FC weights and biases", None, conv_fc, "the paper's count"),
            ("+ BatchNorm gamma and beta", bn_affine, conv_fc + bn_affine,
             f"trainable (torchvision's convention; the model: {_n(trainable)})"),
            ("+ BatchNorm running mean and variance", running, trainable + running, "Keras' 'Total params'")]
    out = [f"  {label:<38}{'' if part is None else _n(part):>8}  = {_n(total):>9}  {note}"
           for label, part, total, note in rows]
    return out + [
        _compare("with running statistics vs Keras", trainable + running, *KERAS_MOBILENET_TOTAL),
        _rounded("conv + FC weights vs the paper", conv_fc, MOBILENET_PAPER[0], 1, MOBILENET_PAPER[2]),
        _rounded("multiply-adds at 224 vs the paper", macs, MOBILENET_PAPER[1], 0, MOBILENET_PAPER[2]),
    ]


def _googlenet(build: Builder) -> list[str]:
    paper, paper_aux = build("googlenet"), build("googlenet", aux_logits=True)
    tv, tv_aux = build("googlenet_torchvision"), build("googlenet_torchvision", aux_logits=True)
    p, pa, t, ta = _params(paper), _params(paper_aux), _params(tv), _params(tv_aux)
    biases = _of(paper, Conv2d, "bias")
    five = sum(m.weight.data.size for n, m in paper.named_modules() if n.endswith("branch3.1.conv"))
    three = sum(m.weight.data.size for n, m in tv.named_modules() if n.endswith("branch3.1.conv"))
    bn = _of(tv, BatchNorm2d, "weight") + _of(tv, BatchNorm2d, "bias")
    rebuilt = p - biases - (five - three) + bn
    return [
        f"  googlenet (paper): {_n(p)} without, {_n(pa)} with the auxiliary heads (+{_n(pa - p)})",
        f"  googlenet_torchvision: {_n(t)} without, {_n(ta)} with its auxiliary heads (+{_n(ta - t)})",
        _compare("googlenet_torchvision vs torchvision googlenet", t, TORCHVISION_PARAMS["googlenet_torchvision"],
                 TORCHVISION_DOCS),
        "  paper -> torchvision, part by part:",
        f"    {_n(p)} (paper)",
        f"    - {_n(biases)} conv biases (torchvision's convs have none)",
        f"    - {_n(five - three)} from the '5x5' branches' 3x3 kernels ({_n(five)} -> {_n(three)} weights)",
        f"    + {_n(bn)} BatchNorm gamma and beta",
        f"    = {_n(rebuilt)} " + ("= torchvision's count" if rebuilt == t else f"(torchvision's: {_n(t)})"),
        f"  multiply-adds at 224: paper layout {_n(_macs(paper, 'googlenet'))}, torchvision layout "
        f"{_n(_macs(tv, 'googlenet_torchvision'))} (Szegedy et al. 2015, section 1: a budget of "
        "'1.5 billion multiply-adds at inference time')",
    ] + _torchvision_lines(tv, "googlenet_torchvision", "googlenet_torchvision")[1:]


def _alexnet(build: Builder) -> list[str]:
    two, one, tv = build("alexnet"), build("alexnet", groups=1), build("alexnet_torchvision")
    names = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]

    def per_layer(model):
        return [m.weight.data.size + (0 if m.bias is None else m.bias.data.size)
                for m in model.modules() if isinstance(m, (Conv2d, Linear))]

    rows = list(zip(names, per_layer(two), per_layer(one), per_layer(tv)))
    width = 12
    out = [f"  {'layer':<7}{'paper (2 towers)':>{width + 6}}{'one tower':>{width + 2}}{'torchvision':>{width + 2}}"]
    out += [f"  {n:<7}{_n(a):>{width + 6}}{_n(b):>{width + 2}}{_n(c):>{width + 2}}" for n, a, b, c in rows]
    p2, p1, pt = _params(two), _params(one), _params(tv)
    out += [f"  {'total':<7}{_n(p2):>{width + 6}}{_n(p1):>{width + 2}}{_n(pt):>{width + 2}}",
            f"  one tower - two towers = {_n(p1 - p2)}: conv2, conv4 and conv5 see only the maps of their own "
            "GPU in the paper (groups=2 halves their weights)",
            f"  torchvision - two towers = {pt - p2:+,}: 64-192-384-256-256 filters without groups, "
            "conv1 padding 2 (Krizhevsky 2014, 'One weird trick')",
            _compare("torchvision layout vs torchvision alexnet", pt, TORCHVISION_PARAMS["alexnet_torchvision"],
                     TORCHVISION_DOCS),
            _rounded("paper layout vs the paper", p2, ALEXNET_PAPER[0], 0, ALEXNET_PAPER[1]),
            f"  multiply-adds: paper {_n(_macs(two, 'alexnet'))} at 227, one tower {_n(_macs(one, 'alexnet'))}"
            f" at 227, torchvision {_n(_macs(tv, 'alexnet_torchvision'))} at 224"]
    out += _torchvision_lines(tv, "alexnet_torchvision", "alexnet_torchvision")[1:]
    return out


def _vgg(model: Layer, key: str, options: dict) -> list[str]:
    bn = bool(options.get("batch_norm"))
    out = []
    if key in PAPER_VGG:
        params = _params(model)
        out.append(f"  parameters {_n(params)} = {params / 1e6:.1f}M vs {PAPER_VGG[key] / 1e6:.0f}M "
                   "(Simonyan & Zisserman 2015, table 2)")
    if key + ("+bn" if bn else "") in TORCHVISION_PARAMS or key in TORCHVISION_GMACS:
        out += _torchvision_lines(model, key, key, bn=bn)
    else:
        out.append("  torchvision has no model of this configuration")
    if bn:
        bnp = _of(model, BatchNorm2d, "weight") + _of(model, BatchNorm2d, "bias")
        out.append(f"  of which BatchNorm gamma and beta: {_n(bnp)} (conv biases are kept, as torchvision does)")
    return out


def _resnet(model: Layer, key: str, name: str) -> list[str]:
    if key in PAPER_CIFAR_RESNET:
        params = _params(model)
        return [f"  parameters {_n(params)} = {params / 1e6:.2f}M vs {PAPER_CIFAR_RESNET[key] / 1e6:.2f}M "
                "(He et al. 2015, table 6)"]
    out = _torchvision_lines(model, key, name)
    s = summary(model, _native_input(model, name))
    macs = s.totals["macs"]
    # v1.5 (torchvision) strides the 3x3 conv of a bottleneck; the paper strides its first 1x1 conv,
    # which then runs on the subsampled grid: 1/4 of its multiply-adds.
    strided = [r for r in s.rows if r.name.endswith(".conv2") and r.stride == (2, 2)
               and r.kernel == (3, 3) and any(x.name == r.name[:-1] + "3" for x in s.rows)]
    extra = sum(s[r.name[:-1] + "1"].macs * 3 // 4 for r in strided)
    paper = PAPER_RESNET_GMACS[key]
    if extra:
        v1 = macs - extra
        out.append(f"  the paper's stride placement (on the first 1x1 conv of {len(strided)} blocks) saves "
                   f"{_n(extra)}: {_n(v1)} = {v1 / 1e9:.2f} G vs {paper} G ({PAPER_RESNET})")
    else:
        out.append(f"  multiply-adds {macs / 1e9:.2f} G vs {paper} G ({PAPER_RESNET})")
    return out


def _lenet5(model: Layer) -> list[str]:
    s = summary(model, (1, 32, 32))
    connections = 0
    for r in s.rows:
        if not r.leaf:
            continue
        outputs = int(np.prod(r.output_shapes[0]))
        if r.type in ("Conv2d", "SparseConv2d", "Linear"):
            connections += r.macs + (outputs if r.biases else 0)   # a bias is a connection too
        elif r.type == "Subsampling":
            connections += 5 * outputs                              # 4 inputs and the bias
        elif r.type == "EuclideanRBF":
            connections += r.macs
    return [_compare("trainable parameters vs the paper", s.totals["trainable_parameters"], LENET_PAPER[0],
                     LENET_PAPER[2]),
            f"  the paper's 'connections' = multiply-adds {_n(s.totals['macs'])} + one per output for each bias "
            "+ the subsampling sums: " + _n(connections),
            _compare("connections vs the paper", connections, LENET_PAPER[1], LENET_PAPER[2])]


__all__ = ["explain_counts"]
