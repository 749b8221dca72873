"""``Optimizer``: the base of SGD and Adam(W), holding what torch.optim.Optimizer holds.

- ``param_groups``: a list of dicts, each with ``"params"`` (a list of ``Parameter``)
  and that group's hyper-parameters (``"lr"``, ...), filled from ``defaults``.
  ``params`` may be an iterable of ``Parameter``, of ``(name, Parameter)`` pairs
  (``model.named_parameters()``; the names are saved as ``"param_names"``), or of
  dicts ``{"params": [...], "lr": ...}``, one per group.
- ``state``: ``Parameter -> {name: np.ndarray}``, created lazily at a parameter's
  first update (``"momentum_buffer"``; ``"step"``, ``"exp_avg"``, ...).
- ``step()`` skips every parameter whose ``grad`` is None or whose ``requires_grad``
  is False, and updates ``p.data`` in place, in ``p.data``'s dtype.

The state_dict is flat so that a trainer can save it as safetensors + JSON::

    {"hyper": {"class": "Adam",
               "groups": [{"params": [0, 1], "lr": 0.001, "betas": [0.9, 0.999], ...}]},
     "state": {"0.step": array(3.), "0.exp_avg": array(...), "0.exp_avg_sq": array(...), ...}}

A parameter's index is its position in the order the parameters were given
(group by group). ``hyper`` survives ``json.loads(json.dumps(hyper))`` unchanged;
every array in ``state`` is a copy.
"""

from __future__ import annotations

import numpy as np

from .._errors import type_error, value_error
from ..nn.module import Parameter


class Optimizer:
    """Subclasses set ``_state_names`` (the per-parameter arrays they keep, of which
    ``_scalar_names`` are 0-d float64 counters), implement ``_check_group`` (validate
    and normalize one group's hyper-parameters) and ``_update`` (one parameter)."""

    _state_names: tuple[str, ...] = ()
    _scalar_names: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict):
        where = type(self).__name__
        self.defaults = self._check_group(dict(defaults))
        self.param_groups: list[dict] = []
        self.state: dict[Parameter, dict[str, np.ndarray]] = {}
        if isinstance(params, (Parameter, np.ndarray, dict, set)) or not hasattr(params, "__iter__"):
            raise type_error(where, "params must be an iterable (list) of Parameters or of "
                             "param-group dicts", params=type(params).__name__)
        groups = list(params)
        if not groups:
            raise value_error(where, "got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ---- groups -----------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Append a group; keys it does not give are taken from ``defaults``."""
        where = type(self).__name__
        if not isinstance(param_group, dict):
            raise type_error(where, "a param group must be a dict", param_group=type(param_group).__name__)
        if "params" not in param_group:
            raise value_error(where, "a param group needs a 'params' entry",
                              keys=tuple(param_group))
        params = param_group["params"]
        if isinstance(params, set):
            raise type_error(where, "params must be an ordered collection (a set's order changes "
                             "between runs); use a list")
        params = [params] if isinstance(params, Parameter) else list(params)
        names = None
        if params and all(isinstance(p, tuple) and len(p) == 2 for p in params):
            names, params = [str(n) for n, _ in params], [p for _, p in params]
        for p in params:
            if not isinstance(p, Parameter):
                raise type_error(where, "can only optimize Parameters", param=type(p).__name__)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids) or not seen.isdisjoint(ids):
            raise value_error(where, "a parameter appears twice (within a group or in more "
                              "than one group)")
        group = self._check_group({**self.defaults,
                                   **{k: v for k, v in param_group.items() if k != "params"}})
        if names is not None:
            group["param_names"] = names
        self.param_groups.append({"params": params, **group})

    def _check_group(self, group: dict) -> dict:
        """Validate one group's hyper-parameters; return them normalized (Python floats/bools)."""
        return group

    def _params(self) -> list[Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    @property
    def lr(self) -> float:
        """The first group's learning rate; setting it sets every group's (a shortcut
        for single-group optimizers; per-group rates live in ``param_groups``)."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.param_groups:
            group["lr"] = float(value)

    # ---- the update -------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Set every grad to None (torch's default), or fill it with zeros."""
        for p in self._params():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.fill(0)

    def step(self, closure=None):
        """One update of every parameter that has a grad and requires it.

        ``closure`` (optional) re-evaluates the model and returns the loss, as in torch."""
        loss = closure() if closure is not None else None
        k = -1
        for group in self.param_groups:
            for p in group["params"]:
                k += 1
                if p.grad is None or not p.requires_grad:
                    continue
                g = p.grad
                if g.shape != p.data.shape:
                    raise value_error(type(self).__name__, f"parameter {k}'s grad has a different "
                                      "shape from its data", grad=g.shape, data=p.data.shape)
                if g.dtype != p.data.dtype:
                    g = g.astype(p.data.dtype)
                self._update(p, g, group, self.state.setdefault(p, {}))
        return loss

    def _update(self, p: Parameter, g: np.ndarray, group: dict, state: dict) -> None:
        raise NotImplementedError

    # ---- state_dict -------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"hyper": <JSON-ready dict>, "state": {"<param index>.<name>": array copy}}``."""
        where = type(self).__name__
        params = self._params()
        index = {id(p): i for i, p in enumerate(params)}
        groups = []
        for group in self.param_groups:
            saved = {"params": [index[id(p)] for p in group["params"]]}
            for key, value in group.items():
                if key != "params":
                    saved[key] = _jsonable(value, where, key)
            groups.append(saved)
        state = {}
        for i, p in enumerate(params):
            arrays = self.state.get(p, {})
            for name in self._state_names:
                if name in arrays:
                    state[f"{i}.{name}"] = np.array(arrays[name], copy=True)
        return {"hyper": {"class": where, "groups": groups}, "state": state}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and state saved by ``state_dict`` (possibly after a
        JSON / safetensors round trip). Checks the optimizer class, the number of
        parameters and groups, every state name and every array's shape; on any
        mismatch raises one ValueError listing all of them and changes nothing.
        Arrays are cast to their parameter's dtype (counters to float64), as torch does."""
        where = type(self).__name__
        if not (isinstance(state_dict, dict) and isinstance(state_dict.get("hyper"), dict)
                and isinstance(state_dict.get("state"), dict)):
            raise value_error(where, "state_dict must be a dict with a 'hyper' dict and a "
                              "'state' dict", keys=tuple(state_dict) if isinstance(state_dict, dict)
                              else type(state_dict).__name__)
        hyper, saved_state = state_dict["hyper"], state_dict["state"]
        cls = hyper.get("class")
        if cls != where:
            raise value_error(where, f"state_dict was saved by {cls!r}, not by {where!r}",
                              saved_class=cls)
        saved_groups = hyper.get("groups")
        if not (isinstance(saved_groups, list) and all(
                isinstance(g, dict) and isinstance(g.get("params"), list) for g in saved_groups)):
            raise value_error(where, "hyper['groups'] must be a list of dicts with a 'params' list")

        params = self._params()
        n, problems = len(params), []
        n_saved = sum(len(g["params"]) for g in saved_groups)
        if n_saved != n:
            problems.append(f"it holds {n_saved} parameters, this optimizer has {n}")
        sizes = [len(g["params"]) for g in self.param_groups]
        saved_sizes = [len(g["params"]) for g in saved_groups]
        if len(saved_groups) != len(self.param_groups):
            problems.append(f"it has {len(saved_groups)} parameter groups, this optimizer has "
                            f"{len(self.param_groups)}")
        elif saved_sizes != sizes:
            problems.append(f"its group sizes {saved_sizes} differ from this optimizer's {sizes}")
        elif [g["params"] for g in saved_groups] != _group_indices(sizes):
            problems.append("its groups' parameter indices are not "
                            f"{_group_indices(sizes)}")

        new_groups = []
        for k, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            hyper_k = {key: _from_json(v) for key, v in saved.items()
                       if key not in ("params", "param_names")}
            try:
                new = self._check_group({**self.defaults, **hyper_k})
            except (TypeError, ValueError) as e:
                problems.append(f"group {k}: {e}")
                continue
            names = saved.get("param_names", group.get("param_names"))
            if names is not None:
                new["param_names"] = list(names)
            new_groups.append({"params": group["params"], **new})

        new_state: dict[int, dict[str, np.ndarray]] = {}
        unknown = []
        for key, value in saved_state.items():
            head, _, name = str(key).partition(".")
            if not (head.isdigit() and int(head) < n and name in self._state_names):
                unknown.append(str(key))
                continue
            i = int(head)
            arr = np.asarray(value)
            expected = () if name in self._scalar_names else params[i].data.shape
            if arr.shape != expected:
                problems.append(f"{key}: shape {arr.shape}, expected {expected}")
            elif arr.dtype.kind not in "fiu":
                problems.append(f"{key}: dtype {arr.dtype} is not numeric")
            else:
                dtype = np.float64 if name in self._scalar_names else params[i].data.dtype
                new_state.setdefault(i, {})[name] = np.array(arr, dtype=dtype, copy=True)
        if unknown:
            problems.append(f"unknown state keys {unknown} (expected '<index < {n}>.<name>' with "
                            f"name in {list(self._state_names)})")
        for i, arrays in sorted(new_state.items()):
            missing = self._missing_state(arrays)
            if missing:
                problems.append(f"parameter {i}'s state lacks {missing}")
        if problems:
            raise value_error(where, "state_dict does not fit: " + "; ".join(problems))
        self.param_groups = new_groups
        self.state = {params[i]: arrays for i, arrays in new_state.items()}

    def _missing_state(self, arrays: dict) -> list[str]:
        """Names a parameter's restored state must have, given the ones it has."""
        return []

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for k, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {k}")
            for key in sorted(group):
                if key not in ("params", "param_names"):
                    lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines) + "\n)"


# ---- helpers shared by the optimizers ------------------------------------------
def as_float(where: str, name: str, value) -> float:
    """A real number as a Python float (keeps float32 updates in float32 under NEP 50)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise type_error(where, f"{name} must be a real number", **{name: value})
    return float(value)


def check_non_negative(where: str, group: dict, *names: str) -> None:
    for name in names:
        if not group[name] >= 0.0:  # also rejects NaN
            raise value_error(where, f"{name} must be non-negative", **{name: group[name]})


def _group_indices(sizes: list[int]) -> list[list[int]]:
    out, start = [], 0
    for s in sizes:
        out.append(list(range(start, start + s)))
        start += s
    return out


def _jsonable(value, where: str, key: str):
    """A group value as plain JSON types (tuples become lists)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where, key) for v in value]
    raise type_error(where, f"param group entry {key!r} cannot be saved as JSON",
                     **{key: type(value).__name__})


def _from_json(value):
    """Lists read back from JSON become tuples again (``betas``)."""
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value
