"""Receptive fields (cnnkit.analysis.receptive): small hand-computed cases, the published
figures, and a brute-force measurement: backpropagate from the middle unit of a layer's
output and take the bounding box of the input pixels with a non-zero gradient.

The measurement needs every path to carry gradient, so it runs on float64 models whose
weights are all positive (inputs too): every pre-activation is positive, ReLU passes
everything and no sum cancels. Max pooling routes its gradient to one pixel only, so
the measured models average-pool instead (same window: the receptive field is a
property of the window, not of max or mean). The ImageNet models are measured as
*thin copies*: same layers, same geometry, 2 channels per group (the field does not
depend on the channel count), so that inputs large enough for an unclipped middle unit
stay cheap; a test checks the copies' computed fields equal the originals'.
"""

import copy
from collections import OrderedDict
from fractions import Fraction

import numpy as np
import pytest

from cnnkit import models, nn
from cnnkit.analysis import receptive_fields
from cnnkit.models.resnet import ShortcutA
from cnnkit.nn import conv as conv_module
from cnnkit.nn import linear as linear_module
from cnnkit.nn.lenet_layers import PadTo

F = Fraction


def rf_of(layers, shape, name):
    return receptive_fields(nn.Sequential(*layers), shape)[name]


# ---- hand-computed cases ----------------------------------------------------------------
def test_single_layers_size_jump_and_start():
    rf = rf_of([nn.Conv2d(1, 1, 3, padding=1)], (1, 9, 9), "0")
    assert (rf.size, rf.jump, rf.start) == ((3, 3), (1, 1), (0, 0))  # padding 1 centres unit 0 on pixel 0
    rf = rf_of([nn.Conv2d(1, 1, 3, stride=2)], (1, 9, 9), "0")
    assert (rf.size, rf.jump, rf.start, rf.units) == ((3, 3), (2, 2), (1, 1), (4, 4))
    rf = rf_of([nn.MaxPool2d(2)], (1, 8, 8), "0")
    assert rf.start == (F(1, 2), F(1, 2))  # between pixels 0 and 1
    rf = rf_of([nn.Conv2d(1, 1, 3, dilation=2)], (1, 9, 9), "0")
    assert rf.size == (5, 5) and rf.start == (2, 2)  # dilated kernel: D*(K-1) + 1 = 5
    rf = rf_of([nn.Conv2d(1, 1, (3, 5), padding=(0, 2))], (1, 9, 9), "0")
    assert rf.size == (3, 5) and rf.start == (1, 0)


def test_stacked_layers_follow_the_recurrence():
    # conv 3x3/1 p1, pool 2/2, conv 3x3/1 p1: sizes 3, 4, 4 + 2*2 = 8; jumps 1, 2, 2
    layers = [nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=1)]
    rfs = receptive_fields(nn.Sequential(*layers), (1, 16, 16))
    assert [rfs[k].size[0] for k in "012"] == [3, 4, 8]
    assert [rfs[k].jump[0] for k in "012"] == [1, 2, 2]
    assert [rfs[k].start[0] for k in "012"] == [0, F(1, 2), F(1, 2)]  # pad 1 shifts by -1 * jump 2 + 1 * 2
    assert rfs["2"].region((3, 3)) == ((F(3), F(10)), (F(3), F(10)))  # centre 0.5 + 3*2 = 6.5, +-3.5


def test_same_padding_puts_the_odd_pixel_at_the_bottom_right():
    # 'same' on 8 with K=4, S=2: total padding 2 -> (1, 1); K=4, S=1: total 3 -> top 1, bottom 2
    rf = rf_of([nn.Conv2d(1, 1, 4, stride=1, padding="same")], (1, 8, 8), "0")
    assert rf.start == (F(1, 2), F(1, 2))  # (4 - 1)/2 - 1 = 0.5
    rf = rf_of([nn.Conv2d(1, 1, 4, stride=2, padding="same")], (1, 8, 8), "0")
    assert rf.start == (F(1, 2), F(1, 2)) and rf.units == (4, 4)


def test_padto_shifts_the_start_like_padding():
    rf = rf_of([PadTo(32), nn.Conv2d(1, 1, 5)], (1, 28, 28), "1")
    assert rf.size == (5, 5) and rf.start == (0, 0)  # pixel 0 of the 32x32 field is input pixel -2


def test_branches_are_united_over_every_path():
    g = nn.Graph()
    g.add("a", nn.Conv2d(1, 1, 1), inputs="input")
    g.add("b", nn.Conv2d(1, 1, 5, padding=2), inputs="input")
    g.add("cat", nn.Concat(), inputs=["a", "b"])
    rfs = receptive_fields(g, (1, 12, 12))
    assert rfs["cat"].size == (5, 5) and rfs["cat"].start == (0, 0)
    g2 = nn.Graph()
    g2.add("a", nn.Conv2d(1, 1, 3, padding=1), inputs="input")             # unit 0 on pixels -1..1
    g2.add("c", nn.Conv2d(1, 1, 3, padding=(2, 0, 2, 0)), inputs="input")  # unit 0 on pixels -2..0
    g2.add("sum", nn.Add(), inputs=["a", "c"])
    rf = receptive_fields(g2, (1, 12, 12))["sum"]
    assert rf.size == (4, 4) and rf.start == (F(-1, 2), F(-1, 2)) and rf.exact  # -2..1: more than either


def test_fully_connected_and_global_pooling_see_the_whole_input():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    rfs = receptive_fields(model, (1, 10, 10))
    # the conv's units cover pixels 0..8 (9 = 1 + 2*4 ... pixel 9 is never reached: floor)
    assert rfs["1"].whole and rfs["1"].size == (9, 9) and rfs["1"].start == (4, 4)
    assert rfs["3"].whole and rfs["3"].size == (9, 9)
    flat = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 36, 3))
    rfs = receptive_fields(flat, (1, 6, 6))
    assert rfs["1"].size == (3, 3) and not rfs["1"].whole  # a flattened feature is one unit
    assert rfs["2"].whole and rfs["2"].size == (6, 6)      # padding clipped away


def test_unequal_adaptive_bins_are_marked_inexact():
    rfs = receptive_fields(nn.Sequential(nn.AdaptiveAvgPool2d(7)), (1, 8, 8))
    assert rfs["0"].size == (2, 2) and not rfs["0"].exact
    rfs = receptive_fields(nn.Sequential(nn.AdaptiveAvgPool2d(4)), (1, 8, 8))
    assert rfs["0"].size == (2, 2) and rfs["0"].jump == (2, 2) and rfs["0"].exact


def test_a_layer_without_a_rule_has_no_field():
    class Odd(nn.Layer):
        def forward(self, x):
            return x[:, :, ::2]

    rfs = receptive_fields(nn.Sequential(nn.Conv2d(1, 1, 3), Odd(), nn.Conv2d(1, 1, 3)), (1, 9, 9))
    assert rfs["0"] is not None and rfs["1"] is None and rfs["2"] is None


# ---- published figures --------------------------------------------------------------------
def build(name, **options):
    return models.get(name, num_classes=1000 if name != "lenet5" else 10, in_channels=1 if name == "lenet5" else 3,
                      rng=np.random.default_rng(0), **options)


def _zeros_view(shape, fan_in, rng, dtype):
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(shape))


@pytest.fixture(scope="module")
def zoo():
    """The five models, built with a shape-only init (fields depend on the layers' geometry only)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv_module, "uniform_fan_in", _zeros_view)
        mp.setattr(linear_module, "uniform_fan_in", _zeros_view)
        return {n: build(n) for n in ("lenet5", "alexnet", "vgg_d", "googlenet", "resnet18")}


def test_known_receptive_fields(zoo):
    """AlexNet conv5 163 / pool5 195, VGG-16 conv5_3 196 / pool5 212, MobileNet v1 315: the
    values Araujo et al. (Distill 2019) list; LeNet-5 C5 sees its whole 32x32 field."""
    assert receptive_fields(zoo["lenet5"], (1, 32, 32))["features.8"].size == (32, 32)
    alex = receptive_fields(zoo["alexnet"], (3, 227, 227))
    assert alex["features.12"].size == (163, 163) and alex["features.14"].size == (195, 195)
    vgg = receptive_fields(zoo["vgg_d"], (3, 224, 224))
    assert vgg["features.28"].size == (196, 196) and vgg["features.30"].size == (212, 212)
    assert vgg["features.30"].jump == (32, 32)
    mobile = models.get("mobilenet_v1", num_classes=1000, in_channels=3, rng=np.random.default_rng(0))
    assert receptive_fields(mobile, (3, 224, 224))["features"].size == (315, 315)
    assert receptive_fields(zoo["resnet18"], (3, 224, 224))["layer4"].size == (435, 435)
    assert receptive_fields(zoo["googlenet"], (3, 224, 224))["inception5b"].size == (715, 715)


# ---- brute force ----------------------------------------------------------------------------
def positive_(model):
    """All weights positive (1/fan-in), biases small positive, BN in eval: no sign changes.
    Parameters are frozen: backward then computes input gradients only."""
    for m in model.modules():
        w = getattr(m, "_parameters", {}).get("weight")
        if w is not None and not isinstance(m, nn.BatchNorm2d):
            w.data[...] = 1.0 / max(1, w.data[0].size)
        b = getattr(m, "_parameters", {}).get("bias")
        if b is not None:
            b.data[...] = 0.01
    return model.requires_grad_(False).eval()


def thin_copy(layer, c_in, width=2):
    """(copy, channels out): same layers and geometry, ``width`` channels per group, float64,
    average pools for max pools, Linear layers dropped (Identity)."""
    if isinstance(layer, nn.Sequential):
        items, c = [], c_in
        for name, child in layer.named_children():
            new, c = thin_copy(child, c, width)
            items.append((name, new))
        return nn.Sequential(OrderedDict(items)), c
    if isinstance(layer, nn.Graph):
        g, ch = nn.Graph(inputs=layer.input_names), {n: c_in for n in layer.input_names}
        for name, inputs in layer.nodes:
            child = layer._children[name]
            if isinstance(child, nn.Concat):
                new, c = nn.Concat(child.dim), sum(ch[i] for i in inputs)
            elif isinstance(child, nn.Add):
                new, c = nn.Add(), ch[inputs[0]]
            else:
                new, c = thin_copy(child, ch[inputs[0]], width)
            g.add(name, new, inputs=list(inputs))
            ch[name] = c
        return g, ch[g.output_names[0]]
    if isinstance(layer, nn.Conv2d):
        out = width * layer.groups
        return nn.Conv2d(c_in, out, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                         layer.groups, dtype=np.float64), out
    if isinstance(layer, nn.MaxPool2d):
        assert layer.dilation in (1, (1, 1))
        return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode), c_in
    if isinstance(layer, nn.BatchNorm2d):
        return nn.BatchNorm2d(c_in, dtype=np.float64), c_in
    if isinstance(layer, ShortcutA):
        return ShortcutA(c_in, c_in, layer.stride), c_in
    if isinstance(layer, nn.Linear):
        return nn.Identity(), c_in
    assert not list(layer.parameters()), type(layer).__name__
    return copy.deepcopy(layer), c_in


def truncated(layer, parts):
    """A container computing only up to the layer named by ``parts`` (its output is the output).
    The children are shared (re-adopted), so this is for throw-away copies."""
    if not parts:
        return layer
    head, rest = parts[0], parts[1:]
    if isinstance(layer, nn.Sequential):
        items = []
        for name, child in layer.named_children():
            items.append((name, truncated(child, rest) if name == head else child))
            if name == head:
                return nn.Sequential(OrderedDict(items))
    if isinstance(layer, nn.Graph):
        g = nn.Graph(inputs=layer.input_names)
        for name, inputs in layer.nodes:
            g.add(name, truncated(layer._children[name], rest) if name == head else layer._children[name],
                  inputs=list(inputs))
            if name == head:
                g.set_outputs(head)
                return g
    raise KeyError(".".join(parts))


def measured_region(net, x, unit):
    """Bounding box (rows, cols; inclusive) of the input pixels whose gradient from ``unit``
    of the output (all channels) is non-zero."""
    y = net(x)
    dy = np.zeros(y.shape)
    dy[0, :, unit[0], unit[1]] = 1.0
    dx = net.backward(dy)
    hit = np.abs(dx[0]).sum(axis=0) > 0
    rows, cols = np.nonzero(hit.any(axis=1))[0], np.nonzero(hit.any(axis=0))[0]
    return (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))


def check_against_brute_force(original, measured_model, shape, targets, unclipped):
    """For each target: the computed field of the original model (clipped to the input) equals
    the measured box on ``measured_model``; for the ``unclipped`` targets the middle unit's field
    lies inside the input, so the comparison covers the full size. Returns the fields."""
    fields = receptive_fields(original, shape)
    copies = receptive_fields(measured_model, shape)
    x = np.random.default_rng(1).uniform(0.5, 1.5, (1,) + tuple(shape))
    for name in targets:
        rf = fields[name]
        assert (copies[name].size, copies[name].jump, copies[name].start) == (rf.size, rf.jump, rf.start), name
        unit = rf.center_unit()
        expected = rf.region(unit, clip=True)
        if name in unclipped:
            assert expected == rf.region(unit), f"{name}: the middle unit's field is clipped at this input"
        net = truncated(measured_model, name.split("."))
        assert measured_region(net, x, unit) == expected, name
    return fields


def test_lenet5_brute_force(zoo):
    model = positive_(build("lenet5").double())
    targets = ["features.0", "features.2", "features.4", "features.6", "features.8"]
    fields = check_against_brute_force(zoo["lenet5"], model, (1, 32, 32), targets, targets)
    assert [fields[t].size[0] for t in targets] == [5, 6, 14, 16, 32]


def test_alexnet_brute_force(zoo):
    thin, _ = thin_copy(zoo["alexnet"], 3)
    targets = ["features.0", "features.3", "features.4", "features.7", "features.8", "features.10",
               "features.12", "features.14"]
    fields = check_against_brute_force(zoo["alexnet"], positive_(thin), (3, 227, 227), targets, targets)
    assert fields["features.12"].size == (163, 163)


def test_vgg_d_brute_force(zoo):
    thin, _ = thin_copy(zoo["vgg_d"], 3)
    targets = [f"features.{i}" for i in (0, 2, 4, 9, 16, 23, 28, 30)]
    fields = check_against_brute_force(zoo["vgg_d"], positive_(thin), (3, 224, 224), targets, targets)
    assert fields["features.28"].size == (196, 196)


def test_resnet18_brute_force_through_residual_additions(zoo):
    thin = positive_(thin_copy(zoo["resnet18"], 3)[0])
    early = ["conv1", "maxpool", "layer1.0", "layer2.0.conv1", "layer2.0.downsample", "layer2.0.add"]
    check_against_brute_force(zoo["resnet18"], thin, (3, 160, 160), early, early)
    late = ["layer3", "layer4.1.conv2", "layer4"]  # field 435: a 480x480 input keeps the middle unit's inside
    fields = check_against_brute_force(zoo["resnet18"], thin, (3, 480, 480), late, late)
    assert fields["layer4.1.conv2"].size == (435, 435) and fields["layer4"].size == (435, 435)


def test_googlenet_brute_force_through_inception_branches(zoo):
    # at 800x800 the classifier no longer fits (its 7x7 average pool expects 224): analyse up to 5b
    original = truncated(copy.deepcopy(zoo["googlenet"]), ["inception5b"])
    thin = positive_(thin_copy(original, 3)[0])
    early = ["conv1", "maxpool1", "conv3", "maxpool2", "inception3a.branch1", "inception3a.branch3",
             "inception3a.branch4", "inception3a", "inception4a"]
    check_against_brute_force(original, thin, (3, 256, 256), early, early)
    late = ["inception4e", "maxpool4", "inception5b.branch3.1.conv", "inception5b"]  # fields up to 715
    fields = check_against_brute_force(original, thin, (3, 800, 800), late, late)
    assert fields["inception3a"].size == (59, 59)   # the union: the 5x5 branch (59) covers the others
    assert fields["inception3a.branch1"].size == (27, 27)
    assert fields["inception5b"].size == (715, 715)


def test_cifar_resnet_option_a_brute_force_on_the_real_model():
    """resnet20 with its parameter-free ShortcutA, full width, measured at 32x32 where the
    later fields are clipped by the image border (compared clipped)."""
    model = positive_(models.get("resnet20", num_classes=10, in_channels=3, rng=np.random.default_rng(0)).double())
    targets = ["conv1", "layer1.0", "layer2.0.shortcut", "layer2.0", "layer3.0", "layer3"]
    fields = check_against_brute_force(model, model, (3, 32, 32), targets, ["conv1", "layer1.0", "layer2.0"])
    assert fields["layer3"].size == (81, 81) and fields["layer3"].jump == (4, 4)


def test_max_pooling_and_relu_stay_inside_the_computed_field():
    """On a real model with random signed weights (max pools, ReLUs that cut paths) the
    non-zero gradient is contained in the computed field."""
    model = models.get("lenet5_modern", num_classes=10, in_channels=1, rng=np.random.default_rng(0)).double().eval()
    x = np.random.default_rng(2).standard_normal((1, 1, 28, 28))
    fields = receptive_fields(model, (1, 28, 28))
    for name in ("features.0", "features.2", "features.3", "features.5"):
        rf = fields[name]
        (top, bottom), (left, right) = rf.region(clip=True)
        (t, b), (l, r) = measured_region(truncated(model, name.split(".")), x, rf.center_unit())
        assert top <= t <= b <= bottom and left <= l <= r <= right, name
