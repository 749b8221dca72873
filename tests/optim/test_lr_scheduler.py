"""LR schedulers against torch.optim.lr_scheduler, uninterrupted and across a state_dict round trip."""

import json
import warnings

import numpy as np
import pytest
import torch

from cnnkit import optim
from cnnkit.nn.module import Parameter
from cnnkit.optim import lr_scheduler as ours_sched

N_STEPS = 40
LRS = (0.1, 0.02)  # two param groups: every scheduler handles per-group base lrs


def _optimizers(kind):
    """Our optimizer and torch's, two groups with different lrs."""
    ps = [Parameter(np.zeros(2)), Parameter(np.zeros(3))]
    tps = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    groups = lambda qs: [{"params": [qs[0]], "lr": LRS[0]}, {"params": [qs[1]], "lr": LRS[1]}]
    if kind == "adam":
        return ps, optim.Adam(groups(ps)), torch.optim.Adam(groups(tps))
    return ps, optim.SGD(groups(ps), momentum=0.9), torch.optim.SGD(groups(tps), momentum=0.9)


SCHEDULES = {
    "step": lambda m, o: m.StepLR(o, step_size=4, gamma=0.5),
    "multistep": lambda m, o: m.MultiStepLR(o, milestones=[3, 7, 7, 20], gamma=0.3),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=15, eta_min=1e-3),  # 40 steps: past T_max
    "cosine-eta0": lambda m, o: m.CosineAnnealingLR(o, T_max=7),
    "linear": lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=8),
    "linear-default": lambda m, o: m.LinearLR(o),
    "warmup-cosine": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.01, total_iters=5),
                                                     m.CosineAnnealingLR(o, T_max=35, eta_min=1e-4)],
                                                 milestones=[5]),
    "three-stage": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, 0.2, total_iters=3),
                                                   m.StepLR(o, 3, gamma=0.5),
                                                   m.CosineAnnealingLR(o, T_max=10)], milestones=[4, 12]),
    "onecycle-cos": lambda m, o: m.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=N_STEPS + 1),
    "onecycle-linear-3phase": lambda m, o: m.OneCycleLR(o, max_lr=0.8, epochs=6, steps_per_epoch=7,
                                                        anneal_strategy="linear", three_phase=True),
}
ONECYCLE = {k for k in SCHEDULES if k.startswith("onecycle")}


def _momenta(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def _torch_sequence(name, kind):
    _, _, topt = _optimizers(kind)
    sched = SCHEDULES[name](torch.optim.lr_scheduler, topt)
    lrs, moms = [sched.get_last_lr()], [_momenta(topt)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(N_STEPS):
            topt.step()
            sched.step()
            lrs.append(sched.get_last_lr())
            moms.append(_momenta(topt))
    return np.array(lrs), np.array(moms)


def _run_ours(name, kind, resume_at=None):
    ps, opt, _ = _optimizers(kind)
    sched = SCHEDULES[name](ours_sched, opt)
    lrs, moms = [sched.get_last_lr()], [_momenta(opt)]
    for step in range(N_STEPS):
        for p in ps:
            p.grad = np.ones_like(p.data)
        opt.step()
        sched.step()
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        lrs.append(sched.get_last_lr())
        moms.append(_momenta(opt))
        if step + 1 == resume_at:
            saved_opt = json.loads(json.dumps(opt.state_dict()["hyper"])), opt.state_dict()["state"]
            saved_sched = json.loads(json.dumps(sched.state_dict()))
            ps2, opt, _ = _optimizers(kind)
            for p, q in zip(ps, ps2):
                q.data[...] = p.data
            ps = ps2
            sched = SCHEDULES[name](ours_sched, opt)  # torch's order: scheduler, then the loads
            opt.load_state_dict({"hyper": saved_opt[0], "state": saved_opt[1]})
            sched.load_state_dict(saved_sched)
    return np.array(lrs), np.array(moms)


CASES = [(n, "sgd") for n in SCHEDULES] + [("warmup-cosine", "adam"), ("onecycle-cos", "adam")]


@pytest.mark.parametrize("name,kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_lr_sequence_matches_torch(name, kind):
    theirs, their_moms = _torch_sequence(name, kind)
    ours, our_moms = _run_ours(name, kind)
    assert ours.shape == (N_STEPS + 1, 2)
    # Same Python-float formulas in the same order as torch: equal to the last bit
    # (stricter than the rtol 1e-12 asked for).
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(our_moms, their_moms)
    assert len(np.unique(ours[:, 0])) > 2  # the schedule really moves within the window


@pytest.mark.parametrize("resume_at", [3, 5, 13])
@pytest.mark.parametrize("name,kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_lr_sequence_after_a_state_dict_round_trip(name, kind, resume_at):
    straight, straight_moms = _run_ours(name, kind)
    resumed, resumed_moms = _run_ours(name, kind, resume_at=resume_at)
    np.testing.assert_array_equal(resumed, straight)
    np.testing.assert_array_equal(resumed_moms, straight_moms)
    np.testing.assert_array_equal(resumed, _torch_sequence(name, kind)[0])


@pytest.mark.parametrize("name", ["step", "cosine", "linear"])
def test_resume_with_last_epoch_argument_matches_torch(name):
    """torch's other way to resume: build the scheduler with last_epoch=k on an optimizer
    whose groups already carry 'initial_lr' (and the lr reached at step k)."""
    make = {"step": lambda m, o, e: m.StepLR(o, 4, gamma=0.5, last_epoch=e),
            "cosine": lambda m, o, e: m.CosineAnnealingLR(o, T_max=15, eta_min=1e-3, last_epoch=e),
            "linear": lambda m, o, e: m.LinearLR(o, 0.1, 0.9, total_iters=8, last_epoch=e)}[name]
    sequences = []
    for m, (_, opt, topt) in ((ours_sched, _optimizers("sgd")), (torch.optim.lr_scheduler, _optimizers("sgd"))):
        o = opt if m is ours_sched else topt
        for g, lr in zip(o.param_groups, (0.07, 0.015)):
            g["initial_lr"], g["lr"] = g["lr"], lr
        sched = make(m, o, 5)
        seq = [sched.get_last_lr()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(20):
                o.step()
                sched.step()
                seq.append(sched.get_last_lr())
        sequences.append(seq)
    np.testing.assert_array_equal(*sequences)


def test_state_dict_contents_are_plain_json():
    _, opt, _ = _optimizers("sgd")
    sched = ours_sched.MultiStepLR(opt, milestones=[5, 2, 5], gamma=0.5)
    sched.step()
    sd = sched.state_dict()
    assert sd == {"class": "MultiStepLR", "last_epoch": 1, "_step_count": 2, "base_lrs": list(LRS),
                  "_last_lr": list(LRS), "milestones": [2, 5, 5], "gamma": 0.5}
    assert json.loads(json.dumps(sd)) == sd
    assert opt.param_groups[0]["initial_lr"] == LRS[0]
    assert opt.state_dict()["hyper"]["groups"][1]["initial_lr"] == LRS[1]
    seq = ours_sched.SequentialLR(opt, [ours_sched.LinearLR(opt), ours_sched.StepLR(opt, 2)], [3])
    sd = seq.state_dict()
    assert json.loads(json.dumps(sd)) == sd
    assert [s["class"] for s in sd["_schedulers"]] == ["LinearLR", "StepLR"]


def test_load_state_dict_errors_change_nothing():
    _, opt, _ = _optimizers("sgd")
    sched = ours_sched.StepLR(opt, step_size=2)
    sched.step()
    before = sched.state_dict()
    with pytest.raises(ValueError, match=r"StepLR: state_dict does not fit: it was saved by "
                                         r"'CosineAnnealingLR', not by 'StepLR'"):
        sched.load_state_dict(ours_sched.CosineAnnealingLR(opt, T_max=3).state_dict())
    bad = dict(before, base_lrs=[0.1], _last_lr=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"base_lrs has 1 entries, the optimizer has 2 param groups.*"
                                         r"_last_lr has 3 entries"):
        sched.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"missing keys \['gamma'\]"):
        sched.load_state_dict({k: v for k, v in before.items() if k != "gamma"})
    assert sched.state_dict() == before

    _, opt, _ = _optimizers("sgd")
    a, b = ours_sched.LinearLR(opt), ours_sched.CosineAnnealingLR(opt, T_max=5)
    seq = ours_sched.SequentialLR(opt, [a, b], milestones=[5])
    seq.step()
    before = seq.state_dict()
    bad = json.loads(json.dumps(before))
    bad["last_epoch"] = 99
    bad["_schedulers"][0]["last_epoch"] = 99
    bad["_schedulers"][1]["class"] = "StepLR"  # the second sub-state is wrong: nothing may change
    with pytest.raises(ValueError, match=r"CosineAnnealingLR: state_dict does not fit: it was saved by 'StepLR'"):
        seq.load_state_dict(bad)
    assert seq.state_dict() == before
    with pytest.raises(ValueError, match="it has 1 schedulers, this one has 2"):
        seq.load_state_dict(dict(before, _schedulers=before["_schedulers"][:1]))


def test_constructor_errors():
    _, opt, _ = _optimizers("sgd")
    _, other, _ = _optimizers("sgd")
    with pytest.raises(TypeError, match="optimizer must be a cnnkit.optim Optimizer"):
        ours_sched.StepLR(object(), 2)
    with pytest.raises(ValueError, match=r"LinearLR: start_factor must be in \(0, 1\]"):
        ours_sched.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="one milestone fewer than schedulers"):
        ours_sched.SequentialLR(opt, [ours_sched.LinearLR(opt), ours_sched.StepLR(opt, 2)], milestones=[])
    with pytest.raises(ValueError, match=r"schedulers\[1\] \(StepLR\) belongs to another optimizer"):
        ours_sched.SequentialLR(opt, [ours_sched.LinearLR(opt), ours_sched.StepLR(other, 2)], [3])
    with pytest.raises(ValueError, match="T_max must be positive"):
        ours_sched.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="max_lr needs one value per param group"):
        ours_sched.OneCycleLR(opt, max_lr=[1.0], total_steps=10)
    one = ours_sched.OneCycleLR(opt, max_lr=1.0, total_steps=2)
    one.step(), one.step()
    with pytest.raises(ValueError, match="stepped 3 times, past total_steps"):
        one.step()
    _, fresh, _ = _optimizers("sgd")
    with pytest.raises(ValueError, match=r"param_groups\[0\] has no 'initial_lr'"):
        ours_sched.StepLR(fresh, 2, last_epoch=4)
