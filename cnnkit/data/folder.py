"""A data set from a folder of images, one sub-folder per class (torchvision's ImageFolder layout)::

    root/cat/001.png
    root/cat/002.jpg
    root/dog/xyz.jpeg

Class ``k`` is the ``k``-th sub-folder in sorted order. Files ending in ``.png``,
``.jpg`` or ``.jpeg`` (any case) are read with Pillow; other files and hidden files
are ignored. Every image is converted to RGB (3 channels) or, with
``grayscale=True``, to luminance (1 channel), and resized with Pillow's bilinear
filter to a common size: ``size`` when given, else the size of the first image
(in sorted order).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .._errors import value_error
from .datasets import ArrayDataset

__all__ = ["ImageFolder", "ImageFolderError", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class ImageFolderError(ValueError):
    """An image file cannot be read; the message names the file and Pillow's reason."""


def _size(size):
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise value_error("ImageFolder", "size must be a positive int or a pair (height, width)", size=size)
    return size


class ImageFolder(ArrayDataset):
    """Read every image under ``root``'s class sub-folders into memory as an :class:`ArrayDataset`.

    ``size``: ``(height, width)`` or an int for a square; default: the first image's.
    ``grayscale``: 1 channel instead of 3. ``skip_bad``: a file Pillow cannot read is
    skipped with a warning instead of raising :class:`ImageFolderError`.
    ``.files`` lists the path of each kept image, in the data set's order.
    """

    def __init__(self, root, size=None, grayscale: bool = False, skip_bad: bool = False):
        from PIL import Image, UnidentifiedImageError

        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"ImageFolder: {root} is not a folder")
        classes = sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
        if not classes:
            raise value_error("ImageFolder", f"{root} has no class sub-folders", root=root)
        target = _size(size)
        mode = "L" if grayscale else "RGB"
        images, labels, files = [], [], []
        for label, cls in enumerate(classes):
            folder = os.path.join(root, cls)
            for fname in sorted(os.listdir(folder)):
                path = os.path.join(folder, fname)
                if fname.startswith(".") or not fname.lower().endswith(IMAGE_EXTENSIONS) or not os.path.isfile(path):
                    continue
                try:
                    with Image.open(path) as im:
                        im = im.convert(mode)  # decodes the whole file: truncated data fails here
                except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
                    err = ImageFolderError(f"{path}: cannot read the image: expected a PNG or JPEG file, "
                                           f"found {type(e).__name__}: {e}")
                    if not skip_bad:
                        raise err from None
                    warnings.warn(f"skipping {err}", stacklevel=2)
                    continue
                if target is None:
                    target = (im.height, im.width)
                if (im.height, im.width) != target:
                    im = im.resize((target[1], target[0]), Image.BILINEAR)  # PIL takes (width, height)
                a = np.asarray(im, dtype=np.uint8)
                images.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))  # (C, H, W)
                labels.append(label)
                files.append(path)
        if not images:
            raise value_error("ImageFolder", f"no readable {'/'.join(IMAGE_EXTENSIONS)} files under {root}",
                              root=root, classes=tuple(classes))
        super().__init__(np.stack(images), np.asarray(labels, np.int64), classes,
                         name=os.path.basename(os.path.normpath(root)))
        self.root, self.files = root, files
