import os

import numpy as np
import pytest

from cnnkit.data import ArrayDataset, DatasetError, DatasetNotFoundError, IDXError, load_dataset, search_paths
from cnnkit.data import datasets as dsmod
from cnnkit.data.idx import write_idx

from .fakes import write_mnist

FMNIST = "/usr/share/datasets/fashion-mnist"
needs_fmnist = pytest.mark.skipif(not os.path.exists(FMNIST), reason="Debian's dataset-fashion-mnist is not installed")


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No CNNKIT_DATA, and a home folder of our own, so only the places a test sets up exist."""
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture(scope="module")
def fmnist_train():
    return load_dataset("fashion-mnist", "train", root=FMNIST)


@needs_fmnist
def test_real_fashion_mnist(fmnist_train):
    ds = fmnist_train
    assert ds.name == "fashion-mnist" and len(ds) == 60000
    assert ds.images.shape == (60000, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
    assert ds.class_counts().tolist() == [6000] * 10
    image, label = ds[0]
    assert image.shape == (1, 28, 28) and label == 9  # the first training image is an ankle boot
    mean, std = ds.mean_std()
    np.testing.assert_allclose([mean[0], std[0]], [0.2860, 0.3530], atol=1e-4)  # the published statistics


@needs_fmnist
def test_real_fashion_mnist_test_split_found_via_debian(clean_env):
    assert search_paths("fashion-mnist")[-1] == FMNIST
    ds = load_dataset("fashion-mnist", split="test")  # no root: found in Debian's folder
    assert ds.images.shape == (10000, 1, 28, 28) and ds.class_counts().tolist() == [1000] * 10


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (False, True)])
def test_mnist_from_root(tmp_path, gz, dotted):
    want = write_mnist(tmp_path / "m", gz=gz, dotted=dotted)
    for split in ("train", "test"):
        ds = load_dataset("mnist", split, root=tmp_path / "m")
        x, y = want[split]
        np.testing.assert_array_equal(ds.images[:, 0], x)
        np.testing.assert_array_equal(ds.labels, y)
        assert ds.classes == [str(d) for d in range(10)] and ds.images.shape[1:] == (1, 28, 28)


def test_search_order_env_then_cache(clean_env, monkeypatch):
    home_copy = write_mnist(clean_env / "home" / ".cache" / "cnnkit" / "mnist", seed=1)
    np.testing.assert_array_equal(load_dataset("MNIST").labels, home_copy["train"][1])
    env_copy = write_mnist(clean_env / "env" / "mnist", seed=2)
    monkeypatch.setenv("CNNKIT_DATA", str(clean_env / "env"))
    assert search_paths("mnist") == [str(clean_env / "env" / "mnist"),
                                     str(clean_env / "home" / ".cache" / "cnnkit" / "mnist")]
    np.testing.assert_array_equal(load_dataset("mnist").labels, env_copy["train"][1])


def test_missing_dataset_lists_every_place(clean_env, monkeypatch):
    monkeypatch.setenv("CNNKIT_DATA", str(clean_env / "env"))
    monkeypatch.setitem(dsmod.DATASETS["fashion-mnist"], "system_dirs", [str(clean_env / "debian")])
    os.makedirs(clean_env / "home" / ".cache" / "cnnkit" / "fashion-mnist")
    write_idx(clean_env / "home" / ".cache" / "cnnkit" / "fashion-mnist" / "train-images-idx3-ubyte.gz",
              np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", "train")
    msg = str(info.value)
    assert "data set 'fashion-mnist' (split 'train') not found" in msg
    assert f"{clean_env / 'env' / 'fashion-mnist'}: no such folder" in msg
    assert f"{clean_env / 'home' / '.cache' / 'cnnkit' / 'fashion-mnist'}: missing train-labels-idx1-ubyte[.gz]" in msg
    assert f"{clean_env / 'debian'}: no such folder" in msg
    assert "cnnkit data fetch fashion-mnist" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_explicit_root_is_the_only_place(clean_env, monkeypatch):
    write_mnist(clean_env / "env" / "mnist")
    monkeypatch.setenv("CNNKIT_DATA", str(clean_env / "env"))
    with pytest.raises(DatasetNotFoundError, match=r"(?s)Looked in:\n  - \S*typo: no such folder\nGet it with") as info:
        load_dataset("mnist", root=clean_env / "typo")
    assert str(clean_env / "env") not in str(info.value)
    assert "apt-get" not in str(info.value)  # mnist has no Debian package


def test_malformed_mnist_files(tmp_path):
    d = tmp_path / "m"
    write_mnist(d)
    write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.gz: label count does not match "
                                           r"train-images-idx3-ubyte.gz: expected 12, found 11"):
        load_dataset("mnist", root=d)
    write_idx(d / "train-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8))
    with pytest.raises(DatasetError, match="label out of range: expected 0..9, found 10"):
        load_dataset("mnist", root=d)
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28), np.uint8))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.gz: not an image file.*found uint8 of shape \(5, 28\)"):
        load_dataset("mnist", "test", root=d)
    raw = (d / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(raw[:-7])
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8))
    with pytest.raises(IDXError, match="t10k-labels-idx1-ubyte.gz: broken gzip stream"):
        load_dataset("mnist", "test", root=d)


def test_name_and_split_errors():
    with pytest.raises(ValueError, match="load_dataset: unknown data set. Received: name='imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'. Received: split='val'"):
        load_dataset("mnist", "val")


def small(n=20, c=2, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.integers(0, 256, (n, c, 3, 5), dtype=np.uint8), np.arange(n) % classes,
                        [f"k{i}" for i in range(classes)], name="small")


def test_array_dataset_basics():
    ds = small()
    assert len(ds) == 20 and ds.images.shape == (20, 2, 3, 5) and ds.labels.dtype == np.int64
    image, label = ds[5]
    np.testing.assert_array_equal(image, ds.images[5])
    assert label == 1 and isinstance(label, int)
    sub = ds.subset([3, 0, 3])
    assert sub.labels.tolist() == [3, 0, 3] and sub.classes == ds.classes and sub.name == "small"
    np.testing.assert_array_equal(sub.images[0], ds.images[3])
    assert repr(ds) == "ArrayDataset(name='small', n=20, image_shape=(2, 3, 5), classes=4)"
    gray = ArrayDataset(np.zeros((2, 4, 4), np.uint8), [0, 1])
    assert gray.images.shape == (2, 1, 4, 4) and gray.classes == ["0", "1"]


@pytest.mark.parametrize("images, labels, exc, match", [
    (np.zeros((2, 1, 3, 3), np.float32), [0, 1], TypeError, "images must be uint8"),
    (np.zeros((2, 1, 3, 3), np.uint8), [0], ValueError, "differ in length"),
    (np.zeros((2, 1, 3, 3), np.uint8), [0, 4], ValueError, r"labels must lie in 0..3"),
    (np.zeros((2, 1, 3, 3), np.uint8), [0.0, 1.0], TypeError, "labels must be a 1-D integer array"),
])
def test_array_dataset_errors(images, labels, exc, match):
    with pytest.raises(exc, match=match):
        ArrayDataset(images, labels, classes=["a", "b", "c", "d"])


def test_subset_errors():
    with pytest.raises(ValueError, match="subset index out of range"):
        small().subset([20])
    with pytest.raises(TypeError, match="index with an int"):
        small()[1:3]


def test_split_is_seeded_and_disjoint():
    ds = ArrayDataset(np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1), np.arange(50) % 5)
    train, val = ds.split(12, seed=3)
    assert len(train) == 38 and len(val) == 12
    got = sorted(train.images.ravel().tolist() + val.images.ravel().tolist())
    assert got == list(range(50))  # disjoint and complete
    assert val.images.ravel().tolist() == sorted(val.images.ravel().tolist())  # original order kept
    again = ds.split(12, seed=3)[1]
    np.testing.assert_array_equal(again.images, val.images)
    assert not np.array_equal(ds.split(12, seed=4)[1].images, val.images)
    assert val.images.ravel().tolist() == sorted(np.random.default_rng(3).permutation(50)[:12].tolist())
    with pytest.raises(ValueError, match="n_val must lie in 0..len"):
        ds.split(51)


def test_stratified_split_keeps_proportions():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    ds = ArrayDataset(np.zeros((100, 1, 1, 1), np.uint8), labels)
    train, val = ds.split(10, seed=0, stratify=True)
    assert val.class_counts().tolist() == [5, 3, 2]
    assert train.class_counts().tolist() == [45, 27, 18]
    _, val = ds.split(7, seed=0, stratify=True)  # 3.5, 2.1, 1.4 -> largest remainders get the spare slot
    assert val.class_counts().tolist() == [4, 2, 1]


def test_mean_std_per_channel_in_unit_range():
    ds = small(n=37, c=3)
    mean, std = ds.mean_std(chunk=5)  # chunks that do not divide N
    x = ds.images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-10)
    assert mean.shape == (3,)


def test_select_classes_keeps_and_relabels_in_the_given_order():
    images = np.arange(6 * 2 * 2, dtype=np.uint8).reshape(6, 1, 2, 2)
    ds = ArrayDataset(images, [0, 1, 2, 3, 1, 2], classes=["a", "b", "c", "d"])
    sub = ds.select_classes([2, "b"])
    assert sub.classes == ["c", "b"]
    np.testing.assert_array_equal(sub.labels, [1, 0, 1, 0])  # b -> 1, c -> 0, original order kept
    np.testing.assert_array_equal(sub.images, images[[1, 2, 4, 5]])
    with pytest.raises(ValueError, match="unknown class"):
        ds.select_classes([4])
    with pytest.raises(ValueError, match="distinct"):
        ds.select_classes([1, "b"])
    with pytest.raises(ValueError, match="distinct"):
        ds.select_classes([])
