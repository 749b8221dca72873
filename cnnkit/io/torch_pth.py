"""A restricted reader for PyTorch's zip checkpoints (``torch.save`` since 1.6), without torch.

Format (``torch/serialization.py``, ``_save`` / ``_load``): a zip archive whose members
all sit under one folder ``<name>/`` (``archive/`` or the file's stem)::

    <name>/data.pkl      the object tree, pickle protocol 2
    <name>/data/<key>    one raw storage per key (no header; elements in ``byteorder``)
    <name>/byteorder     "little" or "big" (absent in old files: little)
    <name>/version       format version

Inside ``data.pkl`` each tensor is ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, requires_grad, backward_hooks[, metadata])`` where ``storage`` is a
*persistent id* ``('storage', torch.FloatStorage, key, location, numel)`` that names
``data/<key>``.

Why not ``pickle``'s default loader: unpickling calls any importable global
(``os.system``, ``builtins.eval``) that the file names, so loading an untrusted
``.pth`` runs code. ``_RestrictedUnpickler.find_class`` resolves only the few names
needed to rebuild tensors and containers (``ALLOWED_GLOBALS``) to *our own* NumPy
stand-ins and refuses every other global with an ``UnsafeCheckpointError`` that names
it, before anything is called. torch is never imported here.

dtypes: float32, float64, float16, int64, int32, int16, int8, uint8 and bool come back
with the same NumPy dtype. NumPy has no bfloat16: bfloat16 storages are widened to
float32 (exact: a bfloat16 is the top 16 bits of a float32).

Legacy (non-zip, torch < 1.6 or ``_use_new_zipfile_serialization=False``) files are
refused with "legacy format not supported, re-save with torch>=1.6".
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import numpy as np

__all__ = ["read_pth", "CheckpointFormatError", "UnsafeCheckpointError", "LEGACY_MESSAGE",
           "STORAGE_DTYPES"]

LEGACY_MESSAGE = "legacy format not supported, re-save with torch>=1.6"


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch zip checkpoint (legacy, truncated, inconsistent)."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """``data.pkl`` names a global outside the allow-list; nothing was called."""


# Storage class name -> NumPy dtype string (little-endian; flipped for byteorder "big").
# ``bfloat16`` is a marker: its storage is read as uint16 and widened to float32.
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "UntypedStorage": "u1",
}


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only carries the element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    def __repr__(self) -> str:
        return f"torch.{self.name}"


def _check_view(where: str, storage: np.ndarray, offset: int, size: tuple, stride: tuple) -> None:
    # as_strided does no bounds checking: a hostile (size, stride, offset) would read
    # memory outside the storage. Reject anything that does not fit inside it.
    if len(size) != len(stride):
        raise CheckpointFormatError(f"{where}: tensor has {len(size)} sizes but {len(stride)} strides. "
                                    f"Received: size={size}, stride={stride}")
    if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointFormatError(f"{where}: negative offset, size or stride. "
                                    f"Received: offset={offset}, size={size}, stride={stride}")
    if any(s == 0 for s in size):
        return
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise CheckpointFormatError(
            f"{where}: tensor view reaches element {last} but its storage holds {storage.size} "
            f"(file truncated or corrupt). Received: offset={offset}, size={size}, stride={stride}")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2``: a strided view of the storage, copied out."""
    if not isinstance(storage, np.ndarray):
        raise CheckpointFormatError(f"_rebuild_tensor_v2: expected a storage, got {type(storage).__name__}")
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    offset = int(storage_offset)
    _check_view("_rebuild_tensor_v2", storage, offset, size, stride)
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:] if storage.size else storage, shape=size,
                                           strides=tuple(s * item for s in stride), writeable=False)
    return np.array(view, order="C", copy=True)  # (size) C-contiguous; no alias of the storage


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """``torch._utils._rebuild_parameter``: a Parameter is just its array here."""
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _torch_size(*args):
    """``torch.Size``: a tuple of ints."""
    return tuple(*args)


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _torch_size,
}
for _name in STORAGE_DTYPES:
    ALLOWED_GLOBALS[("torch", _name)] = _StorageType(_name)
ALLOWED_GLOBALS[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage")


class _RestrictedUnpickler(pickle.Unpickler):  # restricted: find_class allows ALLOWED_GLOBALS only
    """Unpickler for ``data.pkl`` that resolves only ``ALLOWED_GLOBALS``."""

    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str, path: str, big_endian: bool):
        super().__init__(io.BytesIO(data))
        self._zf, self._prefix, self._path, self._big = zf, prefix, path, big_endian
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._path}: refused to load global '{module}.{name}': only tensors and "
                f"containers may appear in a checkpoint (allowed: "
                f"{', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS))})") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"{self._path}: unknown persistent id {pid!r}: "
                                        f"expected ('storage', type, key, location, numel)")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise CheckpointFormatError(f"{self._path}: storage type {stype!r} is not a storage class")
        key = str(key)
        if key in self._storages:  # views of one storage share it
            return self._storages[key]
        self._storages[key] = arr = self._read_storage(stype, key, int(numel))
        return arr

    def _read_storage(self, stype: _StorageType, key: str, numel: int) -> np.ndarray:
        member = f"{self._prefix}data/{key}"
        bf16 = stype.dtype == "bfloat16"
        dtype = np.dtype("<u2" if bf16 else stype.dtype)
        if self._big:
            dtype = dtype.newbyteorder(">")
        need = numel * dtype.itemsize
        try:
            info = self._zf.getinfo(member)
        except KeyError:
            raise CheckpointFormatError(f"{self._path}: storage member '{member}' is missing "
                                        f"(file truncated or corrupt)") from None
        if numel < 0 or info.file_size < need:
            raise CheckpointFormatError(
                f"{self._path}: storage '{member}' is truncated: {stype!r} with numel={numel} needs "
                f"{need} bytes, the zip member holds {info.file_size}")
        try:
            raw = self._zf.read(member)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise CheckpointFormatError(f"{self._path}: cannot read storage '{member}' "
                                        f"(file truncated or corrupt): {exc}") from None
        if len(raw) < need:
            raise CheckpointFormatError(f"{self._path}: storage '{member}' is truncated: needs {need} "
                                        f"bytes, read {len(raw)}")
        arr = np.frombuffer(raw, dtype=dtype, count=numel)
        if bf16:  # bfloat16 = high half of a float32: widen exactly
            return (arr.astype(np.uint32) << 16).view(np.float32)
        return arr.astype(dtype.newbyteorder("="), copy=True)


def is_legacy_pth(head: bytes) -> bool:
    """A pre-1.6 ``torch.save`` file starts with a pickled magic number (protocol 2)."""
    return head[:2] == b"\x80\x02"


def read_pth(path: str):
    """Rebuild the object saved by ``torch.save`` with tensors as NumPy arrays.

    Only dicts/lists/tuples/numbers/strings/``OrderedDict`` and tensors can come back;
    any other global in the pickle raises ``UnsafeCheckpointError`` naming it.
    """
    path = str(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not zipfile.is_zipfile(path):
        if is_legacy_pth(head):
            raise CheckpointFormatError(f"{path}: {LEGACY_MESSAGE} (this is a pre-1.6 non-zip "
                                        f"torch.save file)")
        raise CheckpointFormatError(f"{path}: not a PyTorch zip checkpoint (file truncated or not "
                                    f"written by torch.save). Received: first bytes={head!r}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointFormatError(f"{path}: corrupt zip (file truncated?): {exc}") from None
    with zf:
        pkls = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise CheckpointFormatError(f"{path}: expected exactly one '<name>/data.pkl' in the "
                                        f"zip. Received: {len(pkls)} ({pkls[:3]})")
        prefix = pkls[0][: -len("data.pkl")]
        big = False
        if f"{prefix}byteorder" in zf.namelist():
            order = zf.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise CheckpointFormatError(f"{path}: byteorder must be 'little' or 'big'. "
                                            f"Received: {order!r}")
            big = order == "big"
        try:
            data = zf.read(pkls[0])
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise CheckpointFormatError(f"{path}: cannot read {pkls[0]} (file truncated or "
                                        f"corrupt): {exc}") from None
        unpickler = _RestrictedUnpickler(data, zf, prefix, path, big)  # restricted
        try:
            return unpickler.load()  # restricted: globals resolved by find_class above
        except (UnsafeCheckpointError, CheckpointFormatError):
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
                AttributeError) as exc:
            raise CheckpointFormatError(f"{path}: corrupt data.pkl: {type(exc).__name__}: {exc}") from None
