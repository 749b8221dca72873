"""One error template for every user-facing check (see DESIGN.md, "Errors").

A message says what is wrong, where (the op or the layer's dotted name), then
what was received::

    Conv2d 'features.0': output height would be 0: (I - K + 2P)/S + 1 = ...
    Received: input=(1, 3, 5, 5), kernel_size=(7, 7), ...
"""

from __future__ import annotations


def message(where: str, what: str, **received) -> str:
    """Format ``"<where>: <what>. Received: k=v, ..."`` (``where`` may be empty)."""
    text = f"{where}: {what}" if where else what
    if received:
        pairs = ", ".join(f"{k}={_show(v)}" for k, v in received.items())
        text = f"{text.rstrip('.')}. Received: {pairs}"
    return text


def value_error(where: str, what: str, **received) -> ValueError:
    return ValueError(message(where, what, **received))


def type_error(where: str, what: str, **received) -> TypeError:
    return TypeError(message(where, what, **received))


def _show(v):
    # Shapes and tuples print as tuples of plain ints; strings keep their quotes.
    if isinstance(v, tuple):
        return "(" + ", ".join(_show(e) for e in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, str):
        return repr(v)
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return repr(v.item())
    return repr(v) if not isinstance(v, int) else str(v)
