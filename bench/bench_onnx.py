"""Imported ONNX models at batch 1: cnnkit (the imported Graph) vs ONNX Runtime, same file.

For ResNet-50, MobileNet v1, MobileNet v2 and LeNet-5 (1x32x32) (random weights; the
timing does not depend on them) the zoo model is exported with ``cnnkit.onnx.export``, the
file is imported with ``cnnkit.onnx.load``, and both the imported cnnkit model and an ONNX
Runtime session on that file run the same input. The import uses ``optimize=True``
(BatchNorms folded into the convolutions, ReLUs in place: what ORT's default graph
optimizations do to the same file); ``--no-optimize`` times the trainable import instead.
Prints the median forward time of each (timed in turns, one call of each at a time) and
the ratio cnnkit/ORT, on the same number of threads, and the max abs difference of the
outputs.

Like bench_kernels.py, it re-executes itself without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE.

Usage: python bench/bench_onnx.py [--threads 2] [--repeats 9] [--size 224] [--quick]
       (--quick: 2 repeats at 112x112, for a smoke run)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from _common import interleaved_medians, limit_threads, reexec_without_openblas_overrides  # noqa: E402

reexec_without_openblas_overrides()

import platform  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

MODELS = ("resnet50", "mobilenet_v1", "mobilenet_v2", "lenet5")
NATIVE = {"lenet5": (1, 32)}  # (channels, size) of models not run at 3 x size x size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-optimize", action="store_true",
                    help="import without optimize=True (BatchNorm folded into convs, ReLU in place)")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.size = 2, 112
    limit_threads(args.threads)

    import onnxruntime as ort

    from cnnkit import models
    from cnnkit import onnx as cnnkit_onnx

    print(f"# ONNX import benchmark: batch 1, {args.size}x{args.size}, {args.threads} threads, "
          f"median of {args.repeats}; onnxruntime {ort.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'model':14s} {'cnnkit ms':>10s} {'ORT ms':>10s} {'cnnkit/ORT':>11s} {'max|diff|':>10s}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            c, size = NATIVE.get(name, (3, args.size))
            zoo = models.get(name, num_classes=10 if name in NATIVE else 1000, in_channels=c,
                             rng=np.random.default_rng(0))
            path = os.path.join(tmp, f"{name}.onnx")
            cnnkit_onnx.export(zoo, path, (1, c, size, size))
            del zoo
            net = cnnkit_onnx.load(path, optimize=not args.no_optimize)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            x = np.random.default_rng(1).standard_normal((1, c, size, size)).astype(np.float32)
            diff = float(np.abs(net(x) - sess.run(None, {"input": x})[0]).max())
            t_ours, t_ort = interleaved_medians(lambda: net(x), lambda: sess.run(None, {"input": x}),
                                                args.repeats)
            print(f"{name:14s} {t_ours * 1e3:10.1f} {t_ort * 1e3:10.1f} {t_ours / t_ort:11.2f} {diff:10.2e}",
                  flush=True)
            rows.append(dict(name=name, input=[1, c, size, size], cnnkit_ms=t_ours * 1e3, ort_ms=t_ort * 1e3,
                             ratio=t_ours / t_ort, max_abs_diff=diff))
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({"onnxruntime": ort.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
