"""fuse_for_inference: BatchNorm folded into the conv before it, ReLU fused into the conv,
ReLU6 in place; same outputs in evaluation mode, checked against the unfused model, ONNX
Runtime and PyTorch."""

import numpy as np
import pytest

from cnnkit import models, nn

torch = pytest.importorskip("torch")


def _random_stats(model, seed=3):
    """Running statistics and affine parameters far from the identity, so a wrong fold shows."""
    r = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean[:] = r.standard_normal(m.num_features)
            m.running_var[:] = r.uniform(0.5, 2.0, m.num_features)
            if m.weight is not None:
                m.weight.data[:] = r.uniform(0.5, 1.5, m.num_features) * r.choice([-1, 1], m.num_features)
            if m.bias is not None:
                m.bias.data[:] = r.standard_normal(m.num_features)
    return model


def _copy(model, make):
    twin = make()
    twin.load_state_dict(model.state_dict())
    return twin


def test_sequential_conv_bn_relu_folds_and_matches_torch():
    rng = np.random.default_rng(0)

    def make():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False, rng=rng), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 8, 3, groups=8, rng=rng), nn.BatchNorm2d(8), nn.ReLU6(),
                             nn.Conv2d(8, 4, 1, rng=rng), nn.BatchNorm2d(4, affine=False),
                             nn.ReLU())
    model = _random_stats(make()).eval()
    plain = _copy(model, make).eval()
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    before = plain(x)
    counts = nn.fuse_for_inference(model)
    assert counts == {"batchnorm_folded": 3, "relu_fused": 3, "add_relu_fused": 0, "add_fused": 0, "relu_in_place": 0, "constant_folded": 0, "scale_moved": 0, "constants_merged": 0, "pad_folded": 0, "identity_removed": 0, "weights_frozen": 3}
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU, nn.ReLU6)) for m in model.modules())
    assert [model[i].fused_relu for i in (0, 3, 6)] == [True, True, True]
    assert [model[i].fused_relu_max for i in (0, 3, 6)] == [None, 6.0, None]
    assert "fused_relu=True" in repr(model[0]) and "fused_relu_max=6" in repr(model[3])
    assert model[0].bias is not None  # the first conv had none: the fold gave it one
    after = model(x)
    scale = max(1.0, float(np.abs(before).max()))
    np.testing.assert_allclose(after, before, rtol=0, atol=2e-6 * scale)
    # the same network in PyTorch, float64, eval mode
    T = torch.nn
    tm = T.Sequential(T.Conv2d(3, 8, 3, padding=1, bias=False), T.BatchNorm2d(8), T.ReLU(),
                      T.Conv2d(8, 8, 3, groups=8), T.BatchNorm2d(8), T.ReLU6(),
                      T.Conv2d(8, 4, 1), T.BatchNorm2d(4, affine=False), T.ReLU()).double().eval()
    tm.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float64) if v.dtype != np.int64 else np.array(v))
                        for k, v in plain.state_dict().items()})
    ref = tm(torch.from_numpy(x.astype(np.float64))).detach().numpy()
    np.testing.assert_allclose(after, ref, rtol=0, atol=2e-6 * scale)


def test_nothing_folded_where_it_would_change_the_result():
    rng = np.random.default_rng(1)
    # BatchNorm in training mode; BatchNorm after a pool; ReLU after a BatchNorm that stays
    seq = nn.Sequential(nn.Conv2d(2, 4, 3, rng=rng), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.ReLU())
    seq.train()
    assert nn.fuse_for_inference(seq) == {"batchnorm_folded": 0, "relu_fused": 0, "add_relu_fused": 0, "add_fused": 0, "relu_in_place": 0, "constant_folded": 0, "scale_moved": 0, "constants_merged": 0, "pad_folded": 0, "identity_removed": 0, "weights_frozen": 0}
    seq.eval()
    assert nn.fuse_for_inference(seq) == {"batchnorm_folded": 1, "relu_fused": 1, "add_relu_fused": 0, "add_fused": 0, "relu_in_place": 0, "constant_folded": 0, "scale_moved": 0, "constants_merged": 0, "pad_folded": 0, "identity_removed": 0, "weights_frozen": 1}
    assert isinstance(seq[4], nn.BatchNorm2d) and not seq[5].inplace and seq[0].fused_relu
    # the inference-only conv's weights are frozen (read-only arrays of their own)
    assert not seq[0].weight.data.flags.writeable and not seq[0].bias.data.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        seq[0].weight.data[0] = 1
    # a conv output that two nodes read (the BN and an Add) keeps its BN and its value;
    # the Add reads two nodes, nothing is an Identity: no node goes
    g = nn.Graph(inputs="x")
    g.add("conv", nn.Conv2d(2, 2, 3, padding=1, rng=rng), "x")
    g.add("bn", _random_stats(nn.BatchNorm2d(2)), "conv")
    g.add("relu", nn.ReLU(), "conv")
    g.add("sum", nn.Add(), ["bn", "relu"])
    g.eval()
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    before = g(x).copy()
    assert nn.fuse_for_inference(g) == {"batchnorm_folded": 0, "relu_fused": 0, "add_relu_fused": 0, "add_fused": 0, "relu_in_place": 0, "constant_folded": 0, "scale_moved": 0, "constants_merged": 0, "pad_folded": 0, "identity_removed": 0, "weights_frozen": 0}
    np.testing.assert_array_equal(g(x), before)


@pytest.mark.parametrize("name,c,size", [("resnet18", 3, 32), ("mobilenet_v1", 3, 32), ("cnn_bn", 1, 28)])
def test_imported_zoo_model_optimized_matches_onnxruntime(name, c, size, tmp_path):
    """A zoo model exported to ONNX, imported with optimize=True: every BatchNorm of the
    conv-BN pairs folded, the output as the plain import's and as ONNX Runtime's."""
    ort = pytest.importorskip("onnxruntime")
    from cnnkit import onnx as cnnkit_onnx
    model = _random_stats(models.get(name, num_classes=10, in_channels=c, rng=np.random.default_rng(0))).eval()
    path = str(tmp_path / "m.onnx")
    cnnkit_onnx.export(model, path, (1, c, size, size))
    plain, fused = cnnkit_onnx.load(path), cnnkit_onnx.load(path, optimize=True)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert n_bn > 0 and not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(getattr(m, "fused_relu", False) for m in fused.modules())
    x = np.random.default_rng(1).standard_normal((2, c, size, size)).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x})[0]
    a, b = plain(x), fused(x)
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(b, ref, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("groups,k,cin", [(1, 3, 8), (8, 3, 8), (1, 1, 8), (1, 3, 2)])
@pytest.mark.parametrize("jit", [True, False])
def test_fused_relu_every_conv_path_matches_conv_then_relu(groups, k, cin, jit):
    """The fused ReLU on each conv path (columns, depthwise, 1x1, the small-K direct one;
    compiled and NumPy) gives max(conv, 0) bit for bit, keeps NaN, and refuses a backward."""
    from cnnkit import runtime
    from cnnkit.functional.conv import conv2d_backward, conv2d_forward
    previous = runtime.set_jit(jit)
    try:
        r = np.random.default_rng(5)
        x = r.standard_normal((3, cin, 9, 9)).astype(np.float32)
        x[0, 0, 4, 4] = np.nan
        w = r.standard_normal((8, cin // groups, k, k)).astype(np.float32)
        b = r.standard_normal(8).astype(np.float32)
        pad = k // 2
        plain = conv2d_forward(x, w, b, 1, pad, 1, groups)[0]
        fused, cache = conv2d_forward(x, w, b, 1, pad, 1, groups, relu=True)
        np.testing.assert_array_equal(fused, np.maximum(plain, 0))
        assert np.isnan(fused).any() and cache is None
        with pytest.raises(ValueError, match="fused ReLU"):
            conv2d_backward(np.ones_like(fused), cache)
    finally:
        runtime.set_jit(previous)


def test_fused_model_refuses_backward_and_exports_the_relu(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from cnnkit import onnx as cnnkit_onnx
    rng = np.random.default_rng(6)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.Conv2d(4, 2, 1, rng=rng)).eval()
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    before = model(x).copy()
    assert nn.fuse_for_inference(model)["relu_fused"] == 1
    np.testing.assert_allclose(model(x), before, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="fused"):
        model.backward(np.ones_like(before))
    path = str(tmp_path / "fused.onnx")
    cnnkit_onnx.export(model, path, (1, 3, 6, 6))
    import onnx
    assert [n.op_type for n in onnx.load(path).graph.node][:2] == ["Conv", "Relu"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], before, rtol=0, atol=1e-5)


def test_fused_relu6_refuses_backward_and_exports_as_clip(tmp_path):
    """A ReLU6 after a conv is fused (Conv2d.fused_relu_max = 6): the same outputs (values
    above 6 clamped), a backward refused by name, and the export writes Conv then Clip(0, 6),
    which ONNX Runtime runs to the same numbers; MobileNet v2's import fuses all its ReLU6s."""
    ort = pytest.importorskip("onnxruntime")
    from cnnkit import onnx as cnnkit_onnx
    rng = np.random.default_rng(7)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=rng), nn.ReLU6(),
                          nn.Conv2d(4, 4, 3, padding=1, groups=4, rng=rng), nn.ReLU6()).eval()
    for conv in (model[0], model[2]):
        conv.weight.data *= 4  # (outputs well above 6)
    x = (rng.standard_normal((2, 3, 6, 6)) * 4).astype(np.float32)
    before = model(x).copy()
    assert (before == 6).any() and (before == 0).any()
    assert nn.fuse_for_inference(model)["relu_fused"] == 2
    assert model[0].fused_relu_max == 6 and isinstance(model[1], nn.Identity)
    np.testing.assert_allclose(model(x), before, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="a ReLU6 fused"):
        model.backward(np.ones_like(before))
    path = str(tmp_path / "fused6.onnx")
    cnnkit_onnx.export(model, path, (1, 3, 6, 6))
    import onnx
    ops = [n.op_type for n in onnx.load(path).graph.node if n.op_type != "Identity"]  # (the ReLU6s' places)
    assert ops == ["Conv", "Clip", "Conv", "Clip"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], before, rtol=0, atol=1e-5)
    v2 = models.get("mobilenet_v2", num_classes=10, rng=np.random.default_rng(0)).eval()
    counts = nn.fuse_for_inference(v2)
    assert not any(type(m) is nn.ReLU6 for m in v2.modules()) and counts["relu_fused"] >= 35


def _graph_copy(make):
    a, b = make(), make()
    b.load_state_dict(a.state_dict())
    return a.eval(), b.eval()


def test_constant_scales_and_shifts_fold_into_conv_and_linear_and_nodes_go():
    """Mul/Div/Add/Sub by per-channel or scalar constants after a conv or a linear layer fold
    into its weights and bias; the ReLU after them still fuses; the Identities left are
    dropped from the Graph, whose output stays the same (float64 reference: the unfused twin)."""
    from cnnkit.io.onnx._layers import Binary, OnnxFlatten

    def make():
        r = np.random.default_rng(11)
        g = nn.Graph(inputs="x")
        g.add("conv", nn.Conv2d(3, 4, 3, padding=1, bias=False, rng=r, dtype=np.float64), "x")
        g.add("mul", Binary("Mul", r.uniform(-2, 2, (1, 4, 1, 1))), "conv")
        g.add("add", Binary("Add", r.standard_normal((4, 1, 1))), "mul")
        g.add("relu", nn.ReLU(), "add")
        g.add("conv2", nn.Conv2d(4, 5, 1, rng=r, dtype=np.float64), "relu")
        g.add("div", Binary("Div", np.array(1.5)), "conv2")
        g.add("sub", Binary("Sub", r.standard_normal((1, 5, 1, 1))), "div")
        g.add("flat", OnnxFlatten(1), "sub")
        g.add("fc", nn.Linear(5 * 36, 3, rng=r, dtype=np.float64), "flat")
        g.add("scale", Binary("Mul", r.uniform(0.5, 2, (1, 3))), "fc")
        g.add("shift", Binary("Add", r.standard_normal(3), const_pos=0), "scale")
        return g
    plain, g = _graph_copy(make)
    x = np.random.default_rng(12).standard_normal((2, 3, 6, 6))
    counts = nn.fuse_for_inference(g)
    assert counts["constant_folded"] == 6 and counts["relu_fused"] == 1
    assert counts["identity_removed"] == 6  # the relu and five of the six Binaries; "shift" is the output
    assert [n for n, _ in g.nodes] == ["conv", "conv2", "flat", "fc", "shift"]
    assert g.output_names == ("shift",) and g.nodes[1][1] == ("conv",) and g._children["conv"].fused_relu
    np.testing.assert_allclose(g(x), plain(x), rtol=1e-12, atol=1e-12)


def test_scales_before_layers_move_past_pools_merge_and_fold_into_the_next_layer():
    """Constant scales before a conv or linear layer fold into its weights (a scalar through a
    flatten too), a scalar scale moves past an average pool, and runs of constant Mul / Div /
    Add / Sub become one Mul and one Add: same output as the unfused twin (float64)."""
    from cnnkit.io.onnx._layers import Binary, OnnxFlatten

    def make():
        r = np.random.default_rng(21)
        g = nn.Graph(inputs="x")
        g.add("conv", nn.Conv2d(3, 4, 3, padding=1, rng=r, dtype=np.float64), "x")
        g.add("tanh", nn.Tanh(), "conv")
        g.add("a", Binary("Mul", np.array([1.7])), "tanh")                  # moves past the pool
        g.add("pool", nn.AvgPool2d(2), "a")
        g.add("c", Binary("Mul", r.uniform(0.5, 2, (4, 1, 1))), "pool")      # \
        g.add("b", Binary("Add", r.standard_normal((4, 1, 1))), "c")        #  } one Mul, one Add
        g.add("s", Binary("Div", np.array(1.5)), "b")                       #  |
        g.add("t", Binary("Sub", r.standard_normal((1, 4, 1, 1)), const_pos=0), "s")  # /  (c - x)
        g.add("tanh2", nn.Tanh(), "t")
        g.add("per_channel", Binary("Mul", r.uniform(0.5, 2, (1, 4, 1, 1))), "tanh2")  # into conv2
        g.add("conv2", nn.Conv2d(4, 5, 3, padding="same", rng=r, dtype=np.float64), "per_channel")
        g.add("tanh3", nn.Tanh(), "conv2")
        g.add("scale", Binary("Mul", np.array(0.7)), "tanh3")                # through the flatten
        g.add("flat", OnnxFlatten(1), "scale")
        g.add("fc", nn.Linear(5 * 9, 3, rng=r, dtype=np.float64), "flat")
        return g
    plain, g = _graph_copy(make)
    x = np.random.default_rng(22).standard_normal((2, 3, 6, 6))
    counts = nn.fuse_for_inference(g)
    assert counts["scale_moved"] == 2 and counts["constants_merged"] == 3 and counts["constant_folded"] == 2
    names = [n for n, _ in g.nodes]
    assert names == ["conv", "tanh", "pool", "a", "c", "tanh2", "conv2", "tanh3", "flat", "fc"], names
    assert [g._children[n].op for n in ("a", "c")] == ["Mul", "Add"]
    np.testing.assert_allclose(g(x), plain(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g(x[:1]), plain(x[:1]), rtol=1e-12, atol=1e-12)  # the batch-1 path


@pytest.mark.parametrize("case", ["groups", "two_readers", "spatial", "c_div_x", "wide_scalar"])
def test_scales_that_cannot_fold_forward_stay(case):
    from cnnkit.io.onnx._layers import Binary
    r = np.random.default_rng(23)
    const = {"groups": r.uniform(0.5, 2, (1, 4, 1, 1)), "spatial": r.uniform(0.5, 2, (1, 1, 5, 5)),
             "wide_scalar": np.ones((1, 1, 1, 1)) * 2.0}.get(case, np.array(2.0))
    g = nn.Graph(inputs="x")
    g.add("op", Binary("Div" if case == "c_div_x" else "Mul", const, const_pos=0 if case == "c_div_x" else 1), "x")
    if case == "wide_scalar":  # a scale of shape (1, 1, 1, 1) must not pass a flatten (it would broadcast)
        g.add("flat", nn.Flatten(), "op")
        g.add("fc", nn.Linear(4 * 25, 3, rng=r, dtype=np.float64), "flat")
    else:
        g.add("conv", nn.Conv2d(4, 4, 3, padding=1, groups=2 if case == "groups" else 1, rng=r,
                                dtype=np.float64), "op")
    if case == "two_readers":
        g.add("sum", nn.Add(), ["conv", "op"])
    g.eval()
    x = r.uniform(0.5, 2, (1, 4, 5, 5))
    before = g(x).copy()
    counts = nn.fuse_for_inference(g)
    if case == "wide_scalar":  # not moved past the flatten, but folded through it: same values
        assert counts["scale_moved"] == 0 and counts["constant_folded"] == 1 and "op" not in g._children
        np.testing.assert_allclose(g(x), before, rtol=1e-12, atol=1e-12)
        return
    assert counts["constant_folded"] == counts["scale_moved"] == 0 and "op" in g._children, counts
    np.testing.assert_array_equal(g(x), before)


@pytest.mark.parametrize("case", ["spatial", "dtype", "c_minus_y", "div_zero", "nan", "two_readers", "after_relu",
                                  "wider"])
def test_constants_that_would_change_the_result_stay(case):
    from cnnkit.io.onnx._layers import Binary
    r = np.random.default_rng(13)
    const = {"spatial": r.standard_normal((1, 1, 5, 5)).astype(np.float32),
             "dtype": np.array(2.0), "div_zero": np.zeros((4, 1, 1), np.float32),
             "nan": np.array([np.nan], np.float32),
             "wider": r.standard_normal((2, 4, 1, 1)).astype(np.float32)}.get(case, np.float32(3.0))
    op, pos = {"c_minus_y": ("Sub", 0), "div_zero": ("Div", 1)}.get(case, ("Mul", 1))
    g = nn.Graph(inputs="x")
    g.add("conv", nn.Conv2d(2, 4, 3, padding=1, rng=r), "x")
    src = "conv"
    if case == "after_relu":
        g.add("relu", nn.ReLU(), "conv")
        src = "relu"
    g.add("op", Binary(op, const, const_pos=pos), src)
    if case == "two_readers":
        g.add("other", nn.ReLU(), "conv")
        g.add("sum", nn.Add(), ["op", "other"])
    g.eval()
    x = r.standard_normal((1, 2, 5, 5)).astype(np.float32)
    with np.errstate(divide="ignore"):
        before = g(x).copy()
        counts = nn.fuse_for_inference(g)
        assert counts["constant_folded"] == 0 and "op" in g._children
        np.testing.assert_array_equal(g(x), before)


def test_zero_padding_folds_into_the_conv_after_it():
    from cnnkit.io.onnx._layers import Pad

    def make(pads, value=0.0):
        def build():
            r = np.random.default_rng(14)
            g = nn.Graph(inputs="x")
            g.add("pad", Pad(pads, value), "x")
            g.add("conv", nn.Conv2d(3, 4, 3, padding=(1, 0), rng=r, dtype=np.float64), "pad")
            return g
        return build
    x = np.random.default_rng(15).standard_normal((2, 3, 7, 6))
    plain, g = _graph_copy(make([0, 0, 2, 1, 0, 0, 0, 3]))
    assert nn.fuse_for_inference(g)["pad_folded"] == 1
    assert g._children["conv"].padding == (3, 1, 1, 3) and "pad" not in g._children
    np.testing.assert_allclose(g(x), plain(x), rtol=1e-12, atol=1e-12)
    for pads, value in (([1, 0, 1, 1, 0, 0, 1, 1], 0.0), ([0, 0, 1, 1, 0, 0, 1, 1], 0.5)):  # the batch axis; 0.5
        plain, g = _graph_copy(make(pads, value))
        assert nn.fuse_for_inference(g)["pad_folded"] == 0 and "pad" in g._children
        np.testing.assert_array_equal(g(x), plain(x))


def test_lenet5_import_optimized_drops_its_pad_and_scales_and_matches_onnxruntime(tmp_path):
    """LeNet-5 (scaled tanh: a Mul before and after each tanh; a Pad before C1) through
    export, import with optimize=True and ONNX Runtime."""
    ort = pytest.importorskip("onnxruntime")
    from cnnkit import onnx as cnnkit_onnx
    from cnnkit.io.onnx._layers import Binary, Pad
    model = models.get("lenet5", num_classes=10, in_channels=1, rng=np.random.default_rng(0)).eval()
    path = str(tmp_path / "lenet5.onnx")
    cnnkit_onnx.export(model, path, (1, 1, 32, 32))
    plain, fused = cnnkit_onnx.load(path), cnnkit_onnx.load(path, optimize=True)
    count = lambda g, kind: sum(type(l) is kind for l in g._children.values())
    assert count(plain, Pad) == 1 and count(fused, Pad) == 0
    # left: after each pool x * s + t (the trainable pooling's scale and bias merged with the
    # scaled tanh's factors), F6's 1.7159 and the RBF output's two; the others are folded
    assert count(plain, Binary) == 18 and count(fused, Binary) == 7
    assert len(plain.nodes) == 36 and len(fused.nodes) == 24
    x = np.random.default_rng(1).standard_normal((3, 1, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(fused(x), ref, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(fused(x[:1]), ref[:1], rtol=0, atol=1e-5 * scale)  # the batch-1 path


def test_relu_after_a_residual_add_fuses_into_it_and_the_add_into_a_conv(tmp_path):
    """ResNet-18's blocks end in relu(F(x) + x): each such ReLU goes into its Add, and each
    Add (with its ReLU) into the conv before it, whose output it alone read (same output
    as the unfused model's, up to the BatchNorm folds' rounding); the conv refuses a
    backward, and the export writes the Add and the Relu again (ONNX Runtime agrees)."""
    ort = pytest.importorskip("onnxruntime")
    from cnnkit import onnx as cnnkit_onnx
    make = lambda: models.get("resnet18", num_classes=10, in_channels=3, rng=np.random.default_rng(0))
    model = _random_stats(make()).eval()
    plain = _copy(model, make).eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    before = plain(x)
    assert sum(isinstance(m, nn.Add) for m in plain.modules()) == 8
    counts = nn.fuse_for_inference(model)
    assert counts["add_relu_fused"] == counts["add_fused"] == 8
    assert not any(isinstance(m, (nn.Add, nn.ReLU)) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.fused_add]
    assert len(convs) == 8 and all(c.fused_relu for c in convs)
    assert "fused_add=True, fused_relu=True" in repr(convs[0])
    after = model(x)
    scale = max(1.0, float(np.abs(before).max()))
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(model(x[:1]), before[:1], rtol=0, atol=1e-5 * scale)  # the batch-1 path
    with pytest.raises(ValueError, match="residual Add and a ReLU fused"):
        convs[0].backward(np.ones((2, 64, 8, 8), np.float32))
    with pytest.raises(ValueError, match="second input"):
        convs[0](np.ones((1, convs[0].in_channels, 8, 8), np.float32))
    path = str(tmp_path / "fused.onnx")
    cnnkit_onnx.export(model, path, (1, 3, 32, 32))
    import onnx
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("Add") == 8 and all(ops[i + 1] == "Relu" and ops[i - 1] == "Conv"
                                         for i, op in enumerate(ops) if op == "Add")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], after, rtol=0, atol=1e-5 * scale)


def test_residual_add_fused_into_a_conv_same_bits_as_conv_then_add():
    """A Graph's conv -> Add(conv, shortcut) -> ReLU: after the fusion the conv adds the
    shortcut in its epilogue, with the Add's bits, for 1x1 convs (the epilogue) and 3x3
    ones (the add after the conv); an Add whose conv input is read elsewhere too, or is
    the graph's output, stays."""
    rng = np.random.default_rng(7)
    for k, stride in ((1, 1), (3, 1), (1, 2), (3, 2)):
        def make():
            g = nn.Graph()
            g.add("stem", nn.Conv2d(4, 8, 3, padding=1, rng=np.random.default_rng(1)))
            g.add("conv", nn.Conv2d(8, 8, k, stride=stride, padding=k // 2, rng=np.random.default_rng(2)))
            g.add("short", nn.Conv2d(8, 8, 1, stride=stride, rng=np.random.default_rng(3)), inputs="stem")
            g.add("add", nn.Add(), inputs=["short", "conv"])
            g.add("relu", nn.ReLU())
            return g.eval()
        plain, fused = make(), make()
        counts = nn.fuse_for_inference(fused)
        assert counts["add_fused"] == 1 and counts["add_relu_fused"] == 1
        # "short" moved to the Add's place; the output node "relu" stays, an Identity
        assert [n for n, _ in fused.nodes] == ["stem", "conv", "short", "relu"]
        assert fused.nodes[2][1] == ("stem", "conv") and fused.short.fused_add and fused.short.fused_relu
        for n in (1, 3):
            x = rng.standard_normal((n, 4, 9, 9)).astype(np.float32)
            np.testing.assert_array_equal(fused(x), plain(x))
    g = nn.Graph()
    g.add("conv", nn.Conv2d(3, 3, 1))
    g.add("add", nn.Add(), inputs=["conv", "input"])
    g.add("twice", nn.Add(), inputs=["add", "conv"])  # conv read twice: nothing fused
    assert nn.fuse_for_inference(g.eval())["add_fused"] == 0


def test_add_with_a_fused_relu_on_one_or_three_inputs_leaves_its_inputs_alone():
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    add = nn.Add().eval()
    add.fused_relu = True
    np.testing.assert_array_equal(add(x), np.maximum(x, 0))
    assert x[0, 0] == -1.0  # one input: the result is a copy, not the input clamped
    np.testing.assert_array_equal(add(x, x, x), np.maximum(3 * x, 0))
    np.testing.assert_array_equal(add(x, -x[:1]), np.maximum(x - x[:1], 0))  # broadcasting
