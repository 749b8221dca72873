"""Sequential and Graph: gradient checks of composite nets (residual add, concat,
fan-out), PyTorch comparison of a small CNN, state_dict, train/eval, errors."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

from cnnkit.nn.activation import ReLU, Tanh
from cnnkit.nn.containers import Add, Concat, Graph, Sequential
from cnnkit.nn.conv import Conv2d
from cnnkit.nn.linear import Flatten, Linear
from cnnkit.nn.module import Layer, Parameter
from cnnkit.nn.norm import BatchNorm2d
from cnnkit.nn.pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from tests.helpers import numeric_grad


def rng(seed=0):
    return np.random.default_rng(seed)


def residual_block(c, r):
    g = Graph()
    g.add("conv1", Conv2d(c, c, 3, padding=1, rng=r, dtype=np.float64))
    g.add("bn1", BatchNorm2d(c, dtype=np.float64))
    g.add("act", Tanh())
    g.add("conv2", Conv2d(c, c, 3, padding="same", rng=r, dtype=np.float64))
    g.add("add", Add(), inputs=["conv2", "input"])
    return g


def inception_like(c, r):
    g = Graph()
    g.add("b1", Conv2d(c, 2, 1, rng=r, dtype=np.float64), inputs="input")
    g.add("b2a", Conv2d(c, 2, 1, rng=r, dtype=np.float64), inputs="input")
    g.add("b2b", Conv2d(2, 3, 3, padding=1, rng=r, dtype=np.float64))
    g.add("b3", MaxPool2d(3, 1, 1), inputs="input")
    g.add("b3c", Conv2d(c, 1, 1, rng=r, dtype=np.float64))
    g.add("cat", Concat(), inputs=["b1", "b2b", "b3c"])
    return g


def check_layer_grads(model, x, rtol=1e-6, atol=1e-8):
    """Backward of sum(y * dy) against float64 central differences, for x and every parameter."""
    y = model(x)
    dy = rng(99).standard_normal(y.shape)
    model.zero_grad()
    model(x)
    dx = model.backward(dy)

    def f():
        return (model(x) * dy).sum()

    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=rtol, atol=atol, err_msg="dx")
    for name, p in model.named_parameters():
        grad = p.grad.copy()
        np.testing.assert_allclose(grad, numeric_grad(f, p.data), rtol=rtol, atol=atol, err_msg=name)


def test_gradcheck_sequential_cnn():
    r = rng(1)
    model = Sequential(Conv2d(2, 3, 3, padding=1, rng=r, dtype=np.float64), Tanh(),
                       AvgPool2d(2), Conv2d(3, 4, (2, 3), stride=(1, 2), padding=(1, 0, 0, 2), rng=r,
                                            dtype=np.float64),
                       MaxPool2d(2, ceil_mode=True), Flatten(), Linear(8, 5, rng=r, dtype=np.float64))
    x = r.standard_normal((2, 2, 6, 6))
    assert model(x).shape == (2, 5)
    check_layer_grads(model, x)


def test_gradcheck_residual_graph_with_batchnorm_training():
    r = rng(2)
    model = Sequential(residual_block(3, r), ReLU(), residual_block(3, r))
    x = r.standard_normal((3, 3, 5, 5))
    check_layer_grads(model, x)


def test_gradcheck_concat_and_fan_out():
    r = rng(3)
    model = Sequential(inception_like(2, r), Tanh(), AdaptiveAvgPool2d(1), Flatten())
    x = r.standard_normal((2, 2, 5, 5))
    assert model(x).shape == (2, 6)
    check_layer_grads(model, x)


def test_graph_multiple_inputs_outputs_and_unused_input():
    r = rng(4)
    g = Graph(inputs=("a", "b", "unused"), outputs=None)
    g.add("ca", Conv2d(2, 2, 1, rng=r, dtype=np.float64), inputs="a")
    g.add("sum", Add(), inputs=["ca", "b", "b"])  # b fans in twice: gradient 2*dy
    g.add("cat", Concat(), inputs=["sum", "a"])
    g.set_outputs("cat", "sum")
    a, b, u = r.standard_normal((1, 2, 3, 3)), r.standard_normal((1, 2, 3, 3)), r.standard_normal((1, 1, 2, 2))
    y1, y2 = g(a, b, u)
    assert y1.shape == (1, 4, 3, 3) and y2.shape == (1, 2, 3, 3)
    d1, d2 = r.standard_normal(y1.shape), r.standard_normal(y2.shape)
    da, db, du = g.backward((d1, d2))

    def f():
        o1, o2 = g(a, b, u)
        return (o1 * d1).sum() + (o2 * d2).sum()

    np.testing.assert_allclose(da, numeric_grad(f, a), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, numeric_grad(f, b), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, 2 * (d2 + d1[:, :2]), rtol=1e-12)
    assert du.shape == u.shape and not du.any()


def test_add_broadcasts_and_unbroadcasts_gradient():
    add = Add()
    x, bias = np.ones((2, 3, 4, 4)), np.ones((1, 3, 1, 1))
    y = add(x, bias)
    dx, dbias = add.backward(np.ones_like(y))
    assert dx.shape == x.shape and dbias.shape == bias.shape and np.all(dbias == 32)


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 5, padding=2), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 8, 3, groups=2), torch.nn.ReLU(),
            torch.nn.AvgPool2d(2))
        self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 2 * 2, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def our_net():
    return Sequential(OrderedDict(
        features=Sequential(Conv2d(1, 4, 5, padding=2), BatchNorm2d(4), ReLU(), MaxPool2d(2),
                            Conv2d(4, 8, 3, groups=2), ReLU(), AvgPool2d(2)),
        classifier=Sequential(Flatten(), Linear(8 * 2 * 2, 10))))


def test_small_cnn_matches_pytorch_including_state_dict_names():
    torch.manual_seed(0)
    tnet = TorchNet()
    ours = our_net()
    tstate = {k: v.detach().numpy() for k, v in tnet.state_dict().items()}
    assert list(ours.state_dict()) == list(tstate)
    ours.load_state_dict(tstate)
    r = rng(5)
    for step in range(3):  # BatchNorm running stats evolve identically
        x = r.standard_normal((4, 1, 12, 12)).astype(np.float32)
        dy = r.standard_normal((4, 10)).astype(np.float32)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        yt = tnet(xt)
        yt.backward(torch.from_numpy(dy))
        ours.zero_grad()
        y = ours(x)
        dx = ours.backward(dy)
        assert y.dtype == np.float32 and dx.dtype == np.float32
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
        for (name, p), (tname, tp) in zip(ours.named_parameters(), tnet.named_parameters()):
            assert name == tname
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
        tnet.zero_grad()
    for k, v in tnet.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    tnet.eval()
    ours.eval()
    x = r.standard_normal((2, 1, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(ours(x), tnet(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_repr_matches_pytorch():
    torch.manual_seed(0)
    assert repr(our_net()) == repr(TorchNet()).replace("TorchNet", "Sequential")


def test_load_state_dict_reports_every_problem_by_name_and_changes_nothing():
    net = our_net()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    bad = {k: v.copy() for k, v in before.items()}
    del bad["features.0.bias"]
    bad["features.9.weight"] = np.zeros(3)
    bad["classifier.1.weight"] = np.zeros((10, 31), np.float32)
    bad["features.0.weight"] = bad["features.0.weight"] + 1
    with pytest.raises(ValueError, match=r"missing keys features\.0\.bias") as info:
        net.load_state_dict(bad)
    msg = str(info.value)
    assert "unexpected keys features.9.weight" in msg
    assert "classifier.1.weight: expected (10, 32), found (10, 31)" in msg
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    del bad["features.9.weight"], bad["classifier.1.weight"]
    missing, unexpected = net.load_state_dict(bad, strict=False)
    assert missing == ["features.0.bias", "classifier.1.weight"] and unexpected == []
    np.testing.assert_array_equal(net.features[0].weight.data, before["features.0.weight"] + 1)


def test_named_parameters_modules_train_eval_zero_grad_and_freeze():
    net = our_net()
    names = [n for n, _ in net.named_parameters()]
    assert names[:4] == ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias"]
    assert net.num_parameters() == sum(p.size for p in net.parameters()) == 1 * 4 * 25 + 4 + 8 + 4 * 8 // 2 * 9 + 8 + 32 * 10 + 10
    assert [n for n, _ in net.named_buffers()] == ["features.1.running_mean", "features.1.running_var",
                                                  "features.1.num_batches_tracked"]
    net.eval()
    assert all(not m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    x = np.ones((2, 1, 12, 12), np.float32)
    net.features.requires_grad_(False)
    net.backward(np.ones_like(net(x)))
    assert net.features[0].weight.grad is None and net.classifier[1].weight.grad is not None
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    assert net.features[4].label() == "Conv2d 'features.4'"


def test_double_backward_and_backward_without_forward_fail_clearly():
    net = our_net()
    with pytest.raises(RuntimeError, match="without a forward"):
        net.backward(np.ones((1, 10), np.float32))
    y = net(np.ones((1, 1, 12, 12), np.float32))
    net.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match=r"Linear 'classifier\.1'.*without a forward"):
        net.backward(np.ones_like(y))


def test_errors_name_the_layer_inside_containers():
    net = our_net()
    with pytest.raises(ValueError, match=r"^Conv2d 'features\.0': input has 3 channels, but weight expects 1"):
        net(np.ones((1, 3, 12, 12), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d 'features\.4': output height would be"):
        net(np.ones((1, 1, 3, 3), np.float32))
    g = Graph()
    with pytest.raises(ValueError, match="input node is not defined"):
        g.add("a", ReLU(), inputs="nope")
    relu = ReLU()
    g.add("a", relu)
    with pytest.raises(ValueError, match="only once"):
        g.add("b", relu)
    with pytest.raises(ValueError, match="must be new"):
        g.add("a", ReLU())
    with pytest.raises(TypeError, match="Layers only"):
        Sequential(ReLU(), "relu")


def test_empty_batch_flows_through_a_net():
    net = our_net().eval()
    y = net(np.zeros((0, 1, 12, 12), np.float32))
    assert y.shape == (0, 10)
    assert net.backward(np.zeros((0, 10), np.float32)).shape == (0, 1, 12, 12)


def test_to_double_casts_parameters_and_buffers():
    net = our_net().double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.features[1].running_mean.dtype == np.float64
    assert net.features[1].num_batches_tracked.dtype == np.int64
    assert net(np.zeros((1, 1, 12, 12))).dtype == np.float64


def test_parameter_and_custom_layer_registration():
    class Scale(Layer):
        def __init__(self):
            super().__init__()
            self.alpha = Parameter(np.array([2.0]))

        def forward(self, x):
            self._cache = x
            return x * self.alpha.data

        def backward(self, dy):
            x = self._take_cache()
            self.alpha.accumulate(np.array([(x * dy).sum()]))
            return dy * self.alpha.data

    s = Scale()
    assert list(s.state_dict()) == ["alpha"]
    s(np.ones(3))
    s.backward(np.ones(3))
    s(np.ones(3))
    s.backward(np.ones(3))  # gradients accumulate until zero_grad
    assert s.alpha.grad[0] == 6.0


def test_cached_labels_follow_the_tree():
    """label() is cached per layer; adopting a layer anywhere, or freeing a parent,
    must give the new dotted name (error messages rely on it)."""
    import gc
    from collections import OrderedDict as OD
    conv = Conv2d(1, 2, 3)
    assert conv.label() == "Conv2d"
    inner = Sequential(OD(a=conv))
    assert conv.label() == "Conv2d 'a'"
    outer = Sequential(OD(block=inner))
    assert conv.label() == "Conv2d 'block.a'"
    with pytest.raises(ValueError, match=r"Conv2d 'block\.a'"):
        outer(np.zeros((1, 3, 5, 5), dtype=np.float32))  # 3 channels where 1 is expected
    del outer
    gc.collect()
    assert conv.label() == "Conv2d 'a'"
