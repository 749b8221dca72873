import numpy as np
import pytest
import torch

from cnnkit.nn.module import Parameter
from cnnkit.optim import SGD


@pytest.mark.parametrize("kw", [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                dict(momentum=0.8, dampening=0.3, weight_decay=1e-2),
                                dict(momentum=0.5, weight_decay=0.1, maximize=True)])
def test_sgd_matches_pytorch(kw):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    p = Parameter(w0.copy())
    tp = torch.nn.Parameter(torch.tensor(w0.copy()))
    ours, theirs = SGD([p], lr=0.1, **kw), torch.optim.SGD([tp], lr=0.1, **kw)
    for _ in range(5):
        g = rng.standard_normal((3, 4))
        p.grad = g.copy()
        tp.grad = torch.tensor(g.copy())
        ours.step()
        theirs.step()
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_sgd_skips_frozen_and_gradless_and_round_trips_state():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2), requires_grad=False)
    opt = SGD([a, b], lr=1.0, momentum=0.9)
    b.grad = np.ones(2)
    opt.step()
    assert np.all(a.data == 1) and np.all(b.data == 1)
    a.grad = np.ones(2)
    opt.step()
    state = opt.state_dict()
    opt2 = SGD([Parameter(np.zeros(2)), Parameter(np.zeros(2))], lr=0.5)
    opt2.load_state_dict(state)
    assert opt2.lr == 1.0 and np.all(opt2.buffers[0] == 1)
    with pytest.raises(ValueError, match="different number of parameters"):
        SGD([a]).load_state_dict(state)
    with pytest.raises(ValueError, match="lr must be non-negative"):
        SGD([a], lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD([a], nesterov=True)
