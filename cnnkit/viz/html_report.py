"""``report.html``: one self-contained page per run folder (every image a base64 data URI,
no scripts, no external files), readable offline in any browser.

Sections: the test result; the configuration (recipe, data, seed, fine-tuning source);
the model summary table (:func:`cnnkit.analysis.summary`); training curves; the confusion
matrix and per-class accuracy; the first conv layer's filters; test images with their
predictions, the wrong ones first.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re

import numpy as np

from .._atomic import atomic_write_bytes
from ._common import conv_layers, data_meta, figure_bytes, pyplot, show_image, standardize
from .filters import filters_figure
from .run_plots import confusion_figure, curves_figure, read_json, run_classes

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } .wide { overflow-x: auto; } .note { color: #666; font-size: 0.9em; }
.wrong { color: #b00; } .right { color: #070; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}">'


def _table(header, rows, numeric=()) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = [f'<td class="num">{html.escape(str(v))}</td>' if i in numeric else f"<td>{html.escape(str(v))}</td>"
                 for i, v in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def markdown_table_html(markdown: str) -> str:
    """The pipe table and bullet lines of :meth:`Summary.to_markdown` as HTML."""
    header, rows, bullets, numeric = None, [], [], set()
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|").strip("`") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if header is None:
                header = cells
            elif all(set(c) <= set("-:") for c in cells):
                numeric = {i for i, c in enumerate(cells) if c.endswith(":")}
            else:
                rows.append(cells)
        elif line.startswith("- "):
            bullets.append(line[2:])
    text = '<div class="wide">' + _table(header or [], rows, numeric) + "</div>"
    if bullets:
        text += "\n<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in bullets) + "</ul>"
    return text


def _test_images(data: dict, n: int):
    """The first ``n`` test images (uint8 (N, C, H, W)) and labels of the run's data set."""
    from ..data import ImageFolder, load_dataset

    name = data.get("name")
    c, h, w = data.get("input_shape", [1, 0, 0])
    if name and os.path.isdir(name):
        folder = os.path.join(name, "test") if os.path.isdir(os.path.join(name, "test")) else name
        ds = ImageFolder(folder, size=(h, w), grayscale=(c // data.get("repeat_channels", 1)) == 1)
    else:
        ds = load_dataset(name, "test")
    classes = data.get("classes")
    if classes and list(classes) != list(ds.classes) and set(classes) <= set(ds.classes):
        ds = ds.select_classes(classes)
    ds = ds.subset(np.arange(min(n, len(ds))))
    return ds.images, ds.labels


def predictions_figure(model, data: dict, images: np.ndarray, labels: np.ndarray, classes, show: int = 16):
    """``(figure, wrong, total)``: up to ``show`` images with true and predicted class, the
    misclassified first (at most three quarters of the panels, the rest right answers);
    titles in red for wrong predictions, green for right ones."""
    x01 = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    c = int(data.get("input_shape", [x01.shape[1]])[0])
    if x01.shape[1] != c and x01.shape[1] == 1:
        x01 = np.repeat(x01, c, axis=1)  # grey images for an RGB model, as fine-tuning feeds them
    model.eval()
    probs = []
    for i in range(0, len(x01), 100):
        z = np.asarray(model(standardize(x01[i:i + 100], data)), dtype=np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        probs.append(p / p.sum(axis=1, keepdims=True))
    p = np.concatenate(probs)
    pred = p.argmax(axis=1)
    wrong = pred != labels
    right = np.flatnonzero(~wrong)[:show // 4]  # a quarter of the panels keep right answers
    order = np.concatenate([np.flatnonzero(wrong)[:show - len(right)], right])
    order = np.concatenate([order, np.setdiff1d(np.arange(len(pred)), order)])[:show]
    cols = min(8, len(order))
    rows = -(-len(order) // cols)
    plt = pyplot()
    height = rows * 1.95
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.45, height), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02 / height, top=1 - 0.42 / height,
                        wspace=0.06, hspace=0.42 / 1.5)  # room for two title lines above each row
    for ax in axes.flat:
        ax.axis("off")
    name = lambda k: classes[k][:12] if k < len(classes) else str(k)  # noqa: E731
    for ax, i in zip(axes.flat, order):
        show_image(ax, x01[i])
        ax.axis("on")
        ok = pred[i] == labels[i]
        ax.set_title(f"{name(pred[i])} {p[i, pred[i]]:.2f}\n(true: {name(labels[i])})", fontsize=7,
                     color="green" if ok else "red")
    return fig, int(wrong.sum()), len(labels)


def write_html_report(run_folder: str, model=None, *, images=None, labels=None, n_test: int = 200,
                      show: int = 16, path: str | None = None) -> str:
    """Write ``run_folder/report.html`` (or ``path``) and return its path.

    ``model``: the trained model (default: rebuilt from the run's ``last.json``).
    ``images``/``labels``: test images (uint8 or [0, 1] float (N, C, H, W)) for the
    predictions section; default: the first ``n_test`` test images of the run's data set
    (the section says why if they cannot be loaded). ``show``: images drawn, wrong first.
    """
    from ..analysis import summary
    from ..cli import load_model

    meta = read_json(run_folder, "last.json")
    if model is None:
        model, meta = load_model(run_folder)
    data = data_meta(meta, model)
    recipe = meta.get("recipe") or {}
    title = f"cnnkit run: {recipe.get('model', meta.get('model_config', {}).get('name', '?'))} " \
            f"on {data.get('name', '?')}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="note">run folder: {html.escape(os.path.abspath(run_folder))}</p>']
    test = _optional_json(run_folder, "test_metrics.json")
    if test:
        extra = f", top-5 {test['top5']:.4f}" if "top5" in test else ""
        parts.append(f"<p><b>test accuracy: {test['accuracy']:.4f}</b> (loss {test['loss']:.4f}{extra})</p>")

    parts.append("<h2>Configuration</h2>")
    config = [(k, v) for k, v in recipe.items()]
    config += [("data", data.get("name")), ("classes", ", ".join(map(str, data.get("classes", [])))),
               ("input shape", data.get("input_shape")), ("mean", data.get("mean")), ("std", data.get("std")),
               ("seed", meta.get("seed")), ("epochs run", meta.get("epoch"))]
    if meta.get("finetune"):
        config.append(("finetune", json.dumps(meta["finetune"])))
    parts.append(_table(["setting", "value"], [(k, "" if v is None else v) for k, v in config]))

    parts.append("<h2>Model</h2>")
    try:
        s = summary(model, tuple(int(v) for v in data["input_shape"]))
        parts.append(markdown_table_html(s.to_markdown()))
    except (ValueError, TypeError, KeyError) as e:
        parts.append(f'<p class="note">no summary: {html.escape(str(e))}</p>')

    history = _optional_json(run_folder, "history.json")
    if history:
        parts += ["<h2>Training curves</h2>", _img(figure_bytes(curves_figure(history)), "training curves")]

    if test and "confusion" in test:
        confusion = test["confusion"]
        classes = data.get("classes") or run_classes(run_folder, len(confusion))
        parts += ["<h2>Confusion matrix</h2>", '<p class="note">rows: true class, columns: predicted</p>',
                  _img(figure_bytes(confusion_figure(confusion, classes)), "confusion matrix")]
        per_class = test.get("per_class_accuracy") or []
        parts += ["<h2>Per-class test accuracy</h2>",
                  _table(["class", "accuracy", "test images"],
                         [(c, f"{a:.4f}", sum(row)) for c, a, row in zip(classes, per_class, confusion)], {1, 2})]

    if conv_layers(model):
        parts.append("<h2>First-layer filters</h2>")
        parts.append(_img(figure_bytes(filters_figure(model)), "first-layer filters"))

    parts.append("<h2>Test images and predictions (wrong first)</h2>")
    try:
        if images is None:
            images, labels = _test_images(data, n_test)
        classes = data.get("classes") or [str(i) for i in range(int(model.config.get("num_classes", 0)))]
        fig, wrong, total = predictions_figure(model, data, np.asarray(images), np.asarray(labels), classes, show)
        parts.append(f'<p class="note">{wrong} of the first {total} test images are misclassified; '
                     f'green: right, red: wrong (predicted class, its probability, true class)</p>')
        parts.append(_img(figure_bytes(fig), "test images with predictions"))
    except (ValueError, TypeError, KeyError, OSError) as e:
        parts.append(f'<p class="note">test images unavailable: {html.escape(str(e))}</p>')

    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")
    path = path or os.path.join(run_folder, "report.html")
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def _optional_json(run_folder: str, name: str):
    try:
        return read_json(run_folder, name)
    except ValueError:
        return None
