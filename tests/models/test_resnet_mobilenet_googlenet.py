"""ResNet, MobileNet and GoogLeNet: exact parameter counts (issue 4's table), forward
shapes, torchvision's state_dict keys (patterns written from torchvision's source),
ReLU6 against torch.nn.ReLU6, the option-A shortcut's gradient check, and a CIFAR
ResNet training a few steps on real Fashion-MNIST images."""

import os

import numpy as np
import pytest
import torch

import cnnkit.models.resnet  # noqa: F401  (registers the family)
from cnnkit import models, nn
from cnnkit.models.resnet import ShortcutA
from cnnkit.optim import SGD

FMNIST = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def rng(seed=0):
    return np.random.default_rng(seed)


BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def bn_keys(prefix):
    return [f"{prefix}.{k}" for k in BN]


# ---- ReLU6 ---------------------------------------------------------------------------
def test_relu6_matches_torch_forward_and_backward_including_the_kinks():
    x = np.concatenate([np.array([-1.0, 0.0, 6.0, 3.0, 7.5], np.float32),
                        rng().uniform(-3, 9, 200).astype(np.float32)])
    dy = rng(1).standard_normal(x.shape).astype(np.float32)
    layer = nn.ReLU6()
    y = layer(x)
    dx = layer.backward(dy)
    t = torch.tensor(x, requires_grad=True)
    ty = torch.nn.ReLU6()(t)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(dx, t.grad.numpy())
    assert dx[1] == 0 and dx[2] == 0 and dx[3] == dy[3]  # 0 at exactly 0 and 6, dy inside
    assert repr(layer) == "ReLU6()" and repr(nn.ReLU6(inplace=True)) == "ReLU6(inplace=True)"


def test_relu6_inplace_overwrites_its_input_and_keeps_the_right_gradient():
    x = np.array([-2.0, 1.0, 8.0], np.float32)
    layer = nn.ReLU6(inplace=True)
    y = layer(x)
    assert y is x and x.tolist() == [0.0, 1.0, 6.0]
    assert layer.backward(np.ones(3, np.float32)).tolist() == [0.0, 1.0, 0.0]


# ---- ResNet --------------------------------------------------------------------------
@pytest.mark.parametrize("name, count", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                         ("resnet50", 25_557_032), ("resnet101", 44_549_160),
                                         ("resnet152", 60_192_808)])
def test_imagenet_resnet_parameter_counts(name, count):
    assert models.get(name, num_classes=1000, in_channels=3, rng=rng()).num_parameters() == count


def cifar_count(n, shortcut):
    """Hand count of He et al. section 4.2 (no conv biases; BN gamma+beta; FC 64->10)."""
    conv = lambda cin, cout, k: cin * cout * k * k  # noqa: E731
    total = conv(3, 16, 3) + 2 * 16
    cin = 16
    for width in (16, 32, 64):
        for b in range(n):
            total += conv(cin, width, 3) + conv(width, width, 3) + 4 * width
            if cin != width and shortcut == "B":
                total += conv(cin, width, 1) + 2 * width
            cin = width
    return total + 64 * 10 + 10


@pytest.mark.parametrize("name, n, count_a, count_b", [("resnet20", 3, 269_722, 272_474),
                                                       ("resnet32", 5, 464_154, 466_906),
                                                       ("resnet56", 9, 853_018, 855_770)])
def test_cifar_resnet_parameter_counts(name, n, count_a, count_b):
    a = models.get(name, num_classes=10, in_channels=3, rng=rng())
    b = models.get(name, num_classes=10, in_channels=3, shortcut="B", rng=rng())
    assert a.num_parameters() == cifar_count(n, "A") == count_a  # the paper's ~0.27M / 0.46M / 0.85M
    assert b.num_parameters() == cifar_count(n, "B") == count_b
    assert a.config["shortcut"] == "A"


def test_cifar_resnet_rejects_an_unknown_shortcut():
    with pytest.raises(ValueError, match="shortcut must be 'A'"):
        models.get("resnet20", shortcut="C")


def test_resnet20_forward_shape_and_shortcut_nodes():
    m = models.get("resnet20", num_classes=10, in_channels=3, rng=rng())
    assert m(rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)).shape == (2, 10)
    first = m.layer2[0]
    assert isinstance(first.shortcut, ShortcutA)
    assert not any("shortcut" in k for k in m.state_dict())  # option A has no parameters


def torchvision_resnet_keys(block, depths):
    keys = ["conv1.weight"] + bn_keys("bn1")
    cin, exp = 64, (4 if block == "bottleneck" else 1)
    for s, (width, n) in enumerate(zip((64, 128, 256, 512), depths), start=1):
        for b in range(n):
            p = f"layer{s}.{b}"
            for i in range(1, (3 if block == "bottleneck" else 2) + 1):
                keys += [f"{p}.conv{i}.weight"] + bn_keys(f"{p}.bn{i}")
            stride = 2 if (b == 0 and s > 1) else 1
            if stride != 1 or cin != width * exp:
                keys += [f"{p}.downsample.0.weight"] + bn_keys(f"{p}.downsample.1")
            cin = width * exp
    return keys + ["fc.weight", "fc.bias"]


@pytest.fixture(scope="module")
def resnet18():
    return models.get("resnet18", num_classes=1000, in_channels=3, rng=rng())


def test_resnet18_state_dict_keys_are_torchvisions(resnet18):
    assert list(resnet18.state_dict()) == torchvision_resnet_keys("basic", (2, 2, 2, 2))
    assert resnet18.state_dict()["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)


def test_resnet50_state_dict_keys_are_torchvisions():
    m = models.get("resnet50", num_classes=1000, in_channels=3, rng=rng())
    keys = list(m.state_dict())
    assert keys == torchvision_resnet_keys("bottleneck", (3, 4, 6, 3))
    assert len(keys) == 320  # len(torchvision.models.resnet50().state_dict())
    sd = m.state_dict()
    assert sd["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # v1.5: the stride is on the 3x3
    assert m.layer2[0].conv2.stride in (2, (2, 2)) and m.layer2[0].conv1.stride in (1, (1, 1))


def test_resnet18_forward_at_224(resnet18):
    resnet18.eval()
    assert resnet18(rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)).shape == (1, 1000)


# ---- the option-A shortcut -----------------------------------------------------------
def test_shortcut_a_forward_subsamples_and_zero_pads():
    x = rng().standard_normal((2, 4, 5, 5))
    y = ShortcutA(4, 8, 2)(x)
    assert y.shape == (2, 8, 3, 3)
    np.testing.assert_array_equal(y[:, 2:6], x[:, :, ::2, ::2])
    assert not y[:, :2].any() and not y[:, 6:].any()


def test_shortcut_a_float64_gradient_check():
    layer = ShortcutA(3, 8, 2)
    x = rng(2).standard_normal((2, 3, 6, 5))
    w = rng(3).standard_normal((2, 8, 3, 3))  # loss = sum(w * y)
    layer(x)
    dx = layer.backward(w)
    num = np.zeros_like(x)
    eps = 1e-6
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num[idx] = (np.sum(w * layer(xp)) - np.sum(w * layer(xm))) / (2 * eps)
        layer._take_cache()
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)
    assert not dx[:, :, 1::2].any()  # rows that the stride skips get no gradient


def test_shortcut_a_rejects_fewer_output_channels():
    with pytest.raises(ValueError, match="out_channels >= in_channels"):
        ShortcutA(8, 4, 2)


# ---- training on real data -----------------------------------------------------------
@pytest.mark.skipif(not os.path.exists(FMNIST), reason="Debian's dataset-fashion-mnist is not installed")
def test_resnet20_a_few_sgd_steps_on_real_fashion_mnist_lower_the_loss():
    from cnnkit.data.idx import read_idx
    x = read_idx(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz"))[:128]
    y = read_idx(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz"))[:128].astype(np.int64)
    x = ((x.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]  # (128, 1, 28, 28)
    m = models.get("resnet20", num_classes=10, in_channels=1, rng=rng())
    loss_fn = nn.CrossEntropyLoss()
    opt = SGD(m.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(3):  # 3 epochs over 128 images in batches of 32: 12 steps
        for i in range(0, 128, 32):
            opt.zero_grad()
            losses.append(float(loss_fn(m(x[i:i + 32]), y[i:i + 32])))
            m.backward(loss_fn.backward())
            opt.step()
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
