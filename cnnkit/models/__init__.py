"""The model zoo: a registry of model builders, one file per family.

    from cnnkit import models
    models.names()                                   # ['cnn', 'cnn_bn', 'lenet5_modern']
    net = models.get("lenet5_modern", num_classes=10, in_channels=1, rng=np.random.default_rng(0))
    net.config                                       # {'name': 'lenet5_modern', 'num_classes': 10, ...}
    same_shape = models.from_config(net.config)      # rebuild, e.g. before loading a checkpoint

A builder is a function registered with ``@register("name")``. Its contract:

- it accepts ``num_classes`` and ``in_channels`` (with defaults 10 and 1), any
  further options as keywords, and keyword-only ``rng`` (a ``numpy.random.Generator``
  for the initial weights) and ``dtype``;
- it returns a :class:`cnnkit.nn.Layer` with ``torch.nn``-style child names
  (``features``, ``classifier``), so ``state_dict`` keys read like torchvision's.

``register`` wraps the builder so that every model it returns, whether built by
:func:`get` or by calling the builder directly, carries ``model.config``: the
registered name plus every constructor argument with defaults filled in, as plain
JSON values (tuples become lists). ``rng`` is left out (it is state, not
configuration) and ``dtype`` is recorded as its name, so ``from_config(model.config)``
rebuilds the same architecture.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import numpy as np

from .._errors import type_error, value_error
from ..nn.module import Layer

_BUILDERS: dict[str, Callable[..., Layer]] = {}
_NOT_CONFIG = ("rng",)  # arguments that are state, not architecture


def register(name: str) -> Callable[[Callable[..., Layer]], Callable[..., Layer]]:
    """Decorator: register a model builder under ``name`` (see the module docstring)."""
    if not isinstance(name, str) or not name:
        raise type_error("models.register", "the name must be a non-empty str", name=name)

    def decorator(builder: Callable[..., Layer]) -> Callable[..., Layer]:
        if name in _BUILDERS:
            raise value_error("models.register", "a model of this name is registered already",
                              name=name, existing=_BUILDERS[name].__module__)
        signature = inspect.signature(builder)
        for required in ("num_classes", "in_channels"):
            if required not in signature.parameters:
                raise type_error("models.register", f"a model builder must accept {required}",
                                 name=name, builder=builder.__qualname__)

        @functools.wraps(builder)
        def build(*args, **kwargs) -> Layer:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as err:  # an unknown option or a missing argument
                raise type_error(f"models '{name}'", f"{err}; the builder's signature is {signature}",
                                 args=args, options=sorted(kwargs)) from None
            bound.apply_defaults()
            config = {"name": name}
            for key, value in bound.arguments.items():
                if key in _NOT_CONFIG:
                    continue
                if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(value)
                else:
                    config[key] = np.dtype(value).name if key == "dtype" else value
            config = _plain(config, name)  # checked before building: fail fast
            model = builder(*bound.args, **bound.kwargs)
            model.config = config
            return model

        build.model_name = name
        _BUILDERS[name] = build
        return build

    return decorator


def _plain(value, name: str):
    """``value`` as JSON would give it back: tuples become lists, NumPy scalars Python ones."""
    if isinstance(value, dict):
        return {str(k): _plain(v, name) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise type_error(f"models '{name}'", "model options must be JSON values (numbers, strings, "
                     "lists, dicts) so that the config can rebuild the model", option=type(value).__name__)


def names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_BUILDERS)


def get(name: str, num_classes: int = 10, in_channels: int = 1, **options) -> Layer:
    """Build the model registered as ``name``; ``options`` go to its builder (e.g. ``rng=``)."""
    if name not in _BUILDERS:
        raise value_error("models.get", f"unknown model name; known names: {', '.join(names())}", name=name)
    return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, **options)


def from_config(config: dict, **overrides) -> Layer:
    """Rebuild a model from its ``model.config`` (``overrides``, e.g. ``rng=``, win)."""
    if not isinstance(config, dict) or "name" not in config:
        raise type_error("models.from_config", "config must be a dict with a 'name' key",
                         config=type(config).__name__)
    options = {k: v for k, v in config.items() if k != "name"}
    options.update(overrides)
    return get(config["name"], **options)


# Importing a family module registers its models.
from . import alexnet, googlenet, lenet, mobilenet, resnet, small, vgg  # noqa: E402,F401

__all__ = ["register", "names", "get", "from_config"]
