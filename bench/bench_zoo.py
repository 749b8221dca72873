"""The model zoo at a glance: every registered model's parameter count, its native input,
the cnnkit forward time at batch 1 (inference, eval mode, float32) and the test that pins
the count. Writes bench/results_zoo.md.

    python bench/bench_zoo.py [--threads 2] [--repeat 3] [--only vgg11,resnet18]

The time is the median of ``--repeat`` forwards after one warm-up forward. Like the other
benchmarks this re-executes itself without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (its own
process only) and applies cnnkit's malloc setting.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import limit_threads, reexec_without_openblas_overrides  # noqa: E402

reexec_without_openblas_overrides()

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# name -> (in_channels, input size, num_classes, the test that pins the parameter count)
MODELS = {
    "lenet5": (1, 32, 10, "tests/models/test_lenet5.py::test_lenet5_parameter_counts_layer_by_layer"),
    "lenet5_modern": (1, 28, 10, "tests/models/test_small_models.py::test_lenet5_modern_parameter_count_by_hand"),
    "cnn": (1, 28, 10, "tests/models/test_small_models.py::test_cnn_parameter_count_by_hand"),
    "cnn_bn": (1, 28, 10, "tests/models/test_small_models.py::test_cnn_bn_parameter_count_by_hand"),
    "alexnet": (3, 227, 1000, "tests/models/test_alexnet_vgg.py::test_alexnet_paper_two_towers_parameter_count"),
    "alexnet_torchvision": (3, 224, 1000, "tests/models/test_alexnet_vgg.py::test_alexnet_torchvision_keys_and_count"),
    "vgg_a": (3, 224, 1000, "tests/models/test_alexnet_vgg.py::test_vgg_parameter_counts"),
    "vgg_a_lrn": (3, 224, 1000, "tests/models/test_alexnet_vgg.py::test_vgg_parameter_counts"),
    "vgg_b": (3, 224, 1000, "tests/models/test_alexnet_vgg.py::test_vgg_parameter_counts"),
    "vgg_c": (3, 224, 1000, "tests/models/test_alexnet_vgg.py::test_vgg_parameter_counts"),
    "vgg_d": (3, 224, 1000, "tests/models/test_alexnet_vgg.py::test_vgg_parameter_counts"),
    "vgg_e": (3, 224, 1000, "tests/models/test_alexnet_vgg.py::test_vgg_parameter_counts"),
    "googlenet": (3, 224, 1000, "tests/models/test_resnet_mobilenet_googlenet.py::test_googlenet_parameter_counts"),
    "googlenet_torchvision": (3, 224, 1000,
                              "tests/models/test_resnet_mobilenet_googlenet.py::test_googlenet_parameter_counts"),
    "resnet18": (3, 224, 1000, "tests/models/test_resnet_mobilenet_googlenet.py::test_imagenet_resnet_parameter_counts"),
    "resnet34": (3, 224, 1000, "tests/models/test_resnet_mobilenet_googlenet.py::test_imagenet_resnet_parameter_counts"),
    "resnet50": (3, 224, 1000, "tests/models/test_resnet_mobilenet_googlenet.py::test_imagenet_resnet_parameter_counts"),
    "resnet101": (3, 224, 1000,
                  "tests/models/test_resnet_mobilenet_googlenet.py::test_imagenet_resnet_parameter_counts"),
    "resnet152": (3, 224, 1000,
                  "tests/models/test_resnet_mobilenet_googlenet.py::test_imagenet_resnet_parameter_counts"),
    "resnet20": (3, 32, 10, "tests/models/test_resnet_mobilenet_googlenet.py::test_cifar_resnet_parameter_counts"),
    "resnet32": (3, 32, 10, "tests/models/test_resnet_mobilenet_googlenet.py::test_cifar_resnet_parameter_counts"),
    "resnet56": (3, 32, 10, "tests/models/test_resnet_mobilenet_googlenet.py::test_cifar_resnet_parameter_counts"),
    "mobilenet_v1": (3, 224, 1000, "tests/models/test_resnet_mobilenet_googlenet.py::test_mobilenet_v1_counts_at_alpha_1"),
    "mobilenet_v2": (3, 224, 1000,
                     "tests/models/test_resnet_mobilenet_googlenet.py::test_mobilenet_v2_count_keys_and_forward"),
}
ALIASES = {"vgg11": "vgg_a", "vgg13": "vgg_b", "vgg16": "vgg_d", "vgg19": "vgg_e"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results_zoo.md"))
    args = ap.parse_args()
    tuned = limit_threads(args.threads)

    from cnnkit import models
    missing = sorted(set(models.names()) - set(MODELS) - set(ALIASES))
    if missing:
        raise SystemExit(f"bench_zoo: no entry for {missing}: add them to MODELS")
    names = args.only.split(",") if args.only else list(MODELS)
    rows = []
    for name in names:
        cin, size, classes, test = MODELS[name]
        model = models.get(name, num_classes=classes, in_channels=cin, rng=np.random.default_rng(0)).eval()
        x = np.random.default_rng(1).standard_normal((1, cin, size, size)).astype(np.float32)
        out = model(x)  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
        ms = 1e3 * float(np.median(times))
        alias = [a for a, n in ALIASES.items() if n == name]
        label = name + (f" ({alias[0]})" if alias else "")
        rows.append((label, model.num_parameters(), f"{cin}x{size}x{size}", ms, test))
        print(f"{label:28s} {rows[-1][1]:>12,d} params  {rows[-1][2]:>11s}  {ms:9.1f} ms  out {out.shape}", flush=True)
        del model, out

    lines = [
        "# Model zoo: parameters and batch-1 forward time",
        "",
        f"`python bench/bench_zoo.py --threads {args.threads} --repeat {args.repeat}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {args.threads} BLAS threads, NumPy {np.__version__}, "
        f"malloc tuning {'on' if tuned else 'off'}; median of {args.repeat} forwards after a warm-up, eval mode, float32.",
        "",
        "| model | parameters | input | forward, batch 1 (ms) | count pinned by |",
        "|---|---:|---|---:|---|",
    ]
    for label, params, shape, ms, test in rows:
        lines.append(f"| `{label}` | {params:,} | {shape} | {ms:,.1f} | `{test.split('::')[1]}` |")
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
