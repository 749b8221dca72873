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


@pytest.mark.parametrize("argv", [[], ["train"], ["finetune"], ["summary"], ["explain"], ["explain", "conv"], ["import"], ["export"], ["viz"], ["viz", "filters"], ["evaluate"], ["predict"], ["data"], ["data", "fetch"]])
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
                 "confusion.png", "test_metrics.json", "report.html"):
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


@needs_data
def test_finetune_a_checkpoint_on_new_classes(tmp_path, capsys):
    """Pretrain on classes 0-4, fine-tune the new head on 5-9: only the head changes."""
    src = tmp_path / "src"
    assert main(["train", "--model", "cnn", "--classes", "0-4", "--limit", "600", "--val", "100",
                 "--epochs", "1", "--batch-size", "50", "--out", str(src), "--no-progress"]) == 0
    meta = json.loads((src / "last.json").read_text())
    assert meta["data"]["classes"] == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
    capsys.readouterr()
    out = tmp_path / "ft"
    assert main(["finetune", str(src / "last.json"), "--classes", "Sandal,Shirt,Sneaker,Bag,Ankle boot",
                 "--limit", "600", "--val", "100", "--epochs", "3", "--lr", "0.05", "--batch-size", "50",
                 "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "(645 trainable)" in text  # the new 128 -> 5 head only
    acc = float(text.strip().splitlines()[-1].split()[-1])
    assert acc > 0.4  # five classes: chance is 0.2 (measured 0.585 with features from 500 images)
    from cnnkit.train.checkpoint import load_checkpoint
    _, before, _ = load_checkpoint(str(src / "last.json"))
    meta, after, _ = load_checkpoint(str(out / "last.json"))
    assert meta["model_config"]["num_classes"] == 5 and meta["data"]["classes"][0] == "Sandal"
    head = meta["finetune"]["trainable"]
    assert len(head) == 2 and all(k.startswith("classifier.") for k in head)
    for k, v in before.items():
        if k in head:
            assert v.shape != after[k].shape or not np.array_equal(v, after[k])
        else:
            np.testing.assert_array_equal(v, after[k], err_msg=k)  # frozen: untouched
    assert main(["evaluate", str(out), "--json"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["accuracy"] - acc) < 1e-9


@needs_data
def test_finetune_a_weights_file_with_unfreeze_and_grey_to_rgb(tmp_path, capsys):
    """A .pth of a 3-channel model, grey images repeated to RGB, the last stage unfrozen too."""
    import torch
    from cnnkit import models
    m = models.get("resnet20", num_classes=7, in_channels=3, rng=np.random.default_rng(0))
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()}, tmp_path / "w.pth")
    out = tmp_path / "ft"
    assert main(["finetune", str(tmp_path / "w.pth"), "--model", "resnet20", "--unfreeze", "layer3",
                 "--classes", "0,1", "--limit", "200", "--val", "40", "--epochs", "1", "--batch-size", "40",
                 "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "last.json").read_text())
    assert meta["model_config"]["in_channels"] == 3 and meta["model_config"]["num_classes"] == 2
    assert meta["data"]["repeat_channels"] == 3 and meta["data"]["input_shape"] == [3, 28, 28]
    assert {k.split(".")[0] for k in meta["finetune"]["trainable"]} == {"layer3", "fc"}
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0  # evaluation repeats the channels too


def test_finetune_errors(tmp_path, capsys):
    (tmp_path / "w.safetensors").write_bytes(b"not a safetensors file")
    assert main(["finetune", str(tmp_path / "w.safetensors")]) == 2
    assert "add --model NAME" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "w.safetensors"), "--model", "cnn"]) == 2
    assert "w.safetensors" in capsys.readouterr().err


def test_flip_alone_augments_training_only():
    from cnnkit.cli import _transforms
    from cnnkit.data.transforms import RandomCrop, RandomHorizontalFlip
    train_tf, eval_tf = _transforms([0.5], [0.5], False, (28, 28), True)
    kinds = [type(t) for t in train_tf.transforms]
    assert RandomHorizontalFlip in kinds and RandomCrop not in kinds
    assert RandomHorizontalFlip not in [type(t) for t in eval_tf.transforms]
    train_tf, _ = _transforms([0.5], [0.5], True, (28, 28), False)
    assert [type(t) for t in train_tf.transforms][0] is RandomCrop


@needs_data
def test_onnx_files_work_wherever_a_model_does(tmp_path, capsys):
    """import, export, summary, explain model, finetune and evaluate with ONNX models."""
    pytest.importorskip("onnx")
    from cnnkit import models
    from cnnkit import onnx as cnnkit_onnx
    src = tmp_path / "cnn.onnx"
    cnnkit_onnx.export(models.get("cnn", rng=np.random.default_rng(0)).eval(), str(src), (1, 1, 28, 28))
    assert main(["summary", str(src)]) == 0
    assert "Trainable parameters:     421,642" in capsys.readouterr().out
    assert main(["explain", "model", str(src)]) == 0
    assert "4,241,152" in capsys.readouterr().out
    assert main(["import", str(src), "--out", str(tmp_path / "imported")]) == 0
    assert main(["summary", str(tmp_path / "imported"), "--input", "1,28,28"]) == 0
    assert main(["export", str(tmp_path / "imported"), str(tmp_path / "again.onnx"), "--input", "1,28,28"]) == 0
    assert (tmp_path / "again.onnx").stat().st_size > 1_000_000  # the 421,642 weights
    capsys.readouterr()
    run = tmp_path / "ft"
    assert main(["finetune", str(src), "--classes", "5-9", "--limit", "300", "--val", "60", "--epochs", "1",
                 "--batch-size", "60", "--out", str(run), "--no-progress"]) == 0
    assert (run / "model.onnx").exists()
    acc = float(capsys.readouterr().out.strip().splitlines()[-1].split()[-1])
    assert main(["evaluate", str(run), "--json"]) == 0  # rebuilt from run/model.onnx + the weights
    assert abs(json.loads(capsys.readouterr().out)["accuracy"] - acc) < 1e-9

    from PIL import Image
    from cnnkit.data.idx import read_idx
    Image.fromarray(read_idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz")[0]).save(tmp_path / "boot.png")
    assert main(["predict", str(src), str(tmp_path / "boot.png"), "--top-k", "3", "--mean", "0.286",
                 "--std", "0.353"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(tmp_path / "boot.png")) and line.count(",") == 2  # classes named 0..9
