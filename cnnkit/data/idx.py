"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun's format).

Layout: two zero bytes, a type code, the rank R; then R big-endian uint32
dimensions; then the data, big-endian, row-major. Files may be gzip-compressed
when their name ends in ``.gz``.

Every check raises :class:`IDXError` (a ``ValueError``) naming the file and what
was expected versus found: wrong magic, unknown type code, rank 0 or above 4,
zero or absurd dimensions, a size that does not match the header (truncated or
trailing bytes), gzip data without ``.gz`` in the name, a broken gzip stream.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

# IDX type code -> big-endian NumPy dtype
TYPE_CODES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
MAX_ELEMENTS = 2 ** 34  # refuse headers that promise more than 16 G elements
GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """An IDX file is malformed: the message names the file, the expectation and the finding."""


def _fail(path, what: str, expected, found) -> IDXError:
    return IDXError(f"{os.fspath(path)}: {what}: expected {expected}, found {found}")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw, or gzip when the name ends in ``.gz``) into a native-endian array."""
    path = os.fspath(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    if path.endswith(".gz"):
        if raw[:2] != GZIP_MAGIC:
            raise _fail(path, "not gzip data despite the .gz suffix", "bytes 1f 8b", raw[:2].hex(" ") or "an empty file")
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise _fail(path, "broken gzip stream", "a complete gzip file", f"{type(e).__name__}: {e}") from None
    elif raw[:2] == GZIP_MAGIC:
        raise _fail(path, "gzip-compressed data in a file without the .gz suffix",
                    "raw IDX starting with 00 00", "1f 8b (gzip); rename it to .gz or gunzip it")
    return parse_idx(raw, path)


def parse_idx(raw: bytes, path="<bytes>") -> np.ndarray:
    """Parse IDX bytes (uncompressed); ``path`` only names the source in errors."""
    if len(raw) < 4:
        raise _fail(path, "file too short for an IDX header", "at least 4 bytes", f"{len(raw)} bytes")
    if raw[0] != 0 or raw[1] != 0:
        raise _fail(path, "bad magic number", "00 00 at the start", raw[:2].hex(" "))
    code, rank = raw[2], raw[3]
    if code not in TYPE_CODES:
        raise _fail(path, "unknown IDX type code", "one of " + ", ".join(f"0x{c:02X}" for c in TYPE_CODES),
                    f"0x{code:02X}")
    if not 1 <= rank <= 4:
        raise _fail(path, "unsupported rank", "1 to 4 dimensions", rank)
    header = 4 + 4 * rank
    if len(raw) < header:
        raise _fail(path, "truncated header", f"{header} bytes", f"{len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=rank, offset=4))
    count = int(np.prod(dims, dtype=object))
    if min(dims) == 0 or count > MAX_ELEMENTS:
        raise _fail(path, "implausible dimensions", f"1 to {MAX_ELEMENTS} elements", dims)
    dtype = TYPE_CODES[code]
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        what = "truncated data" if len(raw) < expected else "trailing bytes after the data"
        raise _fail(path, what, f"{expected} bytes for shape {dims} of {dtype.name}", f"{len(raw)} bytes")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # native byte order, a writable copy


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` as IDX (gzip when ``path`` ends in ``.gz``); atomic (temp file + rename)."""
    array = np.asarray(array)
    code = next((c for c, dt in TYPE_CODES.items() if dt.newbyteorder("=") == array.dtype.newbyteorder("=")), None)
    if code is None or not 1 <= array.ndim <= 4:
        raise ValueError(f"write_idx: cannot store dtype {array.dtype} with {array.ndim} dimensions in IDX. "
                         f"Received: dtype={array.dtype}, shape={array.shape}")
    body = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + \
        array.astype(TYPE_CODES[code]).tobytes()
    if os.fspath(path).endswith(".gz"):
        body = gzip.compress(body, mtime=0)
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
