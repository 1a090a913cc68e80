#!/usr/bin/env python3
"""The Llama family's own ops at a 125M Llama's shapes (batch 8 × 256, hidden 768, 12 query heads
over 4 KV heads of 64, intermediate 2048), forward + backward with an all-ones output gradient,
median of --reps after a warm-up: transformers' own code (LlamaRMSNorm, LlamaRotaryEmbedding +
apply_rotary_pos_emb, SiLU, repeat_kv + PyTorch's scaled_dot_product_attention as transformers'
default `sdpa` attention does it, and its `eager` attention) beside rewind's ops
(`lab/examples/family_ops_speed.rs`), same thread count. Not part of CI.

    cargo build --release -p rewind-lab --example family_ops_speed
    .venv-ref/bin/python scripts/family_ops_speed.py [--reps 20] [--threads 2]
"""
import argparse
import json
import os
import subprocess
import time

import torch
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama as ml

B, T, D, H, KV, HD, I = 8, 256, 768, 12, 4, 64, 2048


def timed(reps, f):
    secs = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        outs = f()
        outs = outs if isinstance(outs, tuple) else (outs,)
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        secs.append(time.perf_counter() - t)
    secs = sorted(secs[1:])
    return secs[len(secs) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    # rewind first, in its own process, before PyTorch's threads exist (they spin after each
    # parallel region and would take the cores from it).
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exe = os.path.join(root, "target", "release", "examples", "family_ops_speed")
    out = subprocess.run([exe, str(a.reps)], check=True, capture_output=True, text=True,
                         env=dict(os.environ, RAYON_NUM_THREADS=str(a.threads)))
    ours = json.loads(out.stdout.strip().splitlines()[-1])
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    leaf = lambda *s: torch.randn(*s, requires_grad=True)
    x, q, k, v, gate = leaf(B, T, D), leaf(B, H, T, HD), leaf(B, KV, T, HD), leaf(B, KV, T, HD), leaf(B, T, I)
    norm = ml.LlamaRMSNorm(D, eps=1e-6)
    cfg = LlamaConfig(hidden_size=D, num_attention_heads=H, num_key_value_heads=KV, head_dim=HD)
    rot = ml.LlamaRotaryEmbedding(cfg)
    pos = torch.arange(T)[None].expand(B, T)
    keys = torch.ones(B, T, dtype=torch.bool)
    keys[0, :16] = False  # one row left-padded by 16
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None] & keys[:, None, None, :]
    additive = torch.zeros(B, 1, T, T).masked_fill(~allowed, torch.finfo(torch.float32).min)

    def rope():
        cos, sin = rot(x, pos)
        return ml.apply_rotary_pos_emb(q, k, cos, sin)

    def sdpa():
        ctx = torch.nn.functional.scaled_dot_product_attention(
            q, ml.repeat_kv(k, H // KV), ml.repeat_kv(v, H // KV), attn_mask=allowed)
        return ctx.transpose(1, 2).reshape(B, T, H * HD)

    def eager():
        kk, vv = ml.repeat_kv(k, H // KV), ml.repeat_kv(v, H // KV)
        w = torch.matmul(q, kk.transpose(2, 3)) / HD ** 0.5 + additive
        w = torch.softmax(w, dim=-1, dtype=torch.float32)
        return torch.matmul(w, vv).transpose(1, 2).reshape(B, T, H * HD)

    torch_s = {
        "rms_norm": timed(a.reps, lambda: norm(x)),
        "rope": timed(a.reps, rope),
        "silu": timed(a.reps, lambda: torch.nn.functional.silu(gate)),
        "sdpa": timed(a.reps, sdpa),
        "eager": timed(a.reps, eager),
    }
    rows = [("RMSNorm [8, 256, 768]", torch_s["rms_norm"], ours["rms_norm"]),
            ("RoPE q [8, 12, 256, 64] and k [8, 4, 256, 64]", torch_s["rope"], ours["rope_q"] + ours["rope_k"]),
            ("SiLU [8, 256, 2048]", torch_s["silu"], ours["silu"]),
            ("GQA causal attention, padded (PyTorch: sdpa)", torch_s["sdpa"], ours["gqa_attention"]),
            ("GQA causal attention, padded (PyTorch: eager)", torch_s["eager"], ours["gqa_attention"])]
    print(f"PyTorch {torch.__version__}, {a.threads} threads, forward + backward, median of {a.reps}")
    print("| op | PyTorch ms | rewind ms | rewind ÷ PyTorch |\n|---|---:|---:|---:|")
    for name, t, r in rows:
        print(f"| {name} | {t * 1e3:.2f} | {r * 1e3:.2f} | {r / t:.2f} |")


if __name__ == "__main__":
    main()
