#!/usr/bin/env python3
"""Writes tests/fixtures/llama-tiny/ and tests/fixtures/qwen2-tiny/: tiny random models as
transformers 5.25 saves them (config.json, model.safetensors), the GPT-2 fixture's
tokenizer.json, and reference.safetensors with transformers' logits, loss and the gradient of
every parameter for one batch with a right-padded and a left-padded row (eager attention,
labels −100 on padding). The Llama has 4 query heads over 2 KV heads and an untied head; the
Qwen2 has q/k/v biases, tied embeddings and rope_theta 1e6. tests/fixtures/llama3-rope.json
records the inverse frequencies of `llama3` rope scaling. Each model also gets a PEFT LoRA
story: adapter/ as PEFT saves it (Llama: q_proj, v_proj, down_proj; Qwen2: PEFT's default
targets) and lora_reference.safetensors with PEFT's logits, loss and LoRA gradients.

Run from the repository root with a venv holding torch and transformers:
    .venv-ref/bin/python scripts/llama_fixture.py
CI does not run this; the files it writes are committed.
"""

import json
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

TOKENIZER = os.path.join("tests", "fixtures", "gpt2-tiny", "tokenizer.json")
VOCAB = 512


def batch():
    torch.manual_seed(0)
    ids = torch.randint(0, 500, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, 7:] = 0  # right padding
    mask[1, :3] = 0  # left padding
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def record(model, out_dir):
    model.save_pretrained(out_dir, safe_serialization=True)
    shutil.copy(TOKENIZER, os.path.join(out_dir, "tokenizer.json"))
    model = type(model).from_pretrained(out_dir, attn_implementation="eager")
    model.train()
    ids, mask, labels = batch()
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
        ref["grad." + name] = p.grad.detach().contiguous()
    save_file(ref, os.path.join(out_dir, "reference.safetensors"))
    for f in ["generation_config.json"]:
        if os.path.exists(os.path.join(out_dir, f)):
            os.remove(os.path.join(out_dir, f))
    return out.loss.item()


def peft_story(cls, out_dir, targets):
    """LoRA r 4, alpha 8, both matrices random (every gradient non-zero), no dropout."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    base = cls.from_pretrained(out_dir, attn_implementation="eager")
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0,
                     init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    model.train()
    ids, mask, labels = batch()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    ref = {"logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            ref["grad." + name.replace(".default", "")] = p.grad.detach().contiguous()
    save_file(ref, os.path.join(out_dir, "lora_reference.safetensors"))
    model.save_pretrained(os.path.join(out_dir, "adapter"))
    os.remove(os.path.join(out_dir, "adapter", "README.md"))  # a generated model card
    return out.loss.item()


torch.manual_seed(1)
llama = LlamaForCausalLM(LlamaConfig(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
    attention_bias=False, mlp_bias=False, bos_token_id=0, eos_token_id=0, pad_token_id=None,
))
print("llama loss", record(llama, os.path.join("tests", "fixtures", "llama-tiny")))
print("llama LoRA loss", peft_story(LlamaForCausalLM, os.path.join("tests", "fixtures", "llama-tiny"),
                                    ["q_proj", "v_proj", "down_proj"]))

torch.manual_seed(2)
qwen = Qwen2ForCausalLM(Qwen2Config(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
    bos_token_id=0, eos_token_id=0,
))
print("qwen2 loss", record(qwen, os.path.join("tests", "fixtures", "qwen2-tiny")))
print("qwen2 LoRA loss", peft_story(Qwen2ForCausalLM, os.path.join("tests", "fixtures", "qwen2-tiny"),
                                    None))

# llama3 rope scaling: the inverse frequencies transformers computes for a 64-dim head.
cfg = LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=64, rope_parameters={
    "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
rot = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(cfg)
with open(os.path.join("tests", "fixtures", "llama3-rope.json"), "w") as f:
    json.dump({"config": cfg.to_dict()["rope_parameters"], "head_dim": 64,
               "inv_freq": rot.inv_freq.tolist(), "transformers": transformers.__version__}, f)
