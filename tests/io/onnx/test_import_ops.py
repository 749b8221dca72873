"""Import: one-node (and small) models built with onnx.helper for every supported operator
and attribute combination, compared with ONNX Runtime; opsets 7 to 21; one error listing
every unsupported operator; backward through the import-only layers."""

import numpy as np
import pytest

from cnnkit import onnx as cnnkit_onnx
from cnnkit.io.onnx._import import from_proto
from cnnkit.io.onnx._security import OnnxFormatError
from tests.helpers import numeric_grad

from .conftest import onnx, run_ort

H = onnx.helper
F32 = onnx.TensorProto.FLOAT


def _model(nodes, x_shape, inits=(), opset=17, n_out=1, extra_inputs=()):
    inputs = [H.make_tensor_value_info("x", F32, list(x_shape))]
    inputs += [H.make_tensor_value_info(n, F32, list(s)) for n, s in extra_inputs]
    outs = [H.make_tensor_value_info("y" if i == 0 else f"y{i}", F32, None) for i in range(n_out)]
    init = [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in inits]
    graph = H.make_graph(nodes, "t", inputs, outs, initializer=init)
    ops = [H.make_opsetid("", opset)]
    return H.make_model(graph, opset_imports=ops, ir_version=H.find_min_ir_version_for(ops))


def _compare(model, feeds, tol=1e-5):
    expected = run_ort(model, feeds)
    net = from_proto(model, "test")
    got = net(*feeds.values())
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=tol)
    return net


def _one(op, x_shape, inits=(), opset=17, rng=None, **attrs):
    names = ["x"] + [k if k else "" for k, _ in inits]
    model = _model([H.make_node(op, names, ["y"], **attrs)], x_shape, [i for i in inits if i[0]], opset)
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    return _compare(model, {"x": x})


W = np.random.default_rng(1).standard_normal((6, 2, 3, 3)).astype(np.float32)
B6 = np.random.default_rng(2).standard_normal(6).astype(np.float32)

CONV = [dict(), dict(group=2), dict(dilations=[2, 1], strides=[2, 1]), dict(pads=[1, 0, 2, 1]),
        dict(auto_pad="SAME_UPPER", strides=[2, 2]), dict(auto_pad="SAME_LOWER", strides=[2, 2]),
        dict(auto_pad="VALID", strides=[2, 1]), dict(auto_pad="SAME_LOWER", strides=[1, 2])]


@pytest.mark.parametrize("attrs", CONV, ids=[str(a) for a in CONV])
def test_conv(attrs):
    cin = 4 if attrs.get("group") == 2 else 2
    _one("Conv", (2, cin, 7, 8), [("w", W), ("b", B6)], kernel_shape=[3, 3], **attrs)


def test_conv_no_bias_old_opset():
    _one("Conv", (1, 2, 5, 5), [("w", W)], opset=7)


POOLS = [("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
         ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
         ("MaxPool", dict(kernel_shape=[2, 2], dilations=[2, 2])),
         ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
         ("MaxPool", dict(kernel_shape=[2, 3], strides=[1, 2], auto_pad="SAME_LOWER")),
         ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
         ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
         ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
         ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID")),
         ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"))]


@pytest.mark.parametrize("op,attrs", POOLS, ids=[f"{o}-{a}" for o, a in POOLS])
def test_pool(op, attrs):
    _one(op, (2, 3, 8, 9), **attrs)


def test_global_pools_bn_lrn():
    _one("GlobalAveragePool", (2, 3, 4, 5))
    _one("GlobalMaxPool", (2, 3, 4, 5))
    r = np.random.default_rng(3)
    stats = [(n, r.uniform(0.5, 2, 3).astype(np.float32)) for n in ("s", "b", "m", "v")]
    _one("BatchNormalization", (2, 3, 4, 4), stats, epsilon=1e-3)
    _one("BatchNormalization", (2, 3), stats, opset=9)
    _one("LRN", (2, 7, 3, 3), size=5, alpha=2e-4, beta=0.75, bias=2.0)
    _one("LRN", (2, 7, 3, 3), size=3)


def test_activations():
    for op, attrs in [("Relu", {}), ("LeakyRelu", {"alpha": 0.3}), ("LeakyRelu", {}), ("Elu", {"alpha": 0.5}),
                      ("Sigmoid", {}), ("Tanh", {}), ("Identity", {}), ("Dropout", {})]:
        _one(op, (2, 3, 4), **attrs)
    _one("PRelu", (2, 3, 4, 4), [("s", np.array([0.1, 0.2, 0.3], np.float32).reshape(3, 1, 1))])
    _one("Clip", (2, 5), opset=7, min=0.0, max=6.0)
    _one("Clip", (2, 5), opset=7, min=-0.5, max=0.5)
    _one("Clip", (2, 5), [("lo", np.array(0, np.float32)), ("hi", np.array(6, np.float32))], opset=13)
    _one("Clip", (2, 5), [("lo", np.array(-1, np.float32))], opset=13)


@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 2), (11, -1), (13, 1), (13, -1), (7, 1)])
def test_softmax_semantics(opset, axis):
    _one("Softmax", (2, 3, 4), opset=opset, axis=axis)
    _one("LogSoftmax", (2, 3, 4), opset=opset, axis=axis)


def test_gemm_matmul():
    r = np.random.default_rng(4)
    b = r.standard_normal((5, 3)).astype(np.float32)
    c = r.standard_normal(3).astype(np.float32)
    _one("Gemm", (2, 5), [("b", b), ("c", c)], alpha=0.5, beta=2.0)
    _one("Gemm", (2, 5), [("b", b.T.copy()), ("c", c.reshape(1, 3))], transB=1)
    _one("Gemm", (5, 2), [("b", b)], transA=1, opset=11)
    _one("MatMul", (2, 4, 5), [("b", b)])
    a = r.standard_normal((2, 4, 5)).astype(np.float32)
    d = r.standard_normal((2, 5, 3)).astype(np.float32)
    model = _model([H.make_node("MatMul", ["x", "d"], ["y"])], a.shape, extra_inputs=[("d", d.shape)])
    _compare(model, {"x": a, "d": d})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_broadcasting_binary(op):
    r = np.random.default_rng(5)
    c = r.uniform(0.5, 2, (3, 1, 1)).astype(np.float32)
    _one(op, (2, 3, 4, 4), [("c", c)])
    x, z = r.standard_normal((2, 3, 4, 4)).astype(np.float32), r.uniform(0.5, 2, (3, 1, 4)).astype(np.float32)
    model = _model([H.make_node(op, ["x", "z"], ["y"])], x.shape, extra_inputs=[("z", z.shape)])
    _compare(model, {"x": x, "z": z})
    model = _model([H.make_node(op, ["c", "x"], ["y"])], x.shape, [("c", c)])
    _compare(model, {"x": x})


def test_sum_concat_shapes():
    r = np.random.default_rng(6)
    x, z = r.standard_normal((2, 3, 4)).astype(np.float32), r.standard_normal((1, 3, 4)).astype(np.float32)
    _compare(_model([H.make_node("Sum", ["x", "z", "x"], ["y"])], x.shape, extra_inputs=[("z", z.shape)]),
             {"x": x, "z": z})
    _compare(_model([H.make_node("Concat", ["x", "x"], ["y"], axis=-1)], x.shape), {"x": x})
    for axis in (0, 1, 2, -1):
        _one("Flatten", (2, 3, 4), axis=axis)
    _one("Reshape", (2, 3, 4), [("s", np.array([0, -1, 2], np.int64))])
    _one("Transpose", (2, 3, 4), perm=[2, 0, 1])
    _one("Transpose", (2, 3, 4))
    _one("Squeeze", (2, 1, 4, 1), opset=11, axes=[1])
    _one("Squeeze", (2, 1, 4, 1), [("a", np.array([1, 3], np.int64))], opset=13)
    _one("Squeeze", (2, 1, 4, 1), opset=13)
    _one("Unsqueeze", (2, 4), opset=11, axes=[0, 3])
    _one("Unsqueeze", (2, 4), [("a", np.array([-1, 1], np.int64))], opset=13)
    _one("Pad", (2, 3, 4), opset=7, pads=[0, 1, 2, 0, 0, 1], value=1.5)
    _one("Pad", (2, 3, 4), [("p", np.array([0, 1, 2, 0, 0, 1], np.int64)), ("v", np.array(0.5, np.float32))],
         opset=13)
    _one("Pad", (2, 3, 4), [("p", np.array([1, 2, 3, 0], np.int64)), ("", None), ("a", np.array([1, 2]))],
         opset=18)
    _one("Slice", (2, 6, 7), [("s", np.array([1, 0], np.int64)), ("e", np.array([9, -1], np.int64)),
                               ("a", np.array([2, 1], np.int64)), ("t", np.array([2, 2], np.int64))], opset=13)


def _torch_style_flatten(opset):
    """x.view(x.size(0), -1) as exporters write it: Shape, Gather, Unsqueeze, Concat, Reshape."""
    nodes = [H.make_node("Shape", ["x"], ["s"]),
             H.make_node("Constant", [], ["i0"], value=onnx.numpy_helper.from_array(np.array(0, np.int64))),
             H.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             H.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]) if opset < 13 else
             H.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             H.make_node("Constant", [], ["m1"], value=onnx.numpy_helper.from_array(np.array([-1], np.int64))),
             H.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
             H.make_node("Reshape", ["x", "shape"], ["f"]),
             H.make_node("ConstantOfShape", ["n1"], ["unused"]),
             H.make_node("Relu", ["f"], ["y"])]
    inits = [] if opset < 13 else [("ax", np.array([0], np.int64))]
    model = _model(nodes, ("N", 3, 4, 4), inits, opset=opset)
    return model


@pytest.mark.parametrize("opset", [9, 11, 13, 17])
def test_shape_folding_keeps_batch_dynamic(opset):
    model = _torch_style_flatten(opset)
    net = from_proto(model, "test")
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, 4, 4)).astype(np.float32)
        np.testing.assert_allclose(net(x), run_ort(model, {"x": x})[0], rtol=1e-6)


def _small_net(opset):
    r = np.random.default_rng(7)
    w = r.standard_normal((4, 1, 3, 3)).astype(np.float32)
    fc = r.standard_normal((10, 4 * 4 * 4)).astype(np.float32)
    bias = r.standard_normal(10).astype(np.float32)
    nodes = [H.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), H.make_node("Relu", ["c"], ["r"]),
             H.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             H.make_node("Flatten", ["p"], ["f"]), H.make_node("Gemm", ["f", "fc", "bias"], ["g"], transB=1),
             H.make_node("Softmax", ["g"], ["y"], axis=1)]
    return _model(nodes, (2, 1, 8, 8), [("w", w), ("fc", fc), ("bias", bias)], opset=opset)


@pytest.mark.parametrize("opset", list(range(7, 22)))
def test_every_opset(opset):
    x = np.random.default_rng(8).standard_normal((2, 1, 8, 8)).astype(np.float32)
    _compare(_small_net(opset), {"x": x})


def test_unsupported_operators_listed_once():
    nodes = [H.make_node("Resize", ["x"], ["a"]), H.make_node("Relu", ["a"], ["b"]),
             H.make_node("NonMaxSuppression", ["b"], ["c"]), H.make_node("Resize", ["c"], ["d"]),
             H.make_node("Foo", ["d"], ["y"], domain="com.example")]
    model = _model(nodes, (1, 3, 4, 4), opset=13)
    with pytest.raises(OnnxFormatError, match=r"opset 13\): unsupported operators: NonMaxSuppression, Resize, "
                                              r"com\.example\.Foo$"):
        from_proto(model, "m.onnx")
    with pytest.raises(OnnxFormatError, match="opset 6 is outside the supported range 7 to 21"):
        from_proto(_small_net(6), "m.onnx")


def test_parameters_are_trainable_and_gradients_flow():
    net = from_proto(_small_net(17), "m")
    names = dict(net.named_parameters()) if hasattr(net, "named_parameters") else None
    params = list(net.parameters())
    assert len(params) == 3 and all(p.requires_grad for p in params)  # conv weight, fc weight and bias
    assert names is None or any(k.endswith(".weight") for k in names)
    x = np.random.default_rng(9).standard_normal((2, 1, 8, 8)).astype(np.float32)
    net.train()
    y = net(x)
    net.backward(np.ones_like(y))
    assert all(p.grad is not None for p in params)


@pytest.mark.parametrize("make", [
    lambda L: L.Binary("Div", np.array([[1.5], [2.0], [0.5]]), 0, trainable=True),
    lambda L: L.Binary("Mul"), lambda L: L.PReLU(np.array([0.1, -0.2, 0.3]).reshape(3, 1)),
    lambda L: L.Reshape([0, -1]), lambda L: L.Transpose([2, 0, 1]), lambda L: L.Pad([0, 1, 0, 0, 2, 1]),
    lambda L: L.Slice([(1, 0, None, 2)]), lambda L: L.CoercedSoftmax(1, log=True), lambda L: L.GlobalMaxPool(),
    lambda L: L.Clip(-0.3, 0.4), lambda L: L.ReduceSum([2], keepdims=False), lambda L: L.OnnxFlatten(2),
    lambda L: L.MatMul()])
def test_import_layers_backward(make):
    from cnnkit.io.onnx import _layers as L
    layer = make(L)
    r = np.random.default_rng(10)
    xs = [r.standard_normal((2, 3, 4))]
    if isinstance(layer, (L.Binary, L.MatMul)) and getattr(layer, "weight", None) is None:
        xs.append(r.standard_normal((2, 4, 3)) if isinstance(layer, L.MatMul) else r.standard_normal((1, 3, 1)))
    y = layer(*xs)
    dy = r.standard_normal(y.shape)
    grads = layer.backward(dy)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for x, g in zip(xs, grads):
        np.testing.assert_allclose(g, numeric_grad(lambda: np.array(layer(*xs)), x, dy), rtol=1e-5, atol=1e-6)
    layer._cache = None


def test_load_alias_reads_file(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(_small_net(13).SerializeToString())
    net = cnnkit_onnx.load(str(path))
    assert net.onnx_opset == 13 and not net.training


def test_shape_slice_folding_and_external_style_constants():
    """Shape -> Slice -> Concat(constant) -> Reshape, and Cast/Mul on folded shapes."""
    c = lambda name, v: H.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.array(v)))  # noqa: E731
    nodes = [H.make_node("Shape", ["x"], ["s"]), c("st", np.array([0], np.int64)), c("en", np.array([2], np.int64)),
             H.make_node("Slice", ["s", "st", "en"], ["nc"]), c("rest", np.array([-1], np.int64)),
             H.make_node("Concat", ["nc", "rest"], ["shape"], axis=0),
             H.make_node("Cast", ["shape"], ["shape_f"], to=onnx.TensorProto.FLOAT),
             H.make_node("Cast", ["shape_f"], ["shape_i"], to=onnx.TensorProto.INT64),
             H.make_node("Reshape", ["x", "shape_i"], ["y"])]
    model = _model(nodes, ("N", 3, 4, 5), opset=13)
    net = from_proto(model, "test")
    x = np.random.default_rng(11).standard_normal((4, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(net(x), run_ort(model, {"x": x})[0])
    assert net(x).shape == (4, 3, 20)
