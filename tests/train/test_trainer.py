"""Trainer, checkpoints, metrics, NaN guard and exact resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cnnkit import nn
from cnnkit.optim import SGD, Adam
from cnnkit.train import (Checkpoint, CheckpointError, EarlyStopping, History, NonFiniteError, Trainer,
                          confusion_matrix, load_checkpoint, per_class_accuracy, save_checkpoint,
                          top_k_accuracy)


class ListLoader:
    """A minimal loader: fixed batches, reshuffled per epoch from (seed, epoch)."""

    def __init__(self, x, y, batch=16, seed=0):
        self.x, self.y, self.batch, self.seed, self.epoch = x, y, batch, seed, 0

    def set_epoch(self, e):
        self.epoch = e

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.y))
        for i in range(0, len(order), self.batch):
            idx = order[i:i + self.batch]
            yield self.x[idx], self.y[idx]

    def __len__(self):
        return -(-len(self.y) // self.batch)


def toy_data(n=96, seed=0):
    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    x = r.standard_normal((n, 1, 8, 8)).astype(np.float32) * 0.5
    x[np.arange(n), 0, y * 2, y * 2] += 3.0  # a learnable signal
    return x, y


def toy_model(seed=0, dropout=True):
    r = np.random.default_rng(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1, rng=r), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
              nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(0.2, rng=np.random.default_rng(seed + 1)))
    model = nn.Sequential(*layers, nn.Linear(64, 3, rng=r))
    model.config = {"name": "toy"}
    return model


def test_fit_learns_and_evaluates(tmp_path):
    x, y = toy_data()
    model = toy_model()
    trainer = Trainer(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1, momentum=0.9),
                      callbacks=[History(str(tmp_path))], progress=False)
    hist = trainer.fit(ListLoader(x, y), ListLoader(x, y), epochs=4)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    res = trainer.evaluate(ListLoader(x, y))
    assert res["accuracy"] > 0.9
    assert np.sum(res["confusion"]) == len(y)
    probs = trainer.predict(x)
    assert probs.shape == (len(y), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert model.training  # predict/evaluate restore the mode
    for name in ("history.csv", "history.json", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "history.json").read_text())[-1]["epoch"] == 4


def test_metrics_known_answers():
    logits = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 2], [2, 3, 1]], float)
    labels = np.array([0, 2, 2, 0])
    cm = confusion_matrix(logits.argmax(1), labels, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 0, 0], [0, 1, 1]]
    pca = per_class_accuracy(cm)
    assert pca[0] == 0.5 and np.isnan(pca[1]) and pca[2] == 0.5
    assert top_k_accuracy(logits, labels, 1) == 0.5
    assert top_k_accuracy(logits, labels, 2) == 1.0
    assert top_k_accuracy(np.array([[0.0, 1.0, 2.0]]), np.array([0]), 2) == 0.0


def test_checkpoint_round_trip_and_atomic_replacement(tmp_path):
    model = toy_model()
    opt = Adam(model.parameters(), lr=1e-3)
    x, y = toy_data(32)
    loss = nn.CrossEntropyLoss()
    loss(model(x), y)
    model.backward(loss.backward())
    opt.step()
    save_checkpoint(str(tmp_path), "last", model, opt, {"epoch": 1, "step": 1})
    first = json.loads((tmp_path / "last.json").read_text())["weights"]
    meta, state, optim_state = load_checkpoint(str(tmp_path))
    assert meta["epoch"] == 1 and meta["model_config"] == {"name": "toy"}
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(state[k], v)
    assert any(k.endswith("exp_avg") for k in optim_state)
    save_checkpoint(str(tmp_path), "last", model, opt, {"epoch": 2, "step": 2})
    second = json.loads((tmp_path / "last.json").read_text())["weights"]
    assert first != second and not (tmp_path / first).exists() and (tmp_path / second).exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_corrupt_truncated_and_missing_checkpoints_fail_clearly(tmp_path):
    model = toy_model()
    save_checkpoint(str(tmp_path), "last", model, None, {"epoch": 1})
    weights = tmp_path / json.loads((tmp_path / "last.json").read_text())["weights"]
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(str(tmp_path))
    weights.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        load_checkpoint(str(tmp_path))
    (tmp_path / "last.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a cnnkit checkpoint"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "nowhere"))


def test_nan_guard_names_the_layer_and_keeps_the_last_checkpoint(tmp_path):
    x, y = toy_data(64)
    model = toy_model(dropout=False)
    opt = SGD(model.parameters(), lr=0.01)
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, callbacks=[Checkpoint(str(tmp_path))], progress=False)
    trainer.fit(ListLoader(x, y), ListLoader(x, y), epochs=1)
    good = (tmp_path / "last.json").read_text()
    bad = x.copy()
    bad[5, 0, 3, 3] = np.inf  # one corrupt pixel: conv output becomes inf, BatchNorm NaN
    with pytest.raises(NonFiniteError, match=r"first non-finite output in layer '0' \(Conv2d\)") as info:
        trainer.fit(ListLoader(bad, y), None, epochs=2)
    assert "last checkpoint was not overwritten" in str(info.value)
    assert (tmp_path / "last.json").read_text() == good
    load_checkpoint(str(tmp_path))  # still valid


def test_nan_guard_reports_a_blown_up_parameter():
    x, y = toy_data(32)
    model = toy_model(dropout=False)
    model[5].weight.data[0, 0] = np.nan
    trainer = Trainer(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.01), progress=False)
    with pytest.raises(NonFiniteError, match=r"parameter '5.weight' already holds NaN"):
        trainer.fit(ListLoader(x, y), epochs=1)


def test_early_stopping_stops():
    x, y = toy_data(32)
    model = toy_model()
    stopper = EarlyStopping(monitor="val_accuracy", mode="max", patience=1, min_delta=2.0)
    trainer = Trainer(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.01),
                      callbacks=[stopper], progress=False)
    hist = trainer.fit(ListLoader(x, y), ListLoader(x, y), epochs=10)
    assert len(hist) == 2  # epoch 1 sets the best, epoch 2 does not beat it by 2.0


RESUME_SCRIPT = r"""
import sys, numpy as np
sys.path.insert(0, {root!r})
from tests.train.test_trainer import ListLoader, toy_data, toy_model
from cnnkit import nn
from cnnkit.optim import SGD, lr_scheduler
from cnnkit.train import Checkpoint, Trainer
x, y = toy_data()
model = toy_model()
opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
sched = lr_scheduler.CosineAnnealingLR(opt, T_max=4)
loader = ListLoader(x, y)
trainer = Trainer(model, nn.CrossEntropyLoss(), opt, scheduler=sched, callbacks=[Checkpoint({out!r})], progress=False)
if {resume}:
    trainer.restore({out!r}, loader)
trainer.fit(loader, None, epochs={epochs})
np.save({result!r}, np.concatenate([v.ravel() for v in model.state_dict().values()]).astype(np.float64))
"""


def _run(tmp_path, out, epochs, resume, result):
    code = RESUME_SCRIPT.format(root=os.getcwd(), out=str(out), epochs=epochs, resume=resume, result=str(result))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=os.getcwd(), timeout=300)


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    """Interrupted after 2 of 4 epochs (a separate process), resumed from the last
    checkpoint: weights, BatchNorm statistics, momentum, lr schedule and dropout
    masks continue exactly, so the final weights are identical bit for bit."""
    _run(tmp_path, tmp_path / "full", 4, False, tmp_path / "full.npy")
    _run(tmp_path, tmp_path / "part", 2, False, tmp_path / "half.npy")
    _run(tmp_path, tmp_path / "part", 4, True, tmp_path / "resumed.npy")
    full, half, resumed = (np.load(tmp_path / f) for f in ("full.npy", "half.npy", "resumed.npy"))
    assert not np.array_equal(full, half)
    np.testing.assert_array_equal(full, resumed)


def test_trainer_configures_threads_and_malloc(monkeypatch):
    """Trainer() sets up the process as the cnnkit command does: worker threads (unless
    the user chose a count) and the malloc tuning."""
    from cnnkit import runtime
    calls = []
    monkeypatch.setattr(runtime, "tune_malloc", lambda *a, **k: calls.append("malloc") or True)
    monkeypatch.setattr(runtime, "configured", lambda: False)
    monkeypatch.setattr(runtime, "set_num_threads", lambda n=None: calls.append("threads") or 1)
    Trainer(toy_model(), nn.CrossEntropyLoss(), None, progress=False)
    assert calls == ["threads", "malloc"]
    calls.clear()
    monkeypatch.setattr(runtime, "configured", lambda: True)  # the user's own count stays
    Trainer(toy_model(), nn.CrossEntropyLoss(), None, progress=False)
    assert calls == ["malloc"]
