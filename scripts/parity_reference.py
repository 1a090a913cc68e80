#!/usr/bin/env python3
"""Golden values from PyTorch for rewind's parity tests (tests/parity.rs).

Writes tests/fixtures/parity.json. Run from the repository root with a venv holding torch:
    python3 -m venv .venv-ref && .venv-ref/bin/pip install torch numpy
    .venv-ref/bin/python scripts/parity_reference.py
Every input is built from integers with exactly rounded float32 operations, so the Rust tests
rebuild the same bits without reading them from the file.
"""
import json

import torch

torch.set_num_threads(1)
out = {"torch_version": torch.__version__}


def grid(n, lo, hi):
    """n float32 points lo + (hi - lo) * k / (n - 1), each an exactly rounded f32 division."""
    k = torch.arange(n, dtype=torch.float32)
    return torch.tensor(lo, dtype=torch.float32) + torch.tensor(hi - lo, dtype=torch.float32) * (k / (n - 1))


# max() over all elements: ties share the gradient evenly.
a = torch.tensor([[1.0, 5.0], [5.0, 2.0]], requires_grad=True)
a.max().backward()
out["max_ties_grad"] = a.grad.flatten().tolist()

# AdamW with per-parameter steps: p1 gets a gradient every step, p2 only from step 5 on.
def adamw_late_param():
    p1 = torch.tensor([0.5, -0.25, 1.0], requires_grad=True)
    p2 = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = torch.optim.AdamW([p1, p2], lr=0.1, weight_decay=0.01)
    for step in range(1, 21):
        opt.zero_grad(set_to_none=True)
        loss = (p1 * p1).sum()
        if step >= 5:
            loss = loss + (p2 * p2 * p2).sum()
        loss.backward()
        opt.step()
    return p1.detach().tolist(), p2.detach().tolist()

out["adamw_late_param"] = dict(zip(["p1", "p2"], adamw_late_param()))

# Tanh GELU in float32 against float64: PyTorch's worst absolute error of y and of dy/dx.
x32 = grid(4001, -12.0, 12.0).requires_grad_(True)
y32 = torch.nn.functional.gelu(x32, approximate="tanh")
(g32,) = torch.autograd.grad(y32.sum(), x32)
x64 = x32.detach().double().requires_grad_(True)
y64 = torch.nn.functional.gelu(x64, approximate="tanh")
(g64,) = torch.autograd.grad(y64.sum(), x64)
out["gelu_tanh"] = {
    "points": 4001, "lo": -12.0, "hi": 12.0,
    "torch_f32_max_abs_err_y": (y32.double() - y64).abs().max().item(),
    "torch_f32_max_abs_err_dy": (g32.double() - g64).abs().max().item(),
}

# layer_norm on rows with a large mean and a small spread (mean 1e4, spread ~1e-2 .. 1).
rows, d = 8, 256
k = torch.arange(rows * d, dtype=torch.float32).reshape(rows, d)
r = torch.arange(rows, dtype=torch.float32).reshape(rows, 1)
# x = 10000 + (k mod 97 - 48) / 64 * 2^-r: exactly representable steps around 1e4.
x = torch.tensor(10000.0) + ((k % 97) - 48) / 64 * torch.pow(2.0, -r)
w = grid(d, 0.5, 1.5)
b = grid(d, -0.25, 0.25)
gy = grid(rows * d, -1.0, 1.0).reshape(rows, d)
def ln(x, w, b):
    x = x.clone().requires_grad_(True)
    y = torch.nn.functional.layer_norm(x, (d,), w, b, eps=1e-5)
    (dx,) = torch.autograd.grad(y, x, gy.to(x.dtype))
    return y.detach(), dx
y32, dx32 = ln(x, w, b)
y64, dx64 = ln(x.double(), w.double(), b.double())
out["layer_norm"] = {
    "rows": rows, "d": d,
    "torch_f32_max_abs_err_y": (y32.double() - y64).abs().max().item(),
    "torch_f32_max_abs_err_dx": (dx32.double() - dx64).abs().max().item(),
    "max_abs_dx": dx64.abs().max().item(),
}

with open("tests/fixtures/parity.json", "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(json.dumps(out, indent=1))
