#!/usr/bin/env python3
"""Data parallelism on this machine, rewind beside PyTorch DDP: a random GPT-2 (6 layers of 384,
6 heads, 128 positions, the fixture tokenizer's vocabulary; dropout 0; written once by
transformers), rows of 128 tokens, AdamW lr 1e-4, 16 rows a step:

  * one process on 2 threads taking 2 micro-batches of 8 rows (rewind `--accumulation 2`;
    PyTorch: two backward()s, then step), against
  * 2 ranks on 1 thread each taking one micro-batch of 8 rows (`mpirun -np 2 rewind train`;
    PyTorch: `torchrun --nproc_per_node 2`, DistributedDataParallel on gloo).

The same two layouts with ZeRO-1 (rewind `--zero 1`; PyTorch: DDP with
ZeroRedundancyOptimizer), and the 16-block residual MLP of `rewind bench-core` (256 → 1024 → 256,
2048 rows a step, SGD; `rewind bench-dist`; PyTorch: the same blocks, DDP on gloo), one process on
2 threads taking every row against 2 ranks on 1 thread each taking half.

Medians over steps (the first left out) and rounds; tokens (rows) per second of the whole job
from the median step; for rewind's ranks also the all-reduce time per step and the part of it
the backward did not hide (rank 0's communication thread and training thread). Not part of CI.

Setup: python3 -m venv .venv-ref && .venv-ref/bin/pip install torch numpy transformers
    ./scripts/mpi-install.sh && cargo build --release -p rewind-lab --features mpi
    .venv-ref/bin/python scripts/ddp_side_by_side.py [--rounds 2] [--steps 6]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from hf_side_by_side import corpus  # paragraphs that fill whole rows

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "gpt2-tiny", "tokenizer.json")
ROWS, LEN = 8, 128
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")

TORCH_STEP = r"""
import json, os, statistics, sys, time, torch
from transformers import GPT2LMHeadModel
cfg = json.loads(sys.argv[1])
ddp = "LOCAL_RANK" in os.environ
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
model = GPT2LMHeadModel.from_pretrained(cfg["dir"])
model.train()
if ddp:
    import torch.distributed as dist
    dist.init_process_group("gloo")
    model = torch.nn.parallel.DistributedDataParallel(model)
if cfg.get("zero") and ddp:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, lr=1e-4)
else:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
g = torch.Generator().manual_seed(1 + (dist.get_rank() if ddp else 0))
micro = 1 if ddp else 2
times = []
for _ in range(cfg["steps"]):
    t = time.perf_counter()
    for _ in range(micro):
        ids = torch.randint(0, cfg["vocab"], (cfg["rows"], cfg["len"]), generator=g)
        (model(ids, labels=ids).loss / micro).backward()
    opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - t)
if not ddp or dist.get_rank() == 0:
    print(json.dumps({"step_s": statistics.median(times[1:])}))
if ddp:
    dist.destroy_process_group()
"""


TORCH_MLP = r"""
import json, os, statistics, sys, time, torch
import torch.nn as nn
cfg = json.loads(sys.argv[1])
sys.path.insert(0, cfg["scripts"])
from pytorch_side_by_side import Block  # the MLP block of the single-process harness
ddp = "LOCAL_RANK" in os.environ
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
model = nn.Sequential(*[Block(256, 1024) for _ in range(16)])
x = torch.randn(cfg["rows"], 256)
if ddp:
    import torch.distributed as dist
    dist.init_process_group("gloo")
    model = torch.nn.parallel.DistributedDataParallel(model)
    share = cfg["rows"] // dist.get_world_size()
    x = x[dist.get_rank() * share:(dist.get_rank() + 1) * share]
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
times = []
for _ in range(cfg["steps"]):
    t = time.perf_counter()
    y = model(x)
    (y * y).mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t)
if not ddp or dist.get_rank() == 0:
    print(json.dumps({"step_s": statistics.median(times[1:])}))
if ddp:
    dist.destroy_process_group()
"""
MLP_ROWS = 2048


def model_dir(path):
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    from transformers import GPT2Config, GPT2LMHeadModel
    with open(TOKENIZER) as f:
        vocab = len(json.load(f)["model"]["vocab"])
    cfg = GPT2Config(n_layer=6, n_embd=384, n_head=6, n_positions=LEN, vocab_size=vocab, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(path, safe_serialization=True)
    shutil.copy(TOKENIZER, os.path.join(path, "tokenizer.json"))
    return path


def run_rewind(binary, d, text, steps, ranks, zero=False):
    with tempfile.TemporaryDirectory() as tmp:
        summary = os.path.join(tmp, "summary.json")
        args = [binary, "train", "--model", d, "--text-file", text, "--max-len", str(LEN),
                "--batch-size", str(ROWS), "--padding", "fixed", "--steps", str(steps),
                "--optimizer", "adamw", "--lr", "1e-4", "--quiet", "--json", summary]
        if ranks == 1:
            env = dict(os.environ, RAYON_NUM_THREADS="2")
            cmd = args + ["--accumulation", "2"]
        else:
            env = dict(MPI_ENV, RAYON_NUM_THREADS="1")
            cmd = ["mpirun", "-np", str(ranks), "-x", "RAYON_NUM_THREADS"] + args + ["--zero", str(int(zero))]
        subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        with open(summary) as f:
            s = json.load(f)
    # Full rows (every paragraph is longer than a row): tokens/s from the median step, as for PyTorch.
    out = {"step_s": s["median_step_s"], "tokens_per_s": 2 * ROWS * LEN / s["median_step_s"]}
    if ranks > 1:
        out["all_reduce_s"] = s["all_reduce_s"] / steps
        out["waited_s"] = s["all_reduce_waited_s"] / steps
    return out


def run_rewind_mlp(binary, steps, ranks):
    args = [binary, "bench-dist", "--reps", str(steps - 1), "--rows", str(MLP_ROWS)]
    if ranks == 1:
        cmd, env = args, dict(os.environ, RAYON_NUM_THREADS="2")
    else:
        cmd = ["mpirun", "-np", str(ranks), "-x", "RAYON_NUM_THREADS"] + args
        env = dict(MPI_ENV, RAYON_NUM_THREADS="1")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    s = json.loads(out.stdout.strip().splitlines()[-1])
    r = {"step_s": s["step_s"], "tokens_per_s": s["rows_per_s"]}
    if ranks > 1:
        r["all_reduce_s"] = s["all_reduce_s"]
        r["waited_s"] = s["all_reduce_waited_s"]
    return r


def run_torch(d, vocab, steps, ranks, zero=False, mlp=False):
    cfg = json.dumps({"dir": d, "vocab": vocab, "steps": steps, "rows": MLP_ROWS if mlp else ROWS,
                      "len": LEN, "threads": 2 if ranks == 1 else 1, "zero": zero, "scripts": HERE})
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(TORCH_MLP if mlp else TORCH_STEP)
        script = f.name
    try:
        if ranks == 1:
            cmd = [sys.executable, script, cfg]
            env = dict(os.environ, OMP_NUM_THREADS="2")
        else:
            torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
            cmd = [torchrun, "--nproc_per_node", str(ranks), "--master_port", "29517", script, cfg]
            env = dict(os.environ, OMP_NUM_THREADS="1")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    finally:
        os.unlink(script)
    step = json.loads(out.stdout.strip().splitlines()[-1])["step_s"]
    return {"step_s": step, "tokens_per_s": (MLP_ROWS if mlp else 2 * ROWS * LEN) / step}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "rewind"))
    a = p.parse_args()
    import torch
    d = model_dir(os.path.join(ROOT, "out", "gpt2-ddp-random"))
    with open(TOKENIZER) as f:
        vocab = len(json.load(f)["model"]["vocab"])
    text = corpus(os.path.join(d, "corpus.txt"), 64)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"{cpu}; PyTorch {torch.__version__}; GPT-2 6 × 384, {2 * ROWS} rows of {LEN} a step, "
          f"median of {a.steps - 1} steps, {a.rounds} rounds")
    res = {}
    for r in range(a.rounds):
        for ranks, zero in ((1, False), (2, False), (2, True)):
            res.setdefault(("GPT-2", "PyTorch", ranks, zero), []).append(
                run_torch(d, vocab, a.steps, ranks, zero))
            res.setdefault(("GPT-2", "rewind", ranks, zero), []).append(
                run_rewind(a.binary, d, text, a.steps, ranks, zero))
        for ranks in (1, 2):
            res.setdefault(("MLP", "PyTorch", ranks, False), []).append(
                run_torch(d, vocab, a.steps, ranks, mlp=True))
            res.setdefault(("MLP", "rewind", ranks, False), []).append(
                run_rewind_mlp(a.binary, a.steps, ranks))
        print(f"  round {r + 1} of {a.rounds} done", flush=True)
    print("\n| model | engine | layout | step s (range) | tokens (rows)/s | all-reduce s per step | not hidden s per step |")
    print("|---|---|---|---:|---:|---:|---:|")
    for (model, engine, ranks, zero), runs in res.items():
        steps = [x["step_s"] for x in runs]
        tps = statistics.median(x["tokens_per_s"] for x in runs)
        whole = "1 process × 2 threads" + (", 2 micro-batches" if model == "GPT-2" else "")
        layout = whole if ranks == 1 else f"{ranks} ranks × 1 thread (DDP{', ZeRO-1' if zero else ''})"
        comm = ("", "")
        if "all_reduce_s" in runs[0]:
            comm = (f"{statistics.median(x['all_reduce_s'] for x in runs):.4f}",
                    f"{statistics.median(x['waited_s'] for x in runs):.4f}")
        print(f"| {model} | {engine} | {layout} | {statistics.median(steps):.3f} ({min(steps):.3f}–{max(steps):.3f}) "
              f"| {tps:.0f} | {comm[0]} | {comm[1]} |")


if __name__ == "__main__":
    main()
