"""Write ``fixtures/torchvision_logits.npz``: torchvision's logits for the formula weights.

Regenerate (needs torch and torchvision; cnnkit is not imported), from the repository root:

    python -m tests.models.make_torchvision_fixtures

For each torchvision-layout model of the zoo this builds torchvision's model, overwrites
every parameter and buffer with ``_formula_weights.formula_array(key, shape)`` (strict
``load_state_dict``), runs it in eval mode in float32 on ``formula_input()`` and stores,
under ``<cnnkit name>.<field>``:

- ``logits``: (2, 1000) float32;
- ``spec``: torchvision's state_dict keys and shapes in order (``spec_to_text``), so the
  test builds the same weights, and checks cnnkit's keys, without torchvision;
- ``fingerprint``: the float64 sum of those weights, to tell a stale fixture (NumPy's
  random stream or the formula changed) from a model mismatch;

plus ``meta``: a JSON string with the torch/torchvision/NumPy versions, the torchvision
constructor arguments, the input's fingerprint and, per model, how far the float32
logits are from a float64 run of the same torchvision model (float32 noise, for scale
against the test's 1e-4).

``googlenet`` is built with ``transform_input=False``: cnnkit's ``googlenet_torchvision``
has no input re-normalization (see its module docstring).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torchvision

if __package__ in (None, ""):  # run as a file: make ``tests`` importable from the repo root
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
from tests.models._formula_weights import (  # noqa: E402
    fingerprint, formula_input, formula_state, spec_to_text)

# cnnkit zoo name -> (torchvision.models builder, keyword arguments)
MODELS = {
    "alexnet_torchvision": ("alexnet", {"weights": None}),
    "vgg11": ("vgg11", {"weights": None}),
    "resnet18": ("resnet18", {"weights": None}),
    "resnet50": ("resnet50", {"weights": None}),
    "googlenet_torchvision": ("googlenet", {"weights": None, "aux_logits": False,
                                            "transform_input": False, "init_weights": True}),
    "mobilenet_v2": ("mobilenet_v2", {"weights": None}),
}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "torchvision_logits.npz")


def main() -> None:
    torch.manual_seed(0)  # only the (overwritten) default init draws from it
    x = formula_input()
    arrays = {}
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "input_shape": list(x.shape),
            "input_fingerprint": fingerprint([x]), "models": {}}
    for name, (builder, kwargs) in MODELS.items():
        model = getattr(torchvision.models, builder)(**kwargs).eval()
        spec = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
        state = formula_state(spec)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        for k, v in model.state_dict().items():  # the formula values really are in the model
            if not np.array_equal(v.numpy(), state[k]):
                raise RuntimeError(f"{name}: {k} was not overwritten")
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).numpy()
            logits64 = model.double()(torch.from_numpy(x).double()).numpy()
        f32_noise = float(np.max(np.abs(logits - logits64)))
        arrays[f"{name}.logits"] = logits.astype(np.float32)
        arrays[f"{name}.spec"] = np.array(spec_to_text(spec))
        arrays[f"{name}.fingerprint"] = np.array(fingerprint(state.values()))
        meta["models"][name] = {"torchvision_builder": builder,
                                "kwargs": dict(kwargs),
                                "num_keys": len(spec),
                                "logits_abs_max": float(np.max(np.abs(logits))),
                                "logits_std": float(np.std(logits)),
                                "float32_vs_float64_max_abs": f32_noise}
        print(f"{name:22s} keys={len(spec):4d} |logits|max={np.max(np.abs(logits)):8.3f} "
              f"std={np.std(logits):7.3f} float32-float64={f32_noise:.2e}")
        del model, state
    arrays["meta"] = np.array(json.dumps(meta, indent=1, sort_keys=True))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
