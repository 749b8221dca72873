import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnkit.data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, Resize, ToFloat


def test_to_float_known_values():
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    y = ToFloat()(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y[0, 0, 0, 0] == 0.0 and y[0, 0, -1, -1] == 1.0
    np.testing.assert_array_equal(y.ravel(), np.arange(256, dtype=np.float32) / np.float32(255))  # as ToTensor
    with pytest.raises(TypeError, match="ToFloat: expected uint8.*dtype='float32'"):
        ToFloat()(y)
    with pytest.raises(ValueError, match=r"ToFloat: expected a batch of shape \(B, C, H, W\)"):
        ToFloat()(x[0])


def test_normalize_matches_torchvision_formula():
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 5, 6), dtype=np.float32)
    before = x.copy()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    y = Normalize(mean, std)(x)
    # torchvision.transforms.functional.normalize: tensor.sub_(mean[:, None, None]).div_(std[:, None, None])
    ref = torch.from_numpy(x.copy()).sub_(torch.tensor(mean)[:, None, None]).div_(torch.tensor(std)[:, None, None])
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-6, atol=1e-6)
    # known answer: (1 - 0.5) / 0.25 = 2
    np.testing.assert_array_equal(Normalize([0.5], [0.25])(np.ones((1, 1, 2, 2), np.float64)), np.full((1, 1, 2, 2), 2.0))
    np.testing.assert_array_equal(x, before)  # the input is untouched


@pytest.mark.parametrize("args, x, exc, match", [
    (((0.5,), (0.5,)), np.zeros((1, 1, 2, 2), np.uint8), TypeError, "apply ToFloat"),
    (((0.5, 0.5), (0.5, 0.5)), np.zeros((1, 3, 2, 2), np.float32), ValueError, "number of channels"),
])
def test_normalize_errors(args, x, exc, match):
    with pytest.raises(exc, match=match):
        Normalize(*args)(x)


def test_normalize_constructor_errors():
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize([0.5], [0.0])
    with pytest.raises(ValueError, match="one value per channel"):
        Normalize([0.5, 0.5], [1.0])


def test_random_crop_known_answer_padding():
    x = np.arange(9, dtype=np.uint8).reshape(1, 1, 3, 3)
    # a 5x5 crop of the 1-padded 3x3 image has only one place: the whole padded image
    y = RandomCrop(5, padding=1)(x, np.random.default_rng(0))
    np.testing.assert_array_equal(y[0, 0], [[0, 0, 0, 0, 0], [0, 0, 1, 2, 0], [0, 3, 4, 5, 0], [0, 6, 7, 8, 0],
                                           [0, 0, 0, 0, 0]])


def test_random_crop_offsets_per_image_on_arange():
    B, C, H, W, h, w, p = 64, 2, 6, 7, 4, 3, 2
    base = np.arange(H * W).reshape(H, W) + 1  # +1: padding zeros stay distinguishable
    x = np.stack([np.stack([base + 1000 * c for c in range(C)]) for _ in range(B)]).astype(np.int32)
    y = RandomCrop((h, w), padding=p)(x, np.random.default_rng(7))
    assert y.shape == (B, C, h, w) and y.dtype == np.int32
    twin = np.random.default_rng(7)
    top = twin.integers(0, H + 2 * p - h + 1, size=B)
    left = twin.integers(0, W + 2 * p - w + 1, size=B)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    for b in range(B):  # loop oracle: slice the padded image at the documented offsets
        np.testing.assert_array_equal(y[b], xp[b, :, top[b]:top[b] + h, left[b]:left[b] + w])
    assert len(set(zip(top.tolist(), left.tolist()))) > 10  # offsets differ between images
    assert top.min() == 0 and top.max() == H + 2 * p - h  # the full range of offsets is used
    # the same offset applies to every channel of an image
    np.testing.assert_array_equal(np.where(y[:, 1] > 0, y[:, 1] - 1000, 0), y[:, 0])


def test_random_crop_errors_and_no_rng():
    x = np.zeros((1, 1, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="crop is larger than the padded image"):
        RandomCrop(7, padding=1)(x, np.random.default_rng(0))
    with pytest.raises(TypeError, match="needs a numpy.random.Generator"):
        RandomCrop(2)(x)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        RandomCrop(2, padding=-1)


def test_random_horizontal_flip():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x, np.random.default_rng(0)), x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x, np.random.default_rng(0)), x)
    assert RandomHorizontalFlip(p=1.0)(x, np.random.default_rng(0))[0, 0, 0].tolist() == [4, 3, 2, 1, 0]
    x = np.arange(100 * 6).reshape(100, 1, 1, 6)
    before = x.copy()
    y = RandomHorizontalFlip()(x, np.random.default_rng(3))
    flip = np.random.default_rng(3).random(100) < 0.5
    np.testing.assert_array_equal(y[flip], x[flip][..., ::-1])
    np.testing.assert_array_equal(y[~flip], x[~flip])
    assert 20 < flip.sum() < 80
    np.testing.assert_array_equal(x, before)  # the input is untouched
    with pytest.raises(TypeError, match="RandomHorizontalFlip: a random transform needs"):
        RandomHorizontalFlip()(x, None)


@pytest.mark.parametrize("shape, size", [((2, 3, 5, 7), (10, 14)), ((1, 2, 8, 8), (3, 5)), ((2, 1, 4, 6), (4, 6)),
                                         ((1, 1, 1, 1), (3, 2)), ((1, 3, 9, 4), (9, 13))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resize_matches_torch_bilinear(shape, size, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    y = Resize(size)(x)
    ref = TF.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False).numpy()
    assert y.dtype == dtype and y.shape == shape[:2] + size
    np.testing.assert_allclose(y, ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_resize_known_answer_and_uint8():
    x = np.array([[[[0.0, 4.0], [8.0, 12.0]]]])
    y = Resize(4)(x)
    # half-pixel centers: source coordinate of output column j is (j + 0.5) / 2 - 0.5, clamped to [0, 1]
    np.testing.assert_allclose(y[0, 0, 0], [0, 1, 3, 4])
    np.testing.assert_allclose(y[0, 0, :, 0], [0, 2, 6, 8])
    xu = np.random.default_rng(1).integers(0, 256, (2, 3, 5, 6), dtype=np.uint8)
    yu = Resize((7, 3))(xu)
    assert yu.dtype == np.uint8
    np.testing.assert_array_equal(yu, np.clip(np.rint(Resize((7, 3))(xu.astype(np.float32))), 0, 255))
    with pytest.raises(ValueError, match="size must be a positive int"):
        Resize((0, 3))


def test_compose_passes_one_generator_in_order():
    x = np.random.default_rng(0).integers(0, 256, (8, 3, 6, 6), dtype=np.uint8)
    t = Compose([RandomCrop(4, padding=1), RandomHorizontalFlip(), ToFloat(), Normalize([0.5] * 3, [0.25] * 3)])
    y = t(x, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    ref = RandomCrop(4, padding=1)(x, rng)
    ref = RandomHorizontalFlip()(ref, rng)
    ref = (ref.astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    assert y.dtype == np.float32
    assert "RandomCrop(size=(4, 4), padding=1)" in repr(t) and "RandomHorizontalFlip()" in repr(t)
    with pytest.raises(TypeError, match="transform 0 is not callable"):
        Compose([3])


def test_repeat_channels_grey_to_rgb():
    from cnnkit.data import RepeatChannels
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)
    y = RepeatChannels(3)(x)
    assert y.shape == (2, 3, 3, 3)
    for c in range(3):
        np.testing.assert_array_equal(y[:, c], x[:, 0])
    with pytest.raises(ValueError, match="one-channel"):
        RepeatChannels(3)(y)
    with pytest.raises(ValueError, match="positive int"):
        RepeatChannels(0)
