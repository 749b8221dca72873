"""AlexNet (Krizhevsky et al. 2012) and VGG (Simonyan & Zisserman 2014): exact parameter
counts (the issue's table and the lecture's AlexNet layer by layer), layer placement,
torchvision's state_dict keys (written out from torchvision's definitions), and one
forward pass each at the native size.

Counting and key tests only need shapes, so they build the models with the weight init
replaced by a zero-memory broadcast (``cheap_init``): VGG-E's 143M random numbers take
seconds on the shared cores. The forward tests build with the real init."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

import cnnkit.models.alexnet  # noqa: F401  (registers the models, whatever the import order)
import cnnkit.models.vgg  # noqa: F401
from cnnkit import models, nn
from cnnkit.nn import conv as conv_module
from cnnkit.nn import linear as linear_module
from tests.helpers import assert_close


def rng(seed=0):
    return np.random.default_rng(seed)


def _zeros_view(shape, fan_in, rng, dtype):
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(shape))


@pytest.fixture(scope="module")
def cheap():
    """``build(name, **options)`` with a shape-only init (1000 classes, 3 input channels)."""
    built = {}

    def build(name, **options):
        key = (name, tuple(sorted(options.items())))
        if key not in built:
            with pytest.MonkeyPatch.context() as mp:  # patched only while building
                mp.setattr(conv_module, "uniform_fan_in", _zeros_view)
                mp.setattr(linear_module, "uniform_fan_in", _zeros_view)
                built[key] = models.get(name, num_classes=1000, in_channels=3, **options)
        return built[key]

    return build


def counts(model):
    return {name: p.size for name, p in model.named_parameters()}


def layer_counts(model, prefix):
    """Weight + bias count of each parametrized child of ``model.<prefix>``, in order."""
    out = {}
    for name, p in model.named_parameters():
        if name.startswith(prefix + "."):
            layer = name.rsplit(".", 1)[0]
            out[layer] = out.get(layer, 0) + p.size
    return list(out.values())


def test_cheap_init_counts_like_the_real_init(cheap):
    real = models.get("alexnet_torchvision", num_classes=1000, in_channels=3, rng=rng())
    assert counts(cheap("alexnet_torchvision")) == counts(real)
    assert np.all(cheap("alexnet_torchvision").features[0].weight.data == 0)
    assert np.ptp(real.features[0].weight.data) > 0  # the patch is gone outside cheap()
    assert real.num_parameters() == 61_100_840


# ---- AlexNet -----------------------------------------------------------------------------
def test_alexnet_paper_two_towers_parameter_count(cheap):
    m = cheap("alexnet")
    assert layer_counts(m, "features") == [34_944, 307_456, 885_120, 663_936, 442_624]
    assert layer_counts(m, "classifier") == [37_752_832, 16_781_312, 4_097_000]
    assert m.num_parameters() == 60_965_224


def test_alexnet_single_tower_matches_the_lecture_layer_by_layer(cheap):
    m = cheap("alexnet", groups=1)
    # the lecture: W = K*K*C*N, B = N
    assert layer_counts(m, "features") == [11 * 11 * 3 * 96 + 96, 5 * 5 * 96 * 256 + 256,
                                           3 * 3 * 256 * 384 + 384, 3 * 3 * 384 * 384 + 384,
                                           3 * 3 * 384 * 256 + 256]
    assert layer_counts(m, "features") == [34_944, 614_656, 885_120, 1_327_488, 884_992]
    assert layer_counts(m, "classifier") == [37_752_832, 16_781_312, 4_097_000]
    assert m.num_parameters() == 62_378_344


def test_alexnet_layers_are_the_papers(cheap):
    m = cheap("alexnet")
    f = m.features
    convs = [f[i] for i in (0, 4, 8, 10, 12)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]          # conv3 reads both towers
    assert f[4].weight.shape == (256, 48, 5, 5) and f[8].weight.shape == (384, 256, 3, 3)
    assert f[0].stride == (4, 4) and f[0].kernel_size == (11, 11)
    for i in (2, 6):                                               # LRN after conv1 and conv2's ReLU
        lrn = f[i]
        assert isinstance(lrn, nn.LocalResponseNorm)
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, pytest.approx(5e-4), 0.75, 2.0)
    for i in (3, 7, 14):                                           # overlapping pooling 3/2
        assert isinstance(f[i], nn.MaxPool2d) and f[i].kernel_size == 3 and f[i].stride == 2
    drops = [c for c in m.classifier.children() if isinstance(c, nn.Dropout)]
    assert [d.p for d in drops] == [0.5, 0.5]
    with pytest.raises(ValueError, match="groups must be 1"):
        models.get("alexnet", groups=4)


@pytest.mark.parametrize("groups", [2, 1])
def test_alexnet_forward_at_227(groups):
    m = models.get("alexnet", num_classes=1000, in_channels=3, groups=groups, rng=rng()).eval()
    x = rng(1).standard_normal((1, 3, 227, 227)).astype(np.float32)
    y = m(x)
    assert y.shape == (1, 1000) and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert m.features(x).shape == (1, 256, 6, 6)


def test_alexnet_torchvision_keys_and_count(cheap):
    m = cheap("alexnet_torchvision")
    expected = [f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")] + \
               [f"classifier.{i}.{p}" for i in (1, 4, 6) for p in ("weight", "bias")]
    assert list(m.state_dict()) == expected
    assert [m.features[i].out_channels for i in (0, 3, 6, 8, 10)] == [64, 192, 384, 256, 256]
    assert m.num_parameters() == 61_100_840


def torch_alexnet(num_classes):
    """torchvision.models.AlexNet, written out in torch.nn (torchvision is not installed)."""
    T = torch.nn
    return T.Sequential(OrderedDict(
        features=T.Sequential(
            T.Conv2d(3, 64, 11, stride=4, padding=2), T.ReLU(), T.MaxPool2d(3, 2),
            T.Conv2d(64, 192, 5, padding=2), T.ReLU(), T.MaxPool2d(3, 2),
            T.Conv2d(192, 384, 3, padding=1), T.ReLU(), T.Conv2d(384, 256, 3, padding=1), T.ReLU(),
            T.Conv2d(256, 256, 3, padding=1), T.ReLU(), T.MaxPool2d(3, 2)),
        avgpool=T.AdaptiveAvgPool2d((6, 6)), flatten=T.Flatten(),
        classifier=T.Sequential(T.Dropout(), T.Linear(9216, 4096), T.ReLU(), T.Dropout(), T.Linear(4096, 4096),
                                T.ReLU(), T.Linear(4096, num_classes))))


def torch_vgg11():
    """torchvision.models.vgg11 (make_layers(cfgs['A'])), written out in torch.nn."""
    T = torch.nn
    layers, c = [], 3
    for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if v == "M":
            layers.append(T.MaxPool2d(2, 2))
        else:
            layers += [T.Conv2d(c, v, 3, padding=1), T.ReLU()]
            c = v
    return T.Sequential(OrderedDict(
        features=T.Sequential(*layers), avgpool=T.AdaptiveAvgPool2d((7, 7)), flatten=T.Flatten(),
        classifier=T.Sequential(T.Linear(25088, 4096), T.ReLU(), T.Dropout(), T.Linear(4096, 4096), T.ReLU(),
                                T.Dropout(), T.Linear(4096, 1000))))


def load_into_torch(module, ours):
    state = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    module.load_state_dict(state, strict=True)  # every name and shape must match, both ways
    return module.eval()


def test_alexnet_torchvision_forward_at_224_equals_torch():
    m = models.get("alexnet_torchvision", num_classes=7, in_channels=3, rng=rng()).eval()
    x = rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    y = m(x)
    assert y.shape == (2, 7)
    with torch.no_grad():
        t = load_into_torch(torch_alexnet(7), m)(torch.from_numpy(x)).numpy()
    assert_close(y, t, rtol=1e-4, atol=1e-6, what="alexnet_torchvision logits")
    assert np.abs(t).max() > 1e-3  # logits are about 0.01 with the default init: atol 1e-6 is tight


# ---- VGG ---------------------------------------------------------------------------------
VGG_COUNTS = {"vgg_a": 132_863_336, "vgg_a_lrn": 132_863_336, "vgg_b": 133_047_848,
              "vgg_c": 133_638_952, "vgg_d": 138_357_544, "vgg_e": 143_667_240,
              "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240}


@pytest.mark.parametrize("name", sorted(VGG_COUNTS))
def test_vgg_parameter_counts(cheap, name):
    assert cheap(name).num_parameters() == VGG_COUNTS[name]


def test_vgg_conv_counts_per_configuration(cheap):
    # weight layers of Table 1: 11, 11, 13, 16, 16, 19 (convs + 3 FC)
    for name, layers in (("vgg_a", 11), ("vgg_a_lrn", 11), ("vgg_b", 13), ("vgg_c", 16), ("vgg_d", 16),
                         ("vgg_e", 19)):
        assert len([n for n in counts(cheap(name)) if n.endswith("weight")]) == layers, name


def test_vgg_c_has_1x1_convs_ending_the_last_three_blocks(cheap):
    f = cheap("vgg_c").features
    kernels = [layer.kernel_size[0] for layer in f.children() if isinstance(layer, nn.Conv2d)]
    assert kernels == [3, 3, 3, 3, 3, 3, 1, 3, 3, 1, 3, 3, 1]


def test_vgg_a_lrn_normalizes_after_the_first_conv(cheap):
    f = cheap("vgg_a_lrn").features
    assert isinstance(f[0], nn.Conv2d) and isinstance(f[1], nn.ReLU)
    assert isinstance(f[2], nn.LocalResponseNorm) and f[2].k == 2.0 and f[2].alpha == pytest.approx(5e-4)
    assert sum(isinstance(c, nn.LocalResponseNorm) for c in f.children()) == 1


def vgg_keys(conv_idx, bn_idx=()):
    keys = []
    for i in sorted(set(conv_idx) | set(bn_idx)):
        keys += [f"features.{i}.weight", f"features.{i}.bias"]
        if i in bn_idx:
            keys += [f"features.{i}.running_mean", f"features.{i}.running_var",
                     f"features.{i}.num_batches_tracked"]
    return keys + [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]


# torchvision.models.vgg: make_layers(cfgs["A"/"D"], batch_norm) numbers conv, [BN,] ReLU, pools
TORCHVISION_KEYS = {
    "vgg11": vgg_keys([0, 3, 6, 8, 11, 13, 16, 18]),
    "vgg16": vgg_keys([0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]),
    "vgg11_bn": vgg_keys([0, 4, 8, 11, 15, 18, 22, 25], [1, 5, 9, 12, 16, 19, 23, 26]),
    "vgg16_bn": vgg_keys([0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40],
                         [1, 4, 8, 11, 15, 18, 21, 25, 28, 31, 35, 38, 41]),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_KEYS))
def test_vgg_state_dict_keys_equal_torchvision(cheap, name):
    bn = name.endswith("_bn")
    m = cheap(name.removesuffix("_bn"), batch_norm=bn)
    assert list(m.state_dict()) == TORCHVISION_KEYS[name]
    if bn:  # torchvision: 132,868,840 (vgg11_bn) and 138,365,992 (vgg16_bn)
        assert m.num_parameters() == {"vgg11_bn": 132_868_840, "vgg16_bn": 138_365_992}[name]


def test_vgg_aliases_are_the_papers_configurations(cheap):
    for alias, paper in (("vgg11", "vgg_a"), ("vgg13", "vgg_b"), ("vgg16", "vgg_d"), ("vgg19", "vgg_e")):
        assert counts(cheap(alias)) == counts(cheap(paper))
    m = cheap("vgg16")
    assert m.config["name"] == "vgg16" and m.config["batch_norm"] is False
    assert isinstance(m.avgpool, nn.AdaptiveAvgPool2d)


@pytest.fixture(scope="module")
def vgg_a_real():
    return models.get("vgg_a", num_classes=1000, in_channels=3, rng=rng()).eval()


def test_vgg_a_forward_at_224(vgg_a_real):
    y = vgg_a_real(rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32))
    assert y.shape == (1, 1000) and y.dtype == np.float32 and np.all(np.isfinite(y))


def test_vgg_a_equals_torchvision_vgg11_with_the_same_weights(vgg_a_real):
    x = rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)  # the adaptive pool makes 64x64 work
    with torch.no_grad():
        t = load_into_torch(torch_vgg11(), vgg_a_real)(torch.from_numpy(x)).numpy()
    assert_close(vgg_a_real(x), t, rtol=1e-4, atol=1e-6, what="vgg_a vs torch vgg11 logits")
