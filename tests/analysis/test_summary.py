"""The summary and its ledger (cnnkit.analysis.shapes / summary / reconcile / command).

Oracles:
- shapes: every leaf layer's inferred input and output shapes equal those it really sees
  and returns in a forward pass, for every zoo model at a small input;
- multiply-adds: each conv / FC layer is run on all-ones input (padding made explicit as
  ones, so padded products count, as the papers count them) with all-ones weights; the sum
  of its output is the number of products the kernel computed. Small convolutions are
  also counted by a Python loop over output positions, filters, channels and taps;
- parameters: ``sum(p.size for p in model.parameters())`` and the issue's exact counts.

Models are built with a shape-only init (zero-stride zero arrays): building VGG-E's 143M
random numbers would take seconds on the shared cores, and no test here needs values.
"""

import argparse
import csv
import io
import json
import math
import time

import numpy as np
import pytest

from cnnkit import models, nn
from cnnkit.analysis import (JSON_SCHEMA, add_summary_parser, explain_counts, infer_shapes, native_spec,
                             receptive_fields, register_shape_rule, run_summary, summary)
from cnnkit.analysis.shapes import LayerShape
from cnnkit.functional import conv as conv_kernels
from cnnkit.functional.conv import conv2d_forward
from cnnkit.functional.window import resolve_padding
from cnnkit.nn import conv as conv_module
from cnnkit.nn import linear as linear_module
from cnnkit.nn.lenet_layers import SparseConv2d


def _zeros_view(shape, fan_in, rng, dtype):
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(shape))


def native(name):
    return {"num_classes": 10 if name in ("lenet5", "lenet5_modern", "cnn", "cnn_bn", "resnet20", "resnet32",
                                          "resnet56") else 1000,
            "in_channels": 1 if name in ("lenet5", "lenet5_modern", "cnn", "cnn_bn") else 3}


_BUILT = {}


def cheap(name, **options):
    """A zoo model with the shape-only init, native classes and channels (cached)."""
    key = (name, tuple(sorted(options.items())))
    if key not in _BUILT:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(conv_module, "uniform_fan_in", _zeros_view)
            mp.setattr(linear_module, "uniform_fan_in", _zeros_view)
            _BUILT[key] = models.get(name, **{**native(name), **options}, rng=np.random.default_rng(0))
    return _BUILT[key]


# ---- parameters ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", models.names())
def test_totals_equal_the_parameters_of_every_zoo_model(name):
    model = cheap(name)
    c, h, w, _ = native_spec(name)
    s = summary(model, (c, h, w))
    total = sum(p.size for p in model.parameters())
    buffers = sum(b.size for b in model.buffers() if b.dtype.kind == "f")
    assert s.totals["trainable_parameters"] == total
    assert s.totals["non_trainable_parameters"] == buffers
    assert s[""].parameters == total  # the model's row folds every layer
    assert sum(r.parameters for r in s.rows if r.leaf) == total  # no parameter is shared in the zoo
    assert s.totals["parameter_bytes"] == sum(p.data.nbytes for p in model.parameters()) + 4 * buffers


EXACT = [  # the issue's table (issue 4): trainable parameters, plus non-trainable where there are any
    ("lenet5", {}, 60_000, 840), ("alexnet", {}, 60_965_224, 0), ("alexnet", {"groups": 1}, 62_378_344, 0),
    ("alexnet_torchvision", {}, 61_100_840, 0), ("vgg_a", {}, 132_863_336, 0), ("vgg_a_lrn", {}, 132_863_336, 0),
    ("vgg_b", {}, 133_047_848, 0), ("vgg_c", {}, 133_638_952, 0), ("vgg_d", {}, 138_357_544, 0),
    ("vgg_e", {}, 143_667_240, 0), ("googlenet", {}, 6_998_552, 0), ("googlenet", {"aux_logits": True}, 13_378_280, 0),
    ("googlenet_torchvision", {}, 6_624_904, 14_560), ("resnet18", {}, 11_689_512, 9_600),
    ("resnet34", {}, 21_797_672, 17_024), ("resnet50", {}, 25_557_032, 53_120),
    ("resnet101", {}, 44_549_160, 105_344), ("resnet152", {}, 60_192_808, 151_424),
    ("mobilenet_v1", {}, 4_231_976, 21_888), ("mobilenet_v2", {}, 3_504_872, 34_112),
]


@pytest.mark.parametrize("name,options,trainable,fixed", EXACT)
def test_exact_counts_of_the_zoo_issue(name, options, trainable, fixed):
    size = 227 if name == "alexnet" else (32 if name == "lenet5" else 224)
    s = summary(cheap(name, **options), (native(name)["in_channels"], size, size))
    assert (s.totals["trainable_parameters"], s.totals["non_trainable_parameters"]) == (trainable, fixed)


def test_mobilenet_v1_keras_total_and_lecture_alexnet_rows():
    s = summary(cheap("mobilenet_v1"), (3, 224, 224))
    assert s.totals["total_parameters"] == 4_253_864  # Keras' count, with the running statistics
    alex = summary(cheap("alexnet", groups=1), (3, 227, 227))
    assert [alex[f"features.{i}"].parameters for i in (0, 4, 8, 10, 12)] == [34_944, 614_656, 885_120,
                                                                             1_327_488, 884_992]
    assert (alex["features.0"].weights, alex["features.0"].biases) == (34_848, 96)  # W = 11*11*3*96, B = 96
    assert [alex[f"classifier.{i}"].parameters for i in (1, 4, 6)] == [37_752_832, 16_781_312, 4_097_000]


# ---- shapes: inference vs a real forward ---------------------------------------------------
SHAPE_CASES = [  # (name, options, input) at small or odd sizes
    ("lenet5", {}, (1, 28, 28)), ("lenet5", {}, (1, 32, 32)), ("lenet5_modern", {}, (1, 28, 28)),
    ("lenet5_modern", {}, (1, 32, 32)), ("cnn", {}, (1, 32, 32)), ("cnn_bn", {}, (1, 28, 28)),
    ("alexnet", {}, (3, 229, 230)), ("alexnet_torchvision", {}, (3, 64, 64)),
    ("vgg_a", {}, (3, 32, 32)), ("vgg_a_lrn", {}, (3, 32, 32)), ("vgg_b", {}, (3, 32, 32)),
    ("vgg_c", {}, (3, 32, 32)), ("vgg_d", {"batch_norm": True}, (3, 32, 32)), ("vgg_e", {}, (3, 40, 36)),
    ("googlenet", {"aux_logits": True}, (3, 209, 209)), ("googlenet_torchvision", {"aux_logits": True}, (3, 65, 71)),
    ("resnet18", {}, (3, 37, 45)), ("resnet34", {}, (3, 32, 32)), ("resnet50", {}, (3, 33, 33)),
    ("resnet101", {}, (3, 32, 32)), ("resnet152", {}, (3, 32, 32)), ("resnet20", {}, (3, 32, 32)),
    ("resnet32", {"shortcut": "B"}, (3, 28, 28)), ("resnet56", {}, (3, 31, 31)),
    ("mobilenet_v1", {}, (3, 64, 64)), ("mobilenet_v1", {"alpha": 0.5}, (3, 50, 50)), ("mobilenet_v2", {}, (3, 64, 64)),
]


def real_leaf_shapes(model, x):
    """{name: (input shapes, output shape)} of every leaf layer during ``model(x)``."""
    seen, patched = {}, []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Sequential, nn.Graph)):
            continue

        def record(*xs, _forward=m.forward, _name=name):
            y = _forward(*xs)
            seen[_name] = (tuple(tuple(v.shape) for v in xs), tuple(y.shape))
            return y

        object.__setattr__(m, "forward", record)
        patched.append(m)
    try:
        model.eval()(x)
    finally:
        for m in patched:
            m.__dict__.pop("forward")
    return seen


@pytest.fixture(scope="module")
def real_runs():
    """For each SHAPE_CASE: the model, the inference records and the real leaf shapes at batch 1."""
    runs = {}
    for name, options, shape in SHAPE_CASES:
        model = cheap(name, **options)
        records = infer_shapes(model, shape)
        real = real_leaf_shapes(model, np.zeros((1,) + shape, np.float32))
        runs[(name, tuple(sorted(options.items())), shape)] = (model, records, real)
    return runs


def test_inferred_shapes_equal_a_real_forward_for_every_zoo_model(real_runs):
    covered = set()
    for (name, _, shape), (model, records, real) in real_runs.items():
        covered.add(name)
        leaves = {r.name: r for r in records if r.leaf}
        assert set(leaves) == set(real), name
        for lname, (ins, out) in real.items():
            assert leaves[lname].input_shapes == ins, (name, shape, lname)
            assert leaves[lname].output_shapes == (out,), (name, shape, lname)
            assert not leaves[lname].from_forward, (name, lname)  # every zoo layer has a rule
    assert covered == set(models.names()) - {"vgg11", "vgg13", "vgg16", "vgg19"}  # aliases of vgg_a/b/d/e


def test_batch_is_the_leading_axis_and_scales_activation_memory():
    one = summary(cheap("cnn"), (1, 28, 28))
    four = summary(cheap("cnn"), (1, 28, 28), batch=4)
    assert four["features.0"].output_shapes == ((4, 32, 28, 28),)
    assert four.totals["activation_bytes"] == 4 * one.totals["activation_bytes"]
    assert four.totals["macs"] == 4 * one.totals["macs"]
    # input 784 + conv 25,088 + relu 25,088 + pool 6,272 + conv 12,544 + relu 12,544 + pool 3,136 + avgpool
    # 3,136 + flatten 3,136 + dropout 3,136 + fc 128 + relu 128 + dropout 128 + fc 10, float32
    assert one.totals["activation_bytes"] == 4 * (784 + 2 * 25_088 + 6_272 + 2 * 12_544 + 4 * 3_136 + 3 * 128 + 10)


# ---- multiply-adds ---------------------------------------------------------------------------
def products_by_running_the_kernel(layer, in_shape):
    """Products a conv/FC computes for one input of ``in_shape``: all-ones input (explicit
    padding of ones), all-ones weights (only the connected kernels of a sparse conv), no bias;
    each output is then its number of products (exact in float32: at most 25,088), summed in float64."""
    one = np.float32
    if isinstance(layer, nn.Linear):
        y = np.ones(in_shape, one) @ np.ones((layer.out_features, layer.in_features), one).T
        return int(y.sum(dtype=np.float64))
    if isinstance(layer, SparseConv2d):
        w = np.zeros((layer.out_channels, layer.in_channels) + layer.kernel_size, one)
        w[layer._out_idx, layer._in_idx] = 1.0
        stride, dilation, groups, pads = (1, 1), (1, 1), 1, (0, 0, 0, 0)
    else:
        w = np.ones(layer.weight.shape, one)
        stride, dilation, groups = layer.stride, layer.dilation, layer.groups
        pads = resolve_padding(layer.padding, layer.kernel_size, stride, dilation, in_shape[2:], "oracle")
    x = np.pad(np.ones(in_shape, one), ((0, 0), (0, 0), pads[:2], pads[2:]), constant_values=1.0)
    y, _ = conv2d_forward(x, w, None, stride, 0, dilation, groups)
    return int(y.sum(dtype=np.float64))


def test_multiply_adds_of_every_conv_and_fc_equal_the_kernels_count(real_runs):
    done = {}
    for (name, _, shape), (model, records, real) in real_runs.items():
        layers = dict(model.named_modules())
        for r in records:
            layer = layers[r.name]
            if not r.leaf:
                inside = [x.macs for x in records if x.leaf and (not r.name or x.name.startswith(r.name + "."))]
                assert r.macs == sum(inside), (name, r.name)
                continue
            if not isinstance(layer, (nn.Conv2d, SparseConv2d, nn.Linear)):
                assert r.macs == 0 or r.type in ("Subsampling", "EuclideanRBF"), (name, r.name)
                continue
            key = (repr(layer), r.input_shapes[0])
            if key not in done:
                done[key] = products_by_running_the_kernel(layer, real[r.name][0][0])
            assert r.macs == done[key], (name, shape, r.name)
    assert len(done) > 300


def products_by_looping(layer, in_shape):
    """The convention written out: for each output position, filter, channel of its group and
    kernel tap, one product (taps in the padding included)."""
    n, c, h, w = in_shape
    pads = resolve_padding(layer.padding, layer.kernel_size, layer.stride, layer.dilation, (h, w), "loop")
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    count = 0
    for oy in range(0, h + pads[0] + pads[1] - dh * (kh - 1), sh):        # window starts in the padded input
        for ox in range(0, w + pads[2] + pads[3] - dw * (kw - 1), sw):
            for f in range(layer.out_channels):
                count += (c // layer.groups) * kh * kw
    return count


@pytest.mark.parametrize("kernel,stride,padding,dilation,groups", [
    (3, 1, 1, 1, 1), (3, 2, 0, 1, 1), (5, 2, 2, 1, 2), (3, 1, "same", 2, 1), (4, 2, "same", 1, 4),
    ((3, 5), (2, 1), (0, 1, 2, 0), 1, 2), (1, 2, 0, 1, 1), (3, 3, 1, 1, 4)])
def test_multiply_adds_equal_a_loop_over_products(kernel, stride, padding, dilation, groups):
    layer = nn.Conv2d(4, 8, kernel, stride, padding, dilation, groups)
    shape = (1, 4, 11, 10)
    macs = infer_shapes(nn.Sequential(layer), shape[1:])[1].macs
    assert macs == products_by_looping(layer, shape) == products_by_running_the_kernel(layer, shape)


def test_padded_products_are_counted_as_the_papers_do():
    layer = nn.Conv2d(1, 1, 3, padding=1)
    macs = infer_shapes(nn.Sequential(layer), (1, 4, 4))[1].macs
    y, _ = conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), None, 1, 1)
    assert macs == 16 * 9 and y.sum() == 100  # 144 products, of which 44 read the zero padding


def test_published_multiply_adds():
    macs = lambda name, shape, **o: summary(cheap(name, **o), shape).totals["macs"]  # noqa: E731
    assert macs("mobilenet_v1", (3, 224, 224)) == 568_740_352  # Howard et al.: 569M
    assert macs("resnet50", (3, 224, 224)) == 4_089_184_256    # torchvision: 4.09 G
    assert macs("resnet18", (3, 224, 224)) == 1_814_073_344
    assert macs("vgg_d", (3, 224, 224)) == 15_470_264_320      # torchvision: 15.47 G
    assert macs("alexnet", (3, 227, 227)) == 724_406_816       # two towers
    assert macs("alexnet", (3, 227, 227), groups=1) == 1_135_256_096
    assert macs("googlenet", (3, 224, 224)) == 1_582_671_872   # Szegedy et al.: a 1.5G budget
    s = summary(cheap("alexnet"), (3, 227, 227))
    assert s["features.0"].macs == 55 * 55 * 96 * 11 * 11 * 3  # O*O*K*K*C*N = 105,415,200
    assert s.totals["flops"] == 2 * s.totals["macs"]
    lenet = summary(cheap("lenet5"), (1, 32, 32))
    assert lenet["features.4"].macs == 10 * 10 * 60 * 25  # C3: only the 60 connected kernels
    assert lenet.totals["macs"] == 328_096


# ---- tree, depth, formats --------------------------------------------------------------------
def test_depth_folds_rows_into_their_ancestors():
    model = cheap("googlenet")
    full, top = summary(model, (3, 224, 224)), summary(model, (3, 224, 224), depth=1)
    assert full.totals == top.totals
    assert {r.depth for r in top.visible_rows()} == {0, 1}
    inc = top["inception3a"]
    leaves = [r for r in full.rows if r.leaf and r.name.startswith("inception3a.")]
    assert inc.parameters == sum(r.parameters for r in leaves) == 163_696
    assert inc.macs == sum(r.macs for r in leaves)
    assert "inception3a.branch2.1.conv" in full.to_table() and "inception3a.branch2" not in top.to_table()
    assert [r.name for r in summary(model, (3, 224, 224), depth=0).visible_rows()] == [""]


def test_table_has_thousands_separators_and_the_applied_padding():
    text = summary(cheap("alexnet", groups=1), (3, 227, 227)).to_table()
    line = next(l for l in text.splitlines() if l.strip().startswith("features.0 "))
    assert "34,944" in line and "34,848" in line and "11x11" in line and "105,415,200" in line
    assert "Trainable parameters:     62,378,344" in text
    same = summary(nn.Sequential(nn.Conv2d(1, 1, 4, stride=2, padding="same")), (1, 9, 9)).to_table()
    assert "1,2,1,2" in same  # 'same' on 9 with K=4, S=2: 5 outputs need 3 pixels of padding, 1 top, 2 bottom


def check_schema(doc, schema, path="$"):
    """A small JSON Schema validator (type, enum, required, properties, additionalProperties,
    items, minItems/maxItems, minimum): enough for JSON_SCHEMA."""
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
        ok = any((t == "integer" and isinstance(doc, int) and not isinstance(doc, bool))
                 or (t == "number" and isinstance(doc, (int, float)) and not isinstance(doc, bool))
                 or (t in kinds and isinstance(doc, kinds[t])) for t in types)
        assert ok, f"{path}: {doc!r} is not {types}"
    if doc is None:
        return
    if "enum" in schema:
        assert doc in schema["enum"], path
    if "minimum" in schema and isinstance(doc, (int, float)):
        assert doc >= schema["minimum"], path
    if isinstance(doc, dict):
        for key in schema.get("required", []):
            assert key in doc, f"{path}: missing {key}"
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            assert set(doc) <= set(props), f"{path}: unexpected {set(doc) - set(props)}"
        for key, value in doc.items():
            if key in props:
                check_schema(value, props[key], f"{path}.{key}")
    if isinstance(doc, list):
        assert len(doc) >= schema.get("minItems", 0) and len(doc) <= schema.get("maxItems", math.inf), path
        for i, item in enumerate(doc):
            if "items" in schema:
                check_schema(item, schema["items"], f"{path}[{i}]")


def test_json_follows_the_documented_schema():
    for name, shape in (("googlenet", (3, 224, 224)), ("lenet5", (1, 32, 32)), ("resnet20", (3, 32, 32))):
        doc = json.loads(summary(cheap(name), shape, depth=3).to_json())
        check_schema(doc, JSON_SCHEMA)
        assert doc["model_name"] == name and doc["rows"][0]["name"] == ""
        assert doc["totals"]["trainable_parameters"] == sum(p.size for p in cheap(name).parameters())
    row = doc["rows"][1]
    assert row["name"] == "conv1" and row["padding"] == [1, 1, 1, 1] and row["receptive_field"]["size"] == [3, 3]
    broken = json.loads(json.dumps(doc))
    broken["rows"][1]["macs"] = "many"
    with pytest.raises(AssertionError, match="macs"):
        check_schema(broken, JSON_SCHEMA)
    del broken["totals"]
    with pytest.raises(AssertionError, match="totals"):
        check_schema(broken, JSON_SCHEMA)


def test_csv_and_markdown_carry_the_same_numbers():
    s = summary(cheap("resnet18"), (3, 224, 224), depth=2)
    rows = list(csv.DictReader(io.StringIO(s.to_csv())))
    assert [r["name"] for r in rows] == [r.name for r in s.visible_rows()]
    assert int(rows[0]["parameters"]) == 11_689_512 and int(rows[0]["macs"]) == 1_814_073_344
    conv1 = rows[1]
    assert (conv1["kernel"], conv1["stride"], conv1["padding"], conv1["rf_size"]) == ("7x7", "2x2", "3x3x3x3", "7x7")
    md = s.to_markdown()
    assert md.splitlines()[0].startswith("| Layer | Type |") and "| `layer4.1` | Graph |" in md
    assert "11,689,512" in md
    with pytest.raises(ValueError, match="format must be one of"):
        s.format("xml")


# ---- errors, fallback, speed ------------------------------------------------------------------
def test_impossible_layer_names_the_layer_and_shows_the_formula():
    model = cheap("alexnet")
    with pytest.raises(ValueError) as inferred:
        summary(model, (3, 32, 32))
    assert "MaxPool2d 'features.7': output height would be 0: (I - K + 2P)/S + 1 = (2 - 3 + 0)/2 + 1" \
        in str(inferred.value)
    with pytest.raises(ValueError) as real:
        model.eval()(np.zeros((1, 3, 32, 32), np.float32))
    assert str(real.value) == str(inferred.value)  # the kernels' own message
    with pytest.raises(ValueError, match=r"Linear 'classifier.1': expected an input with in_features=9216"):
        summary(model, (3, 224, 224))
    with pytest.raises(ValueError, match=r"Conv2d 'conv1': input has 1 channels, but the layer expects 3"):
        summary(cheap("resnet18"), (1, 224, 224))
    with pytest.raises(ValueError, match=r"Conv2d '0': output width would be -1: "
                                         r"\(I - K \+ 2P\)/S \+ 1 = \(5 - 7 \+ 0\)/1 \+ 1"):
        summary(nn.Sequential(nn.Conv2d(1, 1, (1, 7))), (1, 9, 5))


def test_a_layer_without_a_rule_is_run_once_on_zeros():
    class Crop(nn.Layer):
        calls = 0

        def forward(self, x):
            Crop.calls += 1
            return x[:, :, 1:-1, 1:-1]

    model = nn.Sequential(nn.Conv2d(1, 2, 3), Crop(), nn.Conv2d(2, 2, 3))
    s = summary(model, (1, 10, 10))
    assert Crop.calls == 1 and s["1"].from_forward and s["1"].output_shapes == ((1, 2, 6, 6),)
    assert s["2"].output_shapes == ((1, 2, 4, 4),) and s["2"].rf is None  # unknown mapping: no field after it
    table = s.to_table()
    assert "Crop (forward)" in table and "Shape from forward:       1 (no shape rule" in table

    @register_shape_rule(Crop)
    def crop_rule(layer, shapes, where):
        n, c, h, w = shapes[0]
        return LayerShape((n, c, h - 2, w - 2), "identity")

    s = summary(model, (1, 10, 10))
    assert Crop.calls == 1 and not s["1"].from_forward and s["2"].rf is not None


def test_vgg_e_at_224_runs_no_convolution_and_is_instant(monkeypatch):
    model = cheap("vgg_e")

    def forbidden(*args, **kwargs):
        raise AssertionError("a convolution ran")

    monkeypatch.setattr(conv_kernels, "conv2d_forward", forbidden)
    monkeypatch.setattr(conv_module, "conv2d_forward", forbidden)
    start = time.perf_counter()
    s = summary(model, (3, 224, 224))
    text = s.to_table() + s.to_json() + s.to_csv() + s.to_markdown()
    elapsed = time.perf_counter() - start
    assert s.totals["macs"] == 19_632_062_464 and "143,667,240" in text
    assert elapsed < 1.0, elapsed  # about 0.01 s measured


def test_receptive_fields_in_the_rows_match_receptive_fields():
    s = summary(cheap("vgg_d"), (3, 224, 224))
    fields = receptive_fields(cheap("vgg_d"), (3, 224, 224))
    assert s["features.28"].rf == fields["features.28"] and s["features.28"].rf.size == (196, 196)
    assert s["classifier.6"].rf.whole and s["features"].rf == fields["features.30"]


# ---- reconciliation and the command ----------------------------------------------------------
def test_explain_counts_mobilenet_googlenet_alexnet_resnet_lenet():
    mobile = explain_counts("mobilenet_v1", build=cheap)
    for figure in ("4,210,088", "4,231,976", "4,253,864", "568,740,352", "21,888"):
        assert figure in mobile
    assert "vs 4,253,864 (Keras" in mobile and ": equal" in mobile
    google = explain_counts("googlenet", build=cheap)
    assert "6,998,552 without, 13,378,280 with" in google
    assert "- 7,280 conv biases" in google and "+ 14,560 BatchNorm" in google
    assert "= 6,624,904 = torchvision's count" in google
    alex = explain_counts("alexnet", build=cheap)
    assert "60,965,224" in alex and "62,378,344" in alex and "61,100,840" in alex
    assert "one tower - two towers = 1,413,120" in alex
    resnet = explain_counts("resnet50", build=cheap)
    assert "4,089,184,256" in resnet and "saves 231,211,008: 3,857,973,248" in resnet
    assert "vs 25,557,032" in resnet and "difference" not in resnet
    assert "340,908 vs 340,908" in explain_counts("lenet5", build=cheap)
    assert "equal" in explain_counts("vgg16", build=cheap) and "vgg16" in explain_counts("vgg16", build=cheap)


def test_explain_counts_computes_rather_than_repeats():
    """A model that differs from the reference shows the difference (100 classes instead of 1000)."""
    small = lambda name, **o: cheap(name, num_classes=100, **o)  # noqa: E731
    text = explain_counts("resnet50", build=small)
    assert "vs 25,557,032" in text and "difference -1,844,100" in text  # 2048*900 + 900 fewer
    google = explain_counts("googlenet", build=small)
    assert "5,702,404 vs 6,624,904" in google and "difference -922,500" in google  # 1024*900 + 900 fewer
    assert "= 5,702,404 = torchvision's count" in google  # the part-by-part sum still reconciles


def parse(*argv):
    p = argparse.ArgumentParser(prog="cnnkit")
    add_summary_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["summary", *argv])


def test_command_prints_the_table_and_other_formats(capsys):
    assert run_summary(parse("lenet5")) == 0
    out = capsys.readouterr().out
    assert "(1, 1, 32, 32)" in out and "Trainable parameters:     60,000" in out
    assert run_summary(parse("cnn", "--format", "json", "--depth", "1", "--batch", "2")) == 0
    doc = json.loads(capsys.readouterr().out)
    check_schema(doc, JSON_SCHEMA)
    assert doc["input_shapes"] == [[2, 1, 28, 28]] and doc["depth"] == 1
    assert run_summary(parse("resnet20", "--format", "csv", "--input", "3,28,28")) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(",0,Sequential,0,1x10")
    assert run_summary(parse("resnet56", "--format", "markdown", "--depth", "1", "--num-classes", "100")) == 0
    assert "(1, 100)" in capsys.readouterr().out


def test_command_native_inputs(capsys):
    for name, shape in (("alexnet", "(1, 3, 227, 227)"), ("lenet5_modern", "(1, 1, 28, 28)"),
                        ("mobilenet_v1", "(1, 3, 224, 224)"), ("resnet32", "(1, 3, 32, 32)")):
        assert run_summary(parse(name, "--depth", "0")) == 0
        assert f"Input:                    {shape}" in capsys.readouterr().out, name


def test_command_explain_counts_and_errors(capsys):
    assert run_summary(parse("mobilenet_v1", "--depth", "1", "--explain-counts")) == 0
    out = capsys.readouterr().out
    assert "Multiply-adds:            568,740,352" in out and "4,253,864 vs 4,253,864 (Keras" in out
    assert run_summary(parse("alexnet", "--input", "3,32,32")) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnkit summary: error: MaxPool2d 'features.7'") and "(I - K + 2P)/S + 1" in err
    assert run_summary(parse("nosuchnet")) == 2
    assert "unknown model name" in capsys.readouterr().err
    assert run_summary(parse("cnn", "--input", "28,28")) == 2
    assert "--input must be C,H,W" in capsys.readouterr().err
    assert run_summary(parse("cnn", "--format", "csv", "--explain-counts")) == 2


def test_frozen_shared_and_multi_output_models():
    model = models.get("resnet20", num_classes=10, in_channels=3, rng=np.random.default_rng(0))
    total = sum(p.size for p in model.parameters())
    s = summary(model.freeze(up_to="layer1"), (3, 32, 32))
    frozen = sum(p.size for p in model.parameters() if not p.requires_grad)
    assert 0 < frozen < total and s.totals["trainable_parameters"] == total - frozen
    assert s.totals["non_trainable_parameters"] == frozen + sum(b.size for b in model.buffers() if b.dtype.kind == "f")
    shared = nn.Linear(4, 4)
    twice = nn.Sequential(nn.Flatten(), shared, nn.ReLU(), shared)
    s = summary(twice, (4, 1, 1))
    assert s.totals["trainable_parameters"] == 20 and s["1"].parameters == s["3"].parameters == 20
    assert s.totals["macs"] == 32  # the layer runs twice
    aux = summary(cheap("googlenet", aux_logits=True).train(), (3, 224, 224))  # training mode: three outputs
    assert aux[""].output_shapes == ((1, 1000), (1, 1000), (1, 1000))
    assert aux["aux1.fc2"].rf.whole and "(1, 1000) (1, 1000) (1, 1000)" in aux.to_table()


def test_top_level_cnnkit_summary_is_the_analysis_summary():
    import cnnkit
    from cnnkit import models
    net = models.get("lenet5", rng=np.random.default_rng(0))
    s = cnnkit.summary(net, (1, 32, 32))
    assert s.totals["trainable_parameters"] == 60_000 and s.totals["non_trainable_parameters"] == 840
