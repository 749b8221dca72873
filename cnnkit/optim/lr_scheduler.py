"""Learning-rate schedulers with torch.optim.lr_scheduler's semantics and formulas.

A scheduler writes ``group["lr"]`` of each of its optimizer's param groups. Building
one performs its initial step (``last_epoch`` becomes 0) and records
``group["initial_lr"]`` (the ``base_lrs``); then call ``scheduler.step()`` after
``optimizer.step()``, once per epoch or once per batch as you decide. The recursive
(chainable) forms below are torch's, so the lr sequences agree with torch's to
rounding.

Resuming, as in torch: build the optimizer and the schedulers, then
``optimizer.load_state_dict(...)`` (it restores ``lr`` and ``initial_lr``), then
``scheduler.load_state_dict(...)``. Loading the optimizer state first and then
building a scheduler lets the scheduler's initial step overwrite the loaded lr.

``state_dict()`` is JSON-serializable: ``{"class": "StepLR", "last_epoch": 3,
"_step_count": 4, "base_lrs": [...], "_last_lr": [...], <hyper-parameters>}``.

Deviations from torch: ``step()`` takes no ``epoch`` argument (deprecated in torch
since 1.4); there are no warnings about calling ``scheduler.step()`` before
``optimizer.step()``; ``load_state_dict`` checks the class name and list lengths;
MultiStepLR's ``milestones`` is a sorted list (with repeats) instead of a Counter.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter

from .._errors import type_error, value_error
from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "CosineAnnealingLR", "LinearLR",
           "SequentialLR", "OneCycleLR"]


class LRScheduler:
    """Base class: subclasses implement ``get_lr()`` (the recursive form) and may
    implement ``_get_closed_form_lr()`` (used by SequentialLR at a milestone)."""

    _hyper: tuple[str, ...] = ()  # attributes saved in state_dict besides the common ones

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        where = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise type_error(where, "optimizer must be a cnnkit.optim Optimizer",
                             optimizer=type(optimizer).__name__)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for k, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise value_error(where, f"param_groups[{k}] has no 'initial_lr'; resuming with "
                                      "last_epoch >= 0 needs the optimizer's state loaded first",
                                      last_epoch=last_epoch)
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._is_initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The lrs that the last ``step()`` set, one per param group."""
        return list(self._last_lr)

    def step(self) -> None:
        self._step_count += 1
        self._update_lr()

    def _update_lr(self, epoch: int | None = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            closed = getattr(self, "_get_closed_form_lr", None)
            values = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ---- state ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """A JSON-serializable dict of everything but the optimizer."""
        out = {"class": type(self).__name__, "last_epoch": self.last_epoch,
               "_step_count": self._step_count, "base_lrs": list(self.base_lrs),
               "_last_lr": list(self._last_lr)}
        for name in self._hyper:
            out[name] = _plain(getattr(self, name))
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what ``state_dict`` saved; the class and the number of param groups
        must match (ValueError otherwise, nothing changed)."""
        self._check_state(state_dict)
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict["_step_count"])
        self.base_lrs = list(state_dict["base_lrs"])
        self._last_lr = list(state_dict["_last_lr"])
        for name in self._hyper:
            setattr(self, name, self._restore(name, state_dict[name]))

    def _restore(self, name: str, value):
        return value

    def _state_keys(self) -> tuple[str, ...]:
        return ("last_epoch", "_step_count", "base_lrs", "_last_lr") + self._hyper

    def _check_state(self, state_dict) -> None:
        where = type(self).__name__
        keys = self._state_keys()
        if not isinstance(state_dict, dict):
            raise value_error(where, "state_dict must be a dict", state_dict=type(state_dict).__name__)
        problems = []
        if state_dict.get("class") != where:
            problems.append(f"it was saved by {state_dict.get('class')!r}, not by {where!r}")
        missing = [k for k in keys if k not in state_dict]
        if missing:
            problems.append(f"missing keys {missing}")
        n = len(self.optimizer.param_groups)
        for k in ("base_lrs", "_last_lr"):
            if k in keys and k in state_dict and len(state_dict[k]) != n:
                problems.append(f"{k} has {len(state_dict[k])} entries, the optimizer has {n} "
                                "param groups")
        if problems:
            raise value_error(where, "state_dict does not fit: " + "; ".join(problems))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper)
        return f"{type(self).__name__}({args})"


def _plain(value):
    if isinstance(value, Counter):
        return sorted(value.elements())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _lrs(optimizer: Optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``."""

    _hyper = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if not step_size > 0:
            raise value_error("StepLR", "step_size must be positive", step_size=step_size)
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _lrs(self.optimizer)
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """``lr = base_lr * gamma ** (number of milestones <= epoch)`` (a repeated milestone counts twice)."""

    _hyper = ("milestones", "gamma")

    def __init__(self, optimizer: Optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1):
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def _restore(self, name, value):
        return Counter(value) if name == "milestones" else value

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return _lrs(self.optimizer)
        return [group["lr"] * self.gamma ** self.milestones[self.last_epoch]
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch)
                for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """SGDR's cosine without restarts (Loshchilov & Hutter 2017)::

        lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2

    computed recursively from the current lr, as torch does (so it composes with
    other schedulers); past ``T_max`` it rises again (the cosine's period is 2 T_max).
    """

    _hyper = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if not T_max > 0:
            raise value_error("CosineAnnealingLR", "T_max must be positive", T_max=T_max)
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self._is_initial:
            return _lrs(self.optimizer)
        if self._step_count == 1 and self.last_epoch > 0:
            return [self.eta_min + (base_lr - self.eta_min)
                    * (1 + math.cos(self.last_epoch * math.pi / self.T_max)) / 2
                    for base_lr in self.base_lrs]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, group in zip(self.base_lrs, groups, strict=True)]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max))
                / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
                * (group["lr"] - self.eta_min) + self.eta_min
                for group in groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """Linear warm-up: the factor goes from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps, then stays: ``lr = base_lr * (start + (end - start) *
    min(t, total_iters) / total_iters)`` (computed recursively, as torch)."""

    _hyper = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1):
        if start_factor > 1.0 or start_factor <= 0:
            raise value_error("LinearLR", "start_factor must be in (0, 1]", start_factor=start_factor)
        if end_factor > 1.0 or end_factor < 0:
            raise value_error("LinearLR", "end_factor must be in [0, 1]", end_factor=end_factor)
        if not total_iters > 0:
            raise value_error("LinearLR", "total_iters must be positive", total_iters=total_iters)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _lrs(self.optimizer)
        delta = self.end_factor - self.start_factor
        factor = 1.0 + delta / (self.total_iters * self.start_factor + (self.last_epoch - 1) * delta)
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                           * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base_lr in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run ``schedulers[i]`` from ``milestones[i-1]`` on (e.g. LinearLR warm-up, then
    CosineAnnealingLR). At a milestone the next scheduler restarts from its epoch 0
    (its closed form), exactly as torch's SequentialLR."""

    def __init__(self, optimizer: Optimizer, schedulers: list, milestones: list, last_epoch: int = -1):
        where = "SequentialLR"
        if not isinstance(optimizer, Optimizer):
            raise type_error(where, "optimizer must be a cnnkit.optim Optimizer",
                             optimizer=type(optimizer).__name__)
        if len(schedulers) < 1:
            raise value_error(where, "needs at least one scheduler")
        for k, s in enumerate(schedulers):
            if not isinstance(s, LRScheduler):
                raise type_error(where, f"schedulers[{k}] is not an LRScheduler",
                                 scheduler=type(s).__name__)
            if s.optimizer is not optimizer:
                raise value_error(where, f"schedulers[{k}] ({type(s).__name__}) belongs to another "
                                  "optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise value_error(where, "needs one milestone fewer than schedulers",
                              schedulers=len(schedulers), milestones=len(milestones))
        self.optimizer = optimizer
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        for group in optimizer.param_groups:         # undo the sub-schedulers' initial steps
            group["lr"] = group["initial_lr"]
        self._recursive_undo(self)
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = self._schedulers[idx].get_last_lr()

    def _recursive_undo(self, sched) -> None:
        if isinstance(sched, SequentialLR):
            for s in sched._schedulers:
                self._recursive_undo(s)
        else:
            sched.last_epoch -= 1

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict:
        return {"class": "SequentialLR", "last_epoch": self.last_epoch,
                "_milestones": list(self._milestones), "_last_lr": list(self._last_lr),
                "_schedulers": [s.state_dict() for s in self._schedulers]}

    def load_state_dict(self, state_dict: dict) -> None:
        self._check_state(state_dict)
        subs = state_dict["_schedulers"]
        for s, sub in zip(self._schedulers, subs):
            s.load_state_dict(sub)
        self.last_epoch = int(state_dict["last_epoch"])
        self._milestones = list(state_dict["_milestones"])
        self._last_lr = list(state_dict["_last_lr"])

    def _state_keys(self) -> tuple[str, ...]:
        return ("last_epoch", "_milestones", "_last_lr", "_schedulers")

    def _check_state(self, state_dict) -> None:
        """Check this one and every sub-scheduler's state before anything changes."""
        super()._check_state(state_dict)
        subs = state_dict["_schedulers"]
        if len(subs) != len(self._schedulers):
            raise value_error("SequentialLR", "state_dict does not fit: it has "
                              f"{len(subs)} schedulers, this one has {len(self._schedulers)}")
        for s, sub in zip(self._schedulers, subs):
            s._check_state(sub)

    def __repr__(self) -> str:
        return f"SequentialLR(schedulers={self._schedulers!r}, milestones={self._milestones!r})"


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin 2017), torch's implementation: lr rises from
    ``max_lr / div_factor`` to ``max_lr`` over ``pct_start`` of ``total_steps``, then
    anneals to ``initial_lr / final_div_factor``; momentum (SGD) or beta1 (Adam)
    cycles the other way between ``max_momentum`` and ``base_momentum``. Step it
    once per batch; stepping past ``total_steps`` is an error."""

    _hyper = ("total_steps", "_schedule_phases", "_anneal_func_type", "cycle_momentum", "use_beta1")

    def __init__(self, optimizer: Optimizer, max_lr, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum=0.85, max_momentum=0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False, last_epoch: int = -1):
        where = "OneCycleLR"
        if not isinstance(optimizer, Optimizer):
            raise type_error(where, "optimizer must be a cnnkit.optim Optimizer",
                             optimizer=type(optimizer).__name__)
        if total_steps is not None:
            if not (isinstance(total_steps, int) and total_steps > 0):
                raise value_error(where, "total_steps must be a positive int", total_steps=total_steps)
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            for name, v in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
                if not (isinstance(v, int) and v > 0):
                    raise value_error(where, f"{name} must be a positive int", **{name: v})
            self.total_steps = epochs * steps_per_epoch
        else:
            raise value_error(where, "give total_steps, or epochs and steps_per_epoch")
        if not (isinstance(pct_start, float) and 0 <= pct_start <= 1):
            raise value_error(where, "pct_start must be a float in [0, 1]", pct_start=pct_start)
        if anneal_strategy not in ("cos", "linear"):
            raise value_error(where, "anneal_strategy must be 'cos' or 'linear'",
                              anneal_strategy=anneal_strategy)
        self._anneal_func_type = anneal_strategy
        n = self.total_steps
        if three_phase:
            self._schedule_phases = [
                _phase(float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(float(2 * pct_start * n) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                _phase(n - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            self._schedule_phases = [
                _phase(float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(n - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        groups = optimizer.param_groups
        max_lrs = _per_group(where, "max_lr", max_lr, len(groups))
        if last_epoch == -1:
            for group, m in zip(groups, max_lrs):
                group["initial_lr"] = m / div_factor
                group["max_lr"] = m
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = bool(cycle_momentum)
        self.use_beta1 = "betas" in optimizer.defaults
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and not self.use_beta1:
                raise value_error(where, "cycle_momentum needs an optimizer with momentum or betas",
                                  optimizer=type(optimizer).__name__)
            max_ms = _per_group(where, "max_momentum", max_momentum, len(groups))
            base_ms = _per_group(where, "base_momentum", base_momentum, len(groups))
            if last_epoch == -1:
                for group, mx, base in zip(groups, max_ms, base_ms):
                    if self.use_beta1:
                        group["betas"] = (mx, *group["betas"][1:])
                    else:
                        group["momentum"] = mx
                    group["max_momentum"], group["base_momentum"] = mx, base
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise value_error("OneCycleLR", f"stepped {step_num} times, past total_steps",
                              total_steps=self.total_steps)
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step_num - start_step) / (end_step - start_step)
                    lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]],
                                                group[phase["end_momentum"]], pct)
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs


def _phase(end_step, start_lr, end_lr, start_momentum, end_momentum) -> dict:
    return {"end_step": end_step, "start_lr": start_lr, "end_lr": end_lr,
            "start_momentum": start_momentum, "end_momentum": end_momentum}


def _per_group(where: str, name: str, value, n: int) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise value_error(where, f"{name} needs one value per param group",
                              **{name: len(value)}, param_groups=n)
        return list(value)
    return [value] * n
