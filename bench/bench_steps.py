"""Training steps of zoo models, cnnkit vs PyTorch, and the peak memory of one.

A training step is forward, cross-entropy loss, backward and an SGD update (momentum
0.9, weight decay 5e-4), on a fixed random batch. Both libraries build the same
architecture (PyTorch's twin is written out in ``_torch_twins.py``) from the same
weights (loaded by ``state_dict`` name, strictly), on the same number of threads;
rows alternate between the two libraries so that drift in this shared machine's
speed hits both alike. Each timed step comes after a 0.25 s pause (``_common.settle``: the
other library's idle threads stop spinning first) and then untimed steps for 0.1 s, at
least one (``_common.warm_up``, as the kernel and ONNX benchmarks do): a training loop
runs its steps back to back, and a step right after the pause measures this virtual
machine waking up instead. Measured at d0a4ed9 (ResNet-20, same process, median of 4 x 4
steps): back to back 177-180 ms, right after a 0.25 s pause 194-222, after the pause and
one untimed step 178-180; PyTorch 148-155 back to back, 151-157 after the pause. For
the first ~25 ms after the pause the two worker threads' parts of each conv ran one
after the other instead of at once (a part's wall time doubled, its CPU time did not):
the host puts the woken virtual CPUs on one core for a while. PyTorch's first layers are
hit less. ``--cold`` times the step right after the pause instead. The median step time
of each is reported, with the ratio.

Workloads (issue 6): ResNet-20 at CIFAR shapes, batch 128; MobileNet v1 at 224,
batch 8; and the BatchNorm recipe's ``cnn_bn`` at 28x28, batch 128.

``--memory``: the peak resident memory of a ResNet-20 training step at batch 128,
each library in a fresh process of its own (torch, and for cnnkit Numba, imported
first; peak minus the resident memory just
before the first step, and the whole process's peak).

Like the other benchmarks, this script re-executes itself without OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE.

Usage: python bench/bench_steps.py [--threads 2] [--steps 10] [--only resnet20,...]
       [--memory] [--json FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _common import limit_threads, reexec_without_openblas_overrides, settle, warm_up  # noqa: E402

reexec_without_openblas_overrides()

import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

# (name, batch, input shape (C, H, W), classes)
WORKLOADS = [("resnet20", 128, (3, 32, 32), 10),
             ("mobilenet_v1", 8, (3, 224, 224), 1000),
             ("cnn_bn", 128, (1, 28, 28), 10)]


def build_pair(name, classes, in_channels):
    """The cnnkit model and its PyTorch twin with the same weights."""
    import torch

    from _torch_twins import TWINS
    from cnnkit import models
    ours = models.get(name, num_classes=classes, in_channels=in_channels, rng=np.random.default_rng(0))
    theirs = TWINS[name](classes, in_channels)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()},
                           strict=True)
    return ours, theirs


def cnnkit_step(model, x, y):
    from cnnkit.nn import CrossEntropyLoss
    from cnnkit.optim import SGD
    model.train()
    first = next(m for _, m in model.named_modules() if type(m).__name__ == "Conv2d")
    first.needs_input_grad = False  # as the Trainer: the images need no gradient
    loss, opt = CrossEntropyLoss(), SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        value = loss(model(x), y)
        model.backward(loss.backward())
        opt.step()
        opt.zero_grad()
        return float(value)
    return step


def torch_step(model, x, y):
    import torch
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(model(xt), yt)
        value.backward()
        opt.step()
        return value.item()
    return step


def time_pair(step_ours, step_theirs, steps, cold=False):
    first = (step_ours(), step_theirs())  # the first step's losses: same weights, same batch
    step_ours(), step_theirs()  # warm-up
    t_ours, t_theirs = [], []
    for _ in range(steps):
        for fn, times in ((step_ours, t_ours), (step_theirs, t_theirs)):
            settle()  # the other library's idle threads stop spinning first
            if not cold:
                warm_up(fn)  # back to back with untimed steps, as in a training loop
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return float(np.median(t_ours)), float(np.median(t_theirs)), first


def memory_child(library: str, threads: int) -> None:
    """Run in a fresh process: print the resident memory before the first ResNet-20
    step and the peak after three, as JSON. Only the measured library's model exists."""
    limit_threads(threads)  # imports torch in both children: the same baseline
    name, batch, shape, classes = WORKLOADS[0]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    y = rng.integers(0, classes, batch)
    jit_kb = 0
    if library == "cnnkit":
        from cnnkit import models, runtime
        # Numba (cnnkit's compiled kernels) is imported on first use; import it before the
        # baseline, as torch is imported before it in both children, and report its cost.
        at_import = _status_kb("VmRSS")
        runtime.jit_kernels()
        jit_kb = _status_kb("VmRSS") - at_import
        step = cnnkit_step(models.get(name, num_classes=classes, in_channels=shape[0], rng=rng), x, y)
    else:
        from _torch_twins import TWINS
        step = torch_step(TWINS[name](classes, shape[0]), x, y)
    before = _status_kb("VmRSS")
    for _ in range(3):
        step()
    print(json.dumps({"library": library, "before_kb": before, "peak_kb": _status_kb("VmHWM"), "jit_kb": jit_kb}))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_memory(threads: int) -> dict:
    out = {}
    for library in ("cnnkit", "pytorch"):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", library, "--threads", str(threads)],
                              capture_output=True, text=True, check=True)
        out[library] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--only", help="comma-separated workload names")
    ap.add_argument("--cold", action="store_true", help="time each step right after the pause (no warm-up)")
    ap.add_argument("--memory", action="store_true", help="also measure ResNet-20's peak memory")
    ap.add_argument("--memory-child", choices=["cnnkit", "pytorch"], help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results_steps.md")))
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.threads)
        return 0
    limit_threads(args.threads)
    import torch

    wanted = set(args.only.split(",")) if args.only else None
    rows = []
    for name, batch, shape, classes in WORKLOADS:
        if wanted and name not in wanted:
            continue
        ours, theirs = build_pair(name, classes, shape[0])
        rng = np.random.default_rng(1)
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        y = rng.integers(0, classes, batch)
        t_ours, t_theirs, (l_ours, l_theirs) = time_pair(cnnkit_step(ours, x, y), torch_step(theirs, x, y),
                                                         args.steps, args.cold)
        rows.append(dict(name=name, batch=batch, shape=list(shape), cnnkit_ms=t_ours * 1e3,
                         pytorch_ms=t_theirs * 1e3, ratio=t_ours / t_theirs,
                         first_loss_cnnkit=l_ours, first_loss_pytorch=l_theirs))
        print(f"{name:14s} batch {batch:4d}  cnnkit {t_ours * 1e3:8.1f} ms  PyTorch {t_theirs * 1e3:8.1f} ms  "
              f"ratio {t_ours / t_theirs:5.2f}  (first-step loss {l_ours:.5f} vs {l_theirs:.5f})", flush=True)
    memory = measure_memory(args.threads) if args.memory else None

    head = (f"Training step (forward, loss, backward, SGD), float32, {args.threads} threads, median of "
            f"{args.steps}, libraries alternating, each timed step after a 0.25 s pause and "
            f"{'no warm-up' if args.cold else '0.1 s of untimed steps'}; NumPy {np.__version__}, PyTorch {torch.__version__}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores. "
            f"Command: `python bench/bench_steps.py{' --memory' if args.memory else ''}{' --cold' if args.cold else ''}`.")
    lines = [head, "", "| model | batch | input | cnnkit ms | PyTorch ms | ratio ours/PyTorch | first-step loss (cnnkit / PyTorch) |",
             "|---|---:|---|---:|---:|---:|---|"]
    lines += [f"| {r['name']} | {r['batch']} | {'x'.join(map(str, r['shape']))} | {r['cnnkit_ms']:.1f} | "
              f"{r['pytorch_ms']:.1f} | {r['ratio']:.2f} | {r['first_loss_cnnkit']:.5f} / "
              f"{r['first_loss_pytorch']:.5f} |" for r in rows]
    if memory:
        c, p = memory["cnnkit"], memory["pytorch"]
        inc = lambda m: (m["peak_kb"] - m["before_kb"]) / 1024  # noqa: E731
        lines += ["", "Peak resident memory of three ResNet-20 training steps at batch 128, each library in a "
                  "fresh process:", "",
                  "| library | before the first step, MiB | peak, MiB | peak - before, MiB |", "|---|---:|---:|---:|",
                  f"| cnnkit | {c['before_kb'] / 1024:.0f} | {c['peak_kb'] / 1024:.0f} | {inc(c):.0f} |",
                  f"| PyTorch | {p['before_kb'] / 1024:.0f} | {p['peak_kb'] / 1024:.0f} | {inc(p):.0f} |", "",
                  f"Ratio ours/PyTorch: {inc(c) / inc(p):.2f} of the step's own memory, "
                  f"{c['peak_kb'] / p['peak_kb']:.2f} of the whole process's peak. Importing Numba for "
                  f"cnnkit's compiled kernels (before the baseline, as torch is imported before it) "
                  f"took {c.get('jit_kb', 0) / 1024:.0f} MiB of resident memory."]
        print("\n".join(lines[-8:]))
    Path(args.out).write_text("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": rows, "memory": memory}, indent=1))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
