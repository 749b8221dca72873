"""Load and save a model's weights: safetensors (read/write) and PyTorch ``.pth`` (read).

- ``read_state_dict(path)`` -> ``{dotted name: np.ndarray}`` from a ``.safetensors`` file
  (the ``safetensors`` library's NumPy API: a JSON header and raw arrays, nothing
  executable) or a PyTorch zip checkpoint (``torch_pth.read_pth``: a restricted
  unpickler, no torch import). A checkpoint dict with a ``"state_dict"`` or ``"model"``
  entry is unwrapped, and a leading ``"module."`` (``nn.DataParallel``) is stripped.
- ``load_weights(model, path, strict=True)`` -> ``model.load_state_dict`` (returns its
  ``IncompatibleKeys``; with ``strict`` any missing/unexpected key is an error).
- ``save_weights(model, path)``: safetensors, written atomically (temp file in the same
  folder, fsync, ``os.replace``), so a crash never leaves a half-written file at ``path``.

The format is chosen by the file's first bytes (a zip is a ``.pth``), not its suffix.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .._atomic import atomic_write_bytes

from .torch_pth import CheckpointFormatError, read_pth

__all__ = ["read_state_dict", "load_weights", "save_weights"]

_WRAPPER_KEYS = ("state_dict", "model")


def _unwrap(path: str, obj) -> dict:
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: expected a state_dict (a dict of tensors). "
                                    f"Received: {type(obj).__name__}")
    if not all(isinstance(v, np.ndarray) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                return _unwrap(path, obj[key])
        bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
        raise CheckpointFormatError(
            f"{path}: not a state_dict: entries {bad[:5]} are not tensors, and there is no "
            f"'state_dict' or 'model' entry. Received: keys={list(obj)[:10]}")
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}  # nn.DataParallel prefix
    return dict(obj)


def read_state_dict(path) -> dict[str, np.ndarray]:
    """``{name: array}`` from a ``.safetensors`` file or a PyTorch ``.pth``/``.pt`` checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: weights file not found")
    if zipfile.is_zipfile(path) or path.endswith((".pth", ".pt", ".bin", ".ckpt", ".tar")):
        return _unwrap(path, read_pth(path))
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return _unwrap(path, load_file(path))
    except SafetensorError as exc:
        raise CheckpointFormatError(f"{path}: not a readable safetensors file (truncated or "
                                    f"another format): {exc}") from None


def load_weights(model, path, strict: bool = True):
    """Read ``path`` (safetensors or ``.pth``) into ``model``; returns ``IncompatibleKeys``."""
    return model.load_state_dict(read_state_dict(path), strict=strict)


def save_weights(model, path) -> str:
    """Write ``model.state_dict()`` to ``path`` as safetensors, atomically; returns ``path``."""
    from safetensors.numpy import save

    path = os.fspath(path)
    tensors = {k: np.array(v, order="C") for k, v in model.state_dict().items()}  # keeps 0-d shapes
    blob = save(tensors, metadata={"format": "np"})
    atomic_write_bytes(path, blob)
    return path
