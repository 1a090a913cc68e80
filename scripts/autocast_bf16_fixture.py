#!/usr/bin/env python3
"""Writes PyTorch's values under `torch.autocast("cpu", dtype=torch.bfloat16)`, CPU autocast's
lists (not CUDA's):

- tests/fixtures/autocast_bf16.json: for each op, its inputs, the dtype it returns, its output
  and the gradient of (output · c).sum() for every input (c a fixed f32 tensor);
- tests/fixtures/bf16_casts.json and .safetensors: f32 values (ties, subnormals, overflow, NaN,
  infinities) and the bf16 bits `.to(torch.bfloat16)` gives, the same tensor as PyTorch's
  safetensors writes it;
- tests/fixtures/gpt2-tiny/reference_bf16.safetensors: the gpt2-tiny model's logits, loss and
  every parameter's gradient for reference.safetensors' batch under bf16 autocast (eager
  attention, f32 master weights).

Run from the repository root with a venv holding torch and transformers:
    .venv-ref/bin/python scripts/autocast_bf16_fixture.py
CI does not run this; the files it writes are committed.
"""

import json
import os

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

FIX = os.path.join("tests", "fixtures")
BF = torch.bfloat16


def rand(shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


def op_cases():
    """(name, inputs (name, tensor; bf16 ones are made bf16 before the op), op)."""
    x = rand((4, 8), 1)
    w = rand((6, 8), 2, 0.3)
    b = rand((6,), 3, 0.1)
    xb = rand((4, 6), 4).to(BF)
    targets = torch.tensor([1, 0, 5, 3])
    return [
        ("linear", [("x", x), ("w", w), ("b", b)], lambda x, w, b: F.linear(x, w, b)),
        ("matmul", [("a", x), ("b", rand((8, 5), 5, 0.3))], lambda a, b: a @ b),
        ("softmax", [("x", xb)], lambda x: F.softmax(x, -1)),
        ("log_softmax", [("x", xb)], lambda x: F.log_softmax(x, -1)),
        ("layer_norm", [("x", xb)], lambda x: F.layer_norm(x, (6,), eps=1e-5)),
        ("gelu_tanh", [("x", xb)], lambda x: F.gelu(x, approximate="tanh")),
        ("silu", [("x", xb)], lambda x: F.silu(x)),
        ("exp", [("x", xb)], lambda x: x.exp()),
        ("sum", [("x", xb)], lambda x: x.sum()),
        ("mean", [("x", xb)], lambda x: x.mean()),
        ("add_mixed", [("a", xb), ("b", rand((4, 6), 6))], lambda a, b: a + b),
        ("mul_bf16", [("a", xb), ("b", rand((4, 6), 7).to(BF))], lambda a, b: a * b),
        ("cat_mixed", [("a", xb), ("b", rand((4, 6), 8))], lambda a, b: torch.cat([a, b], 0)),
        (
            "cross_entropy",
            [("x", xb)],
            lambda x: F.cross_entropy(x, targets),
        ),
    ]


def ops():
    out = {"targets": [1, 0, 5, 3], "ops": []}
    for name, inputs, f in op_cases():
        leaves = [t.detach().clone().requires_grad_(True) for _, t in inputs]
        with torch.autocast("cpu", dtype=BF):
            y = f(*leaves)
        c = rand(tuple(y.shape), 99)
        (y.float() * c).sum().backward()
        out["ops"].append(
            {
                "op": name,
                "inputs": [
                    {
                        "name": n,
                        "dtype": str(t.dtype),
                        "shape": list(t.shape),
                        "values": t.float().flatten().tolist(),
                        "grad": leaf.grad.float().flatten().tolist(),
                        "grad_dtype": str(leaf.grad.dtype),
                    }
                    for (n, t), leaf in zip(inputs, leaves)
                ],
                "dtype": str(y.dtype),
                "shape": list(y.shape),
                "values": y.float().flatten().tolist(),
                "c": c.flatten().tolist(),
            }
        )
    out["torch"] = torch.__version__
    with open(os.path.join(FIX, "autocast_bf16.json"), "w") as f:
        json.dump(out, f)


def casts():
    import struct

    special = [1.0, 1.00390625, 1.01171875, -1.00390625, 3.3895314e38, 3.40282347e38,
               1e-40, -2.5e-39, 1e-45, 0.0, -0.0, float("inf"), float("-inf"), float("nan"),
               65504.0, 1e-8, 2.0 ** -133]
    x = torch.cat([torch.tensor(special), rand((47,), 11, 10.0)])
    b = x.to(BF)
    bits = b.view(torch.int16).to(torch.int32).bitwise_and(0xFFFF).tolist()
    f32_bits = [struct.unpack("<I", struct.pack("<f", v))[0] for v in x.tolist()]
    with open(os.path.join(FIX, "bf16_casts.json"), "w") as f:
        json.dump({"f32_bits": f32_bits, "bf16_bits": bits, "torch": torch.__version__}, f)
    save_file({"x": b.reshape(4, 16).contiguous()}, os.path.join(FIX, "bf16_casts.safetensors"))


def gpt2():
    d = os.path.join(FIX, "gpt2-tiny")
    ref = load_file(os.path.join(d, "reference.safetensors"))
    model = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager")
    model.train()
    with torch.autocast("cpu", dtype=BF):
        out = model(
            input_ids=ref["input_ids"],
            attention_mask=ref["attention_mask"],
            labels=ref["labels"],
        )
    out.loss.backward()
    res = {
        "logits": out.logits.detach().float().contiguous(),
        "logits_dtype_is_bf16": torch.tensor([int(out.logits.dtype == BF)]),
        "loss": out.loss.detach().float().reshape(1),
    }
    for name, p in model.named_parameters():
        res[f"grad.{name}"] = p.grad.detach().contiguous()
    save_file(
        res,
        os.path.join(d, "reference_bf16.safetensors"),
        metadata={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    print(f"gpt2-tiny bf16 loss {out.loss.item():.6f} (logits {out.logits.dtype})")


if __name__ == "__main__":
    torch.manual_seed(0)
    ops()
    casts()
    gpt2()
