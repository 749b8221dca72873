"""ONNX import and export (issue 7), with the ``onnx`` package as protobuf reader/writer.

    from cnnkit import onnx as cnnkit_onnx
    model = cnnkit_onnx.load("resnet50.onnx")                # a Graph of cnnkit layers, eval mode
    cnnkit_onnx.export(model, "out.onnx", (1, 3, 224, 224), opset=17)

``onnx`` is imported only when one of these functions runs, so ``import cnnkit`` stays
fast and works without it; a missing package is reported with the pip command.
"""

from __future__ import annotations

SUPPORTED_IMPORT_OPSETS = (7, 21)
SUPPORTED_EXPORT_OPSETS = (13, 21)


def require_onnx():
    """The ``onnx`` module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ImportError("cnnkit.onnx: the 'onnx' package is needed for ONNX import/export; "
                          "install it with: pip install onnx  (or: pip install 'cnnkit[onnx]')") from None
    return onnx


def load(path, *, trace_batch: int = 1, optimize: bool = False):
    """Read an ONNX model into a :class:`cnnkit.nn.Graph` (see :mod:`._import`).

    ``optimize=True`` makes it an inference-only model, as ONNX Runtime's default graph
    optimizations do: BatchNorms folded into the convolutions before them, ReLUs and
    residual Adds fused into them (:func:`cnnkit.nn.fuse_for_inference`). Leave it False
    to fine-tune."""
    from ._import import load as _load
    model = _load(path, trace_batch=trace_batch)
    if optimize:
        from ...nn import fuse_for_inference
        fuse_for_inference(model)
    return model


def export(model, path, input_shape, opset: int = 17, *, input_name: str = "input",
           output_name: str = "output", dynamic_batch: bool = True, external_data: bool = False) -> str:
    """Write ``model`` to ``path`` as ONNX (see :mod:`._export`); returns ``path``."""
    from ._export import export as _export
    return _export(model, path, input_shape, opset=opset, input_name=input_name,
                   output_name=output_name, dynamic_batch=dynamic_batch, external_data=external_data)


__all__ = ["load", "export", "require_onnx", "SUPPORTED_IMPORT_OPSETS", "SUPPORTED_EXPORT_OPSETS"]
