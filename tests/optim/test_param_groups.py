import numpy as np
import pytest
import torch

from cnnkit.nn.module import Parameter
from cnnkit.optim import SGD, Adam, AdamW

from ._pair import assert_params_close, make_params, set_grads


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ours_cls,torch_cls,defaults,override", [
    (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9), dict(lr=0.01, nesterov=True)),
    (Adam, torch.optim.Adam, dict(lr=0.05, weight_decay=0.1), dict(lr=0.001, betas=(0.8, 0.99))),
    (AdamW, torch.optim.AdamW, dict(lr=0.05, amsgrad=True), dict(lr=0.005, weight_decay=0.5)),
], ids=["sgd", "adam", "adamw"])
def test_param_groups_with_different_lr_match_torch(ours_cls, torch_cls, defaults, override, dtype):
    """Fine-tuning: a small lr for the 'backbone', the defaults for the 'head'."""
    rng = np.random.default_rng(2)
    ours, theirs = make_params(rng, dtype)
    opt = ours_cls([{"params": ours[:2], **override}, {"params": ours[2:]}], **defaults)
    topt = torch_cls([{"params": theirs[:2], **override}, {"params": theirs[2:]}], **defaults)
    assert [g["lr"] for g in opt.param_groups] == [override["lr"], defaults["lr"]]
    for step in range(6):
        set_grads(rng, ours, theirs)
        opt.step()
        topt.step()
        assert_params_close(ours, theirs, dtype, what=f"step {step}")


def test_param_groups_structure_and_add_param_group():
    a, b, c = (Parameter(np.ones(2)) for _ in range(3))
    opt = SGD([{"params": [a, b], "lr": 0.5, "name": "backbone"}], lr=0.1, momentum=0.9)
    assert opt.param_groups == [{"params": [a, b], "lr": 0.5, "momentum": 0.9, "dampening": 0.0,
                                 "weight_decay": 0.0, "nesterov": False, "maximize": False,
                                 "name": "backbone"}]
    opt.add_param_group({"params": c, "momentum": 0.0})
    assert opt.param_groups[1]["params"] == [c] and opt.param_groups[1]["lr"] == 0.1
    assert opt.param_groups[1]["momentum"] == 0.0
    assert opt.state_dict()["hyper"]["groups"][1]["params"] == [2]
    with pytest.raises(ValueError, match="appears twice"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="needs a 'params' entry"):
        opt.add_param_group({"lr": 0.1})
    with pytest.raises(TypeError, match="ordered collection"):
        opt.add_param_group({"params": {Parameter(np.ones(1))}})
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        opt.add_param_group({"params": [Parameter(np.ones(1))], "momentum": 0.0, "nesterov": True})
    assert len(opt.param_groups) == 2


def test_lr_shortcut_reads_and_sets_every_group():
    import numpy as np
    from cnnkit.nn.module import Parameter
    from cnnkit.optim import SGD
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}], lr=0.5)
    assert opt.lr == 0.1
    opt.lr = 0.2
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2]
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, 0.8)
    np.testing.assert_allclose(b.data, 0.8)
