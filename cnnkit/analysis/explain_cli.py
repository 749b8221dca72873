"""The ``cnnkit explain`` command: ``add_explain_parser(subparsers)`` and ``run_explain(args)``.

    cnnkit explain conv|separable|pool|fc|model|same|window ...

The formulas themselves are in :mod:`cnnkit.analysis.explain`; this module parses
the options and prints the explanations.
"""

from __future__ import annotations

import argparse
import os
import sys

from .._errors import value_error
from .explain import (explain_conv, explain_fc, explain_model, explain_pool, explain_same,
                      explain_separable, explain_window, save_window_png)


def _dims(text: str):
    """``'227'`` -> 227, ``'227x200'`` -> (227, 200)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(vals) == 1:
        return vals[0]
    if len(vals) == 2:
        return tuple(vals)
    raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")


def _padding(text: str):
    """An int, HxW, 'top,bottom,left,right', 'same' or 'valid'."""
    if text in ("same", "valid"):
        return text
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected P, PHxPW, TOP,BOTTOM,LEFT,RIGHT, 'same' or 'valid', "
                                         f"got {text!r}") from None
    if len(vals) in (1, 2, 4):
        return vals[0] if len(vals) == 1 else tuple(vals)
    raise argparse.ArgumentTypeError(f"expected 1, 2 or 4 padding numbers, got {text!r}")


def _chw(text: str):
    """``'3,224,224'`` -> (3, 224, 224); ``'224'`` -> (None, 224, 224)."""
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (or H), got {text!r}") from None
    if len(vals) == 1:
        return (None, vals[0], vals[0])
    if len(vals) == 3:
        return tuple(vals)
    raise argparse.ArgumentTypeError(f"expected C,H,W (or H), got {text!r}")


def _pair(text: str):
    try:
        a, b = (int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL, got {text!r}") from None
    return (a, b)


def _window_options(p, *, kernel_required=True, stride_default=1):
    p.add_argument("--input", type=_dims, required=True, metavar="I", help="input size: N or HxW")
    p.add_argument("--kernel", type=_dims, required=kernel_required, metavar="K", help="kernel size: N or HxW")
    p.add_argument("--stride", type=_dims, default=stride_default, metavar="S")
    p.add_argument("--padding", type=_padding, default=0, metavar="P",
                   help="N, HxW, TOP,BOTTOM,LEFT,RIGHT, same or valid (default: 0)")


def add_explain_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``explain`` and its topics to an ``argparse`` sub-parser collection."""
    e = subparsers.add_parser(
        "explain", help="the lecture's formulas with your numbers plugged in",
        description="Output sizes, parameter and multiplication counts, 'same' padding and the sliding "
                    "window, as the lecture writes them, with the numbers plugged in.")
    topics = e.add_subparsers(dest="explain_topic", required=True, metavar="TOPIC")

    c = topics.add_parser("conv", help="a convolution layer: output size, W, B, P, multiplications",
                          description="e.g. cnnkit explain conv --input 227 --kernel 11 --stride 4 "
                                      "--in-channels 3 --filters 96")
    _window_options(c)
    c.add_argument("--dilation", type=_dims, default=1, metavar="D")
    c.add_argument("--in-channels", type=int, default=1, metavar="C")
    c.add_argument("--filters", type=int, default=1, metavar="N")
    c.add_argument("--groups", type=int, default=1, metavar="G")
    c.add_argument("--no-bias", action="store_true")

    s = topics.add_parser("separable", help="standard vs depthwise + pointwise (MobileNet) multiplications",
                          description="e.g. cnnkit explain separable --input 12 --kernel 5 --in-channels 3 "
                                      "--filters 256")
    _window_options(s)
    s.add_argument("--dilation", type=_dims, default=1, metavar="D")
    s.add_argument("--in-channels", type=int, required=True, metavar="C")
    s.add_argument("--filters", type=int, required=True, metavar="N")
    s.add_argument("--no-bias", action="store_true")

    p = topics.add_parser("pool", help="a pooling layer: output size, overlap, comparisons",
                          description="e.g. cnnkit explain pool --input 55 --kernel 3 --stride 2")
    _window_options(p, stride_default=None)
    p.add_argument("--channels", type=int, default=1, metavar="C")
    p.add_argument("--mode", choices=["max", "avg"], default="max")
    p.add_argument("--ceil-mode", action="store_true")

    f = topics.add_parser("fc", help="a fully connected layer: W, B, P",
                          description="e.g. cnnkit explain fc --input 6 --in-channels 256 --units 4096")
    f.add_argument("--input", type=_dims, default=1, metavar="I", help="size of the incoming maps (default: 1)")
    f.add_argument("--in-channels", type=int, required=True, metavar="C")
    f.add_argument("--units", type=int, required=True, metavar="F")
    f.add_argument("--no-bias", action="store_true")

    m = topics.add_parser("model", help="a zoo model: per-layer params and multiply-adds, FC/conv fractions",
                          description="e.g. cnnkit explain model alexnet")
    m.add_argument("name", help="a model from cnnkit.models.names(), an .onnx file or a checkpoint")
    m.add_argument("--input", type=_chw, metavar="C,H,W", help="input shape (default: the model's native one)")
    m.add_argument("--classes", type=int, metavar="N", help="number of classes (default: the model's usual)")

    sm = topics.add_parser("same", help="'same' padding conventions side by side",
                           description="e.g. cnnkit explain same --input 224 --kernel 3 --stride 2")
    sm.add_argument("--input", type=int, required=True, metavar="I")
    sm.add_argument("--kernel", type=int, required=True, metavar="K")
    sm.add_argument("--stride", type=int, default=1, metavar="S")
    sm.add_argument("--dilation", type=int, default=1, metavar="D")

    w = topics.add_parser("window", help="the sliding window on the lecture's 5x5 image, step by step",
                          description="e.g. cnnkit explain window --input 5 --kernel 3 --padding 1 --at 0,0 "
                                      "--png window.png")
    w.add_argument("--input", type=_dims, metavar="I",
                   help="input size (default: 5, the lecture's 5x5 image; other sizes count 1, 2, 3, ...)")
    w.add_argument("--input-values", metavar="ROWS", help="input values, rows split by '/': '1 2 / 3 4'")
    w.add_argument("--kernel", type=_dims, metavar="K", help="kernel size (default: 3, the sharpen kernel)")
    w.add_argument("--kernel-values", metavar="ROWS", help="kernel values, rows split by '/': '0 -1 0 / ...'")
    w.add_argument("--stride", type=_dims, default=1, metavar="S")
    w.add_argument("--padding", type=_padding, default=1, metavar="P", help="(default: 1)")
    w.add_argument("--dilation", type=_dims, default=1, metavar="D")
    w.add_argument("--at", type=_pair, default=(0, 0), metavar="ROW,COL", help="output position (default: 0,0)")
    w.add_argument("--png", metavar="FILE", help="also draw the picture into this PNG file")
    return e


def run_explain(args) -> int:
    """Print the explanation the parsed ``args`` ask for; 2 (and a message on stderr) on bad input."""
    topic = args.explain_topic
    try:
        if topic == "conv":
            e = explain_conv(args.input, args.kernel, args.stride, args.padding, args.in_channels, args.filters,
                             dilation=args.dilation, groups=args.groups, bias=not args.no_bias)
        elif topic == "separable":
            e = explain_separable(args.input, args.kernel, args.in_channels, args.filters, stride=args.stride,
                                  padding=args.padding, dilation=args.dilation, bias=not args.no_bias)
        elif topic == "pool":
            e = explain_pool(args.input, args.kernel, args.stride, args.padding, channels=args.channels,
                             mode=args.mode, ceil_mode=args.ceil_mode)
        elif topic == "fc":
            e = explain_fc(args.input, args.in_channels, args.units, bias=not args.no_bias)
        elif topic == "model":
            source, shape = args.name, args.input
            if args.name.lower().endswith((".onnx", ".json")) or os.path.isdir(args.name):
                from ..io.onnx.command import load_any  # an .onnx file or a checkpoint
                source, meta = load_any(args.name)
                shape = shape or tuple((meta.get("data") or {}).get("input_shape") or ()) or None
            e = explain_model(source, shape, num_classes=args.classes)
        elif topic == "same":
            e = explain_same(args.input, args.kernel, args.stride, args.dilation)
        elif topic == "window":
            from .window_plot import window_arrays
            image, kernel = window_arrays(args.input, args.input_values, args.kernel, args.kernel_values)
            e = explain_window(image, kernel, stride=args.stride, padding=args.padding, dilation=args.dilation,
                               at=args.at)
        else:  # argparse's choices make this unreachable
            raise value_error("cnnkit explain", "unknown topic", topic=topic)
        print(e.text)
        if topic == "window" and args.png:
            save_window_png(e, args.png)
            print(f"wrote {args.png}")
    except (ValueError, TypeError, OSError) as err:
        print(f"cnnkit explain {topic}: error: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = ["add_explain_parser", "run_explain"]
