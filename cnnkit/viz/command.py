"""The ``cnnkit viz`` command: ``add_viz_parser(subparsers)`` and ``run_viz(args)``.

    cnnkit viz filters   CHECKPOINT [--layer NAME] [--max-filters N] [--out FILE]
    cnnkit viz features  CHECKPOINT IMAGE [--layer NAME ...] [--max-channels N] [--invert] [--out FILE]
    cnnkit viz saliency  CHECKPOINT IMAGE [--class K] [--layer NAME] [--invert] [--out FILE]
    cnnkit viz receptive CHECKPOINT --layer NAME [--image IMAGE] [--unit H,W] [--invert] [--out FILE]
    cnnkit viz curves    RUN_DIR [--out FILE]
    cnnkit viz confusion RUN_DIR [--out FILE]
    cnnkit viz report    RUN_DIR [--out FILE]

CHECKPOINT is a run folder (its ``last.json``) or a checkpoint ``.json``. IMAGE is a
PNG/JPEG file, converted to the model's channels and resized to its input, then
standardized with the run's mean and std, as ``cnnkit predict`` does. ``--out`` ends in
``.png`` or ``.svg``; the default is ``viz/<plot>.png`` inside the run folder.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .._errors import value_error

PLOTS = ("filters", "features", "saliency", "receptive", "curves", "confusion", "report")


def add_viz_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``viz`` sub-command (with one action per plot) to ``argparse`` sub-parsers."""
    p = subparsers.add_parser("viz", help="pictures of a model or a run: filters, feature maps, saliency, "
                                          "receptive fields, curves, confusion matrix, HTML report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="viz_command", required=True, metavar="PLOT")
    out_help = "output file, .png or .svg (default: viz/PLOT.png in the run folder)"

    f = sub.add_parser("filters", help="grid of a conv layer's kernels, each normalized on its own")
    f.add_argument("checkpoint", help="run folder or checkpoint .json")
    f.add_argument("--layer", help="conv layer (named_modules name; default: the first conv layer)")
    f.add_argument("--max-filters", type=int, help="filters drawn (default: 64 for a layer with one or "
                                                    "three input channels, else 16 rows of 8 inputs)")

    m = sub.add_parser("features", help="an image and the feature maps of chosen layers")
    m.add_argument("checkpoint")
    m.add_argument("image")
    m.add_argument("--layer", action="append", help="layer to show (repeat for several; default: the "
                                                    "first two conv layers)")
    m.add_argument("--max-channels", type=int, default=16, help="panels per layer (default: %(default)s)")

    s = sub.add_parser("saliency", help="input gradient of a class score and Grad-CAM on the last conv layer")
    s.add_argument("checkpoint")
    s.add_argument("image")
    s.add_argument("--class", dest="target", type=int, help="class index (default: the predicted class)")
    s.add_argument("--layer", help="layer for Grad-CAM: any layer or block with a (N, C, h, w) output "
                                   "(default: the last conv layer)")

    r = sub.add_parser("receptive", help="the receptive field of one unit of a layer, drawn on an image")
    r.add_argument("checkpoint")
    r.add_argument("--layer", required=True)
    r.add_argument("--image", help="image to draw on (default: the first test image of the run's data "
                                   "set, else a plain grey square)")
    r.add_argument("--unit", metavar="H,W", help="output unit (default: the middle one)")

    for name, text in (("curves", "loss, accuracy and learning rate per epoch"),
                       ("confusion", "the test confusion matrix"),
                       ("report", "write report.html (self-contained) for the run folder")):
        q = sub.add_parser(name, help=text)
        q.add_argument("run_dir", help="run folder written by cnnkit train/finetune")
    for name, q in sub.choices.items():
        q.add_argument("--out", help=out_help if name != "report" else
                       "output file (default: report.html in the run folder)")
        if name in ("features", "saliency", "receptive"):
            q.add_argument("--invert", action="store_true", help="invert grey levels (Fashion-MNIST is "
                                                                 "light objects on black)")
    return p


def run_viz(args, out=None) -> int:
    """Run ``cnnkit viz`` for parsed ``args``; prints the written path to ``out`` (default
    stdout). Returns 0, or 2 after printing ``cnnkit viz: error: ...`` to stderr."""
    out = sys.stdout if out is None else out
    try:
        path = make_plot(args)
    except (ValueError, TypeError, KeyError, OSError) as e:
        print(f"cnnkit viz {args.viz_command}: error: {e}", file=sys.stderr)
        return 2
    print(path, file=out)
    return 0


def _run_folder(checkpoint: str) -> str:
    return checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))


def _default_out(args, source: str) -> str:
    return args.out or os.path.join(_run_folder(source), "viz", f"{args.viz_command}.png")


def _input(path: str, data: dict, invert: bool):
    from ._common import load_image, standardize
    img = load_image(path, data["input_shape"])
    img = 1.0 - img if invert else img
    return standardize(img[None], data), img


def _parse_unit(text):
    if text is None:
        return None
    try:
        unit = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        unit = ()
    if len(unit) != 2:
        raise value_error("cnnkit viz receptive", "--unit must be H,W (two integers)", unit=text)
    return unit


def make_plot(args) -> str:
    from . import (plot_confusion, plot_curves, plot_feature_maps, plot_filters, plot_receptive_field,
                   plot_saliency, write_html_report)
    from ._common import data_meta

    cmd = args.viz_command
    if cmd in ("curves", "confusion", "report"):
        if not os.path.isdir(args.run_dir):
            raise value_error(f"cnnkit viz {cmd}", "RUN_DIR must be a run folder", run_dir=args.run_dir)
        if cmd == "report":
            return write_html_report(args.run_dir, path=args.out)
        plot = plot_curves if cmd == "curves" else plot_confusion
        return plot(args.run_dir, _default_out(args, args.run_dir))

    from ..cli import load_model
    model, meta = load_model(args.checkpoint)
    data = data_meta(meta, model)
    if "input_shape" not in data:
        raise value_error(f"cnnkit viz {cmd}", "the checkpoint does not record its input shape",
                          checkpoint=args.checkpoint)
    path = _default_out(args, args.checkpoint)
    if cmd == "filters":
        return plot_filters(model, path, layer=args.layer, max_filters=args.max_filters)
    if cmd == "features":
        x, img = _input(args.image, data, args.invert)
        return plot_feature_maps(model, x, img, path, layers=args.layer, max_channels=args.max_channels)
    if cmd == "saliency":
        x, img = _input(args.image, data, args.invert)
        return plot_saliency(model, x, img, path, target=args.target, classes=data.get("classes"),
                             layer=args.layer)
    # receptive
    if args.image:
        _, img = _input(args.image, data, args.invert)
    else:
        img = _first_test_image(data)
    return plot_receptive_field(model, img, path, layer=args.layer, unit=_parse_unit(args.unit))


def _first_test_image(data: dict) -> np.ndarray:
    """The run's first test image in [0, 1] (C, H, W), or mid-grey if it cannot be loaded."""
    from .html_report import _test_images
    c, h, w = (int(v) for v in data["input_shape"])
    try:
        images, _ = _test_images(data, 1)
        img = images[0].astype(np.float32) / 255.0
        return np.repeat(img, c, axis=0) if img.shape[0] != c else img
    except (ValueError, TypeError, KeyError, OSError):
        return np.full((c, h, w), 0.5, np.float32)


__all__ = ["add_viz_parser", "run_viz", "make_plot", "PLOTS"]
