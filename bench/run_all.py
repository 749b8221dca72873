"""Every benchmark row of issue 6 in one command (``make bench``), summed up in
bench/RESULTS.md: ratios against PyTorch and ONNX Runtime measured in the same run,
GFLOP/s against the machine's GEMM peak, peak memory, and ``import cnnkit`` time.

Runs, each in its own process (each re-executes itself without OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE, see _common.py):
  bench_kernels.py  conv and pool shapes, forward + backward, vs PyTorch
  bench_train.py    one LeNet-5 epoch on Fashion-MNIST, vs PyTorch
  bench_steps.py    ResNet-20 / MobileNet v1 / cnn_bn training steps and ResNet-20's
                    peak memory, vs PyTorch
  bench_onnx.py     batch-1 inference of ResNet-50, MobileNet v1 and LeNet-5, vs ONNX Runtime
Each also writes its own detailed table (bench/results_*.md).

Usage: python bench/run_all.py [--threads 2] [--quick]
       (--quick: fewer repeats, a 6,400-image LeNet epoch, inference at 112x112)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import blas_thread_timeout_setting  # (sets OPENBLAS_THREAD_TIMEOUT as `import cnnkit` does)

HERE = Path(__file__).resolve().parent
TARGETS = {"kernel": "<= 1.0, none above 1.3", "lenet": "<= 1.0", "step": "<= 1.2", "onnx": "<= 1.5",
           "memory": "<= 1.2", "import": "< 0.3 s"}


def run(script: str, *args: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, str(HERE / script), *args, "--json", out]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    try:
        return json.loads(Path(out).read_text())
    finally:
        os.unlink(out)


def import_time(repeats: int = 7) -> float:
    """Median wall time of ``python -c "import cnnkit"`` minus that of ``python -c pass``."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))

    def median(code):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]
    return median("import cnnkit") - median("pass")


def cpu_flags() -> str:
    """The widest SIMD the CPU has (the same code ran at 3x the GEMM rate on an AVX-512 host)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                names = {"avx512f": "AVX-512", "avx2": "AVX2", "avx": "AVX"}
                return next((name for flag, name in names.items() if flag in flags), "no AVX")
    except OSError:
        pass
    return "unknown SIMD"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    t = ["--threads", str(args.threads)]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()[0]
    kernels = run("bench_kernels.py", *t, *(["--turns", "2", "--repeats", "2"] if args.quick else []))
    lenet = run("bench_train.py", *t, *(["--limit", "6400"] if args.quick else []))
    steps = run("bench_steps.py", *t, "--memory", *(["--steps", "3"] if args.quick else []))
    onnx = run("bench_onnx.py", *t, "--models", "resnet50", "mobilenet_v1", "lenet5",
               *(["--quick"] if args.quick else []))
    imp = import_time()
    load_after = os.getloadavg()[0]

    import numpy as np
    import torch
    rows = []
    for r in kernels["rows"]:
        rows.append((f"{r['case']} (fwd + bwd)", "PyTorch", f"{r['cnnkit_ms']:.1f} ms", f"{r['pytorch_ms']:.1f} ms",
                     r["ratio"], TARGETS["kernel"]))
    rows.append((f"LeNet-5 epoch, {lenet['images']:,} images, batch {lenet['batch']}", "PyTorch",
                 f"{lenet['cnnkit_s']:.1f} s", f"{lenet['pytorch_s']:.1f} s", lenet["ratio"], TARGETS["lenet"]))
    for r in steps["steps"]:
        rows.append((f"{r['name']} training step, batch {r['batch']}, {'x'.join(map(str, r['shape']))}", "PyTorch",
                     f"{r['cnnkit_ms']:.0f} ms", f"{r['pytorch_ms']:.0f} ms", r["ratio"],
                     TARGETS["step"] if r["name"] != "cnn_bn" else "-"))
    for r in onnx["rows"]:
        rows.append((f"{r['name']} inference, batch 1, {'x'.join(map(str, r['input'][1:]))}",
                     f"ONNX Runtime {onnx['onnxruntime']}", f"{r['cnnkit_ms']:.1f} ms", f"{r['ort_ms']:.1f} ms",
                     r["ratio"], TARGETS["onnx"]))
    mem = steps["memory"]
    inc = {k: (m["peak_kb"] - m["before_kb"]) / 1024 for k, m in mem.items()}
    rows.append(("ResNet-20 training step, batch 128: peak memory above the pre-step resident set", "PyTorch",
                 f"{inc['cnnkit']:.0f} MiB", f"{inc['pytorch']:.0f} MiB", inc["cnnkit"] / inc["pytorch"],
                 TARGETS["memory"]))

    lines = [
        "# Benchmarks", "",
        f"Measured {started} with `python bench/run_all.py{' --quick' if args.quick else ''}` (`make bench`) on "
        f"{cpu_name()} ({cpu_flags()}), {os.cpu_count()} cores, {args.threads} threads for every library; "
        f"NumPy {np.__version__}, OPENBLAS_THREAD_TIMEOUT={blas_thread_timeout_setting()} "
        f"(cnnkit/__init__.py), "
        f"PyTorch {torch.__version__}; 1-min load average {load_before:.2f} before, {load_after:.2f} after. "
        "The machine is shared: expect 10-20% drift between runs; ratios come from the same run, each "
        "library timed in turns with the other (the kernel rows: the median of 5 alternating turns of 3 calls; "
        "the steps and inference rows: alternating single calls).", "",
        f"GEMM peak (2048x2048 float32 `np.matmul`, {args.threads} BLAS threads): "
        f"**{kernels['gemm_peak_gflops']:.1f} GFLOP/s**. `import cnnkit`: **{imp:.2f} s** (target "
        f"{TARGETS['import']}).", "",
        "| workload | reference | cnnkit | reference | ratio cnnkit/reference | target |",
        "|---|---|---:|---:|---:|---|"]
    lines += [f"| {w} | {ref} | {a} | {b} | {ratio:.2f} | {tg} |" for w, ref, a, b, ratio, tg in rows]
    lines += ["", "Convolutions' arithmetic rate (forward GEMM + two backward GEMMs, 2 FLOPs per multiply-add; "
              "an effective rate: the 3x3 stride-1 rows run as Winograd F(2x2, 3x3), which does 2.25x fewer "
              "multiply-adds than the count used here, so they can pass the GEMM peak):",
              "", "| conv | cnnkit GFLOP/s | % of GEMM peak | PyTorch GFLOP/s |", "|---|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['gflops']} | {r['peak_share']} | {r['pytorch_gflops']} |"
              for r in kernels["rows"] if r["gflops"] != "-"]
    lines += ["", "Details: `results_kernels.md`, `results_train.md`, `results_steps.md` (and the console output "
              "of `bench_onnx.py`)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
