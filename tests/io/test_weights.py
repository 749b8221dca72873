"""load_weights / save_weights / read_state_dict: torch checkpoints into cnnkit models, safetensors round trips."""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pytest
import torch

from cnnkit import nn
from cnnkit.io import CheckpointFormatError, load_weights, read_state_dict, save_weights


def _torch_model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(OrderedDict(
        conv=torch.nn.Conv2d(3, 4, 3, padding=1), bn=torch.nn.BatchNorm2d(4), relu=torch.nn.ReLU(),
        flatten=torch.nn.Flatten(), fc=torch.nn.Linear(4 * 5 * 5, 3)))
    with torch.no_grad():
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-0.5, 0.5)
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.num_batches_tracked.fill_(11)
    return m.eval()


def _cnnkit_model(seed=1):
    rng = np.random.default_rng(seed)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, padding=1, rng=rng), bn=nn.BatchNorm2d(4), relu=nn.ReLU(),
        flatten=nn.Flatten(), fc=nn.Linear(4 * 5 * 5, 3, rng=rng))).eval()


def _x():
    return np.random.default_rng(5).standard_normal((2, 3, 5, 5)).astype(np.float32)


def _logits_torch(tm):
    with torch.no_grad():
        return tm(torch.from_numpy(_x())).numpy()


def _assert_same_state(model, tm):
    got, want = model.state_dict(), tm.state_dict()
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k].numpy(), err_msg=k)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "dataparallel"])
def test_load_torch_checkpoint_matches_torch_logits(tmp_path, wrap):
    tm = _torch_model()
    sd = tm.state_dict()
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 3},
           "model": {"model": sd, "optimizer_name": "sgd"},
           "dataparallel": OrderedDict((f"module.{k}", v) for k, v in sd.items())}[wrap]
    p = tmp_path / "w.pth"
    torch.save(obj, p)
    model = _cnnkit_model()
    assert not np.allclose(model(_x()), _logits_torch(tm), atol=1e-3)  # different before loading
    res = load_weights(model, p)
    assert res.missing_keys == [] and res.unexpected_keys == []
    _assert_same_state(model, tm)
    assert model.state_dict()["bn.num_batches_tracked"] == 11
    np.testing.assert_allclose(model(_x()), _logits_torch(tm), rtol=1e-5, atol=1e-5)


def test_strict_and_non_strict(tmp_path):
    tm = _torch_model()
    sd = tm.state_dict()
    sd["extra.weight"] = torch.ones(2)
    del sd["fc.bias"]
    p = tmp_path / "w.pt"
    torch.save(sd, p)
    model = _cnnkit_model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"missing keys fc\.bias.*unexpected keys extra\.weight"):
        load_weights(model, p)
    for k, v in model.state_dict().items():  # nothing changed on error
        np.testing.assert_array_equal(v, before[k])
    res = load_weights(model, p, strict=False)
    assert res.missing_keys == ["fc.bias"] and res.unexpected_keys == ["extra.weight"]
    np.testing.assert_array_equal(model.state_dict()["fc.weight"], tm.state_dict()["fc.weight"].numpy())
    np.testing.assert_array_equal(model.state_dict()["fc.bias"], before["fc.bias"])


def test_safetensors_round_trip(tmp_path):
    src = _cnnkit_model(seed=1)
    src.state_dict()["bn.num_batches_tracked"][...] = 4
    src.state_dict()["bn.running_var"][...] = [1.0, 2.0, 3.0, 4.0]
    p = tmp_path / "w.safetensors"
    assert save_weights(src, p) == str(p)
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]  # no temp file left behind
    dst = _cnnkit_model(seed=2)
    assert not np.array_equal(dst.state_dict()["conv.weight"], src.state_dict()["conv.weight"])
    res = load_weights(dst, p)
    assert res.missing_keys == [] and res.unexpected_keys == []
    for k, v in src.state_dict().items():
        got = dst.state_dict()[k]
        assert got.dtype == v.dtype and got.shape == v.shape, k
        np.testing.assert_array_equal(got, v, err_msg=k)
    np.testing.assert_array_equal(dst(_x()), src(_x()))
    flat = read_state_dict(p)
    assert set(flat) == set(src.state_dict())
    assert flat["bn.num_batches_tracked"].shape == () and flat["bn.num_batches_tracked"] == 4


def test_save_weights_replaces_atomically(tmp_path):
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"old contents")
    save_weights(_cnnkit_model(seed=3), p)
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]
    np.testing.assert_array_equal(read_state_dict(p)["fc.weight"], _cnnkit_model(seed=3).state_dict()["fc.weight"])


def test_torch_then_safetensors(tmp_path):
    # .pth -> cnnkit -> .safetensors -> fresh cnnkit model: same logits as torch throughout.
    tm = _torch_model()
    torch.save(tm.state_dict(), tmp_path / "w.pth")
    a = _cnnkit_model()
    load_weights(a, tmp_path / "w.pth")
    save_weights(a, tmp_path / "w.safetensors")
    b = _cnnkit_model(seed=9)
    load_weights(b, tmp_path / "w.safetensors")
    np.testing.assert_allclose(b(_x()), _logits_torch(tm), rtol=1e-5, atol=1e-5)


def test_format_sniffed_not_suffix(tmp_path):
    tm = _torch_model()
    torch.save(tm.state_dict(), tmp_path / "weights.bin.unknown")
    sd = read_state_dict(tmp_path / "weights.bin.unknown")
    assert list(sd) == list(tm.state_dict())


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_state_dict(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{not")
    with pytest.raises(CheckpointFormatError, match="not a readable safetensors file"):
        read_state_dict(bad)
    p = tmp_path / "w.safetensors"
    save_weights(_cnnkit_model(), p)
    data = p.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        read_state_dict(tmp_path / "cut.safetensors")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointFormatError, match=r"not a state_dict.*'epoch'"):
        read_state_dict(tmp_path / "meta.pt")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointFormatError, match="expected a state_dict.*list"):
        read_state_dict(tmp_path / "list.pt")


def test_shape_mismatch_names_the_key(tmp_path):
    sd = _torch_model().state_dict()
    sd["fc.weight"] = torch.zeros(3, 7)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"fc\.weight: expected \(3, 100\), found \(3, 7\)"):
        load_weights(_cnnkit_model(), tmp_path / "w.pth")
