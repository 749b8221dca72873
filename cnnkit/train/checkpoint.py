"""Checkpoints: safetensors for arrays, a JSON sidecar for everything else.

A checkpoint called ``last`` in ``DIR`` is two files:

- ``DIR/last-<step>.safetensors``: the model's ``state_dict`` under ``model.<name>``
  and the optimizer's arrays under ``optim.<key>`` (written with the
  ``safetensors`` library's NumPy API: no pickle, nothing executable);
- ``DIR/last.json``: format version, the model's config (to rebuild it), epoch,
  step, metrics, optimizer hyper-parameters, scheduler and loader state, RNG
  states, the weights file's name and its SHA-256.

Writes are atomic and never destroy the previous good checkpoint: the weights go
to a new file (temp file, fsync, ``os.replace``), then the JSON that points to it
is replaced the same way, and only then is the previous weights file removed. A
crash at any point leaves either the old or the new checkpoint complete. Loading
checks the hash, so a truncated or swapped weights file is reported, not used.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .._atomic import atomic_write_bytes

FORMAT = "cnnkit-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or inconsistent (the message says which file)."""


def _atomic_write(path: str, data: bytes) -> None:
    atomic_write_bytes(path, data)


def atomic_write_text(path: str, text: str) -> None:
    _atomic_write(path, text.encode("utf-8"))


def save_checkpoint(folder: str, name: str, model, optimizer=None, meta: dict | None = None) -> str:
    """Write checkpoint ``name`` (e.g. ``"last"``, ``"best"``) into ``folder``; returns the JSON path."""
    from safetensors.numpy import save

    os.makedirs(folder, exist_ok=True)
    tensors = {f"model.{k}": np.array(v, order="C") for k, v in model.state_dict().items()}  # keeps 0-d shapes
    hyper = None
    if optimizer is not None:
        state = optimizer.state_dict()
        hyper = state["hyper"]
        tensors.update({f"optim.{k}": np.array(v, order="C") for k, v in state["state"].items()})
    blob = save(tensors)
    digest = hashlib.sha256(blob).hexdigest()
    meta = dict(meta or {})
    step = int(meta.get("step", 0))
    weights_name = f"{name}-{step:08d}-{digest[:8]}.safetensors"
    json_path = os.path.join(folder, f"{name}.json")
    old_weights = None
    if os.path.exists(json_path):
        try:
            old_weights = json.load(open(json_path)).get("weights")
        except (OSError, ValueError):
            old_weights = None
    _atomic_write(os.path.join(folder, weights_name), blob)
    record = {"format": FORMAT, "weights": weights_name, "sha256": digest,
              "model_config": getattr(model, "config", None), "optimizer": hyper, **meta}
    atomic_write_text(json_path, json.dumps(record, indent=2, default=_json_default))
    if old_weights and old_weights != weights_name:
        old = os.path.join(folder, os.path.basename(old_weights))
        if os.path.exists(old):
            os.unlink(old)
    return json_path


def load_checkpoint(path: str) -> tuple[dict, dict, dict]:
    """Read a checkpoint: ``(meta, model_state, optimizer_state_arrays)``.

    ``path`` is the JSON file, or a folder holding ``last.json``.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if os.path.isdir(path):
        path = os.path.join(path, "last.json")
    try:
        with open(path, "rb") as fh:
            meta = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found: expected a checkpoint JSON file "
                              "(or a run folder containing last.json)") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a cnnkit checkpoint: expected JSON, found "
                              f"unparseable data ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: not a cnnkit checkpoint: expected format {FORMAT!r}, found {found!r}")
    weights = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.basename(str(meta.get("weights"))))
    try:
        with open(weights, "rb") as fh:
            blob = fh.read()
    except FileNotFoundError:
        raise CheckpointError(f"{weights}: weights file named by {path} is missing") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta.get("sha256"):
        raise CheckpointError(f"{weights}: corrupt or truncated weights: expected SHA-256 {meta.get('sha256')}, "
                              f"found {digest} ({len(blob)} bytes)")
    try:
        tensors = load(blob)
    except (SafetensorError, ValueError, OSError) as e:
        raise CheckpointError(f"{weights}: unreadable safetensors data: {e}") from None
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optim_state = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")}
    return meta, model_state, optim_state


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serializable: {type(obj).__name__}")
