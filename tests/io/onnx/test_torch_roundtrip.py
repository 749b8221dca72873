"""Round trips through PyTorch's exporter: torch.onnx.export of torchvision-layout models
(ResNet-18, ResNet-50, MobileNetV2, AlexNet, VGG-11 and GoogLeNet twins loaded from cnnkit state_dicts, and
small CNNs defined here), imported
into cnnkit and compared with PyTorch; then fine-tuning an imported model on Fashion-MNIST.
torchvision is not needed: the twins are written out below."""

import warnings

import numpy as np
import pytest

from cnnkit import models
from cnnkit import onnx as cnnkit_onnx
from cnnkit.nn import CrossEntropyLoss
from cnnkit.optim import SGD

torch = pytest.importorskip("torch")
tn = torch.nn


class BasicBlock(tn.Module):
    """torchvision's BasicBlock, same attribute names (so a cnnkit state_dict loads)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tn.BatchNorm2d(cout)
        self.relu = tn.ReLU()
        self.conv2 = tn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tn.Sequential(tn.Conv2d(cin, cout, 1, stride, bias=False), tn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(tn.Module):
    def __init__(self, num_classes, in_channels=3):
        super().__init__()
        self.conv1 = tn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = tn.BatchNorm2d(64)
        self.relu = tn.ReLU()
        self.maxpool = tn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, w in enumerate((64, 128, 256, 512), start=1):
            s = 1 if i == 1 else 2
            setattr(self, f"layer{i}", tn.Sequential(BasicBlock(cin, w, s), BasicBlock(w, w, 1)))
            cin = w
        self.avgpool = tn.AdaptiveAvgPool2d(1)
        self.fc = tn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _cba(cin, cout, k, stride, groups):
    return tn.Sequential(tn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), tn.BatchNorm2d(cout),
                         tn.ReLU6())


class InvertedResidual(tn.Module):
    """torchvision's MobileNetV2 block (attribute ``conv``, as cnnkit's zoo names it)."""

    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [_cba(cin, hidden, 1, 1, 1)] if t != 1 else []
        layers += [_cba(hidden, hidden, 3, stride, hidden), tn.Conv2d(hidden, cout, 1, bias=False),
                   tn.BatchNorm2d(cout)]
        self.conv = tn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(tn.Module):
    def __init__(self, num_classes):
        super().__init__()
        from cnnkit.models.mobilenet import V2_SETTINGS
        layers, cin = [_cba(3, 32, 3, 2, 1)], 32
        for t, c, n, s in V2_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_cba(cin, 1280, 1, 1, 1))
        self.features = tn.Sequential(*layers)
        self.classifier = tn.Sequential(tn.Dropout(0.2), tn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(tn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def _roundtrip(name, module, seed, size, path, opset, scaled_tol=False):
    """Load cnnkit's ``name`` weights into the torch twin ``module`` (strict), randomize its BatchNorm
    statistics, export it with PyTorch, import it into cnnkit and compare the two on one batch.
    Returns ``(ours, twin, net, x, expected)``."""
    ours = models.get(name, num_classes=10, in_channels=3, rng=np.random.default_rng(0))
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}, strict=True)
    _randomize_bn(module)
    x = np.random.default_rng(seed).standard_normal((2, 3, size, size)).astype(np.float32)
    _export(module, x, path, opset=opset)
    net = cnnkit_onnx.load(str(path))
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    atol = 1e-4 * max(1.0, float(np.abs(expected).max())) if scaled_tol else 1e-4
    np.testing.assert_allclose(net(x), expected, rtol=0, atol=atol)
    return ours, module, net, x, expected


def test_mobilenet_v2_from_cnnkit_state_dict(tmp_path):
    _roundtrip("mobilenet_v2", MobileNetV2(10), 4, 64, tmp_path / "mv2.onnx", opset=13)


class SmallNet(tn.Module):
    """A Fashion-MNIST CNN touching many exporter patterns (view with x.size(0), PReLU, groups,
    depthwise + ReLU6 residual, dropout, ceil-mode pooling). PyTorch writes LocalResponseNorm
    as Pad/Pow/AveragePool under an If, which is outside the issue's operator list."""

    def __init__(self):
        super().__init__()
        self.features = tn.Sequential(
            tn.Conv2d(1, 8, 3, padding=1), tn.BatchNorm2d(8), tn.ReLU(), tn.MaxPool2d(2),          # 14x14
            tn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), tn.PReLU(16),                     # 7x7
            tn.AvgPool2d(2, ceil_mode=True), tn.LeakyReLU(0.1))                                    # 4x4
        self.dw = tn.Sequential(tn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), tn.BatchNorm2d(16),
                                tn.ReLU6())
        self.drop = tn.Dropout(0.3)
        self.fc = tn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = self.features(x)
        x = x + self.dw(x)
        x = x.view(x.size(0), -1)
        return self.fc(self.drop(x))


def _export(module, x, path, opset):
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x),), str(path), opset_version=opset, dynamo=False,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "N"}})


def _randomize_bn(module):
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, tn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def test_resnet18_from_cnnkit_state_dict(tmp_path):
    _, twin, net, _, _ = _roundtrip("resnet18", ResNet18(10), 1, 64, tmp_path / "r18.onnx", opset=17)
    # PyTorch's exporter folds each eval-mode BatchNorm into its conv (a conv bias appears)
    assert all(p.requires_grad for p in net.parameters())
    bn = [m.num_features for m in twin.modules() if isinstance(m, tn.BatchNorm2d)]
    torch_count = sum(p.numel() for p in twin.parameters())
    assert sum(p.size for p in net.parameters()) == torch_count - 2 * sum(bn) + sum(bn)  # gamma, beta -> bias


@pytest.mark.parametrize("opset", [9, 11, 13, 17, 20])
def test_small_cnn_from_torch(tmp_path, opset):
    torch.manual_seed(opset)
    m = SmallNet()
    _randomize_bn(m)
    x = np.random.default_rng(2).standard_normal((1, 1, 28, 28)).astype(np.float32)
    _export(m, x, tmp_path / "s.onnx", opset)
    net = cnnkit_onnx.load(str(tmp_path / "s.onnx"))
    x5 = np.random.default_rng(3).standard_normal((5, 1, 28, 28)).astype(np.float32)  # another batch size
    with torch.no_grad():
        expected = m(torch.from_numpy(x5)).numpy()
    np.testing.assert_allclose(net(x5), expected, rtol=0, atol=1e-4)
    # and back out: cnnkit's export of the imported graph runs in ONNX Runtime
    from .conftest import run_ort
    cnnkit_onnx.export(net, str(tmp_path / "again.onnx"), (1, 1, 28, 28))
    np.testing.assert_allclose(run_ort(str(tmp_path / "again.onnx"), {"input": x5})[0], expected, atol=1e-4)


def test_finetune_imported_model_on_fashion_mnist(tmp_path):
    from cnnkit.data import load_dataset
    try:
        ds = load_dataset("fashion-mnist", "train")
    except Exception as e:  # the data set is not on this machine
        pytest.skip(f"fashion-mnist not available: {e}")
    torch.manual_seed(0)
    m = SmallNet()
    x0 = np.zeros((1, 1, 28, 28), np.float32)
    _export(m, x0, tmp_path / "s.onnx", 13)
    net = cnnkit_onnx.load(str(tmp_path / "s.onnx"))
    net.replace_classifier(10, rng=np.random.default_rng(0))
    net.train()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ds.labels), 64, replace=False)
    x = (ds.images[idx].astype(np.float32) / 255.0 - 0.286) / 0.353
    y = ds.labels[idx]
    loss_fn, opt = CrossEntropyLoss(), SGD(list(net.parameters()), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(10):
        loss = loss_fn(net(x), y)
        losses.append(float(loss))
        opt.zero_grad()
        net.backward(loss_fn.backward())
        opt.step()
    assert losses[-1] < 0.8 * losses[0] and np.mean(losses[-3:]) < np.mean(losses[:3]), losses


# ---- more torchvision layouts: AlexNet, VGG-11 and ResNet-50 (written out; same state_dict keys) --
# AlexNet and VGG run at 224: PyTorch's exporter refuses adaptive pooling to a size that does not
# divide the input, and at 224 their AdaptiveAvgPool2d(6)/(7) is the identity.
def alexnet_twin(num_classes):
    features = tn.Sequential(
        tn.Conv2d(3, 64, 11, 4, 2), tn.ReLU(), tn.MaxPool2d(3, 2),
        tn.Conv2d(64, 192, 5, padding=2), tn.ReLU(), tn.MaxPool2d(3, 2),
        tn.Conv2d(192, 384, 3, padding=1), tn.ReLU(), tn.Conv2d(384, 256, 3, padding=1), tn.ReLU(),
        tn.Conv2d(256, 256, 3, padding=1), tn.ReLU(), tn.MaxPool2d(3, 2))
    classifier = tn.Sequential(tn.Dropout(), tn.Linear(256 * 36, 4096), tn.ReLU(), tn.Dropout(),
                               tn.Linear(4096, 4096), tn.ReLU(), tn.Linear(4096, num_classes))
    return _FeaturesPoolClassifier(features, tn.AdaptiveAvgPool2d(6), classifier)


def vgg11_twin(num_classes):
    layers, cin = [], 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            layers.append(tn.MaxPool2d(2, 2))
        else:
            layers += [tn.Conv2d(cin, v, 3, padding=1), tn.ReLU()]
            cin = v
    classifier = tn.Sequential(tn.Linear(512 * 49, 4096), tn.ReLU(), tn.Dropout(), tn.Linear(4096, 4096),
                               tn.ReLU(), tn.Dropout(), tn.Linear(4096, num_classes))
    return _FeaturesPoolClassifier(tn.Sequential(*layers), tn.AdaptiveAvgPool2d(7), classifier)


class _FeaturesPoolClassifier(tn.Module):
    def __init__(self, features, avgpool, classifier):
        super().__init__()
        self.features, self.avgpool, self.classifier = features, avgpool, classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class Bottleneck(tn.Module):
    """torchvision's Bottleneck (stride on the 3x3 conv, as torchvision's v1.5)."""

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = tn.Conv2d(cin, width, 1, bias=False), tn.BatchNorm2d(width)
        self.conv2, self.bn2 = tn.Conv2d(width, width, 3, stride, 1, bias=False), tn.BatchNorm2d(width)
        self.conv3, self.bn3 = tn.Conv2d(width, cout, 1, bias=False), tn.BatchNorm2d(cout)
        self.relu = tn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tn.Sequential(tn.Conv2d(cin, cout, 1, stride, bias=False), tn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(ResNet18):
    def __init__(self, num_classes):
        super().__init__(num_classes)
        cin = 64
        for i, (w, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
            blocks = [Bottleneck(cin, w, 1 if i == 1 else 2)] + [Bottleneck(w * 4, w, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i}", tn.Sequential(*blocks))
            cin = w * 4
        self.fc = tn.Linear(2048, num_classes)


@pytest.mark.parametrize("name,twin,size", [("alexnet_torchvision", alexnet_twin, 224), ("vgg11", vgg11_twin, 224),
                                            ("resnet50", ResNet50, 64)])
def test_more_torchvision_layouts_from_cnnkit_state_dicts(name, twin, size, tmp_path):
    ours, _, _, x, expected = _roundtrip(name, twin(10), 5, size, tmp_path / f"{name}.onnx", opset=17,
                                         scaled_tol=True)
    ours.eval()  # and cnnkit's own zoo model with the same weights agrees too
    if name != "resnet50":  # (the BatchNorm statistics were randomized in the twin only)
        np.testing.assert_allclose(ours(x), expected, rtol=0, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


class BasicConv2d(tn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__()
        self.conv = tn.Conv2d(cin, cout, k, stride, padding, bias=False)
        self.bn = tn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Inception(tn.Module):
    """torchvision's inception module: its "5x5" branch is a 3x3 conv."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool):
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, 1)
        self.branch2 = tn.Sequential(BasicConv2d(cin, c3r, 1), BasicConv2d(c3r, c3, 3, padding=1))
        self.branch3 = tn.Sequential(BasicConv2d(cin, c5r, 1), BasicConv2d(c5r, c5, 3, padding=1))
        self.branch4 = tn.Sequential(tn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pool, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNetTV(tn.Module):
    def __init__(self, num_classes):
        super().__init__()
        from cnnkit.models.googlenet import INCEPTION
        self.conv1 = BasicConv2d(3, 64, 7, 2, 3)
        self.conv2, self.conv3 = BasicConv2d(64, 64, 1), BasicConv2d(64, 192, 3, padding=1)
        for name, spec in INCEPTION.items():
            setattr(self, name, Inception(*spec))
        self.fc = tn.Linear(1024, num_classes)

    def forward(self, x):
        pool = lambda k=3: tn.functional.max_pool2d(x, k, 2, ceil_mode=True)  # noqa: E731
        x = self.conv1(x)
        x = pool()
        x = self.conv3(self.conv2(x))
        x = pool()
        x = self.inception3b(self.inception3a(x))
        x = pool()
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            x = getattr(self, name)(x)
        x = pool(2)
        x = self.inception5b(self.inception5a(x))
        return self.fc(torch.flatten(tn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_googlenet_torchvision_layout_from_cnnkit_state_dict(tmp_path):
    _roundtrip("googlenet_torchvision", GoogLeNetTV(10), 6, 64, tmp_path / "g.onnx", opset=17, scaled_tol=True)
