"""Where the model looks: input-gradient saliency and Grad-CAM, from cnnkit's own backward.

Saliency (Simonyan, Vedaldi and Zisserman, "Deep Inside Convolutional Networks", 2014):
the gradient of the class score z_k (the logit, before softmax) with respect to the input,
``|dz_k/dx|`` with the maximum over colour channels. One forward and one backward of
``dy = onehot(k)`` through the model give it.

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017, eqs. 1-2) on the last conv layer's output A
(C, h, w)::

    alpha_c = mean over (i, j) of dz_k / dA_c[i, j]          # channel weights
    cam     = ReLU(sum_c alpha_c * A_c)                       # (h, w)

upsampled bilinearly to the input size and scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np

from .._errors import value_error
from ._common import capture, conv_layers, normalize01, pyplot, save_figure, show_image


def _class_of(z: np.ndarray, target) -> int:
    k = int(np.argmax(z[0])) if target is None else int(target)
    if not 0 <= k < z.shape[1]:
        raise value_error("cnnkit.viz", "class index out of range", target=target, classes=int(z.shape[1]))
    return k


def _backward_from(model, z: np.ndarray, k: int):
    dy = np.zeros_like(z)
    dy[0, k] = 1.0  # d z_k / d z
    before = model.needs_input_grad  # the Trainer turns it off; restore it for later training
    object.__setattr__(model, "needs_input_grad", True)
    try:
        return model.backward(dy)
    finally:
        object.__setattr__(model, "needs_input_grad", before)
        model.zero_grad()


def saliency(model, x: np.ndarray, target: int | None = None) -> tuple[np.ndarray, int]:
    """``(map (H, W) >= 0, class)``: ``max_c |d z_k / d x_c|`` for one input ``x`` (1, C, H, W);
    ``target`` None takes the predicted class."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise value_error("cnnkit.viz.saliency", "expected one input of shape (1, C, H, W)", shape=tuple(x.shape))
    model.eval()
    z = model(x)
    k = _class_of(z, target)
    dx = _backward_from(model, z, k)
    return np.abs(np.asarray(dx, dtype=np.float64)[0]).max(axis=0), k


def last_conv(model) -> str:
    convs = conv_layers(model)
    if not convs:
        raise value_error("cnnkit.viz.grad_cam", "the model has no conv layer for Grad-CAM")
    return convs[-1][0]


def grad_cam(model, x: np.ndarray, target: int | None = None, layer: str | None = None
             ) -> tuple[np.ndarray, int, str]:
    """``(cam (H, W) in [0, 1], class, layer)`` for one input ``x`` (1, C, H, W) on ``layer``
    (default: the last conv layer in ``named_modules`` order; any layer or container with a
    (N, C, h, w) output works, e.g. a ResNet stage or an inception block, whose concatenated
    output is the better choice for GoogLeNet); an all-zero ReLU map stays zero."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise value_error("cnnkit.viz.grad_cam", "expected one input of shape (1, C, H, W)", shape=tuple(x.shape))
    name = layer or last_conv(model)
    model.eval()
    with capture(model, [name]) as rec:
        z = model(x)
        k = _class_of(z, target)
        _backward_from(model, z, k)
    a = np.asarray(rec[name]["out"], dtype=np.float64)[0]   # (C, h, w)
    g = np.asarray(rec[name].get("grad"), dtype=np.float64)
    if a.ndim != 3 or g.ndim != 4:
        raise value_error("cnnkit.viz.grad_cam", "the layer's output is not a (N, C, h, w) feature map",
                          layer=name, shape=tuple(a.shape))
    alpha = g[0].mean(axis=(1, 2))                           # (C,)
    cam = np.maximum(np.tensordot(alpha, a, axes=1), 0.0)    # (h, w)
    cam = resize_bilinear(cam, x.shape[2:])
    top = cam.max()
    return (cam / top if top > 0 else cam), k, name


def resize_bilinear(a: np.ndarray, size) -> np.ndarray:
    """(h, w) -> (H, W), sampling at pixel centres (align_corners=False), edges clamped."""
    h, w = a.shape
    H, W = (int(v) for v in size)

    def coords(n_in, n_out):
        c = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(c).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, c - lo

    r0, r1, fr = coords(h, H)
    c0, c1, fc = coords(w, W)
    top = a[r0][:, c0] * (1 - fc) + a[r0][:, c1] * fc        # (H, W)
    bottom = a[r1][:, c0] * (1 - fc) + a[r1][:, c1] * fc
    return top * (1 - fr[:, None]) + bottom * fr[:, None]


def plot_saliency(model, x: np.ndarray, image01: np.ndarray, path: str, target: int | None = None,
                  classes=None, layer: str | None = None, dpi: int = 100) -> str:
    """Input, gradient saliency and Grad-CAM overlaid on the input, side by side."""
    sal, k = saliency(model, x, target)
    cam, _, name = grad_cam(model, x, k, layer)
    label = classes[k] if classes is not None and k < len(classes) else str(k)
    grey = image01.mean(axis=0) if image01.shape[0] != 1 else image01[0]
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.4))
    show_image(axes[0], image01)
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(normalize01(sal), cmap="hot", vmin=0, vmax=1)
    axes[1].set_title("saliency |d score / d input|", fontsize=9)
    axes[2].imshow(np.clip(grey, 0, 1), cmap="gray", vmin=0, vmax=1)
    axes[2].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[2].set_title(f"Grad-CAM on {name}", fontsize=9)
    for ax in axes[1:]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"class {k} ({label})", fontsize=10)
    fig.tight_layout(pad=0.4)
    return save_figure(fig, path, dpi=dpi)
