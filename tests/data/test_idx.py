import gzip
import os

import numpy as np
import pytest

from cnnkit.data.idx import IDXError, parse_idx, read_idx, write_idx

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, suffix):
    a = (np.arange(2 * 3 * 4) - 5).astype(np.dtype(dtype).newbyteorder("=")).reshape(2, 3, 4)
    if a.dtype.kind == "u":
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / f"a.idx{suffix}"
    write_idx(p, a)
    b = read_idx(p)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_known_bytes():
    raw = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
    np.testing.assert_array_equal(parse_idx(raw), np.arange(6, dtype=np.uint8).reshape(2, 3))
    raw = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2]) + b"\x01\x02\xff\xfe"  # big-endian int16
    np.testing.assert_array_equal(parse_idx(raw), np.array([258, -2], dtype=np.int16))


@pytest.mark.parametrize("raw, match", [
    (b"\x00\x00", "too short"),
    (bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]), "bad magic"),
    (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 7]), "unknown IDX type code"),
    (bytes([0, 0, 8, 0]), "unsupported rank"),
    (bytes([0, 0, 8, 9]), "unsupported rank"),
    (bytes([0, 0, 8, 2, 0, 0, 0, 1]), "truncated header"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 0]), "implausible dimensions"),
    (bytes([0, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255]), "implausible dimensions"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]), "truncated data"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "trailing bytes"),
])
def test_malformed(tmp_path, raw, match):
    p = tmp_path / "bad-idx1-ubyte"
    p.write_bytes(raw)
    with pytest.raises(IDXError, match=match) as info:
        read_idx(p)
    assert str(p) in str(info.value) and "expected" in str(info.value) and "found" in str(info.value)


def test_gzip_without_suffix(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 1, 5])))
    with pytest.raises(IDXError, match="without the .gz suffix"):
        read_idx(p)


def test_truncated_gzip_and_fake_gz(tmp_path):
    full = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 200]) + bytes(200))
    p = tmp_path / "t.gz"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(IDXError, match="broken gzip stream"):
        read_idx(p)
    q = tmp_path / "plain.gz"
    q.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(IDXError, match="not gzip data"):
        read_idx(q)


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    p = tmp_path / "x.idx"
    write_idx(p, np.zeros((3,), np.uint8))
    assert os.listdir(tmp_path) == ["x.idx"]
    with pytest.raises(ValueError, match="cannot store"):
        write_idx(p, np.zeros((2,), np.complex64))
    np.testing.assert_array_equal(read_idx(p), np.zeros(3, np.uint8))  # untouched by the failed write


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_real_files():
    x = read_idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz")
    y = read_idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and set(np.unique(y)) == set(range(10))
    assert np.bincount(y).tolist() == [1000] * 10


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="Debian's dataset-fashion-mnist is not installed")
def test_corrupted_copies_of_a_real_file(tmp_path):
    raw = gzip.decompress(open(f"{FMNIST}/t10k-labels-idx1-ubyte.gz", "rb").read())
    assert parse_idx(raw).shape == (10000,)
    for cut in (0, 3, 7, 8, 9, 5000, len(raw) - 1):  # truncated in the header, at the data start, mid-data
        p = tmp_path / f"cut{cut}-idx1-ubyte"
        p.write_bytes(raw[:cut])
        with pytest.raises(IDXError, match=r"too short|truncated"):
            read_idx(p)
    flipped = bytearray(raw)
    flipped[1] = 0x08  # magic 00 08 08 01: not 00 00
    (tmp_path / "magic-idx1-ubyte").write_bytes(bytes(flipped))
    with pytest.raises(IDXError, match="bad magic"):
        read_idx(tmp_path / "magic-idx1-ubyte")
    wrong = bytearray(raw)
    wrong[4:8] = (20000).to_bytes(4, "big")  # header claims 20,000 labels, the file holds 10,000
    (tmp_path / "size-idx1-ubyte").write_bytes(bytes(wrong))
    with pytest.raises(IDXError, match=r"truncated data: expected 20008 bytes"):
        read_idx(tmp_path / "size-idx1-ubyte")
    gz = tmp_path / "cut.gz"
    full = gzip.compress(raw)
    gz.write_bytes(full[:-20])  # a gzip stream that ends early
    with pytest.raises(IDXError, match="broken gzip stream"):
        read_idx(gz)
