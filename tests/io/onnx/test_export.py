"""Export: every layer type and the zoo models (reduced input sizes), checked with
onnx.checker (full_check) and ONNX Runtime (max abs diff < 1e-4, float32)."""

from collections import OrderedDict

import numpy as np
import pytest

from cnnkit import models, nn
from cnnkit import onnx as cnnkit_onnx
from cnnkit.models.resnet import ShortcutA
from cnnkit.nn.lenet_layers import EuclideanRBF, PadTo, SparseConv2d, Subsampling

from .conftest import onnx, run_ort


def _check(model, shape, tmp_path, rng, opset=17, batch=2, tol=1e-4):
    path = str(tmp_path / "m.onnx")
    cnnkit_onnx.export(model, path, (1,) + tuple(shape[1:]), opset=opset)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    x = rng.standard_normal((batch,) + tuple(shape[1:])).astype(np.float32)
    model.eval()
    y = model(x)
    (yo,) = run_ort(path, {"input": x})
    assert yo.shape == y.shape
    np.testing.assert_allclose(yo, y, rtol=0, atol=tol * max(1.0, float(np.abs(y).max())))
    return path, x, y


LAYERS = [
    ("conv_pads4", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=(1, 0, 2, 1), dilation=(1, 2)), (1, 3, 9, 10)),
    ("conv_same_s2", lambda: nn.Conv2d(3, 6, 3, stride=2, padding="same", groups=3, bias=False), (1, 3, 8, 7)),
    ("conv_valid_flip", lambda: nn.Conv2d(2, 2, (2, 3), padding="valid", flip=True), (1, 2, 6, 6)),
    ("linear2d", lambda: nn.Linear(5, 3), (1, 5)),
    ("linear3d", lambda: nn.Linear(5, 3), (1, 4, 5)),
    ("flatten", lambda: nn.Flatten(), (1, 2, 3, 4)),
    ("flatten_mid", lambda: nn.Flatten(1, 2), (1, 2, 3, 4)),
    ("relu", nn.ReLU, (1, 3, 4)), ("relu6", nn.ReLU6, (1, 3, 4)), ("leaky", lambda: nn.LeakyReLU(0.2), (1, 5)),
    ("elu", lambda: nn.ELU(0.7), (1, 5)), ("sigmoid", nn.Sigmoid, (1, 5)), ("tanh", nn.Tanh, (1, 5)),
    ("scaled_tanh", nn.ScaledTanh, (1, 5)), ("softmax", lambda: nn.Softmax(1), (1, 4, 3)),
    ("log_softmax", lambda: nn.LogSoftmax(-1), (1, 6)), ("identity", nn.Identity, (1, 3)),
    ("dropout", lambda: nn.Dropout(0.5), (1, 3)),
    ("bn1d", lambda: _stats(nn.BatchNorm1d(4)), (1, 4)), ("bn2d", lambda: _stats(nn.BatchNorm2d(3, eps=1e-3)), (1, 3, 4, 4)),
    ("lrn", lambda: nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0), (1, 7, 3, 3)),
    ("maxpool", lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 2, 8, 8)),
    ("maxpool_dil", lambda: nn.MaxPool2d(2, stride=1, dilation=2), (1, 2, 7, 7)),
    ("avgpool", lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 2, 7, 7)),
    ("avgpool_incl", lambda: nn.AvgPool2d(2, padding=1), (1, 2, 6, 6)),
    ("avgpool_div", lambda: nn.AvgPool2d(2, divisor_override=3), (1, 2, 6, 6)),
    ("adaptive1", lambda: nn.AdaptiveAvgPool2d(1), (1, 3, 5, 5)),
    ("adaptive_even", lambda: nn.AdaptiveAvgPool2d(2), (1, 3, 6, 6)),
    ("adaptive_uneven", lambda: nn.AdaptiveAvgPool2d((3, 2)), (1, 3, 5, 7)),
    ("subsampling_odd", lambda: Subsampling(3, rng=np.random.default_rng(1)), (1, 3, 7, 6)),
    ("sparse_conv", lambda: SparseConv2d(3, 2, 3, [[0, 2], [1]], rng=np.random.default_rng(1)), (1, 3, 6, 6)),
    ("rbf", lambda: EuclideanRBF(6, np.sign(np.random.default_rng(2).standard_normal((4, 6)))), (1, 6)),
    ("rbf_neg", lambda: EuclideanRBF(6, np.ones((3, 6)), negate=True), (1, 6)),
    ("pad_to", lambda: PadTo(9), (1, 2, 6, 7)),
    ("shortcut_a", lambda: ShortcutA(2, 6, 2), (1, 2, 5, 5)),
]


def _stats(bn):
    r = np.random.default_rng(3)
    bn.running_mean[:] = r.standard_normal(bn.num_features)
    bn.running_var[:] = r.uniform(0.5, 2, bn.num_features)
    bn.weight.data[:] = r.standard_normal(bn.num_features)
    return bn


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[t[0] for t in LAYERS])
def test_layer_export(name, make, shape, tmp_path, rng):
    _check(make(), shape, tmp_path, rng)


def test_containers_and_opsets(tmp_path, rng):
    g = nn.Graph()
    g.add("conv", nn.Conv2d(2, 4, 3, padding=1))
    g.add("a", nn.ReLU(), inputs="conv")
    g.add("b", nn.Sigmoid(), inputs="conv")
    g.add("sum3", nn.Add(), inputs=["a", "b", "conv"])
    g.add("cat", nn.Concat(1), inputs=["sum3", "input"])
    model = nn.Sequential(OrderedDict(block=g, pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(),
                                      fc=nn.Linear(6, 3)))
    for opset in (13, 17, 21):
        path, _, _ = _check(model, (1, 2, 6, 6), tmp_path, rng, opset=opset)
    names = {t.name for t in onnx.load(path).graph.initializer}
    assert {"block.conv.weight", "block.conv.bias", "fc.weight", "fc.bias"} <= names


def test_export_errors(tmp_path):
    with pytest.raises(ValueError, match="opset must be an int from 13 to 21"):
        cnnkit_onnx.export(nn.ReLU(), str(tmp_path / "x.onnx"), (1, 3), opset=9)
    with pytest.raises(ValueError, match="only odd LRN sizes"):
        cnnkit_onnx.export(nn.LocalResponseNorm(4), str(tmp_path / "x.onnx"), (1, 4, 3, 3))

    class Odd(nn.Layer):
        def forward(self, x):
            return x
    with pytest.raises(TypeError, match="no ONNX exporter for this layer type"):
        cnnkit_onnx.export(nn.Sequential(Odd()), str(tmp_path / "x.onnx"), (1, 3))
    assert not (tmp_path / "x.onnx").exists()


ZOO = [("lenet5", 1, 32), ("lenet5_modern", 1, 28), ("cnn", 1, 28), ("cnn_bn", 1, 28), ("resnet20", 3, 32),
       ("resnet18", 3, 32), ("mobilenet_v1", 3, 32), ("mobilenet_v2", 3, 32), ("googlenet_torchvision", 3, 32),
       ("resnet50", 3, 32)]


@pytest.mark.parametrize("name,c,size", ZOO, ids=[z[0] for z in ZOO])
def test_zoo_export(name, c, size, tmp_path, rng):
    model = models.get(name, num_classes=10, in_channels=c, rng=np.random.default_rng(0))
    _check(model, (1, c, size, size), tmp_path, rng)
    # the file imports back into the same function
    back = cnnkit_onnx.load(str(tmp_path / "m.onnx"))
    x = rng.standard_normal((1, c, size, size)).astype(np.float32)
    np.testing.assert_allclose(back(x), model(x), rtol=0, atol=1e-5 * max(1.0, float(np.abs(model(x)).max())))


# The rest of the zoo: the same check, so that every registered model is exported at least once.
# Input sizes: 32x32 where the model takes it; the paper AlexNet and GoogLeNet have fixed-size
# heads (227 and 224). The big VGG/AlexNet classifiers (100M+ weights) make these the slow
# ones: about 20 s per VGG, 7 s per AlexNet.
REST = [("alexnet", 3, 227), ("alexnet_torchvision", 3, 64), ("vgg_a", 3, 32), ("vgg_a_lrn", 3, 32),
        ("vgg_b", 3, 32), ("vgg_c", 3, 32), ("vgg_d", 3, 32), ("vgg_e", 3, 32), ("googlenet", 3, 224),
        ("resnet32", 3, 32), ("resnet56", 3, 32), ("resnet34", 3, 32), ("resnet101", 3, 32),
        ("resnet152", 3, 32)]


def test_every_zoo_model_is_covered():
    covered = {z[0] for z in ZOO + REST}
    assert covered >= set(models.names()) - {"vgg11", "vgg13", "vgg16", "vgg19"}  # aliases of vgg_a/b/d/e


@pytest.mark.parametrize("name,c,size", REST, ids=[z[0] for z in REST])
def test_zoo_export_rest(name, c, size, tmp_path, rng):
    model = models.get(name, num_classes=10, in_channels=c, rng=np.random.default_rng(0))
    _check(model, (1, c, size, size), tmp_path, rng)
