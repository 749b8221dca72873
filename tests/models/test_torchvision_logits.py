"""The torchvision-layout zoo models give torchvision's logits when loaded with the same weights.

``fixtures/torchvision_logits.npz`` holds torchvision's float32 eval-mode logits for two
224x224 images, with every parameter and buffer set by ``_formula_weights`` (see
``make_torchvision_fixtures.py``, which also records the torch/torchvision versions).
Here, without torchvision, the same weights are rebuilt from torchvision's recorded key
list, written with ``torch.save`` (and, for resnet18, as safetensors), read back by
``cnnkit.io.load_weights`` (strict: every torchvision key, nothing else) and run through
the cnnkit model: the logits must agree to 1e-4 (max abs difference).
"""

from __future__ import annotations

import gc
import json
import os

import numpy as np
import pytest
import torch

from cnnkit import models
from cnnkit.io import load_weights
from tests.models._formula_weights import fingerprint, formula_input, formula_state, spec_from_text

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "torchvision_logits.npz")
TOLERANCE = 1e-4  # max abs logit difference, float32

CASES = [("alexnet_torchvision", "pth"), ("vgg11", "pth"), ("resnet18", "pth"),
         ("resnet18", "safetensors"), ("resnet50", "pth"), ("googlenet_torchvision", "pth"),
         ("mobilenet_v2", "pth")]


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    meta = json.loads(str(data["meta"]))
    x = formula_input()
    assert fingerprint([x]) == pytest.approx(meta["input_fingerprint"], rel=1e-12), (
        "formula_input() no longer gives the fixture's input (NumPy's random stream or the "
        "formula changed): regenerate with `python -m tests.models.make_torchvision_fixtures`")
    return data, x


def _write(state: dict, path, fmt: str) -> None:
    if fmt == "pth":
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    else:
        from safetensors.numpy import save_file
        save_file(state, str(path))


@pytest.mark.parametrize("name, fmt", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_logits_match_torchvision(reference, tmp_path, name, fmt):
    data, x = reference
    expected = data[f"{name}.logits"]
    spec = spec_from_text(str(data[f"{name}.spec"]))

    state = formula_state(spec)
    assert fingerprint(state.values()) == pytest.approx(float(data[f"{name}.fingerprint"]), rel=1e-12), (
        f"{name}: the formula weights differ from the fixture's (NumPy's random stream or "
        f"_formula_weights changed): regenerate with `python -m tests.models.make_torchvision_fixtures`")
    path = tmp_path / f"{name}.{fmt}"
    _write(state, path, fmt)

    model = models.get(name, num_classes=1000, in_channels=3, rng=np.random.default_rng(0))
    ours = [(k, tuple(np.shape(v))) for k, v in model.state_dict().items()]
    assert ours == spec, f"{name}: state_dict keys/shapes differ from torchvision's"
    result = load_weights(model, path)  # strict: a missing or unexpected key raises
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    loaded = model.state_dict()
    for key, value in state.items():
        assert np.array_equal(loaded[key], value), f"{name}: {key} not loaded as written"
    del state, loaded
    path.unlink()
    gc.collect()

    model.eval()
    logits = model(x)
    assert logits.shape == expected.shape == (2, 1000) and logits.dtype == np.float32
    diff = float(np.max(np.abs(logits - expected)))
    print(f"{name} ({fmt}): max abs logit diff {diff:.3e}")
    assert diff < TOLERANCE, (f"{name}: logits differ from torchvision's by {diff:.3e} (max abs), "
                              f"tolerance {TOLERANCE}; |logits| max {np.max(np.abs(expected)):.2f}")
    del model
    gc.collect()
