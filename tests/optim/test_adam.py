import numpy as np
import pytest
import torch

from cnnkit.nn.module import Parameter
from cnnkit.optim import Adam, AdamW

from ._pair import assert_params_close, make_params, set_grads

ADAM = [dict(), dict(weight_decay=0.1), dict(amsgrad=True), dict(maximize=True),
        dict(weight_decay=0.05, amsgrad=True, maximize=True),
        dict(betas=(0.3, 0.8), eps=1e-3)]          # beta1 < 0.5: lerp's other branch
ADAMW = [dict(), dict(amsgrad=True), dict(weight_decay=0.3, maximize=True),
         dict(weight_decay=0.1, amsgrad=True, betas=(0.5, 0.99))]


def _run(ours_cls, torch_cls, kw, dtype, steps=8):
    rng = np.random.default_rng(1)
    ours, theirs = make_params(rng, dtype)
    opt, topt = ours_cls(ours, lr=0.05, **kw), torch_cls(theirs, lr=0.05, **kw)
    for step in range(steps):
        set_grads(rng, ours, theirs)
        opt.step()
        topt.step()
        assert_params_close(ours, theirs, dtype, what=f"step {step}")
    for p, tp in zip(ours, theirs):
        s, ts = opt.state[p], topt.state[tp]
        assert sorted(s) == sorted(ts) and float(s["step"]) == float(ts["step"]) == steps
        assert s["step"].dtype == np.float64 and s["step"].shape == ()
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if name in s:
                assert s[name].dtype == np.dtype(dtype)
                np.testing.assert_allclose(s[name], ts[name].numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", ADAM, ids=lambda kw: ",".join(kw) or "plain")
def test_adam_matches_pytorch(kw, dtype):
    _run(Adam, torch.optim.Adam, kw, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", ADAMW, ids=lambda kw: ",".join(kw) or "plain")
def test_adamw_matches_pytorch(kw, dtype):
    _run(AdamW, torch.optim.AdamW, kw, dtype)


def test_adam_and_adamw_differ_only_in_how_decay_is_applied():
    # Same weight decay: coupled (Adam) and decoupled (AdamW) give different updates;
    # without decay they are the same optimizer.
    def run(cls, wd):
        p = Parameter(np.linspace(-1, 1, 5))
        opt = cls([p], lr=0.1, weight_decay=wd)
        for k in range(3):
            p.grad = np.cos(np.arange(5.0) + k)
            opt.step()
        return p.data
    np.testing.assert_array_equal(run(Adam, 0.0), run(AdamW, 0.0))
    assert np.abs(run(Adam, 0.5) - run(AdamW, 0.5)).max() > 1e-3
    assert AdamW([Parameter(np.ones(1))]).defaults["weight_decay"] == 1e-2


def test_adam_errors():
    a = Parameter(np.ones(2))
    with pytest.raises(ValueError, match=r"Adam: betas\[0\] must be in \[0, 1\)\. Received: betas=\(1\.0, 0\.999\)"):
        Adam([a], betas=(1.0, 0.999))
    with pytest.raises(ValueError, match=r"AdamW: betas\[1\] must be in \[0, 1\)"):
        AdamW([a], betas=(0.9, -0.1))
    with pytest.raises(TypeError, match="betas must be a pair"):
        Adam([a], betas=0.9)
    with pytest.raises(ValueError, match="eps must be non-negative"):
        Adam([a], eps=-1e-8)
    with pytest.raises(ValueError, match="weight_decay must be non-negative"):
        AdamW([a], weight_decay=-0.1)
    with pytest.raises(ValueError, match="lr must be non-negative"):
        Adam([a], lr=float("nan"))
