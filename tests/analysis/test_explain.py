"""``cnnkit explain``: the lecture's numbers, checked against PyTorch, the ONNX 'same'
definition, the zoo's real parameter counts and brute-force oracles."""

import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from numpy.lib.stride_tricks import sliding_window_view

from cnnkit import models
from cnnkit.analysis.explain import (explain_conv, explain_fc, explain_model, explain_pool,
                                     explain_same, explain_separable)
from cnnkit.analysis.explain_cli import add_explain_parser, run_explain
from cnnkit.analysis.window_plot import LECTURE_IMAGE, SHARPEN, explain_window, save_window_png
from cnnkit.nn.conv import Conv2d
from cnnkit.nn.linear import Linear


@pytest.fixture(scope="module")
def alexnet():
    return models.get("alexnet", num_classes=1000, in_channels=3, rng=np.random.default_rng(0))


def cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="cnnkit")
    add_explain_parser(parser.add_subparsers(dest="command", required=True))
    rc = run_explain(parser.parse_args(["explain"] + argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---- conv ------------------------------------------------------------------------------
def test_conv_alexnet_c1_lecture_numbers():
    e = explain_conv(input=227, kernel=11, stride=4, padding=0, in_channels=3, filters=96)
    assert e.output == (55, 55)
    assert (e.weights, e.biases, e.parameters) == (34_848, 96, 34_944)
    assert e.multiplications == 55 * 55 * 11 * 11 * 3 * 96 == 105_415_200
    for line in ("O = (I - K + 2P)/S + 1 = (227 - 11 + 0)/4 + 1 = 55",
                 "W = K*K*C*N = 11*11*3*96 = 34,848", "B = N = 96", "P = W + B = 34,848 + 96 = 34,944",
                 "O*O*K*K*C*N = 55*55*11*11*3*96 = 105,415,200"):
        assert line in e.text
    assert e.unseen_rows == [] and e.same_padding == (4, 4, 4, 4)


@pytest.mark.parametrize("args, params", [((27, 5, 1, 2, 96, 256), 614_656), ((13, 3, 1, 1, 256, 384), 885_120),
                                          ((13, 3, 1, 1, 384, 384), 1_327_488), ((13, 3, 1, 1, 384, 256), 884_992)])
def test_conv_lecture_alexnet_c2_to_c5(args, params):
    e = explain_conv(*args)
    assert e.parameters == params and e.output == (args[0], args[0])
    assert f"= {params:,}" in e.text


def test_conv_groups_match_the_paper_alexnet_layer(alexnet):
    conv2 = dict(alexnet.named_modules())["features.4"]
    assert conv2.groups == 2
    e = explain_conv(27, 5, 1, 2, 96, 256, groups=2)
    assert e.parameters == conv2.weight.size + conv2.bias.size == 307_456
    assert "W = K*K*(C/G)*N = 5*5*(96/2)*256 = 307,200" in e.text


def test_conv_output_size_equals_torch_over_a_random_grid():
    rng = np.random.default_rng(5)
    checked = impossible = 0
    for _ in range(250):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        k, s, p, d = (int(v) for v in (rng.integers(1, 8), rng.integers(1, 5), rng.integers(0, 4), rng.integers(1, 4)))
        x, wt = torch.zeros(1, 1, h, w), torch.zeros(1, 1, k, k)
        try:
            shape = tuple(TF.conv2d(x, wt, stride=s, padding=p, dilation=d).shape[2:])
        except RuntimeError:
            with pytest.raises(ValueError, match=r"would be -?\d+: \(I - K \+ 2P\)/S \+ 1 = "):
                explain_conv((h, w), k, s, p, dilation=d)
            impossible += 1
            continue
        assert explain_conv((h, w), k, s, p, dilation=d).output == shape, (h, w, k, s, p, d)
        checked += 1
    assert checked > 100 and impossible > 10


def test_unseen_rows_are_the_rows_with_zero_input_gradient():
    # With an all-ones kernel, an input row gets gradient 0 from sum(conv(x)) exactly when no window reads it.
    for size, k, s, p, d in [(224, 11, 4, 0, 1), (20, 1, 3, 0, 1), (17, 3, 2, 1, 2), (10, 2, 4, 1, 1), (9, 3, 1, 0, 1)]:
        x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        TF.conv2d(x, torch.ones(1, 1, k, k, dtype=torch.float64), stride=s, padding=p, dilation=d).sum().backward()
        dead = [int(r) for r in np.flatnonzero(x.grad[0, 0].sum(1).numpy() == 0)]
        e = explain_conv(size, k, s, p, dilation=d)
        assert e.unseen_rows == e.unseen_cols == dead, (size, k, s, p, d)
    e = explain_conv(224, 11, 4, 0)
    assert e.unseen_rows == [223] and "never sees input rows (and columns) 223 (1 of 224" in e.text
    assert "floor(53.25) + 1 = 54" in e.text


def test_conv_same_padding_follows_the_onnx_definition():
    for size, k, s, d in [(227, 11, 4, 1), (224, 3, 2, 1), (10, 4, 1, 1), (7, 3, 1, 2), (5, 1, 3, 1), (13, 6, 3, 2)]:
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        e = explain_conv(size, k, s, "same", dilation=d)
        assert e.padding == e.same_padding == (total // 2, total - total // 2) * 2
        assert e.output == (math.ceil(size / s),) * 2


def test_conv_rectangular_and_asymmetric_padding():
    e = explain_conv((224, 200), (3, 5), (2, 1), (0, 1, 2, 3), in_channels=4, filters=8)
    assert e.output == ((224 - 3 + 1) // 2 + 1, 200 - 5 + 5 + 1)
    assert e.weights == 3 * 5 * 4 * 8
    assert "O_w = (I - K + P_left + P_right)/S + 1 = (200 - 5 + 2 + 3)/1 + 1 = 201" in e.text


# ---- separable, fc, pool -----------------------------------------------------------------
def test_separable_lecture_example():
    e = explain_separable(input=12, kernel=5, in_channels=3, filters=256)
    assert e.output == (8, 8)
    assert e.standard_multiplications == 1_228_800
    assert (e.depthwise_multiplications, e.pointwise_multiplications) == (4_800, 49_152)
    assert e.separable_multiplications == 53_952
    assert e.ratio == pytest.approx(1 / 256 + 1 / 25, rel=1e-12)
    assert "4,800 + 49,152 = 53,952 multiplications" in e.text
    assert "prints 52,952: a typo" in e.text
    # the parameter counts are the ones cnnkit's layers hold
    dw, pw = Conv2d(3, 3, 5, groups=3), Conv2d(3, 256, 1)
    assert e.depthwise_parameters == dw.num_parameters() == 78
    assert e.pointwise_parameters == pw.num_parameters() == 1_024
    assert e.standard_parameters == Conv2d(3, 256, 5).num_parameters() == 19_456
    assert "typo" not in explain_separable(14, 5, 3, 256).text


def test_fc_lecture_numbers_and_the_alexnet_layers(alexnet):
    e = explain_fc(input=6, in_channels=256, units=4096)
    assert (e.weights, e.parameters) == (37_748_736, 37_752_832)
    assert "W = I*I*C*F = 6*6*256*4096 = 37,748,736" in e.text
    assert "P = W + B = 37,748,736 + 4,096 = 37,752,832" in e.text
    assert explain_fc(1, 4096, 4096).parameters == 16_781_312
    assert explain_fc(1, 4096, 1000).parameters == 4_097_000
    layers = dict(alexnet.named_modules())
    assert [layers[f"classifier.{i}"].num_parameters() for i in (1, 4, 6)] == [e.parameters, 16_781_312, 4_097_000]


def test_pool_alexnet_overlapping():
    e = explain_pool(55, 3, 2, channels=96)
    assert e.output == (27, 27) and e.overlapping and e.parameters == 0
    assert e.operations == 27 * 27 * 96 * 8 == 559_872
    assert "27*27*96*8 = 559,872" in e.text
    assert not explain_pool(8, 2).overlapping  # stride defaults to the kernel


def test_pool_floor_and_ceil_equal_torch():
    rng = np.random.default_rng(3)
    for _ in range(120):
        size, k, s = int(rng.integers(1, 25)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
        p = int(rng.integers(0, k // 2 + 1))
        for ceil in (False, True):
            try:
                ref = tuple(TF.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, ceil_mode=ceil).shape[2:])
            except RuntimeError:
                with pytest.raises(ValueError, match="would be"):
                    explain_pool(size, k, s, p, ceil_mode=ceil)
                continue
            assert explain_pool(size, k, s, p, ceil_mode=ceil).output == ref, (size, k, s, p, ceil)


# ---- 'same' conventions ------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_same_conventions_follow_onnx_and_torch():
    torch.manual_seed(0)
    for size in (5, 8):
        for k in range(1, 7):
            for s in (1, 2, 3):
                for d in (1, 2):
                    e = explain_same(size, k, s, d)
                    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
                    assert e.same_upper[:2] == (total // 2, total - total // 2)
                    assert e.same_lower[:2] == (total - total // 2, total // 2)
                    assert e.same_upper[2] == e.same_lower[2] == math.ceil(size / s)
                    x = torch.randn(1, 1, size, size, dtype=torch.float64)
                    w = torch.randn(1, 1, k, k, dtype=torch.float64)
                    if s > 1:
                        assert e.pytorch is None
                        with pytest.raises((RuntimeError, ValueError)):
                            TF.conv2d(x, w, stride=s, padding="same", dilation=d)
                        continue
                    b, a, out = e.pytorch
                    ref = TF.conv2d(x, w, padding="same", dilation=d)
                    torch.testing.assert_close(ref, TF.conv2d(TF.pad(x, (b, a, b, a)), w, dilation=d))
                    assert out == ref.shape[-1] == size
                    cb, ca, cout = e.caffe
                    assert cout == TF.conv2d(x, w, padding=cb, dilation=d).shape[-1]


def test_same_warnings():
    e = explain_same(224, 3, 2)
    assert e.same_upper == (0, 1, 112) and e.same_lower == (1, 0, 112) and e.caffe == (1, 1, 112)
    assert len(e.warnings) == 3 and "warning: SAME_UPPER and SAME_LOWER disagree" in e.text
    even = explain_same(10, 4)
    assert even.caffe == (1, 1, 9) and any("gives 9, not 10" in w for w in even.warnings)
    assert explain_same(7, 3).warnings == ()


# ---- model ------------------------------------------------------------------------------------
def _fc_params(model):
    return sum(m.num_parameters() for m in model.modules() if isinstance(m, Linear))


def test_model_alexnet_and_vgg16_fc_fractions_against_the_real_counts(alexnet):
    for name, size, total, fc, pct in [("alexnet", 227, 60_965_224, 58_631_144, "96.17%"),
                                       ("vgg16", 224, 138_357_544, 123_642_856, "89.36%")]:
        model = alexnet if name == "alexnet" else models.get(name, num_classes=1000, in_channels=3,
                                                              rng=np.random.default_rng(0))
        e = explain_model(model, input=(3, size, size))
        real = sum(p.size for p in model.parameters())
        assert e.parameters == real == total
        assert e.fc_parameters == _fc_params(model) == fc
        assert e.fc_parameter_fraction == pytest.approx(fc / real)
        assert f"{pct} here, so it {'holds' if fc / real > 0.9 else 'does not hold'}" in e.text
        # explaining leaves the model as it was: its own forward methods, training mode
        assert all("forward" not in m.__dict__ for m in model.modules()) and model.training
    assert e.conv_macs == 15_346_630_656 and e.fc_macs == 123_633_664  # VGG-16 at 224


def test_model_totals_equal_the_summary_ledger():
    from cnnkit.analysis import summary
    for name, chw in [("cnn_bn", (1, 28, 28)), ("resnet20", (3, 32, 32))]:
        model = models.get(name, num_classes=10, in_channels=chw[0], rng=np.random.default_rng(0))
        e, s = explain_model(model, input=chw), summary(model, chw)
        assert (e.macs, e.parameters) == (s.totals["macs"], s.totals["trainable_parameters"])


def test_model_by_name_mobilenet_and_lenet5():
    e = explain_model("mobilenet_v1")
    assert e.input == (3, 224, 224) and e.macs == 568_740_352 and e.parameters == 4_231_976
    assert e.other_parameters == 21_888 and "BatchNorm2d 21,888" in e.text
    lenet = explain_model("lenet5")
    assert lenet.parameters == 60_000
    rows = {r["name"]: r for r in lenet.rows}
    assert rows["features.0"]["macs"] == 28 * 28 * 6 * 25 and rows["features.0"]["output"] == (6, 28, 28)


def test_model_shape_pass_equals_a_real_forward():
    # record every conv/FC output of a real forward; the explanation's shapes and MACs
    # (output positions x weights per filter) must agree with it
    for name, chw in [("cnn", (1, 28, 28)), ("resnet20", (3, 32, 32))]:
        model = models.get(name, num_classes=10, in_channels=chw[0], rng=np.random.default_rng(0))
        e = explain_model(model, input=chw)
        real = {}
        for mname, m in model.named_modules():
            if isinstance(m, (Conv2d, Linear)):
                def record(x, m=m, mname=mname):
                    y = type(m).forward(m, x)
                    real[mname] = y.shape[1:]
                    return y
                object.__setattr__(m, "forward", record)
        model.eval()
        model(np.random.default_rng(1).standard_normal((1,) + chw).astype(np.float32))
        assert {r["name"]: r["output"] for r in e.rows} == real
        for r in e.rows:
            m = dict(model.named_modules())[r["name"]]
            per_output = m.weight.size // (m.out_channels if isinstance(m, Conv2d) else m.out_features)
            assert r["macs"] == int(np.prod(r["output"])) * per_output
        assert e.parameters == model.num_parameters()


# ---- window -----------------------------------------------------------------------------------
def test_window_default_is_the_lecture_image_and_equals_numpy_and_torch():
    e = explain_window()
    assert np.array_equal(e.input, LECTURE_IMAGE) and np.array_equal(e.kernel, SHARPEN)
    assert e.value == 114.0 and e.output.shape == (5, 5)
    padded = np.pad(LECTURE_IMAGE, 1)
    numpy_ref = np.einsum("ijkl,kl->ij", sliding_window_view(padded, (3, 3)), SHARPEN)
    torch_ref = TF.conv2d(torch.tensor(LECTURE_IMAGE)[None, None], torch.tensor(SHARPEN)[None, None], padding=1)[0, 0]
    np.testing.assert_array_equal(e.output, numpy_ref)
    np.testing.assert_array_equal(e.output, torch_ref.numpy())
    assert "  + 0*(-1) + 60*5 + 113*(-1)" in e.text and "  = 114" in e.text
    assert "[  0] [ 60] [113]" in e.text


def test_window_strided_dilated_equals_torch():
    rng = np.random.default_rng(1)
    x, k = rng.integers(-9, 10, (9, 8)).astype(float), rng.integers(-3, 4, (2, 3)).astype(float)
    e = explain_window(x, k, stride=(2, 1), padding=(1, 2), dilation=2, at=(1, 3))
    ref = TF.conv2d(torch.tensor(x)[None, None], torch.tensor(k)[None, None], stride=(2, 1), padding=(1, 2),
                    dilation=2)[0, 0].numpy()
    np.testing.assert_array_equal(e.output, ref)
    assert e.value == ref[1, 3] == (e.window * k).sum()


def test_window_png(tmp_path):
    from PIL import Image
    path = tmp_path / "window.png"
    assert save_window_png(explain_window(at=(2, 3)), str(path)) == (1200, 450)
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert img.shape == (450, 1200, 3)
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)  # the highlighted window and output
    assert red.sum() > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["window.png"]  # no temp file left


# ---- CLI and errors ---------------------------------------------------------------------------
def test_cli_prints_the_formulas(capsys):
    rc, out, _ = cli("conv --input 227 --kernel 11 --stride 4 --padding 0 --in-channels 3 --filters 96".split(), capsys)
    assert rc == 0 and "O = (I - K + 2P)/S + 1 = (227 - 11 + 0)/4 + 1 = 55" in out
    assert "P = W + B = 34,848 + 96 = 34,944" in out
    rc, out, _ = cli("separable --input 12 --kernel 5 --in-channels 3 --filters 256".split(), capsys)
    assert rc == 0 and "= 1,228,800" in out and "4,800 + 49,152 = 53,952" in out
    rc, out, _ = cli("fc --input 6 --in-channels 256 --units 4096".split(), capsys)
    assert rc == 0 and "37,752,832" in out
    assert "16,781,312" in cli("fc --input 1 --in-channels 4096 --units 4096".split(), capsys)[1]
    assert "4,097,000" in cli("fc --in-channels 4096 --units 1000".split(), capsys)[1]
    assert "= 27" in cli("pool --input 55 --kernel 3 --stride 2".split(), capsys)[1]
    assert "SAME_LOWER" in cli("same --input 224 --kernel 3 --stride 2".split(), capsys)[1]
    rc, out, _ = cli("conv --input 224x200 --kernel 3x5 --padding same".split(), capsys)
    assert rc == 0 and "O_h = " in out


def test_cli_window_and_png(capsys, tmp_path):
    rc, out, _ = cli(["window", "--input", "5", "--kernel", "3", "--padding", "1", "--stride", "1",
                      "--png", str(tmp_path / "w.png")], capsys)
    assert rc == 0 and "  = 114" in out and (tmp_path / "w.png").stat().st_size > 1000
    rc, out, _ = cli(["window", "--input-values", "1 2 3 / 4 5 6 / 7 8 9", "--kernel-values", "1 -1",
                      "--padding", "0", "--at", "2,1"], capsys)
    assert rc == 0 and "= 8*1 + 9*(-1)" in out and "  = -1" in out


def test_cli_model(capsys):
    rc, out, _ = cli(["model", "lenet5"], capsys)
    assert rc == 0 and "Parameters: 60,000" in out and "features.4" in out


def test_errors_show_the_formula(capsys):
    with pytest.raises(ValueError, match=r"output height would be -1: \(I - K \+ 2P\)/S \+ 1 = \(5 - 7 \+ 0\)/1 \+ 1"):
        explain_conv(5, 7)
    rc, _, err = cli("conv --input 5 --kernel 7".split(), capsys)
    assert rc == 2 and err.startswith("cnnkit explain conv: error:") and "(5 - 7 + 0)/1 + 1" in err
    with pytest.raises(ValueError, match="divisible by groups. Received: in_channels=3, filters=96, groups=2"):
        explain_conv(227, 11, in_channels=3, filters=96, groups=2)
    with pytest.raises(ValueError, match="padding must be at most half of the kernel size"):
        explain_pool(10, 2, padding=2)
    with pytest.raises(ValueError, match=r"at must lie in the 5x5 output. Received: at=\(5, 0\)"):
        explain_window(at=(5, 0))
    with pytest.raises(TypeError, match="in_channels must be an int"):
        explain_fc(6, 2.5, 10)
    with pytest.raises(AttributeError, match="no field 'nope'"):
        explain_conv(5, 3).nope
    rc, _, err = cli(["window", "--input-values", "1 2 / 3"], capsys)
    assert rc == 2 and "rows must all have the same length" in err
    with pytest.raises(SystemExit):
        cli("conv --input 3x --kernel 2".split(), capsys)
