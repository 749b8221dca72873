"""One small trained run folder shared by the viz tests: ``cnnkit train`` of lenet5_modern on
300 real Fashion-MNIST images for one epoch (about 10 s on two cores)."""

from __future__ import annotations

import os

import numpy as np
import pytest

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory):
    if not os.path.exists(FMNIST):
        pytest.skip("dataset-fashion-mnist not installed (make data)")
    from cnnkit.cli import main
    out = tmp_path_factory.mktemp("viz") / "run"
    rc = main(["train", "--model", "lenet5_modern", "--limit", "300", "--val", "50", "--epochs", "1",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    return str(out)


@pytest.fixture(scope="session")
def test_image_file(run_folder, tmp_path_factory):
    """A Fashion-MNIST test image (a pullover) saved as PNG, as a user would pass one."""
    from PIL import Image

    from cnnkit.data import load_dataset
    ds = load_dataset("fashion-mnist", "test")
    path = tmp_path_factory.mktemp("img") / "pullover.png"
    Image.fromarray(np.ascontiguousarray(ds.images[1, 0])).save(path)
    return str(path)


def png_stats(path):
    """``((width, height), pixel variance)`` of a PNG, grey levels 0..255."""
    from PIL import Image
    with Image.open(path) as im:
        size = im.size
        a = np.asarray(im.convert("L"), dtype=np.float64)
    return size, float(a.var())
