#!/usr/bin/env python3
"""rewind's GEMM beside NumPy's OpenBLAS (the machine's reference), on the shapes that matter.

The shapes are those of `rewind_lab::bench::gemm` (1024^3, the residual-MLP step's six products,
GPT-2 small's forward and backward products), read from the Rust side's output. Each round runs
rewind (`lab/examples/gemm_shapes`), then NumPy in a fresh process, at each thread count; the
table shows the median GFLOP/s over rounds and the range.

Setup (not part of CI): python3 -m venv .venv-ref && .venv-ref/bin/pip install numpy
    cargo build --release -p rewind-lab --example gemm_shapes
    .venv-ref/bin/python scripts/gemm_side_by_side.py [--rounds 2] [--reps 3] [--threads 1,2] [--all]
--all also times every SIMD kernel of rewind's and the `matrixmultiply` and `gemm` crates.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

NUMPY = r"""
import json, sys, time
import numpy as np
shapes = json.loads(sys.argv[1]); reps = int(sys.argv[2])
def fill(n, p):
    return ((np.arange(n) % p).astype(np.float32) - (p // 2)) * np.float32(0.01)
# Untimed 1024^3 products first, as gemm_shapes does: on a shared VM the first products of a
# process have run at one thread's speed on two threads for longer than a shape's warm-up.
w = fill(1024 * 1024, 7).reshape(1024, 1024)
for _ in range(4):
    w @ w
for s in shapes:
    m, k, n = s["m"], s["k"], s["n"]
    a = fill(m * k, 17).reshape((k, m) if s["ta"] else (m, k))
    b = fill(k * n, 13).reshape((n, k) if s["tb"] else (k, n))
    a = a.T if s["ta"] else a
    b = b.T if s["tb"] else b
    bs = s["batch"]
    if bs > 1:  # one batched matmul, as a model calls it
        a, b = np.ascontiguousarray(np.broadcast_to(a, (bs, m, k))), np.ascontiguousarray(np.broadcast_to(b, (bs, k, n)))
        if s["tb"]:
            b = np.ascontiguousarray(b.transpose(0, 2, 1)).transpose(0, 2, 1)
    out = np.empty((bs, m, n) if bs > 1 else (m, n), dtype=np.float32)
    def run():
        np.matmul(a, b, out=out)
    run()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); run(); ts.append(time.perf_counter() - t)
    ts.sort()
    flop = 2 * m * k * n * s["batch"] / 1e9
    print(json.dumps({"shape": s["shape"], "kernel": "OpenBLAS (NumPy)", "gflops": flop / ts[len(ts) // 2],
                      "lo": flop / ts[-1], "hi": flop / ts[0]}))
"""


def run_rewind(binary, reps, mode, threads, only=""):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), MATMUL_NUM_THREADS=str(threads))
    out = subprocess.run([binary, str(reps), mode, only], env=env, check=True, capture_output=True, text=True)
    return [json.loads(l) for l in out.stdout.splitlines() if l.strip()]


def run_numpy(shapes, reps, threads):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", NUMPY, json.dumps(shapes), str(reps)], env=env,
                         check=True, capture_output=True, text=True)
    return [json.loads(l) for l in out.stdout.splitlines() if l.strip()]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--all", action="store_true")
    p.add_argument("--binary", default="target/release/examples/gemm_shapes")
    p.add_argument("--only", default="", help="only the shapes whose names start with one of these (comma-separated)")
    a = p.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, " + ", ".join(f for f in ["avx2", "fma", "avx512f", "avx512_bf16"] if f in flags))
    results = {}  # (threads, shape, kernel) -> [gflops]
    order = []
    for threads in [int(t) for t in a.threads.split(",")]:
        for _ in range(a.rounds):
            rows = run_rewind(a.binary, a.reps, "all" if a.all else "chosen", threads, a.only)
            shapes = []
            for r in rows:
                if r["shape"] not in [s["shape"] for s in shapes]:
                    shapes.append({k: r[k] for k in ["shape", "m", "k", "n", "ta", "tb", "batch"]})
            rows += run_numpy(shapes, a.reps, threads)
            for r in rows:
                key = (threads, r["shape"], r["kernel"])
                if key not in results:
                    order.append(key)
                results.setdefault(key, []).append(r["gflops"])
    print(f"\nGFLOP/s, median of {a.rounds} rounds (range); ratio = rewind ÷ OpenBLAS\n")
    print("| threads | shape | " + " | ".join(["candidate", "GFLOP/s", "÷ OpenBLAS"]) + " |")
    print("|---|---|---|---:|---:|")
    for key in order:
        threads, shape, kernel = key
        v = results[key]
        ref = results.get((threads, shape, "OpenBLAS (NumPy)"))
        ratio = statistics.median(v) / statistics.median(ref) if ref else float("nan")
        print(f"| {threads} | {shape} | {kernel} | {statistics.median(v):.1f} ({min(v):.1f}–{max(v):.1f}) | {ratio:.2f} |")


if __name__ == "__main__":
    main()
