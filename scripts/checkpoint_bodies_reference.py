#!/usr/bin/env python3
"""Golden values from PyTorch for rewind's checkpoint-body and hook tests
(tests/checkpoint_bodies.rs, tests/hooks.rs).

Writes tests/fixtures/checkpoint_bodies.json. Run from the repository root with a venv holding
torch:  .venv-ref/bin/python scripts/checkpoint_bodies_reference.py
"""
import json

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

out = {"torch_version": torch.__version__}


def backward_inside(reentrant, order):
    """y = 3·(x·w)², with a backward of (x·w)² run inside the body before or after y."""
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    x = torch.tensor([3.0, 4.0], requires_grad=True)

    def body(x):
        h = x * w
        if order == "first":
            h.pow(2).sum().backward(retain_graph=True)
        y = h.pow(2)
        if order == "last":
            y.sum().backward(retain_graph=True)
        return y * 3

    try:
        y = checkpoint(body, x, use_reentrant=reentrant)
    except RuntimeError as e:
        return {"error": str(e)}
    forward = {"w": w.grad.tolist(), "x": x.grad.tolist()}
    y.sum().backward()
    return {"after_forward": forward, "after_backward": {"w": w.grad.tolist(), "x": x.grad.tolist()}}


for mode, reentrant in [("non_reentrant", False), ("reentrant", True)]:
    for order in ["first", "last"]:
        out[f"backward_inside_{mode}_{order}"] = backward_inside(reentrant, order)


def counting_body(reentrant, kind):
    """A body whose value changes with each call (c = 1, 2, … per call): x·x·c, x²·c, or
    (x·c)², whose saved tensor x·c is recomputed with the rerun's c."""
    calls = [0]
    x = torch.tensor([1.0, 2.0], requires_grad=True)

    def body(x):
        calls[0] += 1
        c = calls[0]
        return {"mul": lambda: x * x * c, "pow": lambda: x.pow(2) * c, "scaled_pow": lambda: (x * c).pow(2)}[kind]()

    checkpoint(body, x, use_reentrant=reentrant).sum().backward()
    return x.grad.tolist()


for mode, reentrant in [("non_reentrant", False), ("reentrant", True)]:
    for kind in ["mul", "pow", "scaled_pow"]:
        out[f"counting_{kind}_{mode}"] = counting_body(reentrant, kind)


def hook_log(case):
    """The order forward hooks run in when hooks add or remove hooks during a call."""
    m = nn.Linear(2, 2)
    log = []
    if case == "self_removing_and_adding":
        def h1(mod, i, o):
            log.append("h1")
            handles["h1"].remove()

        def h2(mod, i, o):
            log.append("h2")
            m.register_forward_hook(h3)

        def h3(mod, i, o):
            log.append("h3")

        handles = {"h1": m.register_forward_hook(h1)}
        m.register_forward_hook(h2)
    else:
        def a(mod, i, o):
            log.append("a")
            handles["b"].remove()

        def b(mod, i, o):
            log.append("b")

        m.register_forward_hook(a)
        handles = {"b": m.register_forward_hook(b)}
    for call in range(2):
        m(torch.zeros(1, 2))
        log.append("|")
    return log


out["hooks_self_removing_and_adding"] = hook_log("self_removing_and_adding")
out["hooks_removing_a_later_hook"] = hook_log("removing_a_later_hook")

with open("tests/fixtures/checkpoint_bodies.json", "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
