"""The cnnkit command on a few hundred real Fashion-MNIST images (seconds, not minutes)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cnnkit.cli import build_parser, main

FMNIST = "/usr/share/datasets/fashion-mnist"
needs_data = pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist not installed")


@pytest.mark.parametrize("argv", [[], ["train"], ["evaluate"], ["predict"], ["data"], ["data", "fetch"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv + ["--help"])
    assert info.value.code == 0
    assert "usage: cnnkit" in capsys.readouterr().out


def test_console_script_is_installed_or_module_runs():
    out = subprocess.run([sys.executable, "-m", "cnnkit.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout


@needs_data
def test_train_evaluate_predict_resume(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--model", "lenet5_modern", "--limit", "700", "--val", "100", "--epochs", "3",
            "--batch-size", "32", "--out", str(run), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ")
    acc = float(last.split()[-1])
    assert 0.4 < acc <= 1.0  # 600 images, three epochs: far above chance (0.1)
    for name in ("last.json", "best.json", "history.csv", "history.json", "curves.png", "report.md",
                 "confusion.png", "test_metrics.json"):
        assert (run / name).exists(), name
    assert "test accuracy" in (run / "report.md").read_text()

    assert main(["evaluate", str(run), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert abs(res["accuracy"] - acc) < 1e-9 and len(res["confusion"]) == 10

    from PIL import Image
    from cnnkit.data.idx import read_idx
    img = read_idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz")[0]  # an ankle boot
    Image.fromarray(img).save(tmp_path / "boot.png")
    assert main(["predict", str(run / "best.json"), str(tmp_path / "boot.png"), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(tmp_path / "boot.png")) and line.count(",") == 1

    resume = [a for a in argv if a != "--no-progress"]
    resume[resume.index("--epochs") + 1] = "4"
    assert main(resume + ["--resume", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and json.loads((run / "last.json").read_text())["epoch"] == 4


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--data", "no-such-data", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "no-such-data" in capsys.readouterr().err
