"""``report.html``: self-contained (every image a data URI that decodes), every section there,
and checked in a real headless browser (Debian's ``chromium``; ``make browser`` installs it):
it loads without script errors, every <img> decodes (naturalWidth > 0), and a screenshot is
saved as an artifact under ``$CNNKIT_TEST_ARTIFACTS`` (default: the test's tmp_path)."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from cnnkit.viz import write_html_report
from cnnkit.viz.html_report import markdown_table_html

from .conftest import png_stats

SECTIONS = ["Configuration", "Model", "Training curves", "Confusion matrix", "Per-class test accuracy",
            "First-layer filters", "Test images and predictions (wrong first)"]
DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def report(run_folder):
    path = write_html_report(run_folder)
    with open(path, encoding="utf-8") as fh:
        return path, fh.read()


def test_report_has_every_section_and_no_external_reference(report, run_folder):
    path, page = report
    assert path == os.path.join(run_folder, "report.html")
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in page
    assert "test accuracy: 0." in page and "features.0" in page and "Conv2d" in page
    assert "Ankle boot" in page and "of the first 200 test images are misclassified" in page
    srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)  # self-contained
    assert "<script" not in page


def test_every_embedded_image_decodes(report):
    from PIL import Image
    blobs = DATA_URI.findall(report[1])
    assert len(blobs) == 4  # curves, confusion, filters, test images
    for blob in blobs:
        with Image.open(io.BytesIO(base64.b64decode(blob, validate=True))) as im:
            im.load()
            a = np.asarray(im.convert("L"), dtype=np.float64)
        assert min(im.size) > 100 and a.var() > 100


def test_report_with_a_given_model_and_images(run_folder, tmp_path):
    from cnnkit.cli import load_model
    model, _ = load_model(run_folder)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 1, 28, 28), dtype=np.uint8)
    path = write_html_report(run_folder, model, images=images, labels=np.arange(5), show=3,
                             path=str(tmp_path / "r.html"))
    page = open(path, encoding="utf-8").read()
    assert "of the first 5 test images are misclassified" in page


def test_report_of_a_finetune_run(run_folder, tmp_path):
    from cnnkit.cli import main
    out = tmp_path / "ft"
    assert main(["finetune", run_folder, "--classes", "5-9", "--epochs", "1", "--limit", "300", "--val", "50",
                 "--out", str(out), "--no-progress"]) == 0
    page = open(write_html_report(str(out)), encoding="utf-8").read()
    assert "<td>finetune</td>" in page and "Sandal, Shirt, Sneaker, Bag, Ankle boot" in page
    assert "of the first 200 test images are misclassified" in page  # the 5 classes' test images
    assert len(DATA_URI.findall(page)) == 4


def test_report_says_why_test_images_are_missing(run_folder, tmp_path, monkeypatch):
    import cnnkit.viz.html_report as hr

    def missing(data, n):
        raise FileNotFoundError("no test set here")
    monkeypatch.setattr(hr, "_test_images", missing)
    page = open(write_html_report(run_folder, path=str(tmp_path / "r.html")), encoding="utf-8").read()
    assert "test images unavailable: no test set here" in page


def test_markdown_table_to_html_keeps_escaped_pipes_and_numbers():
    text = markdown_table_html("| a | b |\n|---|---:|\n| `x\\|y` | 1,024 |\n\n- Total: 3\n")
    assert "<th>a</th>" in text and "<td>x|y</td>" in text and '<td class="num">1,024</td>' in text
    assert "<li>Total: 3</li>" in text


# ---- the real browser ----------------------------------------------------------------------
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener("load", () => {
  const widths = Array.from(document.images).map(im => im.complete ? im.naturalWidth : -1);
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({widths: widths, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser(*args, timeout=60):
    cmd = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
           "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (Debian package 'chromium': "
                                               "make browser, or apt-get install -y chromium)")
def test_report_in_headless_chromium(report, tmp_path):
    import json
    path, page = report
    # the probe records each image's decoded width and any error, after the page's load event
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</head>", PROBE + "\n</head>"), encoding="utf-8")
    run = browser("--dump-dom", probed.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stdout[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe["errors"] == []
    assert len(probe["widths"]) == 4 and min(probe["widths"]) > 100  # every <img> decoded

    artifacts = os.environ.get("CNNKIT_TEST_ARTIFACTS") or str(tmp_path)
    os.makedirs(artifacts, exist_ok=True)
    shot = os.path.join(artifacts, "report_screenshot.png")
    run = browser(f"--screenshot={shot}", "--window-size=1200,2400", "file://" + os.path.abspath(path))
    assert run.returncode == 0, run.stderr[-2000:]
    size, variance = png_stats(shot)
    assert size == (1200, 2400) and variance > 100
