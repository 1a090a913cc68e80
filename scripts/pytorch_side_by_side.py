#!/usr/bin/env python3
"""rewind against PyTorch on this machine: the same workloads, back to back, one table.

Workloads (those of `rewind bench-core`): the tape overhead of a 1000-op chain on 8 elements
(forward + backward), an f32 1024^3 matmul, one SGD step of 16 residual MLP blocks
256->1024->256 on 2048 rows (loss = mean(y^2)) stored, checkpointed every block
(use_reentrant=False), in 4 segments (checkpoint_sequential) and every block keeping its matmul
outputs (selective checkpointing: create_selective_checkpoint_contexts saving aten.mm/addmm), and
an AdamW step on 16.8M parameters; with --bf16 also a bf16 1024^3 matmul and the MLP step under
torch.autocast("cpu", dtype=torch.bfloat16) (rewind: autocast(BF16)), stored, every block and 4
segments.

Setup (not part of CI): python3 -m venv .venv-ref && .venv-ref/bin/pip install torch numpy
(PyTorch's default wheel brings its CUDA libraries, about 3 GB, and runs on the CPU); then
    cargo build --release
    .venv-ref/bin/python scripts/pytorch_side_by_side.py [--reps 5] [--rounds 3] [--threads N]
Each round runs every PyTorch workload, then rewind's; the table shows the median over rounds
and the range, so noise on a shared machine can be told from an effect.
Optional: --bnb also times bitsandbytes' 8-bit AdamW on the CPU (pip install bitsandbytes).
"""

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    checkpoint_sequential,
    create_selective_checkpoint_contexts,
)


def median_secs(reps, f):
    f()  # warm-up
    times = []
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def tape_overhead_us(chain, n=1000, reps=200):
    x = torch.full((8,), 0.5, requires_grad=True)
    a = torch.full((8,), 0.999)
    b = torch.full((8,), 0.001)

    def run():
        y = x
        for _ in range(n):
            y = torch.tanh(y) if chain == "tanh" else y * a + b
        y.sum().backward()
        x.grad = None

    ops = n if chain == "tanh" else 2 * n
    return median_secs(reps, run) * 1e6 / ops


def gemm_gflops(n=1024, reps=5, dtype=torch.float32):
    torch.manual_seed(1)
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    return 2 * n**3 / median_secs(reps, lambda: a @ b) / 1e9


class Block(nn.Module):
    """x + fc2(gelu(fc1(x))), rewind's MlpBlock (exact, erf GELU)."""

    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(x)))


def save_matmuls(ctx, op, *args, **kwargs):
    mm = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)
    return CheckpointPolicy.MUST_SAVE if op in mm else CheckpointPolicy.PREFER_RECOMPUTE


def mlp_step_secs(plan, reps, depth=16, d=256, hidden=1024, rows=2048, amp=False):
    torch.manual_seed(0)
    blocks = nn.Sequential(*[Block(d, hidden) for _ in range(depth)])
    x = torch.randn(rows, d)
    opt = torch.optim.SGD(blocks.parameters(), lr=1e-3)
    context = functools.partial(create_selective_checkpoint_contexts, save_matmuls)

    def forward():
        if plan == "store":
            return blocks(x)
        if plan == "sqrt4":
            return checkpoint_sequential(blocks, 4, x, use_reentrant=False)
        h = x
        for blk in blocks:
            if plan == "every":
                h = checkpoint(blk, h, use_reentrant=False)
            else:
                h = checkpoint(blk, h, use_reentrant=False, context_fn=context)
        return h

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = forward()
            loss = (y * y).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return median_secs(reps, step)


def step_matmuls_secs(reps, depth=16, d=256, hidden=1024, rows=2048):
    """The stored step's matrix products alone, as rewind's bench-core times them: per block
    the two forward products and the four backward ones, with the step's shapes and transposes."""
    f = lambda *s: torch.randn(*s)
    x, w1, a, w2, g2, g1 = f(rows, d), f(hidden, d), f(rows, hidden), f(d, hidden), f(rows, d), f(rows, hidden)

    def run():
        for _ in range(depth):
            x @ w1.t()
            a @ w2.t()
            g2 @ w2
            g2.t() @ a
            g1 @ w1
            g1.t() @ x

    return median_secs(reps, run)


def adamw_ms(reps, n=1 << 24, **kw):
    p = torch.full((n,), 0.01, requires_grad=True)
    p.grad = (torch.arange(n) % 1000 - 500).float() * 1e-4
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01, **kw)
    return median_secs(reps, opt.step) * 1e3


def bnb_adamw8bit_ms(reps, n=1 << 24):
    import bitsandbytes as bnb

    p = torch.full((n,), 0.01, requires_grad=True)
    p.grad = (torch.arange(n) % 1000 - 500).float() * 1e-4
    opt = bnb.optim.AdamW8bit([p], lr=1e-3, weight_decay=0.01)
    return median_secs(reps, opt.step) * 1e3


def rewind_figures(binary, reps):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench_core.json")
        subprocess.run(
            [binary, "bench-core", "--reps", str(reps), "--json", out],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with open(out) as f:
            return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per figure (median)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads")
    ap.add_argument("--rewind", default="target/release/rewind", help="the rewind binary")
    ap.add_argument("--bnb", action="store_true", help="also time bitsandbytes' 8-bit AdamW")
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="also time the bf16 rows: matmul and the MLP step under torch.autocast('cpu', bfloat16) "
        "(slow without AVX512_BF16: PyTorch then takes tens of seconds per step)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds alternating PyTorch and rewind (median and range reported)")
    args = ap.parse_args()
    if args.reps < 1 or args.threads < 1 or args.rounds < 1:
        sys.exit("error: --reps, --threads and --rounds must be at least 1")
    if not os.path.exists(args.rewind):
        sys.exit(f"error: --rewind {args.rewind}: not found (cargo build --release first)")
    torch.set_num_threads(args.threads)

    print(
        f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads) against rewind, "
        f"{platform.processor() or platform.machine()}, median of {args.reps}, "
        f"{args.rounds} rounds alternating PyTorch and rewind",
        file=sys.stderr,
    )
    pt_rounds, rw_rounds = [], []
    for r in range(args.rounds):
        pt = {
            "tape_tanh_us_per_op": tape_overhead_us("tanh"),
            "tape_muladd_us_per_op": tape_overhead_us("muladd"),
            "gemm_1024_gflops": gemm_gflops(reps=args.reps),
            "adamw_fp32_ms": adamw_ms(args.reps, fused=True),
            "adamw_fp32_foreach_ms": adamw_ms(args.reps, foreach=True),
            "mlp_step_matmuls_s": step_matmuls_secs(args.reps),
        }
        for p in ("store", "every", "sqrt4", "every+dots"):
            pt[f"mlp_step_s.{p}"] = mlp_step_secs(p, args.reps)
        if args.bnb:
            pt["adamw_8bit_ms"] = bnb_adamw8bit_ms(args.reps)
        if args.bf16:
            pt["gemm_1024_bf16_gflops"] = gemm_gflops(reps=args.reps, dtype=torch.bfloat16)
            for p in ("store", "every", "sqrt4"):
                pt[f"mlp_step_bf16_s.{p}"] = mlp_step_secs(p, args.reps, amp=True)
        rw = rewind_figures(args.rewind, args.reps)
        for key in ("mlp_step_s", "mlp_step_bf16_s"):
            for p, v in rw.pop(key, {}).items():
                rw[f"{key}.{p}"] = v
        pt_rounds.append(pt)
        rw_rounds.append(rw)
        print(f"  round {r + 1} of {args.rounds} done", file=sys.stderr)

    def fig(rounds, key):
        vals = sorted(x[key] for x in rounds if key in x)
        return statistics.median(vals) if vals else float("nan"), vals

    rows = [
        ("tape overhead, tanh chain (µs/op)", "tape_tanh_us_per_op", "tape_tanh_us_per_op"),
        ("tape overhead, x*a+b chain (µs/op)", "tape_muladd_us_per_op", "tape_muladd_us_per_op"),
        ("f32 GEMM 1024³ (GFLOP/s, higher is better)", "gemm_1024_gflops", "gemm_1024_gflops"),
        ("the stored step's 96 matmuls alone (s)", "mlp_step_matmuls_s", "mlp_step_matmuls_s"),
        ("MLP step, store everything (s)", "mlp_step_s.store", "mlp_step_s.store"),
        ("MLP step, every block checkpointed (s)", "mlp_step_s.every", "mlp_step_s.every"),
        ("MLP step, 4 segments (s)", "mlp_step_s.sqrt4", "mlp_step_s.sqrt4"),
        ("MLP step, every block keeping matmul outputs (s)", "mlp_step_s.every+dots", "mlp_step_s.every+dots"),
        ("AdamW fp32, 16.8M params (ms; PyTorch fused)", "adamw_fp32_ms", "adamw_fp32_ms"),
        ("AdamW fp32, 16.8M params (ms; PyTorch foreach)", "adamw_fp32_foreach_ms", "adamw_fp32_ms"),
        ("8-bit AdamW, 16.8M params (ms; bitsandbytes CPU)", "adamw_8bit_ms", "adamw_8bit_ms"),
        ("bf16 GEMM 1024³ (GFLOP/s, higher is better)", "gemm_1024_bf16_gflops", "gemm_1024_bf16_gflops"),
        ("MLP step under bf16 autocast, store (s)", "mlp_step_bf16_s.store", "mlp_step_bf16_s.store"),
        ("MLP step under bf16 autocast, every block (s)", "mlp_step_bf16_s.every", "mlp_step_bf16_s.every"),
        ("MLP step under bf16 autocast, 4 segments (s)", "mlp_step_bf16_s.sqrt4", "mlp_step_bf16_s.sqrt4"),
    ]
    spread = lambda v: f" ({v[0]:.3f}–{v[-1]:.3f})" if len(v) > 1 else ""
    print("| workload | PyTorch (range) | rewind (range) | rewind ÷ PyTorch |")
    print("|---|---:|---:|---:|")
    med = {}
    for what, pk, rk in rows:
        if not any(pk in x for x in pt_rounds):
            continue
        (a, av), (b, bv) = fig(pt_rounds, pk), fig(rw_rounds, rk)
        med[pk], med["rw." + rk] = a, b
        print(f"| {what} | {a:.3f}{spread(av)} | {b:.3f}{spread(bv)} | {b / a:.2f} |")
    ps = lambda k: med[f"mlp_step_s.{k}"]
    rs = lambda k: med[f"rw.mlp_step_s.{k}"]
    print(
        f"\nrecompute overhead (every ÷ store): PyTorch {ps('every') / ps('store'):.2f}, "
        f"rewind {rs('every') / rs('store'):.2f}; selective (every+dots ÷ store): "
        f"PyTorch {ps('every+dots') / ps('store'):.2f}, rewind {rs('every+dots') / rs('store'):.2f}; "
        f"stored step ÷ its matmuls alone: PyTorch {ps('store') / med['mlp_step_matmuls_s']:.2f}, "
        f"rewind {rs('store') / med['rw.mlp_step_matmuls_s']:.2f}"
    )


if __name__ == "__main__":
    main()
