#!/usr/bin/env python3
"""Greedy generation speed, transformers + PyTorch beside `rewind generate`, on the same machine.

Two random models of ≈ 125M parameters, saved once by transformers with dropout 0: the Llama of
scripts/hf_side_by_side.py (12 layers, hidden 768, 12 query heads over 4 KV heads, vocabulary
32,000) and a GLM of the same size with ChatGLM3's shape (`glm`: 2 KV groups, RoPE on half of
each head's dims, fused gate/up MLP). The same prompt ids go to both engines; both decode with a
key/value cache, greedy, `--new` tokens (the eos id is set past any id the prompt uses, so runs
stop together when their ids agree, which the table reports). Tokens/s counts the tokens after
the first over the time from the first token to the last, as `rewind generate --json` reports
it; transformers' times come from a logits processor stamping each step. Each run is a fresh
process; PyTorch then rewind, in rounds; the table shows medians with ranges.

Setup (not part of CI): python3 -m venv .venv-ref && .venv-ref/bin/pip install torch numpy transformers
    cargo build --release
    .venv-ref/bin/python scripts/generate_speed.py [--rounds 3] [--new 64] [--threads 2]
The model directories are written once to out/{llama-125m,glm-125m}-random (≈ 500 MB each).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from hf_side_by_side import TOKENIZER, model_dir  # noqa: E402

PROMPT = "The checkpoint recomputes the activations a segment did not keep, and the gradient"

TORCH_GENERATE = r"""
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
model = AutoModelForCausalLM.from_pretrained(cfg["dir"]).eval()
stamps = []
class Stamp(LogitsProcessor):
    def __call__(self, ids, scores):
        stamps.append(time.perf_counter())
        return scores
with torch.no_grad():
    out = model.generate(torch.tensor([cfg["ids"]]), do_sample=False, max_new_tokens=cfg["new"],
                         eos_token_id=cfg["eos"], pad_token_id=0, use_cache=True,
                         logits_processor=LogitsProcessorList([Stamp()]))
new = out[0, len(cfg["ids"]):].tolist()
rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
print(json.dumps({"new_ids": new, "tokens_per_s": rate}))
"""


def glm_dir(path):
    """A random `glm` model of ChatGLM3's shape at ≈ 125M parameters."""
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    import shutil
    import torch
    import transformers as tf
    torch.manual_seed(0)
    model = tf.GlmForCausalLM(tf.GlmConfig(
        vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
        num_attention_heads=12, num_key_value_heads=2, head_dim=64, partial_rotary_factor=0.5,
        max_position_embeddings=2048, attention_bias=True, tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=0, eos_token_id=0))
    print(f"  glm: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    model.save_pretrained(path, safe_serialization=True)
    shutil.copy(TOKENIZER, os.path.join(path, "tokenizer.json"))
    return path


def set_eos(d, eos):
    """Points config.json's eos id at `eos` (rewind reads it there; transformers gets it passed)."""
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    cfg["eos_token_id"] = eos
    json.dump(cfg, open(p, "w"), indent=2)
    g = os.path.join(d, "generation_config.json")
    if os.path.exists(g):
        os.remove(g)


def run_rewind(binary, d, new, threads):
    out = subprocess.run([binary, "generate", "--model", d, "--prompt", PROMPT, "--max-new-tokens",
                          str(new), "--json"], check=True, capture_output=True, text=True,
                         env=dict(os.environ, RAYON_NUM_THREADS=str(threads)))
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_torch(cfg):
    out = subprocess.run([sys.executable, "-c", TORCH_GENERATE, json.dumps(cfg)], check=True,
                         capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"])))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "rewind"))
    a = p.parse_args()
    import torch
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    print(f"PyTorch {torch.__version__} ({a.threads} threads) against rewind on {cpu}; greedy, "
          f"{a.new} new tokens, key/value cache, {a.rounds} rounds")
    models = {"llama 125M": model_dir(os.path.join(ROOT, "out", "llama-125m-random"), "llama"),
              "glm 125M (ChatGLM3's shape)": glm_dir(os.path.join(ROOT, "out", "glm-125m-random"))}
    for d in models.values():
        set_eos(d, 31999)
    res = {}
    for r in range(a.rounds):
        for name, d in models.items():
            w = run_rewind(a.binary, d, a.new, a.threads)
            t = run_torch({"dir": d, "ids": w["prompt_ids"], "new": a.new, "eos": 31999,
                           "threads": a.threads})
            res.setdefault(name, []).append((t, w))
        print(f"  round {r + 1} of {a.rounds} done", flush=True)
    print("\n| model | prompt tokens | new tokens | ids equal | transformers tokens/s (range) | "
          "rewind tokens/s (range) | rewind ÷ transformers |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, runs in res.items():
        ts = [t["tokens_per_s"] for t, _ in runs]
        ws = [w["tokens_per_s"] for _, w in runs]
        same = all(t["new_ids"] == w["new_ids"] for t, w in runs)
        print(f"| {name} | {len(runs[0][1]['prompt_ids'])} | {len(runs[0][1]['new_ids'])} | "
              f"{'yes' if same else 'no'} | {statistics.median(ts):.1f} ({min(ts):.1f}–{max(ts):.1f}) | "
              f"{statistics.median(ws):.1f} ({min(ws):.1f}–{max(ws):.1f}) | "
              f"{statistics.median(ws) / statistics.median(ts):.2f} |")


if __name__ == "__main__":
    main()
