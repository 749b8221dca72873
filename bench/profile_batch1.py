"""Where batch-1 inference spends its time: cnnkit's graph nodes, ONNX Runtime's, and the
functions cnnkit spends it in.

For each model: exported to ONNX with the zoo's weights, imported with
``cnnkit.onnx.load(optimize=True)`` (as ``bench_onnx.py`` does), then
- cnnkit: the median time of each graph node over the runs (each node's forward wrapped
  in a timer for the profile's duration), and their sum;
- ONNX Runtime: the same from its own profiler (``SessionOptions.enable_profiling``, the
  nodes' kernel times; a short pause before each run, as its threads would be idle);
- cProfile over the same runs: the functions with the most time of their own (on the
  calling thread: kernels that run on cnnkit's worker threads show as waits).

Names differ between the two (ORT's name a fused node by its last output), so the tables
are side by side, not matched. ORT's profiler costs each node a few microseconds of its
own: LeNet-5's nodes sum to 0.28 ms under it, where a run without it takes 0.035 ms; for
ResNet-50 (18.6 ms against 18.7) it does not matter. Session 19's accounting of
ResNet-50 came from this.

This machine may set OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which slow NumPy's BLAS;
this script unsets both for its own process (it re-executes itself first), as the
benchmarks do.

Usage: python bench/profile_batch1.py [--models resnet50 ...] [--runs 30] [--top 15]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time

from _common import limit_threads, reexec_without_openblas_overrides  # noqa: E402

reexec_without_openblas_overrides()

from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from bench_onnx import NATIVE  # noqa: E402  (the models not run at 3x224x224: channels, size)


def cnnkit_nodes(net, x, runs: int) -> list[tuple[float, str, str]]:
    """(median ms, node, layer type) per graph node, slowest first."""
    times = collections.defaultdict(list)
    wrapped = []
    for name, _ in net.nodes:
        layer = net._children[name]
        forward = type(layer).forward

        def timed(*inputs, forward=forward, layer=layer, name=name):
            t0 = time.perf_counter()
            out = forward(layer, *inputs)
            times[name].append(time.perf_counter() - t0)
            return out
        object.__setattr__(layer, "forward", timed)  # (an instance attribute: removed below)
        wrapped.append(layer)
    try:
        for _ in range(runs + 5):
            net(x)
    finally:
        for layer in wrapped:
            del layer.__dict__["forward"]
    rows = [(float(np.median(v[5:])) * 1e3, k, type(net._children[k]).__name__) for k, v in times.items()]
    return sorted(rows, reverse=True)


def ort_nodes(path: str, x, runs: int, threads: int, tmp: str) -> list[tuple[float, str, str]]:
    """(median ms, node, op type) from ONNX Runtime's profiler, slowest first."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tmp, "ort_profile")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    for _ in range(runs + 5):
        time.sleep(0.02)
        sess.run(None, {"input": x})
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    times = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["name"][:-len("_kernel_time")]].append((e["dur"], e["args"].get("op_name", "")))
    rows = [(float(np.median([d for d, _ in v[5:]])) / 1e3, k, v[0][1]) for k, v in times.items()]
    return sorted(rows, reverse=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["resnet50", "mobilenet_v1", "lenet5"])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    limit_threads(args.threads)

    from cnnkit import models
    from cnnkit import onnx as cnnkit_onnx

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            c, size = NATIVE.get(name, (3, 224))
            zoo = models.get(name, num_classes=10 if name in NATIVE else 1000, in_channels=c,
                             rng=np.random.default_rng(0))
            path = os.path.join(tmp, f"{name}.onnx")
            cnnkit_onnx.export(zoo, path, (1, c, size, size))
            net = cnnkit_onnx.load(path, optimize=True)
            x = np.random.default_rng(1).standard_normal((1, c, size, size)).astype(np.float32)
            ours = cnnkit_nodes(net, x, args.runs)
            theirs = ort_nodes(path, x, args.runs, args.threads, tmp)
            print(f"\n# {name}, batch 1, {args.threads} threads, median of {args.runs} runs per node")
            print(f"sum of nodes: cnnkit {sum(r[0] for r in ours):.2f} ms ({len(ours)} nodes), "
                  f"ONNX Runtime {sum(r[0] for r in theirs):.2f} ms ({len(theirs)} nodes)")
            print(f"{'cnnkit ms':>9s}  {'node':34s} {'ORT ms':>7s}  node")
            for i in range(min(args.top, max(len(ours), len(theirs)))):
                a = f"{ours[i][0]:9.3f}  {ours[i][1][:22]:22s} {ours[i][2][:11]:11s}" if i < len(ours) else " " * 45
                b = f"{theirs[i][0]:7.3f}  {theirs[i][1]} ({theirs[i][2]})" if i < len(theirs) else ""
                print(f"{a} {b}")
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.runs):
                net(x)
            profile.disable()
            print(f"\ncProfile, {args.runs} runs: own time per run, ms (calling thread)")
            stats = pstats.Stats(profile).stats
            own = sorted(((v[2] / args.runs * 1e3, f"{Path(k[0]).name}:{k[1]}({k[2]})") for k, v in stats.items()),
                         reverse=True)
            for ms, where in own[:args.top]:
                print(f"{ms:9.3f}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
