"""ResNet, MobileNet and GoogLeNet: exact parameter counts (issue 4's table), forward
shapes, torchvision's state_dict keys (patterns written from torchvision's source),
ReLU6 against torch.nn.ReLU6, the option-A shortcut's gradient check, and a CIFAR
ResNet training a few steps on real Fashion-MNIST images."""

import json
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch

import cnnkit.models.googlenet  # noqa: F401  (importing a family registers its models)
import cnnkit.models.mobilenet  # noqa: F401
import cnnkit.models.resnet  # noqa: F401
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
    assert y.transpose(1, 0, 2, 3).flags.c_contiguous  # channel-major, as conv outputs are
    np.testing.assert_array_equal(y + 0, np.asarray(ShortcutA(4, 8, 2)(x.transpose(1, 0, 2, 3).copy()
                                                              .transpose(1, 0, 2, 3))))  # any input layout


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
    x = read_idx(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz"))[:32]
    y = read_idx(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz"))[:32].astype(np.int64)
    x = ((x.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]  # (32, 1, 28, 28)
    m = models.get("resnet20", num_classes=10, in_channels=1, rng=rng())
    loss_fn = nn.CrossEntropyLoss()
    opt = SGD(m.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(6):  # 6 epochs over 32 images in batches of 16: 12 steps
        for i in range(0, 32, 16):
            opt.zero_grad()
            losses.append(float(loss_fn(m(x[i:i + 16]), y[i:i + 16])))
            m.backward(loss_fn.backward())
            opt.step()
    # measured: first epoch 2.42, last epoch 0.49 (ratio 0.20)
    assert np.mean(losses[-2:]) < 0.6 * np.mean(losses[:2]), losses
    assert losses[0] > 2.0  # about ln(10) = 2.30 at the start


# ---- MobileNet v1 --------------------------------------------------------------------
def mult_adds_and_final_shape(m, size):
    """Multiply-adds of every conv (weight size x output positions) and the FC, by running
    ``features`` layer by layer on one ``size x size`` image."""
    x = np.zeros((1, 3, size, size), np.float32)
    total = 0
    for block in m.features:
        for layer in block:
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                total += layer.weight.data.size * x.shape[2] * x.shape[3]
    return total + m.classifier.weight.data.size, x.shape


@pytest.fixture(scope="module")
def mobilenet_v1():
    return models.get("mobilenet_v1", num_classes=1000, in_channels=3, rng=rng()).eval()


def test_mobilenet_v1_counts_at_alpha_1(mobilenet_v1):
    m = mobilenet_v1
    assert m.num_parameters() == 4_231_976
    bn = sum(b.weight.data.size + b.bias.data.size for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    assert bn == 21_888  # gamma and beta of the 27 BNs
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    weights = sum(c.weight.data.size for c in convs) + m.classifier.weight.data.size + m.classifier.bias.data.size
    assert weights == 4_210_088  # the "conv + FC weights"
    assert len(convs) == 27 and all(c.bias is None for c in convs)  # 1 + 13 x 2 convs, BN after each
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 13 and all(c.groups == c.in_channels == c.out_channels for c in depthwise)


def test_mobilenet_v1_mult_adds_and_forward_at_224(mobilenet_v1):
    madds, shape = mult_adds_and_final_shape(mobilenet_v1, 224)
    assert madds == 568_740_352 and shape == (1, 1024, 7, 7)  # the paper's table 2/8: 569M
    assert mobilenet_v1.input_size == 224
    assert mobilenet_v1(rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)).shape == (1, 1000)


def test_mobilenet_v1_width_and_resolution_multipliers(mobilenet_v1):
    half = models.get("mobilenet_v1", num_classes=1000, in_channels=3, alpha=0.5, rho=0.714, rng=rng()).eval()
    assert half.input_size == 160 and half.config["alpha"] == 0.5 and half.config["rho"] == 0.714
    full_convs = [l for l in mobilenet_v1.modules() if isinstance(l, nn.Conv2d)]
    half_convs = [l for l in half.modules() if isinstance(l, nn.Conv2d)]
    assert [c.out_channels // 2 for c in full_convs] == [c.out_channels for c in half_convs]  # channels halved
    madds, shape = mult_adds_and_final_shape(half, 160)
    assert shape == (1, 512, 5, 5)                    # 160 / 32 = 5
    assert half.num_parameters() == 1_331_592          # table 6/7: 0.50 MobileNet-160, 1.32M
    assert round(madds / 1e6) == 77 and madds == 76_524_800  # table 7: 76M mult-adds
    # rho changes no parameter (section 3.4), only the input size
    same = models.get("mobilenet_v1", num_classes=1000, in_channels=3, alpha=0.5, rng=rng())
    assert same.num_parameters() == half.num_parameters() and same.input_size == 224


def test_mobilenet_v1_rejects_a_bad_multiplier():
    with pytest.raises(ValueError, match="alpha and rho"):
        models.get("mobilenet_v1", alpha=0.0)


# ---- MobileNet v2 --------------------------------------------------------------------
def torchvision_mobilenet_v2_keys():
    """From torchvision/models/mobilenetv2.py: Conv2dNormActivation (``N.0`` conv,
    ``N.1`` BN); InvertedResidual ``conv`` = [expand ConvBNReLU6] + dw ConvBNReLU6 + Conv2d + BN."""
    keys = ["features.0.0.weight"] + bn_keys("features.0.1")
    i = 1
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
        for _ in range(n):
            p = f"features.{i}.conv"
            j = 0
            if t != 1:
                keys += [f"{p}.0.0.weight"] + bn_keys(f"{p}.0.1")
                j = 1
            keys += [f"{p}.{j}.0.weight"] + bn_keys(f"{p}.{j}.1")
            keys += [f"{p}.{j + 1}.weight"] + bn_keys(f"{p}.{j + 2}")
            i += 1
    keys += ["features.18.0.weight"] + bn_keys("features.18.1")
    return keys + ["classifier.1.weight", "classifier.1.bias"]


def test_mobilenet_v2_count_keys_and_forward():
    m = models.get("mobilenet_v2", num_classes=1000, in_channels=3, rng=rng()).eval()
    assert m.num_parameters() == 3_504_872
    assert list(m.state_dict()) == torchvision_mobilenet_v2_keys()
    assert len(m.state_dict()) == 314
    assert m.state_dict()["features.2.conv.1.0.weight"].shape == (96, 1, 3, 3)  # depthwise, 16 * 6 maps
    relu6 = [l for l in m.modules() if isinstance(l, nn.ReLU6)]
    assert len(relu6) == 1 + 16 * 2 + 1 + 1 and not any(isinstance(l, nn.ReLU) for l in m.modules())
    assert m(rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)).shape == (1, 1000)


# ---- GoogLeNet -----------------------------------------------------------------------
@pytest.mark.parametrize("name, aux, count", [("googlenet", False, 6_998_552), ("googlenet", True, 13_378_280),
                                              ("googlenet_torchvision", False, 6_624_904),
                                              ("googlenet_torchvision", True, 13_004_888)])
def test_googlenet_parameter_counts(name, aux, count):
    assert models.get(name, num_classes=1000, in_channels=3, aux_logits=aux, rng=rng()).num_parameters() == count


def test_googlenet_paper_structure_lrn_biases_and_5x5_branches():
    m = models.get("googlenet", num_classes=1000, in_channels=3, rng=rng())
    assert sum(isinstance(l, nn.LocalResponseNorm) for l in m.modules()) == 2
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    assert all(c.bias is not None for c in convs) and not any(isinstance(l, nn.BatchNorm2d) for l in m.modules())
    assert m.inception3a.branch3[1].conv.kernel_size in (5, (5, 5))
    assert m.dropout.p == 0.4


def test_googlenet_forward_at_224_with_and_without_aux_heads():
    x = rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    m = models.get("googlenet", num_classes=1000, in_channels=3, aux_logits=True, rng=rng())
    out = m(x)  # training mode: the main logits and both auxiliary heads' logits
    assert isinstance(out, tuple) and [o.shape for o in out] == [(1, 1000)] * 3
    m.eval()
    assert m(x).shape == (1, 1000)


def torchvision_googlenet_keys():
    """From torchvision/models/googlenet.py (aux_logits=False): BasicConv2d = ``conv``
    (no bias) + ``bn``; Inception branch1 BasicConv2d, branch2/branch3 Sequential of two,
    branch4 Sequential(MaxPool2d, BasicConv2d)."""
    basic = lambda p: [f"{p}.conv.weight"] + bn_keys(f"{p}.bn")  # noqa: E731
    keys = basic("conv1") + basic("conv2") + basic("conv3")
    for name in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        p = f"inception{name}"
        keys += basic(f"{p}.branch1") + basic(f"{p}.branch2.0") + basic(f"{p}.branch2.1")
        keys += basic(f"{p}.branch3.0") + basic(f"{p}.branch3.1") + basic(f"{p}.branch4.1")
    return keys + ["fc.weight", "fc.bias"]


def test_googlenet_torchvision_keys_and_shapes():
    m = models.get("googlenet_torchvision", num_classes=1000, in_channels=3, rng=rng())
    sd = m.state_dict()
    assert list(sd) == torchvision_googlenet_keys()
    assert sd["inception3a.branch3.1.conv.weight"].shape == (32, 16, 3, 3)  # torchvision's 3x3 "5x5"
    assert sd["inception5b.branch4.1.conv.weight"].shape == (128, 832, 1, 1)
    assert all(b.eps == 0.001 for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    aux = models.get("googlenet_torchvision", num_classes=1000, in_channels=3, aux_logits=True, rng=rng())
    keys = list(aux.state_dict())
    aux_keys = [k for k in keys if k.startswith("aux")]
    assert keys == list(sd)[:-2] + aux_keys + ["fc.weight", "fc.bias"]  # aux1, aux2 between 5b and fc
    assert aux_keys[:6] == ["aux1.conv.conv.weight"] + bn_keys("aux1.conv.bn")
    assert aux_keys[-4:] == ["aux2.fc1.weight", "aux2.fc1.bias", "aux2.fc2.weight", "aux2.fc2.bias"]


# ---- equal to torch.nn replicas (torchvision's block code, written out) -------------------
class TorchBlock(torch.nn.Module):
    """torchvision's BasicBlock / Bottleneck (v1.5), or the CIFAR option-A block."""

    def __init__(self, cin, width, stride, bottleneck, shortcut):
        super().__init__()
        T = torch.nn
        self.bottleneck, cout = bottleneck, width * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1, self.bn1 = T.Conv2d(cin, width, 1, bias=False), T.BatchNorm2d(width)
            self.conv2, self.bn2 = T.Conv2d(width, width, 3, stride, 1, bias=False), T.BatchNorm2d(width)
            self.conv3, self.bn3 = T.Conv2d(width, cout, 1, bias=False), T.BatchNorm2d(cout)
        else:
            self.conv1, self.bn1 = T.Conv2d(cin, width, 3, stride, 1, bias=False), T.BatchNorm2d(width)
            self.conv2, self.bn2 = T.Conv2d(width, width, 3, 1, 1, bias=False), T.BatchNorm2d(width)
        self.downsample, self.pad = None, None
        if stride != 1 or cin != cout:
            if shortcut == "B":
                self.downsample = T.Sequential(T.Conv2d(cin, cout, 1, stride, bias=False), T.BatchNorm2d(cout))
            else:
                before = (cout - cin) // 2
                self.pad = lambda x: torch.nn.functional.pad(x[:, :, ::stride, ::stride],
                                                             (0, 0, 0, 0, before, cout - cin - before))

    def forward(self, x):
        r = torch.nn.functional.relu
        out = r(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            out = self.bn3(self.conv3(r(out)))
        identity = self.downsample(x) if self.downsample is not None else (self.pad(x) if self.pad else x)
        return r(out + identity)


def torch_resnet(stem, stages, depths, bottleneck, shortcut, cin, num_classes):
    T = torch.nn
    parts = OrderedDict(stem)
    c = parts["conv1"].out_channels
    for s, (width, n) in enumerate(zip(stages, depths), start=1):
        blocks = []
        for b in range(n):
            blocks.append(TorchBlock(c, width, 2 if (b == 0 and s > 1) else 1, bottleneck, shortcut))
            c = width * (4 if bottleneck else 1)
        parts[f"layer{s}"] = T.Sequential(*blocks)
    parts["avgpool"], parts["flatten"] = T.AdaptiveAvgPool2d(1), T.Flatten()
    parts["fc"] = T.Linear(c, num_classes)
    return T.Sequential(parts)


def compare_with_torch(ours, theirs, x):
    """Load our weights into the replica (strict: same keys both ways), then compare the
    training-mode logits, the input gradient and the first conv's weight gradient, in
    float64 (BatchNorm over a few values per channel amplifies float32 rounding)."""
    theirs.double()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}, strict=True)
    theirs.train()
    ours.train()
    dy = rng(5).standard_normal((x.shape[0], 10))
    y = ours(x)
    dx = ours.backward(dy)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(ours.conv1.weight.grad, theirs.conv1.weight.grad.numpy(), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet20_matches_a_torch_replica(shortcut):
    ours = models.get("resnet20", num_classes=10, in_channels=3, shortcut=shortcut, rng=rng(),
                      dtype=np.float64)
    T = torch.nn
    theirs = torch_resnet([("conv1", T.Conv2d(3, 16, 3, 1, 1, bias=False)), ("bn1", T.BatchNorm2d(16)),
                           ("relu", T.ReLU())], (16, 32, 64), (3, 3, 3), False, shortcut, 3, 10)
    compare_with_torch(ours, theirs, rng(1).standard_normal((4, 3, 12, 12)))


def test_resnet50_matches_a_torch_replica_of_torchvisions_bottleneck():
    ours = models.get("resnet50", num_classes=10, in_channels=3, rng=rng(), dtype=np.float64)
    T = torch.nn
    theirs = torch_resnet([("conv1", T.Conv2d(3, 64, 7, 2, 3, bias=False)), ("bn1", T.BatchNorm2d(64)),
                           ("relu", T.ReLU()), ("maxpool", T.MaxPool2d(3, 2, 1))],
                          (64, 128, 256, 512), (3, 4, 6, 3), True, "B", 3, 10)
    compare_with_torch(ours, theirs, rng(1).standard_normal((2, 3, 48, 48)))  # layer4: 2x2


def torch_mobilenet_v2(num_classes):
    """torchvision's MobileNetV2 (mobilenetv2.py) at width 1, written out with torch.nn."""
    T = torch.nn

    def cbr(cin, cout, k, stride=1, groups=1):
        return T.Sequential(T.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), T.BatchNorm2d(cout),
                            T.ReLU6())

    class InvertedResidual(T.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = cin * t
            layers = [cbr(cin, hidden, 1)] if t != 1 else []
            layers += [cbr(hidden, hidden, 3, stride, hidden), T.Conv2d(hidden, cout, 1, bias=False),
                       T.BatchNorm2d(cout)]
            self.conv = T.Sequential(*layers)
            self.use_res = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    feats, c = [cbr(3, 32, 3, 2)], 32
    for t, cout, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                          (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            feats.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
            c = cout
    feats.append(cbr(320, 1280, 1))
    return T.Sequential(OrderedDict(features=T.Sequential(*feats), avgpool=T.AdaptiveAvgPool2d(1),
                                    flatten=T.Flatten(),
                                    classifier=T.Sequential(T.Dropout(0.2), T.Linear(1280, num_classes))))


@pytest.mark.parametrize("block, cin, size", [(1, 32, 8), (3, 24, 8)])  # no shortcut / identity shortcut
def test_mobilenet_v2_inverted_residual_matches_a_torch_replica(block, cin, size):
    """One block of each kind against torchvision's InvertedResidual (written out), in
    float64, eval-mode BN with non-trivial running statistics (a whole-network torch
    forward is slow on this CPU, so the blocks are compared one at a time)."""
    ours = models.get("mobilenet_v2", num_classes=10, in_channels=3, rng=rng(), dtype=np.float64).eval()
    theirs = torch_mobilenet_v2(10).double().eval()
    sd = ours.state_dict()
    for k in sd:
        if k.endswith("running_mean"):
            sd[k] = rng(len(k)).normal(0, 0.1, sd[k].shape)
        elif k.endswith("running_var"):
            sd[k] = rng(len(k)).uniform(0.5, 1.5, sd[k].shape)
    ours.load_state_dict(sd)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}, strict=True)
    ob, tb = ours.features[block], theirs.features[block]
    x = rng(1).standard_normal((2, cin, size, size)) * 3  # values beyond 6 exercise ReLU6's clip
    y = ob(x)
    dy = rng(5).standard_normal(y.shape)
    dx = ob.backward(dy)
    tx = torch.tensor(x, requires_grad=True)
    ty = tb(tx)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-7, atol=1e-9)
    depthwise = 0 if block == 1 else 1
    np.testing.assert_allclose(ob.conv[depthwise][0].weight.grad,
                               tb.conv[depthwise][0].weight.grad.numpy(), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name, options", [("resnet20", {"shortcut": "B"}),
                                           ("mobilenet_v1", {"alpha": 0.25, "rho": 0.571}),
                                           ("googlenet", {"aux_logits": True})])
def test_configs_rebuild_the_same_architecture(name, options):
    m = models.get(name, num_classes=7, in_channels=1, rng=rng(), **options)
    again = models.from_config(json.loads(json.dumps(m.config)), rng=rng(1))
    assert again.config == m.config and list(again.state_dict()) == list(m.state_dict())
    assert again.num_parameters() == m.num_parameters()
