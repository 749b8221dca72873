"""Weights in and out: safetensors and PyTorch ``.pth`` (read with a restricted unpickler)."""

from .torch_pth import CheckpointFormatError, UnsafeCheckpointError, read_pth
from .weights import load_weights, read_state_dict, save_weights

__all__ = ["load_weights", "save_weights", "read_state_dict", "read_pth", "CheckpointFormatError",
           "UnsafeCheckpointError"]
