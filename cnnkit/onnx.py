"""``cnnkit.onnx.load(path)`` and ``cnnkit.onnx.export(model, path, input_shape, opset=17)``.

A thin alias of :mod:`cnnkit.io.onnx`; the ``onnx`` package is imported only on use.
"""

from .io.onnx import export, load

__all__ = ["load", "export"]
