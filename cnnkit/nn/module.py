"""``Parameter`` and the ``Layer`` base class: the public contract of ``cnnkit.nn``.

A layer computes ``y = layer(x)`` with one of the pure kernels in
``cnnkit.functional``, keeps that kernel's cache for exactly one ``backward``,
and in ``backward(dy)`` accumulates into its parameters' ``.grad`` and returns
``dx``. Sub-layers, parameters and buffers are found by attribute assignment, as
in ``torch.nn.Module``; one walker (``named_modules``) gives the dotted names
used by ``state_dict``, checkpoints, summaries and error messages.

Contract: ``backward`` never writes into the ``dy`` it receives (containers pass
one gradient array to several branches), and each forward supports exactly one
backward (the cache is dropped when used).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Iterator, NamedTuple

import numpy as np

from .._errors import type_error, value_error
from ..runtime import blas_threaded, inline

_TREE = [0]  # bumped whenever a layer gets a parent or a parent is freed: labels change


def _tree_changed(*_) -> None:
    _TREE[0] += 1


def _one_image(inputs) -> bool:
    """A forward of one image: the first input is an (1, C, H, W) array."""
    x = inputs[0] if inputs else None
    return type(x) is np.ndarray and x.ndim == 4 and x.shape[0] == 1


class Parameter:
    """A trainable array: ``.data`` (the value) and ``.grad`` (``None`` until a backward).

    ``requires_grad=False`` freezes it: backward passes leave ``.grad`` alone
    (optimizers skip it), as when fine-tuning only a new classifier.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data: np.ndarray, requires_grad: bool = True):
        if not isinstance(data, np.ndarray):
            raise type_error("Parameter", "data must be a numpy.ndarray", data=type(data).__name__)
        self.data = data
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)

    def accumulate(self, g: np.ndarray) -> None:
        """Add ``g`` to ``.grad`` (gradients of a reused or fanned-out value sum)."""
        if not self.requires_grad:
            return
        if self.grad is None:
            self.grad = np.array(g, dtype=self.data.dtype, copy=True).reshape(self.data.shape)
        else:
            self.grad += g

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def numel(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{frozen})"


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class Layer:
    """Base class of every layer and container.

    Subclasses implement ``forward(x)`` and ``backward(dy)`` and may override
    ``extra_repr()``. Assigning a ``Parameter`` or a ``Layer`` to an attribute
    registers it; ``register_buffer`` adds a non-trainable array that is saved
    in ``state_dict`` (BatchNorm's running statistics).
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_children", OrderedDict())
        object.__setattr__(self, "_parent", None)  # weakref to the owning layer
        object.__setattr__(self, "_key", "")       # this layer's name in its owner
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_cache", None)
        # Whether backward must return the input's gradient. Containers set it on their
        # children before each backward (False below the first trainable layer when their
        # own input needs none); the Trainer sets it False on the model. Conv2d and Linear
        # then skip the dx GEMM (and col2im) and return None, like torch's output_mask.
        object.__setattr__(self, "needs_input_grad", True)
        object.__setattr__(self, "frozen", False)  # set by freeze()

    # ---- registration -----------------------------------------------------------
    def __setattr__(self, name, value):
        if name == "_cache":  # set by every forward: skip the registration tables
            object.__setattr__(self, name, value)
            return
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               "before assigning attributes")
        for table in (self._parameters, self._buffers, self._children):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
            self.__dict__.pop(name, None)
        elif isinstance(value, Layer):
            self._adopt(name, value)
            self.__dict__.pop(name, None)
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):  # only called when normal lookup fails
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_children"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._children):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def _adopt(self, name: str, child: "Layer") -> None:
        self._children[name] = child
        object.__setattr__(child, "_parent", weakref.ref(self, _tree_changed))
        object.__setattr__(child, "_key", str(name))
        _tree_changed()

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """A non-trainable array saved in ``state_dict`` and reachable as an attribute."""
        self.__dict__.pop(name, None)
        self._buffers[name] = value

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (``None`` records an absent parameter, e.g. ``bias=False``)."""
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    # ---- names ----------------------------------------------------------------
    @property
    def path(self) -> str:
        """The dotted name from the outermost owner (``''`` for a root layer)."""
        parts, layer = [], self
        while layer._parent is not None and layer._parent() is not None:
            parts.append(layer._key)
            layer = layer._parent()
        return ".".join(reversed(parts))

    def label(self) -> str:
        """``"Conv2d 'features.0'"``, or just ``"Conv2d"`` for a root layer: for errors.

        Every forward passes it to its kernel, so it is cached until any layer is
        adopted or any parent is freed (walking the parents costs about 5 us)."""
        cached = self.__dict__.get("_label")
        if cached is not None and cached[0] == _TREE[0]:
            return cached[1]
        path = self.path
        label = f"{type(self).__name__} '{path}'" if path else type(self).__name__
        object.__setattr__(self, "_label", (_TREE[0], label))
        return label

    # ---- the computation ------------------------------------------------------
    def __call__(self, *inputs):
        if inline() or self.training or not _one_image(inputs):  # (inline first: a Graph's nodes)
            return self.forward(*inputs)
        with blas_threaded():  # batch-1 inference: kernels inline, BLAS on every core
            return self.forward(*inputs)

    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def _take_cache(self):
        """The cache of the last forward, handed out once (a second backward is an error)."""
        cache = self._cache
        if cache is None:
            raise RuntimeError(f"{self.label()}: backward called without a forward before it "
                               "(each forward supports exactly one backward)")
        object.__setattr__(self, "_cache", None)
        return cache

    # ---- walking --------------------------------------------------------------
    def named_modules(self, prefix: str = "", memo: set | None = None) -> Iterator[tuple[str, "Layer"]]:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._children.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator["Layer"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, "Layer"]]:
        yield from ((k, v) for k, v in self._children.items() if v is not None)

    def children(self) -> Iterator["Layer"]:
        for _, c in self.named_children():
            yield c

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen = set()
        for mod_name, mod in self.named_modules(prefix):
            for name, p in mod._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for mod_name, mod in self.named_modules(prefix):
            for name, b in mod._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    def buffers(self) -> Iterator[np.ndarray]:
        for _, b in self.named_buffers():
            yield b

    # ---- state ----------------------------------------------------------------
    # A frozen layer of a class that sets this stays in evaluation mode under train():
    # frozen BatchNorm uses and keeps its running statistics (Keras' trainable=False rule).
    _eval_when_frozen = False

    def train(self, mode: bool = True) -> "Layer":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode) and not (m.frozen and m._eval_when_frozen))
        return self

    def eval(self) -> "Layer":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.fill(0)

    def requires_grad_(self, requires_grad: bool = True) -> "Layer":
        """Freeze (``False``) or unfreeze every parameter of this layer and its children."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def trainable(self) -> bool:
        """Whether any parameter of this layer or its children requires a gradient."""
        return any(p.requires_grad for p in self.parameters())

    # ---- transfer learning ------------------------------------------------------
    def freeze(self, up_to: str | None = None) -> "Layer":
        """Freeze every parameter (``up_to=None``), or those of the modules up to and including
        the module named ``up_to`` (a ``named_modules`` name such as ``"features.10"`` or
        ``"layer3"``), in definition order. Returns ``self``.

        Frozen parameters get no gradient and optimizers skip them; frozen BatchNorm layers
        stay in evaluation mode (running statistics used and kept) even under ``train()``;
        backward stops below the first trainable layer. ``unfreeze`` undoes it.
        """
        for m in self._modules_up_to(up_to, "freeze"):
            object.__setattr__(m, "frozen", True)
            for p in m._parameters.values():
                if p is not None:
                    p.requires_grad = False
                    p.grad = None
            if m._eval_when_frozen:
                object.__setattr__(m, "training", False)
        return self

    def unfreeze(self, from_: str | None = None) -> "Layer":
        """Make parameters trainable again: all (``from_=None``), or those of the module named
        ``from_`` and every module after it in definition order (e.g. the last residual stage:
        ``model.freeze().unfreeze("layer4")``). Unfrozen layers follow ``train()``/``eval()``
        again from the next call of either (the current mode is kept)."""
        modules = list(self.named_modules())
        start = 0 if from_ is None else self._module_index(modules, from_, "unfreeze")
        for _, m in modules[start:]:
            object.__setattr__(m, "frozen", False)
            for p in m._parameters.values():
                if p is not None:
                    p.requires_grad = True
        return self

    def _modules_up_to(self, up_to: str | None, where: str) -> list["Layer"]:
        modules = list(self.named_modules())
        if up_to is None:
            return [m for _, m in modules]
        i = self._module_index(modules, up_to, where)
        end = i + 1
        while end < len(modules) and modules[end][0].startswith(up_to + "."):
            end += 1  # the module's own descendants follow it in pre-order
        return [m for _, m in modules[:end]]

    def _module_index(self, modules, name: str, where: str) -> int:
        for i, (n, _) in enumerate(modules):
            if n == name and n:
                return i
        tops = [n for n, _ in self.named_children()]
        raise value_error(f"{self.label()}.{where}", "no module of this name (use a name from "
                          f"named_modules(); top-level ones: {', '.join(tops)})", name=name)

    def replace_classifier(self, num_classes: int, *, rng: np.random.Generator | None = None) -> "Layer":
        """Replace the output layer (and any auxiliary heads) by fresh ones with ``num_classes``
        outputs, keeping everything else; updates ``config['num_classes']``. See
        :func:`cnnkit.nn.transfer.replace_classifier`."""
        from .transfer import replace_classifier
        return replace_classifier(self, num_classes, rng=rng)

    def _replace_child(self, name: str, new: "Layer") -> None:
        """Put ``new`` in place of child ``name``, keeping its position (the forward order)."""
        if name not in self._children:
            raise value_error(self.label(), "no child of this name", name=name)
        self._children[name] = new  # an existing OrderedDict key keeps its place
        object.__setattr__(new, "_parent", weakref.ref(self))
        object.__setattr__(new, "_key", str(name))

    def to(self, dtype) -> "Layer":
        """Cast every floating parameter and buffer to ``dtype`` (float32 or float64)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise type_error(self.label(), "dtype must be float32 or float64", dtype=str(dtype))
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = p.data.astype(dtype)
                    p.grad = None if p.grad is None else p.grad.astype(dtype)
            for k, b in m._buffers.items():
                if b is not None and b.dtype.kind == "f":
                    m._buffers[k] = b.astype(dtype)
            object.__setattr__(m, "_cache", None)
        return self

    def double(self) -> "Layer":
        return self.to(np.float64)

    def float(self) -> "Layer":
        return self.to(np.float32)

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Dotted name -> array for every parameter and buffer (the arrays themselves, not copies)."""
        out = OrderedDict()
        for mod_name, mod in self.named_modules():
            for table in (mod._parameters, mod._buffers):
                for name, v in table.items():
                    if v is None:
                        continue
                    key = f"{mod_name}.{name}" if mod_name else name
                    out[key] = v.data if isinstance(v, Parameter) else v
        return out

    def load_state_dict(self, state: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays in by dotted name; shapes must match. Values are cast to the
        existing dtype. With ``strict`` (default) any missing or unexpected key is an
        error that lists every one of them by name; nothing is changed on error."""
        where = self.label()
        slots = {}  # key -> (owner layer, table name, attribute name)
        for mod_name, mod in self.named_modules():
            for table in ("_parameters", "_buffers"):
                for name, v in getattr(mod, table).items():
                    if v is not None:
                        slots[f"{mod_name}.{name}" if mod_name else name] = (mod, table, name)
        missing = [k for k in slots if k not in state]
        unexpected = [k for k in state if k not in slots]
        mismatched = []
        for k, (mod, table, name) in slots.items():
            if k in state:
                cur = getattr(mod, table)[name]
                cur_shape = cur.data.shape if isinstance(cur, Parameter) else cur.shape
                new_shape = tuple(np.shape(state[k]))
                if new_shape != tuple(cur_shape):
                    mismatched.append(f"{k}: expected {tuple(cur_shape)}, found {new_shape}")
        problems = []
        if mismatched:
            problems.append("shape mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys " + ", ".join(unexpected))
        if problems:
            raise value_error(where or type(self).__name__,
                              "state_dict does not fit: " + " | ".join(problems))
        for k, (mod, table, name) in slots.items():
            if k not in state:
                continue
            cur = getattr(mod, table)[name]
            if isinstance(cur, Parameter):
                cur.data = np.array(state[k], dtype=cur.data.dtype, copy=True)
            else:
                getattr(mod, table)[name] = np.array(state[k], dtype=cur.dtype, copy=True)
        return IncompatibleKeys(missing, unexpected)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Total number of parameter elements (torchvision's ``sum(p.numel())``)."""
        return sum(p.data.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- printing -------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self.named_children():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"
