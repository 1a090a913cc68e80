#!/usr/bin/env python3
"""Golden values for the Llama/Qwen2/GLM family's engine ops (tests/family_ops.rs), from
transformers 5.25's own functions (LlamaRMSNorm, the Llama and GLM rotary embeddings and
`apply_rotary_pos_emb`, `eager_attention_forward` with `repeat_kv`) and PyTorch.

Writes tests/fixtures/family_ops.json. Run from the repository root with a venv holding torch
and transformers:  .venv-ref/bin/python scripts/family_ops_reference.py
Every input is sin(0.37·i + phase)·scale rounded to float32, which the Rust tests rebuild.
"""
import json
import math

import torch
from transformers import GlmConfig, LlamaConfig
from transformers.models.glm import modeling_glm as glm
from transformers.models.llama import modeling_llama as llama

torch.set_num_threads(1)
out = {"torch_version": torch.__version__}


def wave(shape, phase, scale=1.0):
    n = math.prod(shape)
    return torch.tensor([math.sin(0.37 * i + phase) * scale for i in range(n)], dtype=torch.float64).float().reshape(shape)


def flat(t):
    return t.detach().flatten().tolist()


# RMSNorm: y = w · x · rsqrt(mean(x²) + eps), the statistics in f32.
x = wave((3, 8), 0.1, 2.0).requires_grad_()
norm = llama.LlamaRMSNorm(8, eps=1e-6)
with torch.no_grad():
    norm.weight.copy_(wave((8,), 0.7, 0.5) + 1.0)
y = norm(x)
y.backward(wave((3, 8), 1.3))
out["rms_norm"] = {"y": flat(y), "dx": flat(x.grad), "dw": flat(norm.weight.grad)}

# SiLU.
x = wave((2, 7), 0.2, 4.0).requires_grad_()
y = torch.nn.functional.silu(x)
y.backward(wave((2, 7), 0.9))
out["silu"] = {"y": flat(y), "dx": flat(x.grad)}

# RoPE in halves (Llama): B 2, H 2, T 5, D 8, base 10000, the second row's positions shifted.
cfg = LlamaConfig(hidden_size=16, num_attention_heads=2, head_dim=8, rope_theta=10000.0)
rot = llama.LlamaRotaryEmbedding(cfg)
pos = torch.tensor([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]])
q = wave((2, 2, 5, 8), 0.3).requires_grad_()
cos, sin = rot(q, pos)
qe, _ = llama.apply_rotary_pos_emb(q, q.detach(), cos, sin)
qe.backward(wave((2, 2, 5, 8), 1.7))
out["rope_halves"] = {"positions": pos.flatten().tolist(), "y": flat(qe), "dx": flat(q.grad)}

# RoPE in interleaved pairs on half the head (GLM, partial_rotary_factor 0.5): B 1, H 2, T 4, D 8.
cfg = GlmConfig(hidden_size=16, num_attention_heads=2, head_dim=8, partial_rotary_factor=0.5, rope_theta=10000.0)
rot = glm.GlmRotaryEmbedding(cfg)
pos = torch.tensor([[0, 2, 5, 9]])
q = wave((1, 2, 4, 8), 0.5).requires_grad_()
cos, sin = rot(q, pos)
qe, _ = glm.apply_rotary_pos_emb(q, q.detach(), cos, sin)
qe.backward(wave((1, 2, 4, 8), 2.1))
out["rope_interleaved"] = {"positions": pos.flatten().tolist(), "y": flat(qe), "dx": flat(q.grad)}

# Grouped-query causal attention: 4 query heads over 2 KV heads, B 2, T 5, D 8; the second row
# left-padded by 2 (its first query sees no key: a uniform average, no NaN).
B, H, KVH, T, D = 2, 4, 2, 5, 8
q = wave((B, H, T, D), 0.4).requires_grad_()
k = wave((B, KVH, T, D), 1.1).requires_grad_()
v = wave((B, KVH, T, D), 2.3).requires_grad_()
keep = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.bool)
allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None] & keep[:, None, None, :]
mask = torch.zeros(B, 1, T, T).masked_fill(~allowed, torch.finfo(torch.float32).min)


class Module(torch.nn.Module):
    num_key_value_groups = H // KVH
    training = False


ctx, _ = llama.eager_attention_forward(Module(), q, k, v, mask, scaling=D ** -0.5)
ctx = ctx.reshape(B, T, H * D)
ctx.backward(wave((B, T, H * D), 0.6))
out["gqa_attention"] = {
    "key_mask": (~keep).float().flatten().tolist(),
    "y": flat(ctx), "dq": flat(q.grad), "dk": flat(k.grad), "dv": flat(v.grad),
}

# Embedding with padding_idx 2: its row gets no gradient.
emb = torch.nn.Embedding(6, 3, padding_idx=2)
with torch.no_grad():
    emb.weight.copy_(wave((6, 3), 0.8))
ids = torch.tensor([[2, 1, 2], [0, 2, 5]])
y = emb(ids)
y.backward(wave((2, 3, 3), 1.9))
out["embedding_padding"] = {"ids": ids.flatten().tolist(), "y": flat(y), "dw": flat(emb.weight.grad)}

with open("tests/fixtures/family_ops.json", "w") as f:
    json.dump(out, f)
    f.write("\n")
