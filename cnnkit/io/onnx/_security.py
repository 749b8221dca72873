"""Reading an ONNX file safely: a malformed protobuf, hostile external-data paths and
out-of-range offsets/lengths become :class:`OnnxFormatError`, never a crash or a read
outside the model's folder.

External data (``data_location = EXTERNAL``) is resolved here, by this module only
(``onnx.load`` is called with ``load_external_data=False``): the ``location`` must be
a relative path without ``..`` components, every component must not be a symlink, the
file must lie inside the model's folder, and ``offset + length`` must fit in the file.
"""

from __future__ import annotations

import os

import numpy as np


class OnnxFormatError(ValueError):
    """An ONNX file is unreadable, hostile or inconsistent (the message names the file)."""


def read_model(path):
    """Parse ``path`` into a ``ModelProto`` with all external data loaded and checked."""
    from . import require_onnx
    onnx = require_onnx()
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except FileNotFoundError:
        raise OnnxFormatError(f"{path}: ONNX file not found") from None
    except IsADirectoryError:
        raise OnnxFormatError(f"{path}: expected an ONNX file, found a directory") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(blob)
    except Exception as e:  # DecodeError and friends from any protobuf backend
        raise OnnxFormatError(f"{path}: not a valid ONNX protobuf ({len(blob)} bytes): "
                              f"{type(e).__name__}: {e}") from None
    if not model.HasField("graph") or (len(model.graph.node) == 0 and len(model.graph.output) == 0):
        raise OnnxFormatError(f"{path}: not an ONNX model: the protobuf holds no graph "
                              f"({len(blob)} bytes)")
    folder = os.path.dirname(os.path.abspath(path))
    for tensor in _all_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _load_external(tensor, folder, path)
    return model


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def safe_external_path(location: str, folder: str, model_path: str) -> str:
    """The absolute path of an external-data file, or OnnxFormatError if it leaves ``folder``."""
    where = f"{model_path}: external data"
    if not location or "\x00" in location:
        raise OnnxFormatError(f"{where}: empty or invalid location {location!r}")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise OnnxFormatError(f"{where}: absolute paths are not allowed; expected a file inside "
                              f"{folder}, found location={location!r}")
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise OnnxFormatError(f"{where}: '..' is not allowed in a location; expected a file inside "
                              f"{folder}, found location={location!r}")
    full = folder
    for part in parts:
        if part in ("", "."):
            continue
        full = os.path.join(full, part)
        if os.path.islink(full):
            raise OnnxFormatError(f"{where}: symlinks are not followed; found location={location!r} "
                                  f"({full} is a link)")
    real_folder = os.path.realpath(folder)
    if os.path.commonpath([os.path.realpath(full), real_folder]) != real_folder:
        raise OnnxFormatError(f"{where}: location leaves the model's folder {folder}: {location!r}")
    if not os.path.isfile(full):
        raise OnnxFormatError(f"{where}: file not found: expected {full} (location={location!r})")
    return full


def _load_external(tensor, folder: str, model_path: str) -> None:
    from . import require_onnx
    onnx = require_onnx()
    info = {e.key: e.value for e in tensor.external_data}
    where = f"{model_path}: initializer {tensor.name!r}"
    full = safe_external_path(info.get("location", ""), folder, model_path)
    try:
        offset = int(info.get("offset", 0) or 0)
        length = None if info.get("length") in (None, "") else int(info["length"])
    except ValueError:
        raise OnnxFormatError(f"{where}: offset and length must be integers; found "
                              f"offset={info.get('offset')!r}, length={info.get('length')!r}") from None
    size = os.path.getsize(full)
    itemsize = _itemsize(tensor.data_type, where)
    expected = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    if length is None:
        length = expected
    if offset < 0 or length < 0 or offset + length > size:
        raise OnnxFormatError(f"{where}: external data out of range: offset={offset}, length={length}, "
                              f"but {info['location']!r} has {size} bytes")
    if length != expected:
        raise OnnxFormatError(f"{where}: external data length {length} does not match dims "
                              f"{list(tensor.dims)} ({expected} bytes expected)")
    with open(full, "rb") as fh:
        fh.seek(offset)
        tensor.raw_data = fh.read(length)
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]


_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def _itemsize(data_type: int, where: str) -> int:
    if data_type not in _ITEMSIZE:
        raise OnnxFormatError(f"{where}: unsupported tensor data type {data_type}")
    return _ITEMSIZE[data_type]


def tensor_to_array(tensor, where: str) -> np.ndarray:
    """``numpy_helper.to_array`` with the byte count checked first (a clear error, not a crash)."""
    from onnx import numpy_helper
    itemsize = _itemsize(tensor.data_type, where)
    count = int(np.prod(tensor.dims, dtype=np.int64))
    if any(d < 0 for d in tensor.dims):
        raise OnnxFormatError(f"{where}: negative dimension in {list(tensor.dims)}")
    if tensor.HasField("raw_data") and len(tensor.raw_data) != count * itemsize:
        raise OnnxFormatError(f"{where}: raw data has {len(tensor.raw_data)} bytes, dims "
                              f"{list(tensor.dims)} need {count * itemsize}")
    try:
        arr = numpy_helper.to_array(tensor)
    except Exception as e:
        raise OnnxFormatError(f"{where}: unreadable tensor data: {type(e).__name__}: {e}") from None
    if arr.size != count:
        raise OnnxFormatError(f"{where}: tensor holds {arr.size} values, dims {list(tensor.dims)} need {count}")
    return np.array(arr)
