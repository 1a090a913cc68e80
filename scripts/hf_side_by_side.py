#!/usr/bin/env python3
"""Fine-tuning steps of a Hugging Face model, transformers + PyTorch beside `rewind train --model`.

--family gpt2: a random GPT-2 small (124M: 12 layers, width 768, 12 heads, vocabulary 50,257),
rows of 128 tokens, LoRA on `c_attn`. --family llama: a random Llama of 124.6M parameters (12
layers, hidden 768, 12 query heads over 4 KV heads, intermediate 2048, vocabulary 32,000,
untied head), rows of 256 tokens, LoRA on PEFT's defaults `q_proj`, `v_proj`. Dropout 0; saved
once by transformers; trained by both on full rows, batch 8, AdamW lr 1e-4, in four
configurations: every parameter, or LoRA r 8 (alpha 16) as PEFT does it; each stored, or every
block checkpointed (non-reentrant; transformers' activation checkpointing). --bf16: both under
bf16 mixed precision (PyTorch's forward and loss inside torch.autocast("cpu", dtype=torch.bfloat16),
rewind's `--amp bf16`); --configs picks configurations by number (1-4). Each configuration
runs in a fresh process (so its peak RSS is its own), PyTorch then rewind, in rounds; the table
shows the median step time over rounds with the range, and the peak RSS.

Setup (not part of CI): python3 -m venv .venv-ref && .venv-ref/bin/pip install torch numpy transformers peft
    cargo build --release
    .venv-ref/bin/python scripts/hf_side_by_side.py --family llama [--rounds 2] [--steps 5] [--threads 2]
The model directory is written once to out/{gpt2-small,llama-125m}-random (≈ 500 MB).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "gpt2-tiny", "tokenizer.json")
CONFIGS = [("full", 0, False), ("full + every block checkpointed", 0, True),
           ("LoRA r 8", 8, False), ("LoRA + every block checkpointed", 8, True)]
FAMILIES = {
    "gpt2": {"dir": "gpt2-small-random", "len": 128, "targets": ["c_attn"], "fan_in_fan_out": True},
    "llama": {"dir": "llama-125m-random", "len": 256, "targets": ["q_proj", "v_proj"],
              "fan_in_fan_out": False},
}

TORCH_STEP = r"""
import json, resource, sys, time
import torch
from transformers import AutoModelForCausalLM
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(cfg["dir"])
if cfg["lora"]:
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=cfg["lora"], lora_alpha=2 * cfg["lora"], target_modules=cfg["targets"], lora_dropout=0.0, fan_in_fan_out=cfg["fan_in_fan_out"]))
if cfg["checkpoint"]:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
ids = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["len"]))
times = []
for _ in range(cfg["steps"]):
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["bf16"]):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t)
print(json.dumps({"step_s": sorted(times)[len(times) // 2], "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def model_dir(path, family):
    """A random model of `family` with dropout 0, saved by transformers, with a byte-level BPE
    tokenizer.json (the test fixture's: ids below its 500 entries are used)."""
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    import shutil
    import torch
    import transformers as tf
    torch.manual_seed(0)
    if family == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(
            n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    else:
        model = tf.LlamaForCausalLM(tf.LlamaConfig(
            vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
            num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048,
            tie_word_embeddings=False, bos_token_id=0, eos_token_id=0))
    print(f"  {family}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    model.save_pretrained(path, safe_serialization=True)
    shutil.copy(TOKENIZER, os.path.join(path, "tokenizer.json"))
    return path


def corpus(path, rows):
    """Paragraphs long enough to fill 256 tokens each (truncated to --max-len)."""
    words = ["checkpoint", "gradient", "tensor", "recompute", "memory", "layer", "token", "batch"]
    with open(path, "w") as f:
        for r in range(rows):
            f.write(" ".join(words[(r * 7 + i * 3) % len(words)] for i in range(400)) + "\n\n")
    return path


def run_torch(cfg):
    out = subprocess.run([sys.executable, "-c", TORCH_STEP, json.dumps(cfg)], check=True,
                         capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"])))
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_rewind(binary, cfg, text):
    with tempfile.TemporaryDirectory() as tmp:
        summary = os.path.join(tmp, "summary.json")
        args = [binary, "train", "--model", cfg["dir"], "--text-file", text, "--max-len", str(cfg["len"]),
                "--batch-size", str(cfg["batch"]), "--padding", "fixed", "--steps", str(cfg["steps"]),
                "--optimizer", "adamw", "--lr", "1e-4", "--quiet", "--json", summary]
        if cfg["lora"]:
            args += ["--lora-rank", str(cfg["lora"])]
        if cfg["checkpoint"]:
            args += ["--checkpoint", "every"]
        if cfg["bf16"]:
            args += ["--amp", "bf16"]
        out = subprocess.run(["/usr/bin/time", "-f", "%M"] + args, check=True, capture_output=True, text=True,
                             env=dict(os.environ, RAYON_NUM_THREADS=str(cfg["threads"])))
        rss = int(out.stderr.strip().splitlines()[-1])
        with open(summary) as f:
            s = json.load(f)
        return {"step_s": s["median_step_s"], "rss_kib": rss}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "rewind"))
    p.add_argument("--family", choices=sorted(FAMILIES), default="gpt2")
    p.add_argument("--dir", default=None)
    p.add_argument("--bf16", action="store_true", help="both under bf16 mixed precision")
    p.add_argument("--configs", default="1,2,3,4", help="which configurations (1-4), comma-separated")
    a = p.parse_args()
    try:
        configs = [CONFIGS[int(i) - 1] for i in a.configs.split(",")]
        assert all(int(i) >= 1 for i in a.configs.split(","))
    except (ValueError, IndexError, AssertionError):
        sys.exit(f"error: --configs {a.configs}: numbers 1 to {len(CONFIGS)}, comma-separated")
    fam = FAMILIES[a.family]
    import torch
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"PyTorch {torch.__version__} ({a.threads} threads) against rewind on {cpu}; {a.family}, batch 8 × {fam['len']}, "
          f"AdamW lr 1e-4, {'bf16 autocast, ' if a.bf16 else ''}median of {a.steps} steps per run, {a.rounds} rounds")
    d = model_dir(a.dir or os.path.join(ROOT, "out", fam["dir"]), a.family)
    text = corpus(os.path.join(d, "corpus.txt"), 64)
    res = {}
    for r in range(a.rounds):
        for name, lora, ckpt in configs:
            cfg = {"bf16": a.bf16, "dir": d, "lora": lora, "checkpoint": ckpt, "steps": a.steps, "threads": a.threads,
                   "batch": 8, "len": fam["len"], "vocab": 500, "targets": fam["targets"],
                   "fan_in_fan_out": fam["fan_in_fan_out"]}
            res.setdefault((name, "torch"), []).append(run_torch(cfg))
            res.setdefault((name, "rewind"), []).append(run_rewind(a.binary, cfg, text))
        print(f"  round {r + 1} of {a.rounds} done", flush=True)
    print("\n| configuration | PyTorch step s (range) | rewind step s (range) | rewind ÷ PyTorch | PyTorch peak RSS GiB | rewind peak RSS GiB | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, _, _ in configs:
        t, w = res[(name, "torch")], res[(name, "rewind")]
        ts, ws = [x["step_s"] for x in t], [x["step_s"] for x in w]
        tr, wr = max(x["rss_kib"] for x in t) / 2**20, max(x["rss_kib"] for x in w) / 2**20
        print(f"| {name} | {statistics.median(ts):.2f} ({min(ts):.2f}–{max(ts):.2f}) | {statistics.median(ws):.2f} "
              f"({min(ws):.2f}–{max(ws):.2f}) | {statistics.median(ws) / statistics.median(ts):.2f} | {tr:.2f} | {wr:.2f} | {wr / tr:.2f} |")


if __name__ == "__main__":
    main()
