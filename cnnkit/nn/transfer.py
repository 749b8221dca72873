"""Transfer learning, as the lecture's last slide puts it: keep a trained network's
features, put a new classifier on top, train that (and maybe the last blocks).

    model = models.get("resnet18", num_classes=1000, in_channels=3)
    load_weights(model, "resnet18.pth")
    model.replace_classifier(5)          # fc: 512 -> 1000 becomes a fresh 512 -> 5
    model.freeze().unfreeze("fc")        # train only the new head ...
    model.freeze(up_to="layer3")         # ... or the head and layer4

Which layer is "the classifier": the last layer (in definition order) that holds a
parameter or a buffer, which in every zoo model is the output layer (``fc``,
``classifier.6``, LeNet-5's RBF layer), plus the same for every top-level child whose
name starts with ``aux`` (GoogLeNet's auxiliary heads, as torchvision's fine-tuning
tutorial replaces them too). A ``Linear`` head becomes a new ``Linear`` with the same
input features and bias setting, a 1x1 ``Conv2d`` head a new 1x1 ``Conv2d``, and
LeNet-5's ``EuclideanRBF`` gets new random +1/-1 prototypes (it has no trainable
weights: fine-tune F6 with it, e.g. ``unfreeze("classifier")``).
"""

from __future__ import annotations

import numpy as np

from .._errors import type_error, value_error
from .module import Layer


def classifier_names(model: Layer) -> list[str]:
    """The ``named_modules`` names of the output layer and of any ``aux*`` heads' output layers."""
    names = [_last_weighted(model, "")]
    for child_name, child in model.named_children():
        if child_name.startswith("aux"):
            names.append(_last_weighted(child, child_name))
    return names


def _last_weighted(root: Layer, prefix: str) -> str:
    found = None
    for name, m in root.named_modules(prefix):
        if not m._children and (any(p is not None for p in m._parameters.values())
                                or any(b is not None for b in m._buffers.values())):
            found = name
    if found is None:
        raise value_error(f"{root.label()}.replace_classifier", "the model has no layer with weights")
    return found


def replace_classifier(model: Layer, num_classes: int, *, rng: np.random.Generator | None = None) -> Layer:
    """Replace ``model``'s output layer(s) by freshly initialized ones with ``num_classes``
    outputs (see the module docstring); returns ``model``. The new layers are trainable and
    not frozen; ``model.config['num_classes']`` follows, so checkpoints rebuild the new shape."""
    where = f"{model.label()}.replace_classifier"
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise type_error(where, "num_classes must be an int", num_classes=num_classes)
    if num_classes < 1:
        raise value_error(where, "num_classes must be positive", num_classes=num_classes)
    rng = np.random.default_rng() if rng is None else rng
    modules = dict(model.named_modules())
    for name in classifier_names(model):
        old = modules[name]
        new = _fresh_head(old, int(num_classes), rng, where, name)
        new.train(old.training)
        parent_name, _, key = name.rpartition(".")
        modules[parent_name]._replace_child(key, new)
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        config["num_classes"] = int(num_classes)
    return model


def _fresh_head(old: Layer, num_classes: int, rng, where: str, name: str) -> Layer:
    from .conv import Conv2d
    from .lenet_layers import EuclideanRBF
    from .linear import Linear

    if isinstance(old, Linear):
        return Linear(old.in_features, num_classes, bias=old.bias is not None, rng=rng, dtype=old.weight.dtype)
    if isinstance(old, Conv2d) and old.kernel_size == (1, 1) and old.groups == 1:
        return Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None, rng=rng,
                      dtype=old.weight.dtype)
    if isinstance(old, EuclideanRBF):
        prototypes = rng.choice([-1.0, 1.0], size=(num_classes, old.in_features))
        return EuclideanRBF(old.in_features, prototypes, negate=old.negate, dtype=old.weight.dtype)
    raise type_error(where, "the output layer is not a Linear, a 1x1 Conv2d or an EuclideanRBF; "
                     "replace it by hand with _replace_child", layer=name, type=type(old).__name__)
