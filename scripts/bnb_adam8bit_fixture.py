#!/usr/bin/env python3
"""bitsandbytes' 8-bit AdamW on CPU, as the reference for rewind's (tests/adam8bit_bnb.rs).

Writes tests/fixtures/adam8bit_bnb.json: the two dynamic maps, and the codes, absmax and
parameters after 4 steps of `bnb.optim.AdamW8bit` on a 10,240-element parameter (40 blocks of
256). Run from the repository root:
    python3 -m venv .venv-ref && .venv-ref/bin/pip install torch numpy bitsandbytes
    .venv-ref/bin/python scripts/bnb_adam8bit_fixture.py
Parameters and gradients come from integer formulas with exactly rounded f32 divisions, so the
Rust test rebuilds the same bits. f32 arrays are stored as hex of their little-endian bytes.
"""
import json

import bitsandbytes as bnb
import bitsandbytes.functional as F
import torch

torch.set_num_threads(1)
N, STEPS, LR, WD = 10240, 4, 1e-3, 1e-2


def formula(mul, add, div):
    """((i·mul + add) mod 2001 − 1000) / div, in f32."""
    i = torch.arange(N, dtype=torch.int64)
    return (((i * mul + add) % 2001) - 1000).to(torch.float32) / div


def hexf(t):
    return t.detach().contiguous().to(torch.float32).numpy().tobytes().hex()


p = torch.nn.Parameter(formula(7919, 0, 1000.0))
opt = bnb.optim.AdamW8bit([p], lr=LR, weight_decay=WD)
for step in range(1, STEPS + 1):
    p.grad = formula(104729, 7907 * step, 500.0)
    opt.step()
st = opt.state[p]
out = {
    "bitsandbytes": bnb.__version__,
    "n": N, "steps": STEPS, "lr": LR, "weight_decay": WD,
    "signed_map": hexf(F.create_dynamic_map(signed=True)),
    "unsigned_map": hexf(F.create_dynamic_map(signed=False)),
    "qmap1": hexf(st["qmap1"]),
    "qmap2": hexf(st["qmap2"]),
    "state1": st["state1"].numpy().tobytes().hex(),
    "state2": st["state2"].numpy().tobytes().hex(),
    "absmax1": hexf(st["absmax1"]),
    "absmax2": hexf(st["absmax2"]),
    "param": hexf(p),
}
with open("tests/fixtures/adam8bit_bnb.json", "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print({k: (v if len(str(v)) < 80 else f"{len(v) // 2} bytes") for k, v in out.items()})
