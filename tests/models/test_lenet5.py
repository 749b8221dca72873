"""The original LeNet-5 (LeCun et al. 1998): its three special layers (trainable
subsampling, C3's sparse connection table, fixed Euclidean RBF outputs) checked by
float64 central differences, the paper's parameter counts layer by layer, shapes at
28x28 and 32x32, and a few SGD steps on real Fashion-MNIST with a falling loss."""

import numpy as np
import pytest

import cnnkit.models.lenet  # noqa: F401  (registers lenet5)
from cnnkit import models, nn
from cnnkit.data import load_dataset
from cnnkit.data.datasets import DatasetNotFoundError
from cnnkit.models.lenet import C3_CONNECTIONS, DIGIT_BITMAPS, digit_prototypes
from cnnkit.nn.lenet_layers import EuclideanRBF, PadTo, SparseConv2d, Subsampling
from cnnkit.optim import SGD
from tests.helpers import assert_close, numeric_grad


def rng(seed=0):
    return np.random.default_rng(seed)


def check_layer_grads(layer, x, param_names=()):
    """Analytic dx and parameter grads equal float64 central differences of sum(y * dy)."""
    y = layer(x)
    dy = rng(7).standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(dy)
    assert_close(dx, numeric_grad(lambda: layer(x), x, dy), rtol=1e-6, atol=1e-8, what="dx")
    params = dict(layer.named_parameters())
    for name in param_names:
        p = params[name]
        analytic = p.grad.copy()
        assert_close(analytic, numeric_grad(lambda: layer(x), p.data, dy), rtol=1e-6, atol=1e-8, what=name)


# ---- the layers ------------------------------------------------------------------------
def test_subsampling_forward_by_hand():
    layer = Subsampling(2, dtype=np.float64)
    layer.weight.data[:] = [2.0, -1.0]
    layer.bias.data[:] = [0.5, 1.0]
    x = np.arange(2 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4) + np.zeros((3, 1, 1, 1))
    y = layer(x)
    assert y.shape == (3, 2, 2, 2)
    # map 0, top-left window: 0 + 1 + 4 + 5 = 10 -> 2*10 + 0.5
    assert y[0, 0, 0, 0] == 20.5
    # map 1, bottom-right window: 26 + 27 + 30 + 31 = 114 -> -114 + 1
    assert y[0, 1, 1, 1] == -113.0
    assert layer.num_parameters() == 4


@pytest.mark.parametrize("hw", [(6, 6), (5, 7)])  # odd sizes drop the last row/column
def test_subsampling_gradients_float64(hw):
    layer = Subsampling(3, rng=rng(), dtype=np.float64)
    x = rng(1).standard_normal((2, 3) + hw)
    check_layer_grads(layer, x, ("weight", "bias"))


@pytest.mark.parametrize("layout", ["nchw", "channel_major"])
@pytest.mark.parametrize("hw", [(28, 28), (10, 10), (7, 9)])
def test_subsampling_matches_torch_float32(layout, hw):
    """Against PyTorch: ``4 * avg_pool2d(x, 2) * w + b`` and its gradients (x, w, b), in
    float32, from NCHW and from channel-major memory (what a conv before it returns)."""
    torch = pytest.importorskip("torch")
    layer = Subsampling(6, rng=rng())
    x = rng(1).standard_normal((5, 6) + hw).astype(np.float32)
    if layout == "channel_major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    y = layer(x)
    dy = rng(2).standard_normal(y.shape).astype(np.float32)
    layer.zero_grad()
    dx = layer.backward(dy)
    xt = torch.from_numpy(np.array(x)).requires_grad_()
    wt = torch.from_numpy(layer.weight.data.copy()).requires_grad_()
    bt = torch.from_numpy(layer.bias.data.copy()).requires_grad_()
    yt = 4 * torch.nn.functional.avg_pool2d(xt, 2) * wt[:, None, None] + bt[:, None, None]
    yt.backward(torch.from_numpy(dy))
    assert y.dtype == dx.dtype == np.float32 and dx.shape == x.shape
    for name, ours, theirs in (("y", y, yt), ("dx", dx, xt.grad), ("dw", layer.weight.grad, wt.grad),
                               ("db", layer.bias.grad, bt.grad)):
        assert_close(ours, theirs.detach().numpy(), rtol=1e-5, atol=1e-5, what=name)


def test_sparse_conv_equals_a_dense_conv_with_zero_kernels():
    conns = [[0], [1, 2], [0, 1, 2]]
    layer = SparseConv2d(3, 3, 3, conns, rng=rng(), dtype=np.float64)
    assert layer.weight.shape == (6, 3, 3) and layer.num_parameters() == 6 * 9 + 3
    dense = nn.Conv2d(3, 3, 3, dtype=np.float64)
    dense.weight.data[:] = 0
    k = 0
    for j, cons in enumerate(conns):
        for i in cons:
            dense.weight.data[j, i] = layer.weight.data[k]
            k += 1
    dense.bias.data[:] = layer.bias.data
    x = rng(1).standard_normal((2, 3, 6, 6))
    assert_close(layer(x), dense(x), rtol=1e-12, atol=1e-12, what="sparse vs dense")
    # an unconnected input map does not change output map 0
    x2 = x.copy()
    x2[:, 1:] += 5.0
    assert_close(layer(x2)[:, 0], layer(x)[:, 0], rtol=0, atol=1e-12, what="map 0 reads only input 0")


def test_sparse_conv_gradients_float64():
    layer = SparseConv2d(6, 16, 3, [list(c) for c in C3_CONNECTIONS], rng=rng(), dtype=np.float64)
    x = rng(1).standard_normal((2, 6, 5, 5))
    check_layer_grads(layer, x, ("weight", "bias"))


def test_sparse_conv_rejects_bad_tables():
    with pytest.raises(ValueError, match="connections must list"):
        SparseConv2d(6, 16, 5, [[0]] * 15)
    with pytest.raises(ValueError, match="distinct input maps"):
        SparseConv2d(6, 2, 5, [[0, 6], [1]])
    with pytest.raises(ValueError, match="distinct input maps"):
        SparseConv2d(6, 2, 5, [[0, 0], [1]])


def test_euclidean_rbf_forward_by_hand_and_fixed_prototypes():
    protos = np.array([[1.0, -1.0], [-1.0, -1.0], [1.0, 1.0]])
    layer = EuclideanRBF(2, protos, dtype=np.float64)
    x = np.array([[1.0, 0.0]])
    assert_close(layer(x), [[1.0, 5.0, 1.0]], rtol=0, atol=0, what="squared distances")
    assert layer.num_parameters() == 0 and list(layer.state_dict()) == ["weight"]
    neg = EuclideanRBF(2, protos, negate=True, dtype=np.float64)
    assert_close(neg(x), [[-1.0, -5.0, -1.0]], rtol=0, atol=0, what="negated")


@pytest.mark.parametrize("negate", [False, True])
def test_euclidean_rbf_gradients_float64(negate):
    layer = EuclideanRBF(5, rng(2).choice([-1.0, 1.0], size=(4, 5)), negate=negate, dtype=np.float64)
    check_layer_grads(layer, rng(1).standard_normal((3, 5)))


def test_pad_to_32_gradients_float64():
    layer = PadTo(32)
    x = rng(1).standard_normal((1, 1, 28, 28))
    y = layer(x)
    assert y.shape == (1, 1, 32, 32) and np.all(y[:, :, :2] == 0) and np.all(y[:, :, :, -2:] == 0)
    assert_close(y[:, :, 2:30, 2:30], x, rtol=0, atol=0)
    check_layer_grads(layer, rng(1).standard_normal((1, 2, 5, 4)))


# ---- the model -----------------------------------------------------------------------
def test_c3_table_is_the_papers_table_one():
    assert len(C3_CONNECTIONS) == 16
    assert sum(len(c) for c in C3_CONNECTIONS) == 60
    # each S2 map feeds exactly 10 C3 maps (each row of Table I has 10 X's)
    assert [sum(i in c for c in C3_CONNECTIONS) for i in range(6)] == [10] * 6
    assert C3_CONNECTIONS[15] == (0, 1, 2, 3, 4, 5)
    assert C3_CONNECTIONS[12:15] == ((0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5))


def test_prototypes_are_distinct_plus_minus_one_bitmaps():
    p = digit_prototypes()
    assert p.shape == (10, 84) and set(np.unique(p)) == {-1.0, 1.0}
    assert len({tuple(r) for r in p}) == 10
    assert all(len(DIGIT_BITMAPS[d].strip().splitlines()) == 12 for d in range(10))


def test_lenet5_parameter_counts_layer_by_layer():
    m = models.get("lenet5", rng=rng())
    counts = {name: p.size for name, p in m.named_parameters()}
    assert counts == {
        "features.0.weight": 150, "features.0.bias": 6,          # C1: 156
        "features.2.weight": 6, "features.2.bias": 6,            # S2: 12
        "features.4.weight": 1500, "features.4.bias": 16,        # C3: 1,516
        "features.6.weight": 16, "features.6.bias": 16,          # S4: 32
        "features.8.weight": 48000, "features.8.bias": 120,      # C5: 48,120
        "classifier.0.weight": 10080, "classifier.0.bias": 84,   # F6: 10,164
    }
    assert m.num_parameters() == 60_000
    buffers = dict(m.named_buffers())
    assert list(buffers) == ["classifier.2.weight"] and buffers["classifier.2.weight"].shape == (10, 84)
    assert_close(buffers["classifier.2.weight"], digit_prototypes(), rtol=0, atol=0)


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("output", ["logits", "rbf"])
def test_lenet5_forward_and_backward_shapes(size, output):
    m = models.get("lenet5", output=output, rng=rng())
    x = rng(1).standard_normal((2, 1, size, size)).astype(np.float32)
    y = m(x)
    assert y.shape == (2, 10) and y.dtype == np.float32
    if output == "rbf":
        assert np.all(y >= 0)  # squared distances
    else:
        assert np.all(y <= 0)
    assert m.backward(np.ones_like(y)).shape == x.shape


def test_lenet5_rbf_and_logits_agree():
    a = models.get("lenet5", output="rbf", rng=rng(3))
    b = models.get("lenet5", output="logits", rng=rng(3))
    x = rng(1).standard_normal((2, 1, 32, 32)).astype(np.float32)
    assert_close(a(x), -b(x), rtol=0, atol=0)


def test_lenet5_other_class_counts_and_options():
    m = models.get("lenet5", num_classes=5, in_channels=3, rng=rng())
    protos = dict(m.named_buffers())["classifier.2.weight"]
    assert protos.shape == (5, 84) and set(np.unique(protos)) == {-1.0, 1.0}
    assert m.num_parameters() == 60_000 + 2 * 150  # only C1 grows: 5*5*3*6 + 6 = 456
    assert m(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 5)
    with pytest.raises(ValueError, match="output must be 'logits' or 'rbf'"):
        models.get("lenet5", output="softmax")
    with pytest.raises(ValueError, match="at most 32x32"):
        m(np.zeros((1, 3, 36, 36), np.float32))


def test_lenet5_whole_model_gradient_float64_spot_check():
    m = models.get("lenet5", rng=rng(), dtype=np.float64)
    x = rng(1).standard_normal((1, 1, 28, 28))
    y = m(x)
    dy = rng(2).standard_normal(y.shape)
    m.zero_grad()
    m.backward(dy)
    # S2's 6 coefficients and C3's first packed kernel, by central differences
    for name in ("features.2.weight", "features.4.bias"):
        p = dict(m.named_parameters())[name]
        assert_close(p.grad, numeric_grad(lambda: m(x), p.data, dy), rtol=1e-5, atol=1e-7, what=name)


def torch_lenet5(params, prototypes, x, output):
    """The same network written with torch ops, from ``params`` (name -> tensor)."""
    import torch
    import torch.nn.functional as F

    def f(a):
        return 1.7159 * torch.tanh(2.0 * a / 3.0)

    def subsample(a, w, b):
        return F.avg_pool2d(a, 2) * 4 * w[None, :, None, None] + b[None, :, None, None]

    outs = torch.tensor([j for j, c in enumerate(C3_CONNECTIONS) for _ in c])
    ins = torch.tensor([i for c in C3_CONNECTIONS for i in c])
    c3 = torch.zeros((16, 6, 5, 5), dtype=x.dtype).index_put((outs, ins), params["features.4.weight"])
    h = F.pad(x, (2, 2, 2, 2)) if x.shape[-1] == 28 else x
    h = f(F.conv2d(h, params["features.0.weight"], params["features.0.bias"]))
    h = f(subsample(h, params["features.2.weight"], params["features.2.bias"]))
    h = f(F.conv2d(h, c3, params["features.4.bias"]))
    h = f(subsample(h, params["features.6.weight"], params["features.6.bias"]))
    h = f(F.conv2d(h, params["features.8.weight"], params["features.8.bias"])).flatten(1)
    h = f(F.linear(h, params["classifier.0.weight"], params["classifier.0.bias"]))
    y = ((h[:, None, :] - prototypes[None]) ** 2).sum(-1)
    return -y if output == "logits" else y


@pytest.mark.parametrize("size,output", [(28, "logits"), (32, "rbf")])
def test_lenet5_equals_a_torch_implementation_logits_and_gradients(size, output):
    import torch
    m = models.get("lenet5", output=output, rng=rng(4), dtype=np.float64)
    x = rng(5).standard_normal((3, 1, size, size))
    dy = rng(6).standard_normal((3, 10))
    y = m(x)
    m.zero_grad()
    dx = m.backward(dy)
    params = {k: torch.tensor(p.data, requires_grad=True) for k, p in m.named_parameters()}
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_lenet5(params, torch.tensor(digit_prototypes()), xt, output)
    (yt * torch.tensor(dy)).sum().backward()
    assert_close(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10, what="outputs")
    assert_close(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-10, what="dx")
    for name, p in m.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), rtol=1e-8, atol=1e-10, what=name)


# ---- training on real data -----------------------------------------------------------
def fashion_mnist_256():
    try:
        ds = load_dataset("fashion-mnist", split="test")
    except DatasetNotFoundError:
        pytest.skip("Fashion-MNIST is not installed")
    x = ds.images[:256].astype(np.float32) / 255.0
    x = (x - 0.2860) / 0.3530
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=(0 - 0.2860) / 0.3530)  # 32x32
    return x, ds.labels[:256]


def test_lenet5_a_few_sgd_steps_on_real_fashion_mnist_lower_the_loss():
    x, y = fashion_mnist_256()
    assert x.shape == (256, 1, 32, 32)
    m = models.get("lenet5", rng=rng())
    loss_fn = nn.CrossEntropyLoss()
    opt = SGD(m.parameters(), lr=LR, momentum=0.9)
    losses = []
    for _ in range(EPOCHS):
        for i in range(0, 256, 64):
            opt.zero_grad()
            losses.append(float(loss_fn(m(x[i:i + 64]), y[i:i + 64])))
            m.backward(loss_fn.backward())
            opt.step()
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < RATIO * np.mean(losses[:4])


# lr 0.01 with momentum diverges: the logits are negated squared distances over 84
# dimensions (first loss 4.7, not ln 10). Measured with lr 1e-3, 3 epochs: first four
# steps 3.40 on average, last four 1.35 (ratio 0.40).
LR, EPOCHS, RATIO = 1e-3, 3, 0.6


def test_lenet5_config_rebuilds_the_model():
    m = models.get("lenet5", output="rbf", rng=rng())
    assert m.config == {"name": "lenet5", "num_classes": 10, "in_channels": 1, "output": "rbf", "dtype": "float32"}
    again = models.from_config(m.config, rng=rng(1))
    again.load_state_dict(m.state_dict())
    x = rng(2).standard_normal((1, 1, 28, 28)).astype(np.float32)
    assert_close(again(x), m(x), rtol=0, atol=0)
