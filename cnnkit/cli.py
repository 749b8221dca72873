"""The ``cnnkit`` command.

    cnnkit train [--model NAME] [--data NAME] [--classes 0-4] [--epochs N] ... [--out DIR] [--resume]
    cnnkit finetune CHECKPOINT_OR_WEIGHTS --data NAME [--classes 5-9] [--unfreeze MODULE] [--out DIR]
    cnnkit evaluate CHECKPOINT [--data NAME] [--split test]
    cnnkit predict CHECKPOINT IMAGE... [--top-k K]
    cnnkit summary MODEL [--input C,H,W] [--format table|markdown|json|csv] [--depth N]
    cnnkit explain conv|separable|pool|fc|model|same|window ...
    cnnkit viz filters|features|saliency|receptive|curves|confusion|report ...
    cnnkit import MODEL.onnx --out CHECKPOINT
    cnnkit export CHECKPOINT MODEL.onnx [--opset 17]
    cnnkit data fetch NAME [--root DIR]

``cnnkit train`` with no options trains the default recipe on Fashion-MNIST and
ends with the line ``test accuracy: 0.XXXX``. Every command has ``--help``.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

# Recipes measured on this project's 2-core machine (the README gives the numbers).
# SGD uses Nesterov momentum; the learning rate follows a cosine schedule per epoch.
RECIPES = {
    # 92.13% test in 4 min 37 s on 2 worker threads (make demo at 5fe3ccc; 92.09% in 5 min 09 s
    # before Winograd, 5 min 20 s before the compiled kernels, 6 min 09 s before
    # dx-as-convolution; before the threads: 92.25% in 7 min 40 s), 5,000 images held out
    # for validation
    "default": dict(model="cnn", epochs=7, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4,
                    schedule="cosine", augment=False, optimizer="sgd"),
    # conv-BN-ReLU x2, pool, x2, pool, with random horizontal flips: 93.46% test (val 94.20%)
    # after 11 epochs in 29 min 09 s on 2 worker threads (142-167 s per epoch); --seed 1: 93.75%
    # (val 93.58%) in 27 min 53 s; rerun at c71d863 (batch-inner columns): 93.54% (val 93.96%)
    # in 27 min 04 s; at 6bacd75 (compiled BN, ReLU, max-pool backward, direct first conv):
    # 93.66% (val 94.24%) in 25 min 38 s. With 10 epochs: 93.41% and 93.36% (seed 1), in 28:43 and 28:41. Twenty
    # epochs with --augment (crops) and flips: 93.56% (val 94.46%) in 48 min 43 s.
    # Before the threaded kernels 30 minutes held 8 epochs: 93.21%; with --label-smoothing 0.1:
    # 93.20% (val 94.02%); no flips, 6 epochs: 92.88%; crops, 7: 92.67%
    "bn": dict(model="cnn_bn", epochs=11, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4,
               schedule="cosine", augment=False, flip=True, optimizer="sgd"),
    "lenet": dict(model="lenet5_modern", epochs=10, batch_size=64, lr=0.02, momentum=0.9, weight_decay=0.0,
                  schedule="cosine", augment=False, optimizer="sgd"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnkit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model on a data set and report test accuracy",
                       description="Train a CNN with cnnkit's own forward and backward passes.")
    t.add_argument("--recipe", default="default", choices=sorted(RECIPES),
                   help="a measured set of defaults; other options override it (default: %(default)s)")
    t.add_argument("--model", help="model name from cnnkit.models.names()")
    _data_options(t)
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="peak learning rate")
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    t.add_argument("--momentum", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--schedule", choices=["cosine", "step", "none"])
    t.add_argument("--warmup", type=int, default=0, help="linear warm-up epochs (default: 0)")
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop (padding 2) and, for natural images, horizontal flips")
    t.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing, 0..1 "
                                                          "(default: the recipe's, 0)")
    t.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips alone (clothes and shoes stay what they are "
                        "mirrored; default: the recipe's)")
    _run_options(t, "runs/train")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.json")

    ft = sub.add_parser(
        "finetune", help="transfer learning: new classifier on a trained model, trained on new data",
        description="Load a trained model (a cnnkit checkpoint, or a .safetensors/.pth weights file "
                    "with --model), replace its classifier by a fresh one for the new data's classes, "
                    "freeze everything else and train the new head; --unfreeze MODULE also trains "
                    "MODULE and every layer after it (e.g. layer4, features.10). Frozen BatchNorm "
                    "layers keep their running statistics.")
    ft.add_argument("source", help="checkpoint .json, run folder, or weights file (.safetensors, .pth, .pt)")
    ft.add_argument("--model", help="model name, needed for a weights file (the checkpoint records it)")
    _data_options(ft)
    ft.add_argument("--unfreeze", metavar="MODULE",
                    help="also train this module and every module after it (named_modules name)")
    ft.add_argument("--epochs", type=int, default=3, help="(default: %(default)s)")
    ft.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    ft.add_argument("--lr", type=float, default=0.01, help="peak learning rate (default: %(default)s)")
    ft.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd")
    ft.add_argument("--momentum", type=float, default=0.9)
    ft.add_argument("--weight-decay", type=float, default=5e-4)
    ft.add_argument("--schedule", choices=["cosine", "step", "none"], default="cosine")
    ft.add_argument("--warmup", type=int, default=0, help="linear warm-up epochs (default: 0)")
    ft.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                    help="random crop (padding 2) and, for natural images, horizontal flips")
    _run_options(ft, "runs/finetune")

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on a data set",
                       description="Loss, accuracy, per-class accuracy and confusion matrix of a checkpoint.")
    e.add_argument("checkpoint", help="a checkpoint .json file or a run folder")
    e.add_argument("--data", help="data set name (default: the one it was trained on)")
    e.add_argument("--data-root")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")

    r = sub.add_parser("predict", help="classify image files with a checkpoint",
                       description="Top-k classes with probabilities for each image (PNG/JPEG).")
    r.add_argument("checkpoint")
    r.add_argument("images", nargs="+")
    r.add_argument("--top-k", type=int, default=3)
    r.add_argument("--mean", type=float, default=0.0, help="for a bare .onnx model: pixel mean to subtract "
                                                             "(pixels in [0, 1]; default: %(default)s)")
    r.add_argument("--std", type=float, default=1.0, help="for a bare .onnx model: pixel std to divide by")
    r.add_argument("--invert", action="store_true",
                   help="invert grey levels (Fashion-MNIST is light objects on black)")

    from .analysis.command import add_summary_parser
    from .analysis.explain_cli import add_explain_parser
    from .io.onnx.command import add_export_parser, add_import_parser
    add_summary_parser(sub)
    add_explain_parser(sub)
    add_import_parser(sub)
    add_export_parser(sub)
    from .viz.command import add_viz_parser
    add_viz_parser(sub)

    d = sub.add_parser("data", help="data set utilities", description="Download data sets.")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="download a data set and verify its SHA-256",
                        description="Download a data set from its official location and verify SHA-256.")
    f.add_argument("name")
    f.add_argument("--root", help="target folder (default: $CNNKIT_DATA/NAME if set, else ~/.cache/cnnkit/NAME)")
    return p


def _data_options(p) -> None:
    p.add_argument("--data", default="fashion-mnist",
                   help="data set name, or a folder of class sub-folders (with train/ and test/ "
                        "inside, or split 80/20) (default: %(default)s)")
    p.add_argument("--data-root", help="folder holding the data set files")
    p.add_argument("--classes", help="use only these classes, relabelled in this order: ids or "
                                     "names, ranges allowed (e.g. 0-4, or 5,7,9, or Sandal,Bag)")


def _run_options(p, out: str) -> None:
    p.add_argument("--val", type=int, default=5000,
                   help="training images held out for validation (default: %(default)s; 0: none; "
                        "at most a fifth of the training set)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training images (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out, help="run folder (default: %(default)s)")
    p.add_argument("--grad-clip", type=float, help="clip the global gradient norm")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .runtime import set_num_threads, tune_malloc
    tune_malloc()
    set_num_threads()  # cnnkit's kernels on every core, BLAS on one thread each
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "finetune":
            return cmd_finetune(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "summary":
            from .analysis.command import run_summary
            return run_summary(args)
        if args.command == "explain":
            from .analysis.explain_cli import run_explain
            return run_explain(args)
        if args.command == "viz":
            from .viz.command import run_viz
            return run_viz(args)
        if args.command == "import":
            from .io.onnx.command import run_import
            return run_import(args)
        if args.command == "export":
            from .io.onnx.command import run_export
            return run_export(args)
        if args.command == "data":
            from .data.fetch import fetch
            print(fetch(args.name, root=args.root))
            return 0
    except (ValueError, TypeError, OSError, KeyError) as e:  # OSError: missing files, failed downloads
        print(f"cnnkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1


# ---- train ------------------------------------------------------------------------
def _make_optimizer(name, params, lr, momentum, weight_decay):
    from . import optim
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _make_scheduler(name, optimizer, epochs, warmup):
    from .optim import lr_scheduler as S
    if name == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=max(epochs - warmup, 1))
    elif name == "step":
        main = S.MultiStepLR(optimizer, milestones=[int(epochs * 0.5), int(epochs * 0.75)], gamma=0.1)
    else:
        main = None
    if warmup:
        ramp = S.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warmup)
        return S.SequentialLR(optimizer, [ramp, main or S.LinearLR(optimizer, 1.0, 1.0, 1)], milestones=[warmup])
    return main


def _transforms(mean, std, augment, size, flip, repeat=1):
    """(train, eval) transforms: ``augment`` adds a random crop (padding 2), ``flip`` random
    horizontal flips; evaluation never augments."""
    from .data import transforms as T
    base = [T.ToFloat(), T.Normalize(mean, std)] + ([T.RepeatChannels(repeat)] if repeat != 1 else [])
    if flip and not augment:
        return T.Compose([T.RandomHorizontalFlip()] + base), T.Compose(base)
    if not augment:
        return T.Compose(base), T.Compose(base)
    aug = [T.RandomCrop(size, padding=2)] + ([T.RandomHorizontalFlip()] if flip else [])
    return T.Compose(aug + base), T.Compose(base)


def _parse_classes(spec: str | None):
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"5,7,Bag"`` -> [5, 7, 'Bag']; None -> None."""
    if not spec:
        return None
    out = []
    for part in spec.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if dash and lo.isdigit() and hi.isdigit():
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part) if part.isdigit() else part)
    return out


def _load_data(args, size=None, grayscale=None):
    """``(train, val, test)`` for the run: a named data set or an image folder, optionally
    restricted to ``--classes``, limited to ``--limit`` images, with ``--val`` held out."""
    import os
    from .data import ImageFolder, load_dataset

    if os.path.isdir(args.data):
        kw = dict(size=size, grayscale=bool(grayscale))
        if os.path.isdir(os.path.join(args.data, "train")):
            train_full = ImageFolder(os.path.join(args.data, "train"), **kw)
            test = ImageFolder(os.path.join(args.data, "test"), **kw)
        else:
            full = ImageFolder(args.data, **kw)
            train_full, test = full.split(max(1, len(full) // 5), seed=args.seed, stratify=True)
    else:
        train_full = load_dataset(args.data, "train", root=args.data_root)
        test = load_dataset(args.data, "test", root=args.data_root)
    classes = _parse_classes(args.classes)
    if classes:
        train_full, test = train_full.select_classes(classes), test.select_classes(classes)
    if args.limit:
        train_full = train_full.subset(np.arange(min(args.limit, len(train_full))))
    if args.val:
        train, val = train_full.split(min(args.val, len(train_full) // 5), seed=args.seed)
    else:
        train, val = train_full, None
    return train, val, test


def _fit(args, model, cfg, train, val, test, mean, std, extra, repeat=1) -> int:
    """Train ``model`` with ``cfg`` (optimizer, schedule, epochs, ...), checkpoint and report."""
    from .data import DataLoader
    from .nn import CrossEntropyLoss
    from .train import Checkpoint, History, Trainer, write_report
    from .train.trainer import NonFiniteError

    c, h, w = train.images.shape[1:]
    flip = args.data.startswith("cifar") if cfg.get("flip") is None else cfg["flip"]
    train_tf, eval_tf = _transforms(mean, std, cfg["augment"], (h, w), flip, repeat)
    train_loader = DataLoader(train, batch_size=cfg["batch_size"], shuffle=True, transform=train_tf, seed=args.seed)
    val_loader = DataLoader(val, batch_size=500, transform=eval_tf) if val is not None else None
    test_loader = DataLoader(test, batch_size=500, transform=eval_tf)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(cfg["optimizer"], params, cfg["lr"], cfg["momentum"], cfg["weight_decay"])
    scheduler = _make_scheduler(cfg["schedule"], optimizer, cfg["epochs"], args.warmup)
    data_meta = {"name": args.data, "classes": list(train.classes), "mean": list(map(float, mean)),
                 "std": list(map(float, std)), "input_shape": [int(c) * repeat, int(h), int(w)]}
    if repeat != 1:
        data_meta["repeat_channels"] = repeat
    extra = {"recipe": cfg, "data": data_meta, "seed": args.seed, **extra}
    callbacks = [Checkpoint(args.out, extra=extra), History(args.out), _PrintEpoch()]
    loss = CrossEntropyLoss(label_smoothing=float(cfg.get("label_smoothing") or 0.0))
    trainer = Trainer(model, loss, optimizer, scheduler=scheduler, callbacks=callbacks,
                      grad_clip=args.grad_clip, progress=not args.no_progress)
    if getattr(args, "resume", False):
        trainer.train_loader = train_loader
        meta = trainer.restore(args.out, train_loader)
        print(f"resumed from {args.out} after epoch {meta.get('epoch')}")
    trainable = model.num_parameters(trainable_only=True)
    print(f"model {cfg['model']}: {model.num_parameters():,} parameters ({trainable:,} trainable); "
          f"{len(train):,} training, {len(val) if val is not None else 0:,} validation, "
          f"{len(test):,} test images")
    try:
        trainer.fit(train_loader, val_loader, epochs=cfg["epochs"])
    except NonFiniteError as e:
        print(f"cnnkit {args.command}: {e}", file=sys.stderr)
        return 3
    result = trainer.evaluate(test_loader)
    write_report(args.out, cfg, data_meta, trainer.history, result)
    try:  # the pictures must not cost the run: a failure is reported, the checkpoints stay
        from .viz import write_html_report
        write_html_report(args.out, model)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"cnnkit {args.command}: warning: report.html not written: {e}", file=sys.stderr)
    print(f"run folder: {args.out}")
    print(f"test accuracy: {result['accuracy']:.4f}")
    return 0


def cmd_train(args) -> int:
    from . import models

    cfg = dict(RECIPES[args.recipe])
    for key in ("model", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                "augment", "flip", "label_smoothing"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    rng = np.random.default_rng(args.seed)
    train, val, test = _load_data(args)
    mean, std = train.mean_std()
    model = models.get(cfg["model"], num_classes=len(train.classes), in_channels=train.images.shape[1], rng=rng)
    return _fit(args, model, cfg, train, val, test, mean, std, {})


def _load_source(args, rng):
    """The model to fine-tune and the source's data description (None for a weights file)."""
    import os
    from . import models
    from .io import read_state_dict
    from .nn.transfer import classifier_names

    if args.source.lower().endswith(".onnx"):
        from .io.onnx.command import load_any
        model, meta = load_any(args.source)
        data = meta.get("data")
        return model, (data if data and "mean" in data else None), "onnx"
    if os.path.isdir(args.source) or args.source.endswith(".json"):
        model, meta = load_model(args.source)
        return model, meta.get("data"), meta.get("model_config", {}).get("name")
    if not args.model:
        raise ValueError(f"{args.source}: a weights file does not say which model it is; "
                         f"add --model NAME (one of: {', '.join(models.names())})")
    state = read_state_dict(args.source)
    probe = models.get(args.model, rng=rng)
    first = next((v for v in state.values() if np.ndim(v) == 4), None)
    in_channels = int(first.shape[1]) if first is not None else 1
    head = f"{classifier_names(probe)[0]}.weight"
    if head not in state:
        raise ValueError(f"{args.source}: no '{head}' in the weights: they do not belong to a "
                         f"'{args.model}' model (first keys: {', '.join(list(state)[:4])})")
    model = models.get(args.model, num_classes=int(state[head].shape[0]), in_channels=in_channels, rng=rng)
    model.load_state_dict(state)
    return model, None, args.model


def _rebase_onnx(model, out: str, input_shape, num_classes: int):
    """Export the re-headed ONNX-imported ``model`` to ``OUT/model.onnx`` and continue with
    that file's import (same weights), so that every checkpoint of the run rebuilds from it."""
    import os
    from .io.onnx import export, load
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    export(model.eval(), path, input_shape)
    fresh = load(path)
    old, new = list(model.state_dict().values()), fresh.state_dict()
    if len(old) != len(new) or any(np.shape(v) != np.shape(w) for v, w in zip(old, new.values())):
        raise ValueError(f"{path}: the exported model does not match the fine-tuned one")
    fresh.load_state_dict(dict(zip(new, old)))  # same structure, so the same order
    fresh.config = {"name": "onnx", "file": "model.onnx", "num_classes": int(num_classes)}
    return fresh


def cmd_finetune(args) -> int:
    from .nn.transfer import classifier_names

    rng = np.random.default_rng(args.seed)
    model, source_data, name = _load_source(args, rng)
    config = getattr(model, "config", None) or {}
    first = next((p.data for p in model.parameters() if p.data.ndim == 4), None)  # the first conv's weight
    c_model = int(config.get("in_channels") or (first.shape[1] if first is not None else 1))
    size = tuple(source_data["input_shape"][1:]) if source_data else None
    train, val, test = _load_data(args, size=size, grayscale=c_model == 1)
    c_data = train.images.shape[1]
    if c_data == c_model:
        repeat = 1
    elif c_data == 1:
        repeat = c_model  # grey images as RGB
    else:
        raise ValueError(f"{args.data}: images have {c_data} channels but the model takes {c_model}")
    if source_data and repeat == 1 and len(source_data.get("mean", [])) == c_data:
        mean, std = source_data["mean"], source_data["std"]  # the statistics the features were trained with
    else:
        mean, std = train.mean_std()
    model.replace_classifier(len(train.classes), rng=rng)
    if name == "onnx":  # checkpoints of an ONNX model need the new structure as a file
        model = _rebase_onnx(model, args.out, (1, c_model) + tuple(train.images.shape[2:]), len(train.classes))
    model.freeze()
    modules = dict(model.named_modules())
    for head in classifier_names(model):
        modules[head].unfreeze()
    if args.unfreeze:
        model.unfreeze(args.unfreeze)
    if model.num_parameters(trainable_only=True) == 0:
        raise ValueError(f"{name}: the new output layer has no trainable weights (LeNet-5's RBF "
                         "prototypes are fixed); add --unfreeze classifier to train F6 with it")
    cfg = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "optimizer", "momentum",
                                         "weight_decay", "schedule", "augment")}
    cfg.update(model=name, finetune_from=args.source, unfreeze=args.unfreeze)
    return _fit(args, model, cfg, train, val, test, mean, std, {"finetune": {
        "source": args.source, "unfreeze": args.unfreeze,
        "trainable": [n for n, p in model.named_parameters() if p.requires_grad]}}, repeat=repeat)


class _PrintEpoch:
    """One summary line per finished epoch (also when progress bars are off)."""

    def on_epoch_end(self, trainer, logs):
        print(_epoch_line(logs), flush=True)


def _epoch_line(logs) -> str:
    parts = [f"epoch {logs['epoch']:3d}"]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
        if logs.get(key) is not None:
            parts.append(f"{key} {logs[key]:.4g}")
    return "  ".join(parts)


# ---- evaluate / predict -------------------------------------------------------------
def load_model(checkpoint: str):
    """Rebuild a model from a checkpoint: ``(model, meta)``."""
    from . import models
    from .train.checkpoint import load_checkpoint
    meta, state, _ = load_checkpoint(checkpoint)
    config = meta.get("model_config")
    if isinstance(config, dict) and config.get("name") == "onnx":  # made by `cnnkit import`
        from .io.onnx.command import load_model as load_imported
        return load_imported(checkpoint)
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"{checkpoint}: the checkpoint does not record its model config")
    model = models.from_config(config)
    model.load_state_dict(state)
    model.eval()
    return model, meta


def cmd_evaluate(args) -> int:
    from .data import DataLoader, load_dataset
    from .nn import CrossEntropyLoss
    from .train import Trainer

    model, meta = load_model(args.checkpoint)
    data = meta.get("data") or {}
    name = args.data or data.get("name")
    ds = load_dataset(name, args.split, root=args.data_root)
    trained_on = data.get("classes")
    if trained_on and list(trained_on) != list(ds.classes) and set(trained_on) <= set(ds.classes):
        ds = ds.select_classes(trained_on)  # trained with --classes: the same subset, same labels
    _, eval_tf = _transforms(data["mean"], data["std"], False, None, False, data.get("repeat_channels", 1))
    trainer = Trainer(model, CrossEntropyLoss(), None, progress=False)
    result = trainer.evaluate(DataLoader(ds, batch_size=500, transform=eval_tf))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{name} {args.split}: {len(ds):,} images")
    print(f"loss {result['loss']:.4f}  accuracy {result['accuracy']:.4f}"
          + (f"  top-5 {result['top5']:.4f}" if "top5" in result else ""))
    classes = data.get("classes") or [str(i) for i in range(len(result["per_class_accuracy"]))]
    for cls, acc in zip(classes, result["per_class_accuracy"]):
        print(f"  {cls:14s} {acc:.4f}")
    print("confusion matrix (rows: true class, columns: predicted):")
    for cls, row in zip(classes, result["confusion"]):
        print(f"  {cls[:12]:12s} " + " ".join(f"{v:5d}" for v in row))
    print(f"test accuracy: {result['accuracy']:.4f}" if args.split == "test" else "")
    return 0


def cmd_predict(args) -> int:
    from PIL import Image, UnidentifiedImageError

    if args.checkpoint.lower().endswith(".onnx"):  # a bare ONNX file: pixels in [0, 1] unless told
        from .io.onnx.command import load_any
        model, meta = load_any(args.checkpoint)
        data = dict(meta.get("data") or {})
        if len(data.get("input_shape") or ()) != 3:
            raise ValueError(f"{args.checkpoint}: the model's input has no fixed C,H,W shape")
        data.setdefault("mean", [args.mean] * data["input_shape"][0])
        data.setdefault("std", [args.std] * data["input_shape"][0])
        model.eval()
    else:
        model, meta = load_model(args.checkpoint)
        data = meta.get("data") or {}
    c, h, w = data["input_shape"]
    classes = data.get("classes")
    mean = np.asarray(data["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(data["std"], np.float32).reshape(1, -1, 1, 1)
    batch = []
    for path in args.images:
        try:
            with Image.open(path) as im:
                im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as e:
            raise ValueError(f"{path}: cannot read the image: {e}") from None
        a = a[None] if c == 1 else a.transpose(2, 0, 1)
        batch.append(1.0 - a if args.invert else a)
    x = (np.stack(batch) - mean) / std
    z = model(x.astype(np.float32))
    classes = classes or [str(i) for i in range(z.shape[1])]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    k = min(args.top_k, p.shape[1])
    for path, probs in zip(args.images, p):
        top = np.argsort(-probs)[:k]
        print(f"{path}: " + ", ".join(f"{classes[i]} {probs[i]:.3f}" for i in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
