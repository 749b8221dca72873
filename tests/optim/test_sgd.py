import numpy as np
import pytest
import torch

from cnnkit.nn.module import Parameter
from cnnkit.optim import SGD

from ._pair import assert_params_close, make_params, set_grads

CONFIGS = [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
           dict(momentum=0.8, dampening=0.3, weight_decay=1e-2),
           dict(momentum=0.5, weight_decay=0.1, maximize=True),
           dict(momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True),
           dict(weight_decay=0.2)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(kw) or "plain")
def test_sgd_matches_pytorch(kw, dtype):
    rng = np.random.default_rng(0)
    ours, theirs = make_params(rng, dtype)
    opt, topt = SGD(ours, lr=0.1, **kw), torch.optim.SGD(theirs, lr=0.1, **kw)
    for step in range(6):
        set_grads(rng, ours, theirs)
        opt.step()
        topt.step()
        assert_params_close(ours, theirs, dtype, what=f"step {step}")
    if kw.get("momentum"):
        for p, tp in zip(ours, theirs):
            assert opt.state[p]["momentum_buffer"].dtype == np.dtype(dtype)
            np.testing.assert_allclose(opt.state[p]["momentum_buffer"],
                                       topt.state[tp]["momentum_buffer"].numpy(), rtol=1e-5, atol=1e-6)
    else:
        assert all("momentum_buffer" not in opt.state.get(p, {}) for p in ours)


def test_sgd_updates_in_place_and_does_not_touch_grad():
    p = Parameter(np.ones(3, dtype=np.float32))
    data = p.data
    p.grad = g = np.full(3, 2.0, dtype=np.float32)
    SGD([p], lr=0.5, momentum=0.9, weight_decay=0.1, maximize=True).step()
    assert p.data is data and p.data.dtype == np.float32
    np.testing.assert_array_equal(g, 2.0)
    np.testing.assert_allclose(p.data, 1 + 0.5 * (2.0 - 0.1), rtol=1e-6)


def test_sgd_zero_grad_sets_none_and_closure():
    p = Parameter(np.ones(2))
    p.grad = np.ones(2)
    opt = SGD([p], lr=1.0)
    assert opt.step(lambda: 3.5) == 3.5
    opt.zero_grad()
    assert p.grad is None
    p.grad = np.ones(2)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, 0.0)


def test_sgd_errors():
    a = Parameter(np.ones(2))
    with pytest.raises(ValueError, match=r"SGD: lr must be non-negative\. Received: lr=-1\.0"):
        SGD([a], lr=-1)
    with pytest.raises(ValueError, match="momentum must be non-negative"):
        SGD([a], momentum=-0.1)
    with pytest.raises(ValueError, match="nesterov needs momentum > 0 and dampening = 0"):
        SGD([a], nesterov=True)
    with pytest.raises(ValueError, match="nesterov needs"):
        SGD([a], momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([])
    with pytest.raises(TypeError, match="iterable .* of Parameters"):
        SGD(a)
    with pytest.raises(TypeError, match="can only optimize Parameters"):
        SGD([np.ones(2)])
    with pytest.raises(TypeError, match="lr must be a real number"):
        SGD([a], lr="0.1")
    with pytest.raises(ValueError, match="appears twice"):
        SGD([a, a])
    a.grad = np.ones(3)
    with pytest.raises(ValueError, match=r"parameter 0's grad has a different shape"):
        SGD([a]).step()
