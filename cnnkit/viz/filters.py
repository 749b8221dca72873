"""Filter grids and feature maps: what a conv layer has learned, and how it responds.

``plot_filters``: one tile per output channel of a conv layer's weight (C_out, C_in, kH, kW).
A first layer with 3 input channels is drawn in colour (the kernel's three input channels
as RGB); otherwise every (output, input) channel pair is a grey tile, one row per output
channel. Each filter is normalized on its own to [0, 1] (min -> black, max -> white), so
tiles compare shapes, not magnitudes.

``plot_feature_maps``: the input image, then for each chosen layer its activations
(C, H, W) for that image, one panel per channel (each normalized on its own, viridis) up
to ``max_channels`` per layer, with a note of how many were left out; a vector output
(fully connected) is drawn as one bar chart.
"""

from __future__ import annotations

import math

import numpy as np

from .._errors import value_error
from ._common import capture, conv_layers, find_layer, normalize01, pyplot, save_figure, show_image


def filter_tiles(weight: np.ndarray, max_filters: int = 64, max_inputs: int = 8):
    """``(tiles, rgb)`` from a conv weight (C_out, C_in, kH, kW): ``tiles`` has shape
    (rows, cols, kH, kW, 3) if ``rgb`` (C_in == 3, one tile per output channel) else
    (C_out', C_in', kH, kW) with at most ``max_filters``/``max_inputs`` channels;
    each filter normalized to [0, 1] on its own."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4:
        raise value_error("cnnkit.viz.filter_tiles", "expected a conv weight (C_out, C_in, kH, kW)",
                          shape=tuple(w.shape))
    w = w[:max_filters]
    if w.shape[1] == 3:
        return normalize01(w, axis=(1, 2, 3)).transpose(0, 2, 3, 1), True  # (C_out, kH, kW, 3)
    return normalize01(w[:, :max_inputs], axis=(2, 3)), False  # each (out, in) kernel on its own


def plot_filters(model, path: str, layer: str | None = None, max_filters: int | None = None,
                 max_inputs: int = 8, dpi: int = 100) -> str:
    """Draw the kernels of conv ``layer`` (default: the first conv layer) to ``path``
    (.png or .svg); the title names the layer and its weight shape. ``max_filters``: output
    channels drawn (default: 64 for one or three input channels, else 16 rows of
    ``max_inputs`` input channels each)."""
    return save_figure(filters_figure(model, layer, max_filters, max_inputs), path, dpi=dpi)


def filters_figure(model, layer: str | None = None, max_filters: int | None = None, max_inputs: int = 8):
    """The figure of :func:`plot_filters`."""
    convs = conv_layers(model)
    if not convs:
        raise value_error("cnnkit.viz.plot_filters", "the model has no conv layer (no 4-D weight)")
    name = layer if layer is not None else convs[0][0]
    module = find_layer(model, name, "cnnkit.viz.plot_filters")
    w = module._parameters.get("weight")
    if w is None or w.data.ndim != 4:
        raise value_error("cnnkit.viz.plot_filters", "the layer has no conv weight (C_out, C_in, kH, kW); "
                          f"conv layers: {', '.join(n for n, _ in convs)}", layer=name)
    shape = tuple(w.data.shape)
    if max_filters is None:
        max_filters = 64 if shape[1] in (1, 3) else 16
    if max_filters < 1 or max_inputs < 1:
        raise value_error("cnnkit.viz.plot_filters", "max_filters and max_inputs must be at least 1",
                          max_filters=max_filters, max_inputs=max_inputs)
    tiles, rgb = filter_tiles(w.data, max_filters, max_inputs)
    plt = pyplot()
    if rgb:
        n = tiles.shape[0]
        cols = min(n, 8)
        rows = math.ceil(n / cols)
    else:
        rows, cols = tiles.shape[0], tiles.shape[1]
        if cols == 1:  # one input channel: wrap the output channels into a square-ish grid
            cols = min(rows, 8)
            rows = math.ceil(tiles.shape[0] / cols)
            tiles = tiles[:, 0]
    size = 0.7 if max(rows, cols) <= 16 else 0.45
    left_out = []
    if shape[0] > max_filters:
        left_out.append(f"first {max_filters} of {shape[0]} filters")
    if not rgb and shape[1] > max_inputs:
        left_out.append(f"first {max_inputs} of {shape[1]} input channels")
    title = f"{name}: weight {shape}" + (f"\n({', '.join(left_out)})" if left_out else "")
    title += "\nRGB per filter" if rgb else ("" if shape[1] == 1 else "\nrows: filters, columns: input channels")
    top = 0.15 + 0.16 * (title.count("\n") + 1)  # inches above the tiles for the title
    width, height = max(cols * size + 0.4, 4.6), rows * size + 0.15 + top  # wide enough for the title
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if rgb or tiles.ndim == 3:
                k = i * cols + j
                if k >= tiles.shape[0]:
                    ax.axis("off")
                    continue
                img = tiles[k]
            else:
                img = tiles[i, j]
            ax.imshow(img, cmap=None if rgb else "gray", vmin=0, vmax=1, interpolation="nearest")
    fig.suptitle(title, fontsize=9, y=1 - 0.06 / height, va="top")
    fig.subplots_adjust(left=0.2 / width, right=1 - 0.2 / width, bottom=0.1 / height,
                        top=1 - top / height, wspace=0.1, hspace=0.1)
    return fig


def feature_maps(model, x: np.ndarray, layers) -> dict[str, np.ndarray]:
    """Activations of ``layers`` (dotted names) for one input ``x`` (1, C, H, W): name -> (C, H, W)
    (a 2-D output (1, F) becomes (F, 1, 1))."""
    model.eval()
    with capture(model, list(layers)) as rec:
        model(x)
    out = {}
    for name in layers:
        if "out" not in rec[name]:
            raise value_error("cnnkit.viz.feature_maps", "the layer did not run in the forward pass", layer=name)
        a = np.asarray(rec[name]["out"])[0]
        out[name] = a if a.ndim == 3 else a.reshape(-1, 1, 1)
    return out


def default_feature_layers(model, n: int = 2) -> list[str]:
    """The first ``n`` conv layers' names."""
    return [name for name, _ in conv_layers(model)[:n]]


def plot_feature_maps(model, x: np.ndarray, image01: np.ndarray, path: str, layers=None,
                      max_channels: int = 16, dpi: int = 100) -> str:
    """The input ``image01`` (C, H, W in [0, 1]) and, for each of ``layers`` (default: the
    first two conv layers), one panel per channel of its activation for ``x`` (1, C, H, W);
    a vector output (a Linear layer's) is one bar chart."""
    if max_channels < 1:
        raise value_error("cnnkit.viz.plot_feature_maps", "max_channels must be at least 1",
                          max_channels=max_channels)
    layers = list(layers) if layers else default_feature_layers(model)
    if not layers:
        raise value_error("cnnkit.viz.plot_feature_maps", "no layer to show: name one (the model has no conv)")
    maps = feature_maps(model, x, layers)
    vector = {n for n, a in maps.items() if a.shape[1:] == (1, 1)}  # FC outputs: one bar chart
    cols = min(8, max([min(a.shape[0], max_channels) for n, a in maps.items() if n not in vector] + [1]))
    rows_per = {n: 1 if n in vector else math.ceil(min(a.shape[0], max_channels) / cols) for n, a in maps.items()}
    total_rows = 1 + sum(rows_per.values())
    plt = pyplot()
    fig = plt.figure(figsize=(cols * 1.1 + 0.4, total_rows * 1.2 + 0.3 * len(layers) + 0.4))
    height = fig.get_size_inches()[1]
    left = 0.55 if vector else 0.2  # inches: room for a bar chart's tick labels
    grid = fig.add_gridspec(total_rows, cols, left=left / fig.get_size_inches()[0], right=0.98,
                            bottom=(0.35 if vector else 0.1) / height, top=1 - 0.3 / height,
                            wspace=0.08, hspace=0.3)
    ax = fig.add_subplot(grid[0, 0])
    show_image(ax, image01)
    ax.set_title("input", fontsize=8)
    row = 1
    for name, a in maps.items():
        if name in vector:
            ax = fig.add_subplot(grid[row, :])
            ax.bar(np.arange(a.shape[0]), a[:, 0, 0], color="tab:blue")
            ax.set_title(f"{name} ({a.shape[0]} values)", fontsize=8, loc="left").set_in_layout(False)
            ax.tick_params(labelsize=7)
            row += 1
            continue
        shown = min(a.shape[0], max_channels)
        for k in range(shown):
            ax = fig.add_subplot(grid[row + k // cols, k % cols])
            ax.imshow(normalize01(a[k]), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                note = f" (first {shown} of {a.shape[0]} channels)" if shown < a.shape[0] else ""
                title = ax.set_title(f"{name} {tuple(a.shape)}{note}", fontsize=8, loc="left")
                title.set_in_layout(False)  # a long title must not squeeze the first panel
        row += rows_per[name]
    return save_figure(fig, path, dpi=dpi)
