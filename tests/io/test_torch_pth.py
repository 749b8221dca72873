"""The restricted .pth reader: files written by torch.save, read back without torch.

torch is used only to WRITE the files; cnnkit.io reads them with its own unpickler.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.io import CheckpointFormatError, UnsafeCheckpointError, read_pth, read_state_dict
from cnnkit.io.torch_pth import LEGACY_MESSAGE

REPO = Path(__file__).resolve().parents[2]


def _small_torch_state():
    torch.manual_seed(0)
    m = torch.nn.Sequential(OrderedDict(conv=torch.nn.Conv2d(3, 4, 3), bn=torch.nn.BatchNorm2d(4),
                                        fc=torch.nn.Linear(4, 2)))
    m.bn.running_mean.uniform_(-1, 1)
    m.bn.running_var.uniform_(0.5, 2)
    m.bn.num_batches_tracked.fill_(7)
    return m.state_dict()


def test_state_dict_of_conv_bn_linear_exact(tmp_path):
    sd = _small_torch_state()
    p = tmp_path / "m.pth"
    torch.save(sd, p)
    got = read_pth(p)
    assert isinstance(got, OrderedDict)
    assert list(got) == list(sd)
    for k, t in sd.items():
        assert got[k].dtype == t.numpy().dtype, k
        assert got[k].shape == tuple(t.shape), k
        np.testing.assert_array_equal(got[k], t.numpy(), err_msg=k)
    assert got["bn.num_batches_tracked"].dtype == np.int64 and got["bn.num_batches_tracked"] == 7


def test_non_contiguous_and_shared_storage_views(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    views = {"sliced": base[:, 1:3, ::2], "transposed": base.transpose(0, 2), "row": base[2, 3],
             "scalar": base[1, 2, 3], "empty": base[:, :0], "expanded": torch.ones(1, 3).expand(4, 3)}
    p = tmp_path / "views.pt"
    torch.save(views, p)
    got = read_pth(p)
    for k, t in views.items():
        assert got[k].shape == tuple(t.shape), k
        np.testing.assert_array_equal(got[k], t.contiguous().numpy(), err_msg=k)
        assert got[k].flags.writeable and got[k].flags.c_contiguous
    got["sliced"][...] = -1  # copies, not views of one shared buffer
    assert got["row"][0] == 2 * 20 + 3 * 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32,
                                   torch.int16, torch.int8, torch.uint8, torch.bool])
def test_dtypes_exact(tmp_path, dtype):
    g = torch.Generator().manual_seed(1)
    t = (torch.randn(5, 7, generator=g) * 50).to(dtype)
    p = tmp_path / "t.pt"
    torch.save({"t": t, "t_view": t[1:, 2:5]}, p)
    got = read_pth(p)
    assert got["t"].dtype == t.numpy().dtype
    np.testing.assert_array_equal(got["t"], t.numpy())
    np.testing.assert_array_equal(got["t_view"], t[1:, 2:5].numpy())


def test_bfloat16_widened_to_float32_exactly(tmp_path):
    t = torch.tensor([1.5, -2.25, 3.0e38, 1e-38, 0.0, -0.0, float("inf")]).to(torch.bfloat16)
    t2 = torch.randn(4, 6).to(torch.bfloat16)[:, ::2]
    p = tmp_path / "bf.pt"
    torch.save({"a": t, "b": t2}, p)
    got = read_pth(p)
    assert got["a"].dtype == np.float32
    np.testing.assert_array_equal(got["a"], t.float().numpy())
    np.testing.assert_array_equal(got["b"], t2.float().numpy())


def test_checkpoint_dict_with_epoch(tmp_path):
    sd = _small_torch_state()
    p = tmp_path / "ckpt.pth"
    torch.save({"state_dict": sd, "epoch": 3, "name": "run", "losses": [0.5, 0.25]}, p)
    raw = read_pth(p)
    assert raw["epoch"] == 3 and raw["name"] == "run" and raw["losses"] == [0.5, 0.25]
    flat = read_state_dict(p)
    assert list(flat) == list(sd)
    np.testing.assert_array_equal(flat["conv.weight"], sd["conv.weight"].numpy())


def test_nn_parameter_values(tmp_path):
    w = torch.nn.Parameter(torch.randn(3, 2))
    p = tmp_path / "param.pt"
    torch.save({"w": w, "size": torch.Size([2, 3])}, p)
    got = read_pth(p)
    np.testing.assert_array_equal(got["w"], w.detach().numpy())
    assert got["size"] == (2, 3)


# ----------------------------------------------------------------------------- refusal

class _EvilSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _zip_with_pickle(path: Path, payload: bytes, storages: dict | None = None) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")
        for k, v in (storages or {}).items():
            zf.writestr(f"archive/data/{k}", v)
        zf.writestr("archive/version", "3\n")


@pytest.mark.parametrize("evil, name", [(_EvilSystem, r"(posix|os|nt)\.system"),
                                        (_EvilEval, r"(__builtin__|builtins)\.eval")])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, evil, name):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": evil(marker)}, protocol=2)
    p = tmp_path / "evil.pth"
    _zip_with_pickle(p, payload)
    with pytest.raises(UnsafeCheckpointError, match=rf"refused to load global '{name}'"):
        read_pth(p)
    with pytest.raises(UnsafeCheckpointError, match=rf"'{name}'"):
        read_state_dict(p)
    assert not marker.exists()
    # the payload is live: the stock loader would have run it (this is what the test guards)
    pickle.loads(payload)  # test-only, trusted bytes we just made
    assert marker.exists()


def test_malicious_global_inside_a_real_checkpoint(tmp_path):
    # A genuine torch.save file whose data.pkl also carries a hostile global.
    marker = tmp_path / "pwned2"
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    with zipfile.ZipFile(good) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    pkl = [n for n in members if n.endswith("data.pkl")][0]
    evil_pkl = pickle.dumps({"x": _EvilSystem(marker)}, protocol=2)
    members[pkl] = evil_pkl
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(UnsafeCheckpointError, match="refused to load global"):
        read_pth(bad)
    assert not marker.exists()


def test_other_torch_globals_are_refused(tmp_path):
    payload = b"\x80\x02ctorch\nload\nq\x00."  # GLOBAL torch.load, then STOP
    p = tmp_path / "g.pt"
    _zip_with_pickle(p, payload)
    with pytest.raises(UnsafeCheckpointError, match=r"'torch\.load'"):
        read_pth(p)


# ----------------------------------------------------------------------------- corruption

def test_truncated_file_is_a_clear_error(tmp_path):
    p = tmp_path / "m.pth"
    torch.save(_small_torch_state(), p)
    data = p.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        q = tmp_path / f"cut{cut}.pth"
        q.write_bytes(data[:cut])
        with pytest.raises(CheckpointFormatError, match="truncated|corrupt"):
            read_pth(q)


def test_truncated_storage_member(tmp_path):
    p = tmp_path / "m.pth"
    torch.save({"w": torch.arange(10, dtype=torch.float32)}, p)
    with zipfile.ZipFile(p) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    key = [n for n in members if "/data/" in n][0]
    members[key] = members[key][:-8]  # two float32s short
    q = tmp_path / "short.pth"
    with zipfile.ZipFile(q, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(CheckpointFormatError, match=r"storage '.*data/0' is truncated.*numel=10 needs 40 bytes.*32"):
        read_pth(q)


def test_missing_storage_member(tmp_path):
    p = tmp_path / "m.pth"
    torch.save({"w": torch.arange(10, dtype=torch.float32)}, p)
    with zipfile.ZipFile(p) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if "/data/" not in n}
    q = tmp_path / "nostorage.pth"
    with zipfile.ZipFile(q, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(CheckpointFormatError, match="missing"):
        read_pth(q)


def test_view_outside_its_storage_is_refused(tmp_path):
    # Edit a real file so the storage claims 4 elements while the tensor is a (4, 4) view
    # of it: as_strided would read past the buffer; the reader must refuse instead.
    p = tmp_path / "m.pth"
    torch.save({"w": torch.zeros(4, 4)}, p)
    with zipfile.ZipFile(p) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    pkl = [n for n in members if n.endswith("data.pkl")][0]
    edited, count = re.subn(rb"(cpu.{0,2}K)\x10", lambda m: m.group(1) + b"\x04", members[pkl], flags=re.S)
    assert count == 1
    members[pkl] = edited
    q = tmp_path / "oob.pth"
    with zipfile.ZipFile(q, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(CheckpointFormatError, match="reaches element 15 but its storage holds 4"):
        read_pth(q)


def test_legacy_format_is_refused(tmp_path):
    p = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(3)}, p, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointFormatError, match=r"legacy format not supported, re-save with torch>=1\.6"):
        read_pth(p)
    with pytest.raises(CheckpointFormatError, match=LEGACY_MESSAGE.replace(".", r"\.")):
        read_state_dict(p)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "junk.pth"
    p.write_bytes(b"hello, not a zip")
    with pytest.raises(CheckpointFormatError, match="not a PyTorch zip checkpoint"):
        read_pth(p)


# ----------------------------------------------------------------------------- no torch, no pickle.load

def test_reader_never_imports_torch(tmp_path):
    p = tmp_path / "m.pth"
    sd = _small_torch_state()
    torch.save({"model": sd, "epoch": 1}, p)
    code = ("import sys; sys.modules['torch'] = None\n"  # any 'import torch' now fails
            "from cnnkit.io import read_state_dict\n"
            f"sd = read_state_dict({str(p)!r})\n"
            "print(len(sd), float(sd['conv.weight'].sum()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    n, s = out.stdout.split()
    assert int(n) == len(sd)
    assert float(s) == pytest.approx(float(sd["conv.weight"].sum()), rel=1e-6)


def test_package_has_no_unrestricted_pickle_load():
    for f in (REPO / "cnnkit" / "io").glob("*.py"):
        for line in f.read_text().splitlines():
            assert "pickle.load(" not in line and "pickle.loads(" not in line, (f, line)
            assert "torch.load(" not in line, (f, line)
            assert not line.strip().startswith(("import torch", "from torch")), (f, line)
            if ".load()" in line or "pickle.Unpickler" in line:
                assert "restricted" in line, (f, line)


def test_big_endian_byteorder(tmp_path):
    # torch.save on a big-endian host writes byteorder "big" and big-endian storages:
    # simulate it by byte-swapping the storages of a little-endian file.
    t = {"f": torch.randn(3, 4), "i": torch.arange(-5, 5, dtype=torch.int64), "h": torch.randn(5).half()}
    p = tmp_path / "le.pt"
    torch.save(t, p)
    with zipfile.ZipFile(p) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    sizes = {str(k): v.element_size() for k, v in zip(range(3), t.values())}
    for n in list(members):
        if n.endswith("/byteorder"):
            members[n] = b"big"
        elif "/data/" in n and not n.endswith("serialization_id"):
            key = n.rsplit("/", 1)[1]
            item = sizes[key]
            members[n] = np.frombuffer(members[n], f"<u{item}").astype(f">u{item}").tobytes()
    q = tmp_path / "be.pt"
    with zipfile.ZipFile(q, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    got = read_pth(q)
    for k, v in t.items():
        assert got[k].dtype.isnative
        np.testing.assert_array_equal(got[k], v.numpy(), err_msg=k)
