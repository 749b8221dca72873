"""The receptive field of one unit drawn on an input image.

The field comes from :func:`cnnkit.analysis.receptive_fields` (size, jump and start per
axis; nothing is computed by running the model). The rectangle spans the unit's field
``[centre - (size - 1)/2, centre + (size - 1)/2]`` on each axis, in pixel centres, so it
is drawn from ``lo - 0.5`` to ``hi + 0.5``; a part reaching into the padding is dashed
outside the image.
"""

from __future__ import annotations

from .._errors import value_error
from ._common import pyplot, save_figure, show_image


def plot_receptive_field(model, image01, path: str, layer: str, unit=None, dpi: int = 100) -> str:
    """Draw the receptive field of ``unit`` (h, w) of ``layer``'s output (default: the middle
    unit) on ``image01`` (C, H, W in [0, 1]); the title gives size, jump and the unit."""
    from matplotlib.patches import Rectangle

    from ..analysis import receptive_fields

    shape = tuple(int(v) for v in image01.shape)
    fields = receptive_fields(model, shape)
    if layer not in fields:
        names = [n for n in fields if n][:30]
        raise value_error("cnnkit.viz.plot_receptive_field",
                          f"no layer of that name; layers: {', '.join(names)}", layer=layer)
    rf = fields[layer]
    if rf is None:
        raise value_error("cnnkit.viz.plot_receptive_field", "the receptive field of this layer is unknown "
                          "(its input is not an image, or a layer before it has no shape rule)", layer=layer)
    unit = rf.center_unit() if unit is None else tuple(int(u) for u in unit)
    if len(unit) != 2 or not all(0 <= u < n for u, n in zip(unit, rf.units)):
        raise value_error("cnnkit.viz.plot_receptive_field", "unit outside the layer's output grid",
                          unit=unit, units=tuple(rf.units))
    (top, bottom), (left, right) = rf.region(unit)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.6))
    show_image(ax, image01)
    h, w = shape[1:]
    pad = max(0.0, float(-top), float(-left), float(bottom - (h - 1)), float(right - (w - 1)))
    pad += 0.5 + 0.02 * (max(h, w) + 2 * pad)  # a margin so that the frame's lines show whole
    ax.set_xlim(-0.5 - pad, w - 0.5 + pad)
    ax.set_ylim(h - 0.5 + pad, -0.5 - pad)
    ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor="grey", linestyle="--", linewidth=0.8))
    ax.add_patch(Rectangle((float(left) - 0.5, float(top) - 0.5), float(right - left) + 1,
                           float(bottom - top) + 1, fill=True, facecolor=(1, 0.2, 0.1, 0.18),
                           edgecolor="red", linewidth=2))
    cy, cx = (float(v) for v in rf.center(unit))
    ax.plot([cx], [cy], "r+", markersize=10)
    size = "x".join(f"{float(s):g}" for s in rf.size)
    jump = "x".join(f"{float(j):g}" for j in rf.jump)
    note = "" if rf.exact else " (approximate)"
    ax.set_title(f"{layer}: unit {unit} of {rf.units[0]}x{rf.units[1]}\n"
                 f"field {size} px, jump {jump}{note}", fontsize=9)
    fig.tight_layout(pad=0.4)
    return save_figure(fig, path, dpi=dpi)
