import numpy as np
import pytest
from PIL import Image

from cnnkit.data import ArrayDataset, ImageFolder, ImageFolderError


def save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return array


@pytest.fixture
def tree(tmp_path):
    rng = np.random.default_rng(0)
    a = save(tmp_path / "cat" / "a.png", rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    b = save(tmp_path / "cat" / "b.PNG", rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    # a smooth image survives JPEG well enough to compare
    ramp = np.stack([*np.meshgrid(np.linspace(0, 255, 8), np.linspace(0, 255, 6)), np.full((6, 8), 128.0)], -1)
    c = save(tmp_path / "dog" / "c.jpg", ramp.astype(np.uint8), quality=95)
    d = save(tmp_path / "dog" / "d.jpeg", rng.integers(0, 256, (12, 5, 3), dtype=np.uint8), quality=95)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    save(tmp_path / "dog" / ".hidden.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "readme.md").write_text("a file beside the class folders")
    return tmp_path, dict(a=a, b=b, c=c, d=d)


def test_classes_labels_and_pixels(tree):
    root, arr = tree
    ds = ImageFolder(root)
    assert isinstance(ds, ArrayDataset)
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.images.shape == (4, 3, 6, 8) and ds.images.dtype == np.uint8  # the first image's size
    assert [p.rsplit("/", 1)[1] for p in ds.files] == ["a.png", "b.PNG", "c.jpg", "d.jpeg"]
    np.testing.assert_array_equal(ds.images[0], arr["a"].transpose(2, 0, 1))  # PNG is lossless, CHW
    np.testing.assert_array_equal(ds.images[1], arr["b"].transpose(2, 0, 1))
    decoded = np.asarray(Image.open(root / "dog" / "c.jpg").convert("RGB"))
    np.testing.assert_array_equal(ds.images[2], decoded.transpose(2, 0, 1))  # the JPEG as Pillow decodes it
    assert np.abs(ds.images[2].astype(int) - arr["c"].transpose(2, 0, 1)).mean() < 12  # lossy, but close
    resized = Image.open(root / "dog" / "d.jpeg").convert("RGB").resize((8, 6), Image.BILINEAR)
    np.testing.assert_array_equal(ds.images[3], np.asarray(resized).transpose(2, 0, 1))  # 12x5 -> 6x8, bilinear


def test_size_and_grayscale(tree):
    root, arr = tree
    ds = ImageFolder(root, size=(4, 5), grayscale=True)
    assert ds.images.shape == (4, 1, 4, 5)
    want = np.asarray(Image.fromarray(arr["a"]).convert("L").resize((5, 4), Image.BILINEAR))
    np.testing.assert_array_equal(ds.images[0, 0], want)
    assert ImageFolder(root, size=3).images.shape == (4, 3, 3, 3)


def test_unreadable_file_raises_or_is_skipped(tree):
    root, _ = tree
    (root / "dog" / "broken.png").write_bytes(b"this is not a PNG")
    with pytest.raises(ImageFolderError, match=r"dog/broken.png: cannot read the image: expected a PNG or JPEG"):
        ImageFolder(root)
    with pytest.warns(UserWarning, match="skipping .*broken.png"):
        ds = ImageFolder(root, skip_bad=True)
    assert len(ds) == 4 and not any(f.endswith("broken.png") for f in ds.files)


def test_truncated_png_is_an_error(tree):
    root, _ = tree
    save(root / "cat" / "z.png", np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    raw = (root / "cat" / "z.png").read_bytes()
    (root / "cat" / "z.png").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ImageFolderError, match="cat/z.png: cannot read the image"):
        ImageFolder(root)


def test_empty_and_missing_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(ValueError, match="has no class sub-folders"):
        ImageFolder(tmp_path)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="no readable .png/.jpg/.jpeg files"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="size must be a positive int"):
        ImageFolder(tmp_path, size=(0, 2))
