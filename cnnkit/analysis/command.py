"""The ``cnnkit summary`` command: ``add_summary_parser(subparsers)`` and ``run_summary(args)``.

    cnnkit summary MODEL [--input C,H,W] [--format table|markdown|json|csv] [--depth N]
                         [--batch N] [--num-classes N] [--explain-counts]

MODEL is a zoo name (``cnnkit.models.names()``, plus the VGG aliases). The default
input is the model's native one (:func:`native_spec`): 1x32x32 for ``lenet5``,
1x28x28 for ``lenet5_modern``/``cnn``/``cnn_bn``, 3x227x227 for ``alexnet``, 3x32x32 for
``resnet20/32/56``, 3x224x224 for the other ImageNet models (``mobilenet_v1``: its
``input_size``). ``--explain-counts`` adds how the totals relate to published figures
(:func:`cnnkit.analysis.explain_counts`), always for the model's native configuration
(the one the figures were published for), whatever ``--input``/``--num-classes`` say.
"""

from __future__ import annotations

import argparse
import inspect
import sys

from .._errors import value_error

NATIVE_SIZE = {"lenet5": 32, "lenet5_modern": 28, "cnn": 28, "cnn_bn": 28, "alexnet": 227,
               "resnet20": 32, "resnet32": 32, "resnet56": 32}


def native_spec(name: str) -> tuple[int, int, int, int]:
    """``(C, H, W, num_classes)`` a zoo model was designed for: channels and classes are
    its builder's defaults, the size comes from ``NATIVE_SIZE`` (else 224)."""
    from .. import models
    if name not in models.names():
        raise value_error("cnnkit summary", f"unknown model name; known names: {', '.join(models.names())}",
                          model=name)
    build = models._BUILDERS[name]
    params = inspect.signature(build).parameters
    c, classes = params["in_channels"].default, params["num_classes"].default
    size = NATIVE_SIZE.get(name, 224)
    return int(c), size, size, int(classes)


def add_summary_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``summary`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "summary", help="per-layer shapes, parameters, multiply-adds and receptive fields of a zoo model",
        description="One row per layer (a tree for nested and branching models): output shape, kernel, "
                    "stride, padding as applied (top, bottom, left, right), dilation, groups, weights, "
                    "biases, parameters, multiply-adds and the receptive field size/jump/start of the "
                    "layer's output; then the totals. Multiply-adds: conv H_out*W_out*C_out*K*K*C_in/groups, "
                    "FC in*out; FLOPs = 2 x MACs; bias adds, BN, activations, pooling and LRN excluded. "
                    "Nothing is computed: shapes are inferred from the layers.")
    p.add_argument("model", help="zoo model name (see cnnkit.models.names()), an .onnx file, or a "
                                 "checkpoint (.json or run folder)")
    p.add_argument("--input", metavar="C,H,W", help="input shape without the batch axis "
                                                     "(default: the model's native input)")
    p.add_argument("--format", choices=["table", "markdown", "json", "csv"], default="table")
    p.add_argument("--depth", type=int, help="show rows down to this depth (0: the model only); deeper "
                                             "layers are folded into their ancestors' rows")
    p.add_argument("--batch", type=int, default=1, help="batch size for activation memory and MACs "
                                                        "(default: %(default)s)")
    p.add_argument("--num-classes", type=int, help="classes of the output layer (default: the model's own)")
    p.add_argument("--explain-counts", action="store_true",
                   help="also explain how the totals relate to published figures (papers, torchvision, Keras)")
    return p


def parse_input(text: str) -> tuple[int, ...]:
    """``"3,224,224"`` (or ``3x224x224``) -> ``(3, 224, 224)``."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise value_error("cnnkit summary", "--input must be C,H,W with positive integers", input=text) from None
    if len(shape) != 3 or min(shape) < 1:
        raise value_error("cnnkit summary", "--input must be C,H,W with positive integers", input=text)
    return shape


def run_summary(args, out=None) -> int:
    """Run ``cnnkit summary`` for parsed ``args``; prints to ``out`` (default stdout). Returns
    0, or 2 after printing ``cnnkit summary: error: ...`` to stderr for a bad model or input."""
    out = sys.stdout if out is None else out
    try:
        text = summary_text(args)
    except (ValueError, TypeError) as e:
        print(f"cnnkit summary: error: {e}", file=sys.stderr)
        return 2
    out.write(text)
    return 0


def _is_file_model(model: str) -> bool:
    import os
    return model.lower().endswith((".onnx", ".json")) or os.path.isdir(model)


def summary_text(args) -> str:
    from .. import models
    from .reconcile import explain_counts
    from .summary import summary

    if args.batch < 1:
        raise value_error("cnnkit summary", "--batch must be at least 1", batch=args.batch)
    if _is_file_model(args.model):  # an .onnx file, a checkpoint .json or a run folder
        from ..io.onnx.command import load_any
        if args.explain_counts:
            raise value_error("cnnkit summary", "--explain-counts compares zoo models with published "
                                                "figures; give a zoo model name", model=args.model)
        model, meta = load_any(args.model)
        shape = parse_input(args.input) if args.input else tuple((meta.get("data") or {}).get("input_shape") or ())
        if len(shape) != 3:
            raise value_error("cnnkit summary", "the model file does not record its input shape: add "
                                                "--input C,H,W", model=args.model)
        return summary(model, shape, batch=args.batch, depth=args.depth).format(args.format)
    name = {"vgg11": "vgg_a", "vgg13": "vgg_b", "vgg16": "vgg_d", "vgg19": "vgg_e"}.get(args.model, args.model)
    c, h, w, classes = native_spec(name)
    if args.input:
        c, h, w = parse_input(args.input)
    if args.num_classes is not None:
        classes = args.num_classes
    if args.batch < 1:
        raise value_error("cnnkit summary", "--batch must be at least 1", batch=args.batch)
    if args.explain_counts and args.format == "csv":
        raise value_error("cnnkit summary", "--explain-counts prints text: use --format table, markdown "
                                            "or json", format=args.format)
    model = models.get(name, num_classes=classes, in_channels=c)
    if not args.input and getattr(model, "input_size", None):
        h = w = int(model.input_size)
    s = summary(model, (c, h, w), batch=args.batch, depth=args.depth)
    if not args.explain_counts:
        return s.format(args.format)
    explanation = explain_counts(name)  # always the native configuration, as published
    if args.format == "json":
        import json
        doc = s.to_dict()
        doc["explain_counts"] = explanation
        return json.dumps(doc, indent=2) + "\n"
    return s.format(args.format) + "\n" + explanation


__all__ = ["add_summary_parser", "run_summary", "native_spec", "parse_input"]
