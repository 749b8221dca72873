"""Transfer learning: freeze / unfreeze, replace_classifier, and the backward pruning that
frozen layers allow (checked against PyTorch and against the unpruned backward)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from cnnkit import models
from cnnkit.functional.conv import conv2d_backward, conv2d_forward
from cnnkit.functional.dense import linear_backward, linear_forward
from cnnkit.nn import (BatchNorm2d, Conv2d, CrossEntropyLoss, Flatten, Linear, MaxPool2d, ReLU,
                       Sequential)
from tests.helpers import assert_close


def small_net(rng, dtype=np.float64):
    return Sequential(OrderedDict(
        features=Sequential(Conv2d(1, 4, 3, padding=1, rng=rng, dtype=dtype), BatchNorm2d(4, dtype=dtype), ReLU(),
                            MaxPool2d(2), Conv2d(4, 6, 3, rng=rng, dtype=dtype), ReLU()),
        flatten=Flatten(),
        classifier=Sequential(Linear(6 * 5 * 5, 16, rng=rng, dtype=dtype), ReLU(),
                              Linear(16, 3, rng=rng, dtype=dtype))))


def grads(model):
    return {n: None if p.grad is None else p.grad.copy() for n, p in model.named_parameters()}


def step(model, x, y, needs_input_grad=True):
    loss = CrossEntropyLoss()
    loss(model(x), y)
    model.zero_grad()
    model.needs_input_grad = needs_input_grad
    return model.backward(loss.backward())


# ---- freeze / unfreeze ------------------------------------------------------------
def test_freeze_all_and_unfreeze_all():
    m = small_net(np.random.default_rng(0))
    total = m.num_parameters()
    assert m.freeze() is m
    assert m.num_parameters(trainable_only=True) == 0
    m.unfreeze()
    assert m.num_parameters(trainable_only=True) == total


def test_freeze_up_to_is_inclusive_in_definition_order():
    m = small_net(np.random.default_rng(0))
    m.freeze(up_to="features.1")
    frozen = sorted(n for n, p in m.named_parameters() if not p.requires_grad)
    assert frozen == ["features.0.bias", "features.0.weight", "features.1.bias", "features.1.weight"]
    m.unfreeze()
    m.freeze(up_to="features")  # a container: it and all its descendants
    assert {n.split(".")[0] for n, p in m.named_parameters() if not p.requires_grad} == {"features"}
    assert all(p.requires_grad for n, p in m.named_parameters() if n.startswith("classifier"))


def test_unfreeze_from_a_module_on():
    m = models.get("resnet20", rng=np.random.default_rng(0))
    m.freeze().unfreeze("layer3")
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "fc"}


def test_freeze_unknown_name_is_a_clear_error():
    m = small_net(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"no module of this name.*features, flatten, classifier"):
        m.freeze(up_to="feature.9")
    with pytest.raises(ValueError, match="no module of this name"):
        m.unfreeze("nope")
    assert m.num_parameters(trainable_only=True) == m.num_parameters()  # nothing changed


def test_frozen_batchnorm_keeps_running_statistics_under_train():
    rng = np.random.default_rng(1)
    m = small_net(rng)
    bn = m.features[1]
    m.freeze(up_to="features.1")
    m.train()
    assert not bn.training
    before = bn.running_mean.copy(), bn.running_var.copy()
    x = rng.standard_normal((4, 1, 14, 14)) * 3 + 2
    m(x)
    np.testing.assert_array_equal(bn.running_mean, before[0])
    np.testing.assert_array_equal(bn.running_var, before[1])
    assert m.classifier.training
    m.unfreeze()
    m.train()
    assert bn.training
    m(x)
    assert not np.array_equal(bn.running_mean, before[0])


# ---- gradients with frozen layers: PyTorch as the oracle ----------------------------
def torch_twin(m):
    import torch
    t = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(150, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).double()
    ours = list(m.state_dict().values())
    theirs = t.state_dict()
    for (k, v), a in zip(theirs.items(), ours):
        v.copy_(torch.from_numpy(np.asarray(a)))
    return t


@pytest.mark.parametrize("up_to,torch_frozen", [("features.0", 1), ("features.4", 5), ("classifier.0", 8)])
def test_gradients_of_a_partly_frozen_net_match_torch(up_to, torch_frozen):
    import torch
    rng = np.random.default_rng(2)
    m = small_net(rng)
    t = torch_twin(m)
    m.freeze(up_to=up_to).train()
    for i, layer in enumerate(t):
        if i < torch_frozen:
            for p in layer.parameters():
                p.requires_grad_(False)
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.eval()  # cnnkit's rule for frozen BatchNorm, set by hand in torch
    x = rng.standard_normal((5, 1, 14, 14))
    y = rng.integers(0, 3, 5)
    dx = step(m, x, y, needs_input_grad=False)
    assert dx is None
    out = t(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(out, torch.from_numpy(y)).backward()
    ours = grads(m)
    for (name, g), tp in zip(ours.items(), t.parameters()):
        if tp.requires_grad:
            assert_close(g, tp.grad.numpy(), rtol=1e-10, atol=1e-12, what=name)
        else:
            assert g is None, name


def test_pruned_backward_skips_frozen_layers_and_the_first_dx():
    rng = np.random.default_rng(3)
    m = small_net(rng)
    calls = []
    for name, layer in m.named_modules():
        if not layer._children:
            orig = layer.backward
            layer.__dict__["backward"] = (lambda o, n: (lambda dy: (calls.append(n), o(dy))[1]))(orig, name)
    x, y = rng.standard_normal((2, 1, 14, 14)), np.array([0, 2])
    step(m, x, y, needs_input_grad=False)
    assert calls[-1] == "features.0" and m.features[0].needs_input_grad is False
    calls.clear()
    m.freeze(up_to="features.4")
    step(m, x, y, needs_input_grad=False)
    assert calls == ["classifier.2", "classifier.1", "classifier.0"]  # frozen features: not visited
    assert m.classifier[0].needs_input_grad is False  # nothing trainable below it
    calls.clear()
    step(m, x, y, needs_input_grad=True)  # a caller that wants dx gets it through frozen layers
    assert calls[-1] == "features.0"


@pytest.mark.parametrize("name,up_to", [("resnet20", "layer2"), ("googlenet_torchvision", "inception4e")])
def test_graph_models_pruned_gradients_equal_the_full_backward(name, up_to):
    rng = np.random.default_rng(4)
    m = models.get(name, num_classes=4, in_channels=3 if "google" in name else 1,
                   rng=rng, dtype=np.float64)
    size = 64 if "google" in name else 16
    x = rng.standard_normal((2, m.config["in_channels"], size, size))
    y = np.array([1, 3])
    m.eval()  # no dropout, fixed BatchNorm: both passes see the same function
    full_dx = step(m, x, y, needs_input_grad=True)
    full = grads(m)
    assert full_dx.shape == x.shape
    m.freeze(up_to=up_to).eval()
    assert step(m, x, y, needs_input_grad=False) is None
    pruned = grads(m)
    checked = 0
    for n, p in m.named_parameters():
        if p.requires_grad:
            assert_close(pruned[n], full[n], rtol=1e-12, atol=1e-14, what=n)
            checked += 1
        else:
            assert pruned[n] is None, n
    assert checked > 0


# ---- the kernels' output masks ----------------------------------------------------
@pytest.mark.parametrize("groups,cin", [(1, 3), (4, 4)])  # groups=4 with 4 channels: depthwise path
def test_conv_backward_masks_match_the_full_backward(groups, cin):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, cin, 7, 7))
    w = rng.standard_normal((4, cin // groups, 3, 3))
    b = rng.standard_normal(4)
    y, cache = conv2d_forward(x, w, b, stride=1, padding=1, groups=groups)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward(dy, cache)
    dx2, dw2, db2 = conv2d_backward(dy, cache, need_dx=False)
    assert dx2 is None
    assert_close(dw2, dw, rtol=0, atol=0)
    assert_close(db2, db, rtol=0, atol=0)
    dx3, dw3, _ = conv2d_backward(dy, cache, need_dw=False)
    assert dw3 is None
    assert_close(dx3, dx, rtol=0, atol=0)


def test_linear_backward_masks():
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((3, 5)), rng.standard_normal((2, 5))
    y, cache = linear_forward(x, w, None)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = linear_backward(dy, cache)
    a = linear_backward(dy, cache, need_dx=False)
    b = linear_backward(dy, cache, need_dw=False)
    assert a[0] is None and b[1] is None
    np.testing.assert_array_equal(a[1], dw)
    np.testing.assert_array_equal(b[0], dx)


# ---- replace_classifier -------------------------------------------------------------
def test_replace_classifier_resnet18_keeps_features_and_rebuilds_from_config():
    rng = np.random.default_rng(7)
    m = models.get("resnet18", num_classes=1000, in_channels=3, rng=rng)
    before = {k: v.copy() for k, v in m.state_dict().items() if not k.startswith("fc.")}
    assert m.replace_classifier(5, rng=rng) is m
    assert m.fc.out_features == 5 and m.fc.in_features == 512 and m.fc.path == "fc"
    assert m.config["num_classes"] == 5
    names = [n for n, _ in m.named_children()]
    assert names[-1] == "fc"  # the forward order is kept
    for k, v in m.state_dict().items():
        if k in before:
            np.testing.assert_array_equal(v, before[k])
    m.eval()
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert m(x).shape == (1, 5)
    twin = models.from_config(m.config)
    twin.load_state_dict(m.state_dict())  # strict: the config describes the new model
    twin.eval()
    np.testing.assert_array_equal(twin(x), m(x))


def test_replace_classifier_in_a_nested_sequential_keeps_the_order():
    m = models.get("alexnet_torchvision", num_classes=1000, in_channels=3, rng=np.random.default_rng(0))
    m.replace_classifier(7)
    assert [n for n, _ in m.classifier.named_children()] == [str(i) for i in range(7)]
    assert m.classifier[6].out_features == 7 and m.classifier[4].out_features == 4096


def test_replace_classifier_googlenet_replaces_the_auxiliary_heads_too():
    rng = np.random.default_rng(8)
    m = models.get("googlenet", num_classes=1000, in_channels=3, aux_logits=True, rng=rng)
    m.replace_classifier(3, rng=rng)
    assert m.fc.out_features == 3 and m.aux1.fc2.out_features == 3 and m.aux2.fc2.out_features == 3
    assert m.aux1.fc1.out_features == 1024


def test_replace_classifier_lenet5_gets_new_prototypes():
    rng = np.random.default_rng(9)
    m = models.get("lenet5", rng=rng)
    m.replace_classifier(4, rng=rng)
    rbf = m.classifier[2]
    assert rbf.weight.shape == (4, 84) and set(np.unique(rbf.weight)) <= {-1.0, 1.0}
    assert m(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 4)


def test_replace_classifier_then_train_only_the_head():
    rng = np.random.default_rng(10)
    m = models.get("cnn", rng=rng)
    m.replace_classifier(5, rng=rng)
    m.freeze().unfreeze(m.classifier[-1].path)
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable == [f"{m.classifier[-1].path}.weight", f"{m.classifier[-1].path}.bias"]


def test_replace_classifier_bad_input():
    m = small_net(np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_classes must be positive"):
        m.replace_classifier(0)
    with pytest.raises(TypeError, match="num_classes must be an int"):
        m.replace_classifier(2.5)
    bare = Sequential(ReLU())
    with pytest.raises(ValueError, match="no layer with weights"):
        bare.replace_classifier(3)
