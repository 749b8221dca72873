"""Deterministic stand-in weights and input for the torchvision logits test, from NumPy alone.

``make_torchvision_fixtures.py`` (run with torch + torchvision) and
``test_torchvision_logits.py`` (run without torchvision) both import this module, so
the weights that torchvision's logits were computed with can be rebuilt here, bit for
bit, from a key name and a shape:

- every array draws from ``np.random.default_rng(zlib.crc32(key))``, a standard normal
  ``u`` of the array's shape (float64), then scaled by the key's last part:
  conv ``weight`` (4 dims): He init, ``u * sqrt(2 / fan_in)`` with
  ``fan_in = prod(shape[1:]) = C_in/groups * kH * kW``; linear ``weight`` (2 dims):
  ``u * sqrt(1 / fan_in)``; BatchNorm ``weight`` (1 dim): ``1 + 0.1 u``; any ``bias``:
  ``0.05 u``; ``running_mean``: ``0.1 u``; ``running_var``: ``1 + 0.1 |u|`` (positive);
  ``num_batches_tracked``: an int64 scalar in [1, 1000);
- one rule needs the whole key list (``formula_state``): in a ResNet block
  (``layerL.B.bnK``), the BatchNorm that closes the residual branch (the largest ``K``:
  ``bn2`` in a basic block, ``bn3`` in a bottleneck) has its weight scaled by
  ``RESIDUAL_GAIN``. Eval-mode BatchNorm with ``running_var ~ 1`` does not renormalize,
  so with weight ~1 every block would double the activations' variance (resnet50's
  logits reached ~1850, and float32 noise ~1e-3); this is torchvision's
  ``zero_init_residual`` idea, made small rather than zero so the branch still counts;
- the result is cast to float32 (torchvision's dtype).

These scales keep the logits of the six models at O(1)-O(10), so float32 rounding stays
well below the test's 1e-4 tolerance (the fixture's ``meta`` records torchvision's own
float32-vs-float64 difference per model).

``fingerprint`` sums the arrays in float64: the fixture records it, and the test checks
it first, so a change in NumPy's random stream (or in this formula) reads as "the
fixture is stale" rather than as a model mismatch.
"""

from __future__ import annotations

import math
import re
import zlib

import numpy as np

INPUT_SHAPE = (2, 3, 224, 224)  # (N, C, H, W): two ImageNet-sized images
INPUT_SEED = 224
RESIDUAL_GAIN = 0.25  # weight scale of the BatchNorm closing a ResNet residual branch
_RESNET_BN_WEIGHT = re.compile(r"^(layer\d+\.\d+)\.bn(\d+)\.weight$")  # layerL.B.bnK.weight


def formula_array(key: str, shape, gain: float = 1.0) -> np.ndarray:
    """The deterministic value of state_dict entry ``key`` with ``shape`` (see the module
    docstring); ``gain`` multiplies a BatchNorm weight (``formula_state`` decides it)."""
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.array(rng.integers(1, 1000), dtype=np.int64).reshape(shape)
    u = rng.standard_normal(shape)  # float64
    if leaf == "weight" and len(shape) == 4:
        value = u * math.sqrt(2.0 / math.prod(shape[1:]))
    elif leaf == "weight" and len(shape) == 2:
        value = u * math.sqrt(1.0 / shape[1])
    elif leaf == "weight" and len(shape) == 1:
        value = gain * (1.0 + 0.1 * u)
    elif leaf == "bias":
        value = 0.05 * u
    elif leaf == "running_mean":
        value = 0.1 * u
    elif leaf == "running_var":
        value = 1.0 + 0.1 * np.abs(u)
    else:
        raise ValueError(f"formula_array: no rule for this key. Received: key={key!r}, shape={shape}")
    return value.astype(np.float32)


def formula_state(spec) -> dict[str, np.ndarray]:
    """``{key: formula_array(key, shape, gain)}`` for ``spec``, a list of ``(key, shape)``
    pairs, in order; ``gain`` is ``RESIDUAL_GAIN`` for a ResNet block's last BatchNorm."""
    spec = list(spec)
    last_bn = {}  # ResNet block prefix -> largest bn index in it
    for key, _ in spec:
        m = _RESNET_BN_WEIGHT.match(key)
        if m:
            last_bn[m[1]] = max(last_bn.get(m[1], 0), int(m[2]))
    state = {}
    for key, shape in spec:
        m = _RESNET_BN_WEIGHT.match(key)
        closes_branch = m is not None and int(m[2]) == last_bn[m[1]] >= 2
        state[key] = formula_array(key, shape, RESIDUAL_GAIN if closes_branch else 1.0)
    return state


def formula_input() -> np.ndarray:
    """The (2, 3, 224, 224) float32 input batch, standard normal (like normalized images)."""
    return np.random.default_rng(INPUT_SEED).standard_normal(INPUT_SHAPE).astype(np.float32)


def fingerprint(arrays) -> float:
    """Sum of all elements of ``arrays`` in float64, in the given order."""
    return float(sum(np.sum(a, dtype=np.float64) for a in arrays))


def spec_to_text(spec) -> str:
    """``(key, shape)`` pairs as text, one ``key d0,d1,...`` line each (an empty shape for a scalar)."""
    return "\n".join(f"{key} {','.join(str(int(d)) for d in shape)}" for key, shape in spec)


def spec_from_text(text: str) -> list[tuple[str, tuple[int, ...]]]:
    """The inverse of :func:`spec_to_text`."""
    spec = []
    for line in text.splitlines():
        key, _, dims = line.partition(" ")
        spec.append((key, tuple(int(d) for d in dims.split(",")) if dims else ()))
    return spec
