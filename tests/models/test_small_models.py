"""The model registry and the first models (lenet5_modern, cnn, cnn_bn): names, errors,
configs, output shapes, hand-counted parameters, a few SGD steps on real
Fashion-MNIST, and logits/gradients equal to an equivalent torch.nn model."""

import json
import os
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

from cnnkit import models, nn
from cnnkit.optim import SGD
from tests.helpers import assert_close

FMNIST = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


SMALL_MODELS = ("cnn", "cnn_bn", "lenet5_modern")  # the 28x28/32x32 models (the zoo's 224x224 ones test apart)


def rng(seed=0):
    return np.random.default_rng(seed)


# ---- registry ------------------------------------------------------------------------
def test_names_are_sorted_and_hold_the_first_models():
    names = models.names()
    assert names == sorted(names)
    assert set(SMALL_MODELS) <= set(names)


def test_get_unknown_name_lists_the_known_names():
    known = ", ".join(models.names())
    with pytest.raises(ValueError, match=re.escape(f"models.get: unknown model name; known names: {known}. "
                                                   "Received: name='lenet6'")):
        models.get("lenet6")


def test_register_a_new_builder_then_get_it(monkeypatch):
    monkeypatch.setattr(models, "_BUILDERS", dict(models._BUILDERS))  # leave the real registry alone

    @models.register("tiny")
    def tiny(num_classes=10, in_channels=1, width=4, *, rng=None, dtype=np.float32):
        return nn.Sequential(nn.Conv2d(in_channels, width, 3, rng=rng, dtype=dtype), nn.Flatten())

    assert "tiny" in models.names()
    m = models.get("tiny", in_channels=2, width=3, rng=rng())
    assert m.config == {"name": "tiny", "num_classes": 10, "in_channels": 2, "width": 3, "dtype": "float32"}
    assert tiny(width=5).config["width"] == 5  # calling the builder directly records the config too
    with pytest.raises(ValueError, match="a model of this name is registered already"):
        models.register("tiny")(tiny)
    with pytest.raises(TypeError, match="a model builder must accept num_classes"):
        models.register("bad")(lambda in_channels=1: None)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_config_is_json_and_rebuilds_the_same_architecture(name):
    m = models.get(name, num_classes=7, in_channels=3, rng=rng(1))
    cfg = json.loads(json.dumps(m.config))  # plain JSON, as a checkpoint's sidecar stores it
    assert cfg["name"] == name and cfg["num_classes"] == 7 and cfg["in_channels"] == 3
    again = models.from_config(cfg, rng=rng(2))
    assert again.config == m.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    again.load_state_dict(m.state_dict())  # a checkpoint of one loads into the other


# ---- shapes and parameters -----------------------------------------------------------
@pytest.mark.parametrize("name", SMALL_MODELS)
@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_and_backward_shapes(name, size, in_channels):
    m = models.get(name, num_classes=7, in_channels=in_channels, rng=rng())
    x = rng(1).standard_normal((2, in_channels, size, size)).astype(np.float32)
    y = m(x)
    assert y.shape == (2, 7) and y.dtype == np.float32
    assert m.backward(np.ones_like(y)).shape == x.shape


def test_child_names_read_like_torchvision():
    keys = list(models.get("lenet5_modern", rng=rng()).state_dict())
    assert keys == ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
                    "classifier.0.weight", "classifier.0.bias", "classifier.2.weight", "classifier.2.bias",
                    "classifier.4.weight", "classifier.4.bias"]
    bn_keys = list(models.get("cnn_bn", rng=rng()).state_dict())
    assert bn_keys[:5] == ["features.0.weight", "features.1.weight", "features.1.bias",
                           "features.1.running_mean", "features.1.running_var"]


def test_lenet5_modern_parameter_count_by_hand():
    # W = K*K*C*N, B = N for a conv; out*in + out for a linear layer.
    c1 = 5 * 5 * 1 * 6 + 6          # 156
    c3 = 5 * 5 * 6 * 16 + 16        # 2,416
    f5 = (16 * 5 * 5) * 120 + 120   # 48,120
    f6 = 120 * 84 + 84              # 10,164
    out = 84 * 10 + 10              # 850
    assert c1 + c3 + f5 + f6 + out == 61_706
    assert models.get("lenet5_modern", rng=rng()).num_parameters() == 61_706
    # 3 input channels and 7 classes change only C1 and the output layer.
    c1_rgb = 5 * 5 * 3 * 6 + 6      # 456
    out_7 = 84 * 7 + 7              # 595
    assert models.get("lenet5_modern", num_classes=7, in_channels=3, rng=rng()).num_parameters() == \
        c1_rgb + c3 + f5 + f6 + out_7 == 61_751


def test_cnn_parameter_count_by_hand():
    conv = (3 * 3 * 1 * 32 + 32) + (3 * 3 * 32 * 64 + 64)  # W = K*K*C*N, B = N
    fc = (64 * 7 * 7) * 128 + 128 + 128 * 10 + 10
    m = models.get("cnn", rng=rng())
    assert m.num_parameters() == conv + fc == 421_642


def test_cnn_bn_parameter_count_by_hand():
    conv = 3 * 3 * 1 * 32 + 3 * 3 * 32 * 32 + 3 * 3 * 32 * 64 + 3 * 3 * 64 * 64  # no conv biases
    bn = 2 * (32 + 32 + 64 + 64)                                                   # gamma and beta
    fc = (64 * 7 * 7) * 256 + 256 + 256 * 10 + 10
    m = models.get("cnn_bn", channels=(32, 64), hidden=256, rng=rng())
    assert m.num_parameters() == conv + bn + fc


# ---- training on real data -----------------------------------------------------------
@pytest.mark.skipif(not os.path.exists(FMNIST), reason="Debian's dataset-fashion-mnist is not installed")
def test_a_few_sgd_steps_on_real_fashion_mnist_lower_the_loss():
    from cnnkit.data.idx import read_idx
    x = read_idx(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz"))[:256]
    y = read_idx(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz"))[:256].astype(np.int64)
    x = ((x.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]  # (256, 1, 28, 28)
    m = models.get("lenet5_modern", rng=rng())
    loss_fn = nn.CrossEntropyLoss()
    opt = SGD(m.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):  # 5 epochs over 256 images in batches of 64: 20 steps
        for i in range(0, 256, 64):
            opt.zero_grad()
            losses.append(float(loss_fn(m(x[i:i + 64]), y[i:i + 64])))
            m.backward(loss_fn.backward())
            opt.step()
    assert losses[0] > 2.0  # about ln(10) = 2.30 at the start
    assert np.mean(losses[-4:]) < 0.85 * np.mean(losses[:4])  # measured: 1.79 vs 2.31 (0.77)


# ---- equal to torch.nn ---------------------------------------------------------------
def torch_lenet5_modern(num_classes=10, in_channels=1):
    T = torch.nn
    return T.Sequential(OrderedDict(
        features=T.Sequential(T.Conv2d(in_channels, 6, 5, padding=2), T.ReLU(), T.MaxPool2d(2),
                              T.Conv2d(6, 16, 5), T.ReLU(), T.MaxPool2d(2)),
        avgpool=T.AdaptiveAvgPool2d(5),
        flatten=T.Flatten(),
        classifier=T.Sequential(T.Linear(400, 120), T.ReLU(), T.Linear(120, 84), T.ReLU(),
                                T.Linear(84, num_classes))))


def load_into_torch(module, ours):
    state = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    module.load_state_dict(state, strict=True)  # every name must match, both ways
    return module


@pytest.mark.parametrize("size", [28, 32])
def test_lenet5_modern_matches_torch_logits_and_gradients(size):
    m = models.get("lenet5_modern", num_classes=10, in_channels=3, rng=rng())
    t = load_into_torch(torch_lenet5_modern(10, 3), m)
    x = rng(1).standard_normal((4, 3, size, size)).astype(np.float32)
    y = np.array([0, 3, 9, 3])
    loss_fn = nn.CrossEntropyLoss()
    logits = m(x)
    loss = loss_fn(logits, y)
    m.backward(loss_fn.backward())
    t_logits = t(torch.from_numpy(x))
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(y))
    t_loss.backward()
    assert_close(logits, t_logits.detach().numpy(), rtol=1e-4, atol=1e-5, what="logits")
    assert_close(float(loss), t_loss.item(), rtol=1e-5, atol=1e-6, what="loss")
    grads = dict(t.named_parameters())
    for name, p in m.named_parameters():
        assert_close(p.grad, grads[name].grad.numpy(), rtol=1e-3, atol=1e-5, what=name)


def torch_twin(layer):
    """An equivalent torch.nn module of a cnnkit Sequential of standard layers."""
    T = torch.nn
    if isinstance(layer, nn.Sequential):
        return T.Sequential(OrderedDict((k, torch_twin(c)) for k, c in layer.named_children()))
    if isinstance(layer, nn.Conv2d):
        return T.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                        bias=layer.bias is not None)
    if isinstance(layer, nn.Linear):
        return T.Linear(layer.in_features, layer.out_features)
    if isinstance(layer, nn.BatchNorm2d):
        return T.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, nn.MaxPool2d):
        return T.MaxPool2d(2)
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return T.AdaptiveAvgPool2d(layer.output_size)
    simple = {nn.ReLU: T.ReLU, nn.Flatten: T.Flatten, nn.Dropout: T.Identity}
    return simple[type(layer)]()


@pytest.mark.parametrize("name", ["cnn", "cnn_bn"])
def test_small_cnns_match_torch_in_eval_mode(name):
    m = models.get(name, num_classes=10, in_channels=1, rng=rng())
    x = rng(1).standard_normal((8, 1, 28, 28)).astype(np.float32)
    m(x)  # one training-mode forward moves BatchNorm's running statistics off 0/1
    t = load_into_torch(torch_twin(m), m).eval()
    m.eval()
    assert_close(m(x), t(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5, what=name)


def test_unknown_option_and_non_json_option_are_named():
    with pytest.raises(TypeError, match=r"models 'lenet5_modern': got an unexpected keyword argument 'width'"):
        models.get("lenet5_modern", width=3)
    with pytest.raises(TypeError, match=r"models 'cnn': model options must be JSON values .* Received: option='set'"):
        models.get("cnn", channels={8, 16})
