"""Shared helpers for the ONNX tests: skip when onnx/onnxruntime are missing, run ORT."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def run_ort(path_or_model, feeds: dict):
    data = path_or_model if isinstance(path_or_model, (str, bytes)) else path_or_model.SerializeToString()
    if isinstance(data, str):
        with open(data, "rb") as fh:
            data = fh.read()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
