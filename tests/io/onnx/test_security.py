"""Malformed and hostile ONNX files: clear OnnxFormatError messages, nothing read outside
the model's folder, and a helpful ImportError when the onnx package is missing."""

import os
import sys

import numpy as np
import pytest

from cnnkit import onnx as cnnkit_onnx
from cnnkit.io.onnx._security import OnnxFormatError

from .conftest import onnx

H = onnx.helper


def _external_model(location, offset=0, length=None, dims=(4, 1, 3, 3)):
    """A Conv whose weight lives in an external file at ``location``."""
    w = onnx.TensorProto()
    w.name, w.data_type = "w", onnx.TensorProto.FLOAT
    w.dims.extend(dims)
    w.data_location = onnx.TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        e = w.external_data.add()
        e.key, e.value = k, v
    graph = H.make_graph([H.make_node("Conv", ["x", "w"], ["y"])], "t",
                         [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 5, 5])],
                         [H.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializer=[w])
    return H.make_model(graph, opset_imports=[H.make_opsetid("", 13)])


def _write(path, model):
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_export_with_external_data_round_trip(tmp_path):
    from cnnkit import models
    model = models.get("cnn", num_classes=10, in_channels=1, rng=np.random.default_rng(0))
    path = str(tmp_path / "cnn.onnx")
    cnnkit_onnx.export(model, path, (1, 1, 28, 28), external_data=True)
    assert (tmp_path / "cnn.onnx.data").stat().st_size > (tmp_path / "cnn.onnx").stat().st_size
    onnx.checker.check_model(path, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    model.eval()
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])  # resolves the .data file
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], model(x), atol=1e-4)
    np.testing.assert_allclose(cnnkit_onnx.load(path)(x), model(x), atol=1e-5)


def test_external_data_inside_folder_loads(tmp_path):
    w = np.arange(36, dtype=np.float32)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8 + w.tobytes())
    net = cnnkit_onnx.load(_write(tmp_path / "m.onnx", _external_model("weights.bin", offset=8, length=144)))
    conv = [m for _, m in net.named_modules() if type(m).__name__ == "Conv2d"][0]
    np.testing.assert_array_equal(conv.weight.data.reshape(-1), w)


@pytest.mark.parametrize("location,match", [
    ("../secret.bin", r"'\.\.' is not allowed"), ("sub/../../secret.bin", r"'\.\.' is not allowed"),
    ("/etc/passwd", "absolute paths are not allowed"), ("missing.bin", "file not found"),
    ("", "empty or invalid location")])
def test_external_data_traversal_rejected(tmp_path, location, match):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 144)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with pytest.raises(OnnxFormatError, match=match):
        cnnkit_onnx.load(_write(model_dir / "m.onnx", _external_model(location)))


def test_external_data_symlink_rejected(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 144)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    os.symlink(tmp_path / "secret.bin", model_dir / "w.bin")
    with pytest.raises(OnnxFormatError, match="symlinks are not followed"):
        cnnkit_onnx.load(_write(model_dir / "m.onnx", _external_model("w.bin")))
    os.symlink(tmp_path, model_dir / "up")
    with pytest.raises(OnnxFormatError, match="symlinks are not followed"):
        cnnkit_onnx.load(_write(model_dir / "m.onnx", _external_model("up/secret.bin")))


@pytest.mark.parametrize("offset,length,match", [
    (100, 144, "out of range"), (0, 1000, "out of range"), (-4, 144, "out of range"),
    (0, 40, "does not match dims"), ("x", 144, "must be integers")])
def test_external_data_offsets_checked(tmp_path, offset, length, match):
    (tmp_path / "w.bin").write_bytes(b"\0" * 160)
    with pytest.raises(OnnxFormatError, match=match):
        cnnkit_onnx.load(_write(tmp_path / "m.onnx", _external_model("w.bin", offset, length)))


def _good_bytes():
    w = onnx.numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = H.make_graph([H.make_node("Conv", ["x", "w"], ["y"])], "t",
                         [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 5, 5])],
                         [H.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializer=[w])
    return H.make_model(graph, opset_imports=[H.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.parametrize("cut", [1, 7, 40, -3])
def test_truncated_protobuf(tmp_path, cut):
    blob = _good_bytes()
    (tmp_path / "m.onnx").write_bytes(blob[:cut])
    with pytest.raises(OnnxFormatError, match="m.onnx: not"):
        cnnkit_onnx.load(str(tmp_path / "m.onnx"))


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "g.onnx").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(OnnxFormatError, match="g.onnx: not"):
        cnnkit_onnx.load(str(tmp_path / "g.onnx"))
    (tmp_path / "e.onnx").write_bytes(b"")
    with pytest.raises(OnnxFormatError, match="holds no graph"):
        cnnkit_onnx.load(str(tmp_path / "e.onnx"))
    with pytest.raises(OnnxFormatError, match="ONNX file not found"):
        cnnkit_onnx.load(str(tmp_path / "none.onnx"))


def test_missing_initializer_and_wrong_shapes(tmp_path):
    graph = H.make_graph([H.make_node("Conv", ["x", "w"], ["y"])], "t",
                         [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 5, 5])],
                         [H.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    model = H.make_model(graph, opset_imports=[H.make_opsetid("", 13)])
    with pytest.raises(OnnxFormatError, match="reads 'w', which is neither a graph input, an initializer"):
        cnnkit_onnx.load(_write(tmp_path / "m.onnx", model))
    # a weight for 3 input channels on a 1-channel input
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w"))
    with pytest.raises(OnnxFormatError, match=r"input shape \(1, 1, 5, 5\) does not fit weight"):
        cnnkit_onnx.load(_write(tmp_path / "m.onnx", model))
    # raw data shorter than the dims say
    t = model.graph.initializer[0]
    t.raw_data = t.raw_data[:-8]
    with pytest.raises(OnnxFormatError, match="raw data has 208 bytes, dims"):
        cnnkit_onnx.load(_write(tmp_path / "m.onnx", model))


def test_input_without_shape(tmp_path):
    graph = H.make_graph([H.make_node("Relu", ["x"], ["y"])], "t",
                         [H.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                         [H.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    model = H.make_model(graph, opset_imports=[H.make_opsetid("", 13)])
    with pytest.raises(OnnxFormatError, match="input 'x' declares no shape"):
        cnnkit_onnx.load(_write(tmp_path / "m.onnx", model))


def test_missing_onnx_package_names_pip(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="pip install onnx"):
        cnnkit_onnx.load("whatever.onnx")
