"""The ``cnnkit import`` and ``cnnkit export`` commands.

    cnnkit import MODEL.onnx --out CHECKPOINT_DIR
    cnnkit export CHECKPOINT MODEL.onnx [--opset 17] [--input C,H,W]

``import`` writes a checkpoint folder (``last.json`` + safetensors, as training does) plus
``model.onnx``, the graph the weights belong to (external data inlined): its
``model_config`` is ``{"name": "onnx", "file": "model.onnx"}``. :func:`load_model` reads
such a checkpoint, and any zoo checkpoint through :func:`cnnkit.cli.load_model`.
``export`` takes the input shape from ``--input`` or the checkpoint's ``data.input_shape``.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..._errors import value_error

CONFIG_NAME = "onnx"


def add_import_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("import", help="read an ONNX model into a cnnkit checkpoint",
                              description="Import an ONNX CNN (opsets 7-21) into cnnkit layers and save it as a "
                                          "checkpoint folder that summary, predict, finetune and export read.")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--out", required=True, metavar="CHECKPOINT", help="checkpoint folder to write")
    return p


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="write a checkpoint's model as ONNX",
                              description="Export a cnnkit checkpoint to ONNX; the file passes onnx.checker "
                                          "(full_check) and runs in ONNX Runtime.")
    p.add_argument("checkpoint", help="checkpoint JSON file or run folder")
    p.add_argument("output", metavar="MODEL.onnx")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 13 to 21 (default: %(default)s)")
    p.add_argument("--input", metavar="C,H,W", help="input shape without the batch axis (default: the "
                                                     "checkpoint's data.input_shape)")
    return p


def import_to_checkpoint(model_path: str, out: str) -> str:
    """Import ``model_path`` and write checkpoint ``out``; returns the checkpoint JSON path."""
    from ..._atomic import atomic_write_bytes
    from ...train.checkpoint import save_checkpoint
    from ._import import from_proto
    from ._security import read_model
    proto = read_model(model_path)           # external data checked and inlined
    graph = from_proto(proto, str(model_path))
    os.makedirs(out, exist_ok=True)
    atomic_write_bytes(os.path.join(out, "model.onnx"), proto.SerializeToString())
    graph.config = {"name": CONFIG_NAME, "file": "model.onnx", "source": os.path.basename(str(model_path))}
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] if proto.graph.input else []
    meta = {"data": {"input_shape": [int(d) for d in dims[1:]]}} if dims and all(d > 0 for d in dims[1:]) else {}
    meta["onnx_opset"] = graph.onnx_opset
    return save_checkpoint(out, "last", graph, meta=meta)


def load_model(checkpoint: str):
    """``(model, meta)`` from an imported-ONNX checkpoint or any cnnkit checkpoint."""
    from ...train.checkpoint import load_checkpoint
    meta, state, _ = load_checkpoint(checkpoint)
    config = meta.get("model_config") or {}
    if config.get("name") != CONFIG_NAME:
        from ...cli import load_model as zoo_load
        return zoo_load(checkpoint)
    from ._import import load
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))
    model = load(os.path.join(folder, os.path.basename(str(config.get("file", "model.onnx")))))
    model.load_state_dict(state)
    model.config = config
    model.eval()
    return model, meta


def load_any(path: str):
    """``(model, meta)`` from an ``.onnx`` file or a checkpoint: for commands that accept a model
    (summary, explain, predict, finetune). An ONNX file's meta holds ``data.input_shape`` when
    its input has a static shape."""
    if str(path).lower().endswith(".onnx") and not os.path.isdir(path):
        from ._security import read_model
        from ._import import from_proto
        proto = read_model(path)
        model = from_proto(proto, str(path))
        dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        meta = {"data": {"input_shape": [int(d) for d in dims[1:]]}} if all(d > 0 for d in dims[1:]) else {}
        return model, meta
    return load_model(path)


def _parse_shape(text: str):
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise value_error("cnnkit export", "--input must be three positive ints C,H,W", input=text)
    return dims


def run_import(args) -> int:
    try:
        path = import_to_checkpoint(args.model, args.out)
    except (ValueError, TypeError, ImportError, OSError) as e:
        print(f"cnnkit import: error: {e}", file=sys.stderr)
        return 2
    print(f"imported {args.model} -> {path}")
    return 0


def run_export(args) -> int:
    from . import export
    try:
        model, meta = load_model(args.checkpoint)
        if args.input:
            chw = _parse_shape(args.input)
        else:
            chw = tuple((meta.get("data") or {}).get("input_shape") or ())
            if len(chw) != 3:
                raise value_error("cnnkit export", "the checkpoint records no input shape; pass --input C,H,W",
                                  checkpoint=args.checkpoint)
        export(model, args.output, (1,) + tuple(int(v) for v in chw), opset=args.opset)
    except (ValueError, TypeError, ImportError, OSError) as e:
        print(f"cnnkit export: error: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.checkpoint} -> {args.output} (opset {args.opset}, input 1x{'x'.join(map(str, chw))})")
    return 0
