#!/usr/bin/env python3
"""Writes tests/fixtures/gpt2-tiny/: a tiny random GPT-2 as transformers saves it
(config.json, model.safetensors), and reference.safetensors with transformers' logits, loss and
the gradient of every parameter for one padded batch (full fine-tuning).

Run from the repository root with a venv holding torch and transformers:
    .venv-ref/bin/python scripts/gpt2_fixture.py
CI does not run this; the files it writes are committed.
"""

import json
import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

OUT = os.path.join("tests", "fixtures", "gpt2-tiny")


def main():
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=300,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg)
    model.train()
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)

    # Two samples, the second right-padded (pad id 0) as a collator pads a batch.
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, cfg.vocab_size, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    ids[1, 8:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    ref = {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "logits": out.logits.detach().contiguous(),
        "loss": out.loss.detach().reshape(1),
    }
    for name, p in model.named_parameters():
        ref[f"grad.{name}"] = p.grad.detach().contiguous()
    save_file(
        ref,
        os.path.join(OUT, "reference.safetensors"),
        metadata={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    )
    with open(os.path.join(OUT, "versions.json"), "w") as f:
        json.dump(
            {"torch": torch.__version__, "transformers": transformers.__version__},
            f,
            indent=1,
        )
    print(f"wrote {OUT}: loss {out.loss.item():.6f}")


if __name__ == "__main__":
    main()
