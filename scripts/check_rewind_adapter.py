#!/usr/bin/env python3
"""Loads a LoRA adapter that rewind trained and wrote (lab/examples/adapter_roundtrip.rs) into
PEFT on the fixture model (GPT-2, Llama or Qwen2), and the merged model rewind saved into
transformers, and compares their logits with rewind's for the reference batch.

    cargo run --release -p rewind-lab --example adapter_roundtrip tests/fixtures/llama-tiny /tmp/a
    .venv-ref/bin/python scripts/check_rewind_adapter.py tests/fixtures/llama-tiny /tmp/a
"""
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

if len(sys.argv) != 3:
    sys.exit(__doc__)
fixture, adapter = sys.argv[1], sys.argv[2]
ref = load_file(f"{fixture}/reference.safetensors")
base = AutoModelForCausalLM.from_pretrained(fixture, attn_implementation="eager")
model = PeftModel.from_pretrained(base, adapter)
model.eval()
with torch.no_grad():
    logits = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits
ours = load_file(f"{adapter}/rewind_logits.safetensors")["logits"]
worst = (logits - ours).abs().max().item() / logits.abs().max().item()
print(f"PEFT loaded rewind's adapter; logits within {worst:.2e} of rewind's (relative to the largest)")
merged = AutoModelForCausalLM.from_pretrained(f"{adapter}/merged", attn_implementation="eager")
merged.eval()
with torch.no_grad():
    m_logits = merged(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits
worst_m = (m_logits - ours).abs().max().item() / m_logits.abs().max().item()
print(f"transformers loaded rewind's merged model; logits within {worst_m:.2e} of rewind's")
sys.exit(0 if max(worst, worst_m) <= 1e-5 else 1)
