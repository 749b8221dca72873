"""Optimizers, learning-rate schedulers and gradient clipping, with torch.optim's semantics.

- ``SGD``, ``Adam``, ``AdamW`` (base class ``Optimizer``): param groups, a flat
  ``state_dict`` ``{"hyper": <JSON>, "state": {"<index>.<name>": array}}``.
- ``lr_scheduler``: ``StepLR``, ``MultiStepLR``, ``CosineAnnealingLR``, ``LinearLR``,
  ``SequentialLR``, ``OneCycleLR``.
- ``clip_grad_norm_``, ``clip_grad_value_``.
"""

from . import lr_scheduler
from .adam import Adam, AdamW
from .clip import clip_grad_norm_, clip_grad_value_
from .lr_scheduler import (CosineAnnealingLR, LinearLR, LRScheduler, MultiStepLR, OneCycleLR,
                           SequentialLR, StepLR)
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler", "LRScheduler", "StepLR",
           "MultiStepLR", "CosineAnnealingLR", "LinearLR", "SequentialLR", "OneCycleLR",
           "clip_grad_norm_", "clip_grad_value_"]
