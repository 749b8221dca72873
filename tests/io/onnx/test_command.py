"""``cnnkit import`` / ``cnnkit export`` through their own argparse parser."""

import argparse

import numpy as np

from cnnkit import models
from cnnkit import onnx as cnnkit_onnx
from cnnkit.io.onnx.command import (add_export_parser, add_import_parser, load_any, load_model, run_export,
                                    run_import)
from cnnkit.train.checkpoint import save_checkpoint

from .conftest import run_ort


def _parser():
    p = argparse.ArgumentParser(prog="cnnkit")
    sub = p.add_subparsers(dest="command")
    add_import_parser(sub)
    add_export_parser(sub)
    return p


def test_import_then_export(tmp_path, capsys):
    model = models.get("cnn_bn", num_classes=10, in_channels=1, rng=np.random.default_rng(0))
    src = str(tmp_path / "src.onnx")
    cnnkit_onnx.export(model, src, (1, 1, 28, 28))
    args = _parser().parse_args(["import", src, "--out", str(tmp_path / "ckpt")])
    assert run_import(args) == 0
    net, meta = load_model(str(tmp_path / "ckpt"))
    assert meta["data"]["input_shape"] == [1, 28, 28]
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    model.eval()
    np.testing.assert_allclose(net(x), model(x), atol=1e-5)
    out = str(tmp_path / "again.onnx")
    args = _parser().parse_args(["export", str(tmp_path / "ckpt"), out, "--opset", "13"])
    assert run_export(args) == 0
    np.testing.assert_allclose(run_ort(out, {"input": x})[0], model(x), atol=1e-4)
    assert "exported" in capsys.readouterr().out
    direct, meta = load_any(src)  # an .onnx file wherever a model is accepted
    assert meta["data"]["input_shape"] == [1, 28, 28]
    np.testing.assert_allclose(direct(x), model(x), atol=1e-5)


def test_export_zoo_checkpoint_and_errors(tmp_path, capsys):
    model = models.get("lenet5_modern", num_classes=10, in_channels=1, rng=np.random.default_rng(0))
    save_checkpoint(str(tmp_path / "run"), "last", model, meta={"data": {"input_shape": [1, 28, 28]}})
    out = str(tmp_path / "m.onnx")
    assert run_export(_parser().parse_args(["export", str(tmp_path / "run"), out])) == 0
    x = np.random.default_rng(2).standard_normal((2, 1, 28, 28)).astype(np.float32)
    model.eval()
    np.testing.assert_allclose(run_ort(out, {"input": x})[0], model(x), atol=1e-4)
    assert run_export(_parser().parse_args(["export", str(tmp_path / "run"), out, "--input", "1,x"])) == 2
    assert "--input must be three positive ints" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_bytes(b"\x08garbage")
    assert run_import(_parser().parse_args(["import", str(tmp_path / "bad.onnx"), "--out", str(tmp_path / "o")])) == 2
    assert "cnnkit import: error:" in capsys.readouterr().err
