"""Every plot of ``cnnkit viz`` on a small trained model: the file exists, has the expected
pixel size and is not blank; saliency and Grad-CAM of a model that only sees one region
stay in that region."""

from __future__ import annotations

import argparse
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from cnnkit import nn
from cnnkit.nn.module import Layer
from cnnkit.viz import (add_viz_parser, feature_maps, grad_cam, plot_filters, run_viz, saliency)
from cnnkit.viz._common import capture
from cnnkit.viz.saliency import resize_bilinear

from .conftest import png_stats


def viz(*argv):
    p = argparse.ArgumentParser(prog="cnnkit")
    add_viz_parser(p.add_subparsers(dest="command"))
    return run_viz(p.parse_args(["viz", *argv]))


# (argv after the checkpoint, output name, expected (width, height) in pixels at 100 dpi)
PLOTS = [
    (["filters"], "filters.png", (460, 116)),                   # 6 filters of 5x5: 6 x 0.7 + 0.4 in
    (["filters", "--layer", "features.3"], "filters3.png", (460, 1182)),  # 16 filters x 6 inputs
    (["features", "IMAGE"], "features.png", (920, 580)),
    (["features", "IMAGE", "--layer", "features.0", "--layer", "classifier.4"], "features_fc.png", (700, 460)),
    (["saliency", "IMAGE"], "saliency.png", (840, 340)),
    (["saliency", "IMAGE", "--class", "3", "--layer", "features.0"], "saliency3.png", (840, 340)),
    (["receptive", "--layer", "features.3"], "receptive.png", (420, 460)),
    (["receptive", "--layer", "features.0", "--image", "IMAGE", "--unit", "0,0"], "receptive0.png", (420, 460)),
    (["curves"], "curves.png", (1200, 360)),                    # loss, accuracy, learning rate
    (["confusion"], "confusion.png", (710, 670)),               # 10 classes
]


@pytest.mark.parametrize("argv, name, size", PLOTS, ids=[p[1] for p in PLOTS])
def test_every_plot_renders(run_folder, test_image_file, tmp_path, capsys, argv, name, size):
    argv = [test_image_file if a == "IMAGE" else a for a in argv]
    out = tmp_path / name
    assert viz(argv[0], run_folder, *argv[1:], "--out", str(out)) == 0
    assert capsys.readouterr().out.strip() == str(out)
    got, variance = png_stats(out)
    assert got == size
    assert variance > 100  # not a blank page: grey levels vary (a blank figure has 0)


def test_default_output_goes_into_the_run_folder(run_folder, capsys):
    assert viz("filters", run_folder) == 0
    path = os.path.join(run_folder, "viz", "filters.png")
    assert capsys.readouterr().out.strip() == path
    assert os.path.getsize(path) > 0


@pytest.mark.parametrize("plot", ["filters", "confusion"])
def test_svg_output(run_folder, tmp_path, capsys, plot):
    out = tmp_path / f"{plot}.svg"
    assert viz(plot, run_folder, "--out", str(out)) == 0
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg") and root.get("width", "").endswith("pt")


def test_checkpoint_json_works_like_the_folder(run_folder, tmp_path, capsys):
    out = tmp_path / "f.png"
    assert viz("filters", os.path.join(run_folder, "best.json"), "--out", str(out)) == 0
    assert png_stats(out)[0] == (460, 116)


@pytest.mark.parametrize("argv, message", [
    (["filters", "RUN", "--layer", "nope"], "no layer of that name; layers: features, features.0"),
    (["filters", "RUN", "--layer", "classifier.0"], "the layer has no conv weight"),
    (["filters", "RUN", "--out", "x.jpg"], "must end in .png or .svg"),
    (["receptive", "RUN", "--layer", "features.3", "--unit", "10,0"], "unit outside the layer's output grid"),
    (["receptive", "RUN", "--layer", "features.3", "--unit", "a"], "--unit must be H,W"),
    (["saliency", "RUN", "missing.png"], "cannot read the image"),
    (["saliency", "RUN", "IMAGE", "--class", "10"], "class index out of range"),
    (["curves", "NOWHERE"], "RUN_DIR must be a run folder"),
    (["filters", "RUN", "--max-filters", "0"], "max_filters and max_inputs must be at least 1"),
    (["features", "RUN", "IMAGE", "--max-channels", "0"], "max_channels must be at least 1"),
    (["features", "RUN", "IMAGE", "--layer", "classifier.9"], "no layer of that name"),
])
def test_errors_say_what_and_exit_2(run_folder, test_image_file, tmp_path, capsys, argv, message):
    sub = {"RUN": run_folder, "IMAGE": test_image_file, "NOWHERE": str(tmp_path / "none")}
    argv = [sub.get(a, a) for a in argv]
    argv = argv if "--out" in argv else argv + ["--out", str(tmp_path / "o.png")]
    assert viz(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnnkit viz {argv[0]}: error: ") and message in err


def test_deep_layer_filters_default_to_16_rows_of_8_inputs(tmp_path):
    conv = nn.Conv2d(32, 40, 3)
    conv.weight.data[...] = np.random.default_rng(0).normal(size=(40, 32, 3, 3))
    out = plot_filters(nn.Sequential(conv), str(tmp_path / "deep.png"))
    assert png_stats(out)[0] == (600, 1198)  # 8 x 0.7 + 0.4 by 16 x 0.7 + 0.15 + 0.15 + 3 title lines


def test_rgb_first_layer_filters_are_colour_tiles(tmp_path):
    conv = nn.Conv2d(3, 10, 3)
    conv.weight.data[...] = np.random.default_rng(0).normal(size=(10, 3, 3, 3))
    model = nn.Sequential(conv, nn.ReLU())
    out = plot_filters(model, str(tmp_path / "rgb.png"))
    from PIL import Image
    with Image.open(out) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert im.size == (600, 202)  # 8 columns x 2 rows
    assert np.abs(a[..., 0] - a[..., 1]).max() > 50  # colour, not grey


def test_feature_maps_equal_the_layer_outputs():
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x = rng.normal(size=(1, 1, 6, 6)).astype(np.float32)
    maps = feature_maps(model, x, ["0", "1", "3"])
    y0 = model[0](x)
    np.testing.assert_allclose(maps["0"], y0[0])
    np.testing.assert_allclose(maps["1"], np.maximum(y0[0], 0))
    assert maps["3"].shape == (2, 1, 1)
    assert "forward" not in model[0].__dict__ and "backward" not in model[0].__dict__  # unwrapped again


def test_capture_restores_the_layer_after_an_error():
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(RuntimeError):
        with capture(model, ["0"]):
            raise RuntimeError("boom")
    assert "forward" not in model[0].__dict__


# ---- saliency of a model that only sees one region ------------------------------------
REGION = (slice(2, 8), slice(8, 14))  # rows 2..7, columns 8..13 of a 16x16 input (on the 2x2 pool grid)


class Mask(Layer):
    """Multiply the input by a fixed 0/1 mask: the model sees only the mask's region."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


def region_model():
    rng = np.random.default_rng(0)
    mask = np.zeros((1, 1, 16, 16), np.float32)
    mask[(0, 0) + REGION] = 1
    conv1, conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
    head = nn.Linear(4, 3)
    for layer in (conv1, conv2, head):  # positive weights, zero biases: zero outside the region
        layer.weight.data[...] = np.abs(rng.normal(size=layer.weight.data.shape))
        layer.bias.data[...] = 0
    return nn.Sequential(Mask(mask), conv1, nn.ReLU(), nn.MaxPool2d(2), conv2, nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)


def inside(region, grow):
    m = np.zeros((16, 16), bool)
    r, c = region
    m[max(r.start - grow, 0):r.stop + grow, max(c.start - grow, 0):c.stop + grow] = True
    return m


def test_saliency_stays_in_the_region_the_model_sees():
    x = np.random.default_rng(1).uniform(0.2, 1, size=(1, 1, 16, 16)).astype(np.float32)
    sal, k = saliency(region_model(), x, target=1)
    assert k == 1 and sal.shape == (16, 16)
    assert sal[~inside(REGION, 0)].max() == 0        # exactly zero where the mask hides the input
    assert (sal[inside(REGION, 0)] > 0).mean() > 0.9


def test_grad_cam_stays_in_the_region_the_model_sees():
    x = np.random.default_rng(1).uniform(0.2, 1, size=(1, 1, 16, 16)).astype(np.float32)
    cam, k, layer = grad_cam(region_model(), x, target=2)
    assert layer == "4" and k == 2 and cam.shape == (16, 16) and cam.max() == 1
    # conv1's 3x3 window reaches 1 pixel past the region, the 2x2 pool rounds that to one
    # 8x8 unit (2 pixels) and bilinear upsampling spreads it by one more pixel
    assert cam[~inside(REGION, 3)].max() == 0
    assert cam[inside(REGION, 0)].sum() / cam.sum() > 0.5  # 0.60 measured
    peak = np.unravel_index(np.argmax(cam), cam.shape)
    assert inside(REGION, 0)[peak]


def test_saliency_matches_central_differences():
    from tests.helpers import numeric_grad
    model = region_model().double()
    x = np.random.default_rng(2).uniform(0.2, 1, size=(1, 1, 16, 16))
    sal, _ = saliency(model, x, target=0)
    num = numeric_grad(lambda: model(x)[0, 0], x)
    np.testing.assert_allclose(sal, np.abs(num[0, 0]), atol=1e-6)


def test_resize_bilinear_keeps_constants_and_samples_pixel_centres():
    np.testing.assert_allclose(resize_bilinear(np.full((2, 3), 4.0), (8, 9)), 4.0)
    up = resize_bilinear(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_allclose(up, [[0, 0.25, 0.75, 1]])  # align_corners=False, edges clamped
