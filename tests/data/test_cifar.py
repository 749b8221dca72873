import os

import numpy as np
import pytest

from cnnkit.data import CIFARError, DatasetNotFoundError, load_dataset, read_cifar_bin

from .fakes import cifar_records, write_cifar10, write_cifar100


def test_cifar10_train_and_test(tmp_path):
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    x, y, xt, yt, _ = write_cifar10(tmp_path, names=names)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.images.shape == (12, 3, 32, 32) and ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.images, x)  # data_batch_1 .. 5 in order
    np.testing.assert_array_equal(ds.labels, y)
    assert ds.classes == names  # read from batches.meta.txt, trailing blank lines dropped
    test = load_dataset("cifar-10", "test", root=tmp_path)
    np.testing.assert_array_equal(test.images, xt)
    np.testing.assert_array_equal(test.labels, yt)


def test_cifar10_files_directly_in_the_folder(tmp_path):
    x, y, *_ = write_cifar10(tmp_path, subfolder=False)
    np.testing.assert_array_equal(load_dataset("cifar10", root=tmp_path).labels, y)


def test_record_layout_is_rgb_planes(tmp_path):
    pixels = np.zeros((1, 3, 32, 32), np.uint8)
    pixels[0, 0], pixels[0, 1], pixels[0, 2] = 10, 20, 30
    pixels[0, 1, 2, 5] = 99  # green plane, row 2, column 5: byte 1 + 1024 + 2 * 32 + 5 of the record
    raw = bytearray(cifar_records(pixels, [7]))
    assert raw[0] == 7 and raw[1 + 1024 + 2 * 32 + 5] == 99 and raw[1] == 10 and raw[1 + 2048] == 30
    p = tmp_path / "one.bin"
    p.write_bytes(bytes(raw))
    images, labels = read_cifar_bin(p)
    assert labels.tolist() == [7]
    assert images[0, 0, 0, 0] == 10 and images[0, 1, 0, 0] == 20 and images[0, 2, 31, 31] == 30
    assert images[0, 1, 2, 5] == 99


def test_cifar100_uses_fine_labels(tmp_path):
    x, coarse, fine, xt, ft, fine_names = write_cifar100(tmp_path)
    ds = load_dataset("cifar100", root=tmp_path)
    np.testing.assert_array_equal(ds.images, x)
    np.testing.assert_array_equal(ds.labels, fine)
    assert not np.array_equal(ds.labels, coarse)
    assert ds.classes == fine_names and len(ds.classes) == 100
    np.testing.assert_array_equal(load_dataset("cifar100", "test", root=tmp_path).labels, ft)


def test_size_not_a_whole_number_of_records(tmp_path):
    write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    p.write_bytes(p.read_bytes() + b"\x00\x01")  # 2 records + 2 bytes
    with pytest.raises(CIFARError) as info:
        load_dataset("cifar10", root=tmp_path)
    msg = str(info.value)
    assert msg.startswith(str(p)) and "3073-byte records" in msg
    assert "expected a multiple of 3073 bytes, found 6148 bytes = 2 records + 2 bytes" in msg


def test_label_out_of_range(tmp_path):
    write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    raw = bytearray(p.read_bytes())
    raw[3073] = 10  # the label of record 1
    p.write_bytes(bytes(raw))
    with pytest.raises(CIFARError, match=r"test_batch.bin: label of record 1 is out of range \(1 bad records\): "
                                         r"expected 0..9, found 10"):
        load_dataset("cifar10", "test", root=tmp_path)


@pytest.mark.parametrize("byte, value, match", [(0, 20, "label byte 0 of record 0 .*expected 0..19, found 20"),
                                                 (1, 100, "label byte 1 of record 0 .*expected 0..99, found 100")])
def test_cifar100_label_ranges(tmp_path, byte, value, match):
    write_cifar100(tmp_path)
    p = tmp_path / "cifar-100-binary" / "train.bin"
    raw = bytearray(p.read_bytes())
    raw[byte] = value
    p.write_bytes(bytes(raw))
    with pytest.raises(CIFARError, match=match):
        load_dataset("cifar100", root=tmp_path)


def test_cifar100_record_size(tmp_path):
    write_cifar100(tmp_path)
    p = tmp_path / "cifar-100-binary" / "test.bin"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(CIFARError, match="2 label bytes.*expected a multiple of 3074 bytes, found 6147 bytes"):
        load_dataset("cifar100", "test", root=tmp_path)


def test_empty_file_and_bad_names_file(tmp_path):
    write_cifar10(tmp_path)
    d = tmp_path / "cifar-10-batches-bin"
    (d / "batches.meta.txt").write_text("a\nb\n")
    with pytest.raises(CIFARError, match="batches.meta.txt: wrong number of class names: expected 10, found 2"):
        load_dataset("cifar10", root=tmp_path)
    os.remove(d / "batches.meta.txt")
    assert load_dataset("cifar10", root=tmp_path).classes[0] == "airplane"  # CIFAR-10's own names
    (d / "data_batch_5.bin").write_bytes(b"")
    with pytest.raises(CIFARError, match="data_batch_5.bin: empty file"):
        load_dataset("cifar10", root=tmp_path)


def test_missing_batch_is_not_found(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin")
    with pytest.raises(DatasetNotFoundError, match=r"missing data_batch_3.bin \(looked in cifar-10-batches-bin/"):
        load_dataset("cifar10", root=tmp_path)
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 3  # the test split is complete
