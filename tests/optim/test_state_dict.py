"""The optimizer state_dict contract: {"hyper": JSON, "state": {"<index>.<name>": array}}."""

import copy
import json

import numpy as np
import pytest
import torch

from cnnkit.nn.module import Parameter
from cnnkit.optim import SGD, Adam, AdamW

from ._pair import assert_params_close, make_params, set_grads

SHAPES = ((3, 4), (5,), (2, 3, 2))


def _two_groups(params, **extra):
    return [{"params": params[:2], **extra}, {"params": params[2:], "lr": 0.01}]


OPTIMIZERS = [
    ("sgd", lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("sgd-groups", lambda ps: SGD(_two_groups(ps, momentum=0.5), lr=0.1, momentum=0.9)),
    ("adam-amsgrad", lambda ps: Adam(ps, lr=0.05, weight_decay=0.1, amsgrad=True)),
    ("adamw-groups", lambda ps: AdamW(_two_groups(ps, weight_decay=0.3), lr=0.05)),
]


def _fresh(dtype=np.float64):
    rng = np.random.default_rng(7)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]


def _grads(n_steps, dtype=np.float64):
    rng = np.random.default_rng(8)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(n_steps)]


def _step(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = g.copy()
    opt.step()


def _snapshot(opt):
    return copy.deepcopy((opt.state_dict(), [{k: v for k, v in g.items() if k != "params"}
                                             for g in opt.param_groups]))


def _assert_same_snapshot(a, b):
    (sd_a, groups_a), (sd_b, groups_b) = a, b
    assert sd_a["hyper"] == sd_b["hyper"] and groups_a == groups_b
    assert sd_a["state"].keys() == sd_b["state"].keys()
    for k in sd_a["state"]:
        np.testing.assert_array_equal(sd_a["state"][k], sd_b["state"][k])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,make", OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
def test_resume_mid_run_is_bit_identical_to_an_uninterrupted_run(name, make, dtype):
    grads = _grads(10, dtype)
    straight = _fresh(dtype)
    opt = make(straight)
    for g in grads:
        _step(opt, straight, g)

    first = _fresh(dtype)
    opt1 = make(first)
    for g in grads[:4]:
        _step(opt1, first, g)
    saved = opt1.state_dict()
    # what a trainer does: JSON for hyper, arrays to a file (here: copied), params restored
    hyper = json.loads(json.dumps(saved["hyper"]))
    state = {k: np.array(v) for k, v in saved["state"].items()}
    values = [p.data.copy() for p in first]
    for g in grads[4:6]:  # keep going: the saved copies must not move
        _step(opt1, first, g)

    resumed = [Parameter(v) for v in values]
    opt2 = make(resumed)
    for group in opt2.param_groups:  # hyper-parameters come from the state_dict, not the constructor
        group["lr"] = 123.0
    opt2.load_state_dict({"hyper": hyper, "state": state})
    for g in grads[4:]:
        _step(opt2, resumed, g)
    for p, q in zip(straight, resumed):
        assert q.data.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(p.data, q.data)
    _assert_same_snapshot(_snapshot(opt), _snapshot(opt2))


def test_state_dict_format_adam():
    params = _fresh(np.float32)
    opt = Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}], amsgrad=True)
    params[1].grad = np.ones(5, np.float32)  # params 0 and 2 have no grad: no state
    opt.step()
    sd = opt.state_dict()
    assert set(sd) == {"hyper", "state"}
    common = {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": True, "maximize": False}
    assert sd["hyper"] == {"class": "Adam", "groups": [
        {"params": [0], "lr": 1e-3, **common}, {"params": [1, 2], "lr": 0.01, **common}]}
    assert json.loads(json.dumps(sd["hyper"])) == sd["hyper"]
    assert list(sd["state"]) == ["1.step", "1.exp_avg", "1.exp_avg_sq", "1.max_exp_avg_sq"]
    step = sd["state"]["1.step"]
    assert isinstance(step, np.ndarray) and step.shape == () and step.dtype == np.float64 and step == 1
    for k in ("1.exp_avg", "1.exp_avg_sq", "1.max_exp_avg_sq"):
        assert sd["state"][k].shape == (5,) and sd["state"][k].dtype == np.float32
    sd["state"]["1.exp_avg"][:] = 99  # a copy
    assert not np.any(opt.state[params[1]]["exp_avg"] == 99)


def test_state_dict_format_sgd_and_names():
    model_params = [("conv.weight", Parameter(np.ones((2, 2)))), ("conv.bias", Parameter(np.ones(2)))]
    opt = SGD(model_params, lr=0.1, momentum=0.9)
    for _, p in model_params:
        p.grad = np.ones_like(p.data)
    opt.step()
    sd = opt.state_dict()
    assert sd["hyper"] == {"class": "SGD", "groups": [
        {"params": [0, 1], "lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0,
         "nesterov": False, "maximize": False, "param_names": ["conv.weight", "conv.bias"]}]}
    assert list(sd["state"]) == ["0.momentum_buffer", "1.momentum_buffer"]
    assert SGD([Parameter(np.ones(2))], lr=0.1).state_dict()["state"] == {}


def test_state_dict_survives_safetensors():
    st = pytest.importorskip("safetensors.numpy")
    params = _fresh()
    opt = Adam(params)
    for g in _grads(3):
        _step(opt, params, g)
    sd = opt.state_dict()
    loaded = st.load(st.save(sd["state"]))
    opt2 = Adam(_fresh())
    opt2.load_state_dict({"hyper": json.loads(json.dumps(sd["hyper"])), "state": loaded})
    _assert_same_snapshot(_snapshot(opt), _snapshot(opt2))


def _trained_adam():
    params = _fresh()
    opt = Adam(params, lr=0.01)
    for g in _grads(2):
        _step(opt, params, g)
    return opt


def _broken(mutate):
    sd = _trained_adam().state_dict()
    mutate(sd)
    return sd


@pytest.mark.parametrize("mutate,match", [
    (lambda sd: sd["hyper"].update({"class": "SGD"}), r"Adam: state_dict was saved by 'SGD', not by 'Adam'"),
    (lambda sd: sd["hyper"]["groups"][0]["params"].append(3),
     r"it holds 4 parameters, this optimizer has 3"),
    (lambda sd: sd["state"].update({"0.exp_avg": np.zeros((4, 3))}),
     r"0\.exp_avg: shape \(4, 3\), expected \(3, 4\)"),
    (lambda sd: sd["state"].update({"1.step": np.zeros(1)}), r"1\.step: shape \(1,\), expected \(\)"),
    (lambda sd: sd["state"].update({"3.exp_avg": np.zeros(2), "0.momentum_buffer": np.zeros((3, 4))}),
     r"unknown state keys \['3\.exp_avg', '0\.momentum_buffer'\]"),
    (lambda sd: sd["state"].pop("2.step"), r"parameter 2's state lacks \['step'\]"),
    (lambda sd: sd["hyper"]["groups"][0].update(lr=-1.0), r"group 0: Adam: lr must be non-negative"),
    (lambda sd: sd["hyper"]["groups"].append({"params": []}), r"2 parameter groups, this optimizer has 1"),
    (lambda sd: sd.pop("state"), r"must be a dict with a 'hyper' dict and a 'state' dict"),
], ids=["class", "count", "shape", "step-shape", "unknown", "incomplete", "bad-hyper", "groups", "no-state"])
def test_load_state_dict_errors_change_nothing(mutate, match):
    opt = _trained_adam()
    for g in opt.param_groups:
        g["lr"] = 0.5
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(_broken(mutate))
    _assert_same_snapshot(before, _snapshot(opt))


def test_load_state_dict_lists_every_problem_at_once():
    sd = _trained_adam().state_dict()
    sd["state"]["0.exp_avg"] = np.zeros(2)
    sd["state"]["1.exp_avg_sq"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"0\.exp_avg: shape \(2,\).*1\.exp_avg_sq: shape \(3,\)"):
        Adam(_fresh()).load_state_dict(sd)


def test_wrong_class_between_adam_and_adamw_and_sgd():
    sd = _trained_adam().state_dict()
    with pytest.raises(ValueError, match="saved by 'Adam', not by 'AdamW'"):
        AdamW(_fresh()).load_state_dict(sd)
    with pytest.raises(ValueError, match="saved by 'Adam', not by 'SGD'"):
        SGD(_fresh()).load_state_dict(sd)


def test_group_size_mismatch():
    sd = SGD(_two_groups(_fresh()), lr=0.1).state_dict()
    ps = _fresh()
    with pytest.raises(ValueError, match=r"group sizes \[2, 1\] differ from this optimizer's \[1, 2\]"):
        SGD([{"params": ps[:1]}, {"params": ps[1:]}], lr=0.1).load_state_dict(sd)


def test_frozen_and_gradless_params_are_untouched_and_match_torch():
    # param 0 frozen with a stale grad, param 1 gradless on odd steps, param 2 always updated
    for dtype in (np.float64, np.float32):
        rng = np.random.default_rng(3)
        ours, theirs = make_params(rng, dtype)
        ours[0].requires_grad = False
        frozen = ours[0].data.copy()
        opt = Adam(ours, lr=0.1, weight_decay=0.1)
        topt = torch.optim.Adam(theirs[1:], lr=0.1, weight_decay=0.1)
        for step in range(6):
            set_grads(rng, ours, theirs, skip=(1,) if step % 2 else ())
            ours[0].grad = np.ones_like(frozen)
            opt.step()
            topt.step()
            np.testing.assert_array_equal(ours[0].data, frozen)
            assert_params_close(ours[1:], theirs[1:], dtype, what=f"step {step}")
        assert ours[0] not in opt.state
        assert float(opt.state[ours[1]]["step"]) == 3 and float(opt.state[ours[2]]["step"]) == 6


def test_momentum_state_is_not_advanced_for_a_gradless_step():
    a = Parameter(np.zeros(2))
    opt = SGD([a], lr=1.0, momentum=0.9)
    a.grad = np.ones(2)
    opt.step()
    a.grad = None
    opt.step()
    np.testing.assert_array_equal(a.data, -1.0)
    np.testing.assert_array_equal(opt.state[a]["momentum_buffer"], 1.0)
