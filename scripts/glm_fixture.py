#!/usr/bin/env python3
"""Writes tests/fixtures/glm-tiny/ and tests/fixtures/chatglm3-tiny/: one tiny random GLM network
(2 layers, hidden 64, 4 query heads over 2 KV groups of 16 dims, RoPE on the first half of each
head in interleaved pairs) saved twice:

- glm-tiny/: as transformers 5.25's `GlmForCausalLM` saves it (config.json, model.safetensors,
  f32), with reference.safetensors: transformers' logits, loss and every gradient for a batch
  with a right-padded and a left-padded row (eager attention, labels -100 on padding).
- chatglm3-tiny/: the same weights under THUDM's ChatGLM3 names and config keys
  (`model_type "chatglm"`, fused `query_key_value` rows [q | k | v], fused `dense_h_to_4h`
  rows [gate | up]), as bf16 shards with model.safetensors.index.json and the
  `rotary_pos_emb.inv_freq` buffer, the way the real checkpoint ships. The weights are rounded
  to bf16 first, so both directories hold the same numbers.

ChatGLM3's network is rebuilt below from THUDM's `modeling_chatglm.py` (December 2023): its
names, its fused projections, its rotary cache, its `get_masks` (padded query rows see every
key; they carry no loss) and its per-layer reentrant checkpoint call. The script asserts it
gives transformers' loss and logits on the real tokens, so the name mapping is checked by
PyTorch itself. On it, chatglm3-tiny/ also records:

- reference.safetensors: its logits, loss and every gradient under ChatGLM3's names;
- lora_reference.safetensors and adapter/: PEFT's LoRA (r 4, alpha 8, both matrices random, no
  dropout) on PEFT's default target for chatglm, `query_key_value`: logits, loss, LoRA grads;
- failure.json: the original report, reproduced: LoRA (base frozen, embeddings included) with
  ChatGLM3's `torch.utils.checkpoint.checkpoint(layer, hidden_states, attention_mask,
  rotary_pos_emb, kv_caches[index], use_cache)` per layer — the warnings and the error PyTorch
  gives, and whether each fix (THUDM's `enable_input_require_grads`, `use_reentrant=False`)
  gives the LoRA gradients of storing everything.

Run from the repository root with a venv holding torch, transformers and peft:
    .venv-ref/bin/python scripts/glm_fixture.py
CI does not run this; the files it writes are committed.
"""

import json
import os
import shutil
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file
from transformers import GlmConfig, GlmForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from chatglm3_model import (EPS, FFN, GROUPS, HEAD_DIM, HEADS, HIDDEN, LAYERS, SEQ,  # noqa: E402
                            VOCAB, ChatGLM, batch, chatglm_names)

FIX = os.path.join("tests", "fixtures")
GLM_DIR = os.path.join(FIX, "glm-tiny")
CHATGLM_DIR = os.path.join(FIX, "chatglm3-tiny")
TOKENIZER = os.path.join(FIX, "gpt2-tiny", "tokenizer.json")


CHATGLM_CONFIG = {
    "_name_or_path": "THUDM/chatglm3-6b (tiny, random)",
    "model_type": "chatglm",
    "architectures": ["ChatGLMModel"],
    "auto_map": {
        "AutoConfig": "configuration_chatglm.ChatGLMConfig",
        "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
    },
    "add_bias_linear": False,
    "add_qkv_bias": True,
    "apply_query_key_layer_scaling": True,
    "apply_residual_connection_post_layernorm": False,
    "attention_dropout": 0.0,
    "attention_softmax_in_fp32": True,
    "bias_dropout_fusion": True,
    "ffn_hidden_size": FFN,
    "fp32_residual_connection": False,
    "hidden_dropout": 0.0,
    "hidden_size": HIDDEN,
    "kv_channels": HEAD_DIM,
    "layernorm_epsilon": EPS,
    "multi_query_attention": True,
    "multi_query_group_num": GROUPS,
    "num_attention_heads": HEADS,
    "num_layers": LAYERS,
    "original_rope": True,
    "padded_vocab_size": VOCAB,
    "post_layer_norm": True,
    "rmsnorm": True,
    "seq_length": SEQ,
    "use_cache": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.30.2",
    "tie_word_embeddings": False,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def save_sharded(state, out_dir):
    """Two bf16 shards and their index, as the real checkpoint ships."""
    names = list(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}
    weight_map, total = {}, 0
    for file, keys in shards.items():
        part = {k: state[k].to(torch.bfloat16).contiguous() for k in keys}
        save_file(part, os.path.join(out_dir, file), metadata={"format": "pt"})
        for k, v in part.items():
            weight_map[k] = file
            total += v.numel() * v.element_size()
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def grads_of(model):
    return {"grad." + n.replace(".default", ""): p.grad.detach().contiguous()
            for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def lora_model(state):
    from peft import LoraConfig, get_peft_model

    base = ChatGLM()
    base.load_state_dict(state)
    torch.manual_seed(3)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query_key_value"], lora_dropout=0.0,
                     init_lora_weights=False)
    model = get_peft_model(base, cfg)
    model.train()
    return model


def lora_grads(model, **checkpoint):
    enc = model.base_model.model.transformer.encoder
    enc.gradient_checkpointing = bool(checkpoint)
    enc.checkpoint_kwargs = {k: v for k, v in checkpoint.items() if k != "on"}
    model.zero_grad(set_to_none=True)
    ids, mask, labels = batch()
    _, loss = model(ids, mask, labels)
    loss.backward()
    return grads_of(model)


def failure_story(state, stored):
    """The original report on ChatGLM3, then both fixes, each against storing everything."""
    model = lora_model(state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            lora_grads(model, on=True)
            error = None
        except RuntimeError as e:
            error = str(e)
    said = [str(w.message) for w in caught]

    def same(grads):
        return sorted(grads) == sorted(stored) and all(
            torch.equal(grads[k], stored[k]) for k in stored)

    model = lora_model(state)
    model.base_model.model.enable_input_require_grads()
    thudm_fix = lora_grads(model, on=True)
    model = lora_model(state)
    non_reentrant = lora_grads(model, on=True, use_reentrant=False)
    return {
        "torch": torch.__version__,
        "checkpoint_call": "torch.utils.checkpoint.checkpoint(layer, hidden_states, attention_mask,"
                           " rotary_pos_emb, kv_caches[index], use_cache)",
        "warnings": said,
        "error": error,
        "enable_input_require_grads_equals_stored": same(thudm_fix),
        "use_reentrant_false_equals_stored": same(non_reentrant),
        "lora_grads": sorted(stored),
    }


def main():
    os.makedirs(GLM_DIR, exist_ok=True)
    os.makedirs(CHATGLM_DIR, exist_ok=True)
    torch.manual_seed(1)
    glm = GlmForCausalLM(GlmConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=GROUPS, head_dim=HEAD_DIM,
        max_position_embeddings=SEQ, rms_norm_eps=EPS, attention_bias=True,
        tie_word_embeddings=False, pad_token_id=0, eos_token_id=2, bos_token_id=None,
    ))
    with torch.no_grad():
        for p in glm.parameters():
            p.normal_(0.0, 0.2)
            p.copy_(p.to(torch.bfloat16).float())  # the numbers bf16 shards can hold

    # transformers' GLM: the reference under its own names.
    glm.save_pretrained(GLM_DIR, safe_serialization=True)
    for f in ["generation_config.json"]:
        if os.path.exists(os.path.join(GLM_DIR, f)):
            os.remove(os.path.join(GLM_DIR, f))
    shutil.copy(TOKENIZER, os.path.join(GLM_DIR, "tokenizer.json"))
    glm = GlmForCausalLM.from_pretrained(GLM_DIR, attn_implementation="eager")
    glm.train()
    ids, mask, labels = batch()
    out = glm(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    ref = {"input_ids": ids, "attention_mask": mask, "labels": labels,
           "logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
    ref.update({"grad." + n: p.grad.detach().contiguous() for n, p in glm.named_parameters()})
    save_file(ref, os.path.join(GLM_DIR, "reference.safetensors"))
    print("glm loss", out.loss.item())
    grads_of_glm = {"grad." + k: v for k, v in chatglm_names(
        {k[5:]: v for k, v in ref.items() if k.startswith("grad.")}).items()}

    # The same weights as ChatGLM3 ships them.
    state = chatglm_names(load_file(os.path.join(GLM_DIR, "model.safetensors")))
    for f in os.listdir(CHATGLM_DIR):
        if f.startswith("model") and (f.endswith(".safetensors") or f.endswith(".json")):
            os.remove(os.path.join(CHATGLM_DIR, f))
    with open(os.path.join(CHATGLM_DIR, "config.json"), "w") as f:
        json.dump(CHATGLM_CONFIG, f, indent=2)
    shipped = dict(state)
    shipped["transformer.rotary_pos_emb.inv_freq"] = 1.0 / (
        10000 ** (torch.arange(0, HEAD_DIM // 2, 2, dtype=torch.float) / (HEAD_DIM // 2)))
    save_sharded(shipped, CHATGLM_DIR)  # its tokenizer.model: scripts/sentencepiece_fixture.py

    # ChatGLM3's own forward on them: transformers' loss, and its logits on every real token.
    chatglm = ChatGLM()
    chatglm.load_state_dict(state)
    chatglm.train()
    logits, loss = chatglm(ids, mask, labels)
    loss.backward()
    real = mask.bool()
    assert torch.allclose(loss, out.loss, rtol=1e-6, atol=0), (loss.item(), out.loss.item())
    for name, g in grads_of(chatglm).items():
        assert torch.allclose(g, grads_of_glm[name], rtol=0, atol=1e-5 * g.abs().max()), name
    assert torch.allclose(logits[real], out.logits[real], rtol=1e-5, atol=1e-5)
    ref = {"logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
    ref.update(grads_of(chatglm))
    save_file(ref, os.path.join(CHATGLM_DIR, "reference.safetensors"))
    print("chatglm3 loss", loss.item())

    # PEFT's LoRA on query_key_value, stored.
    model = lora_model(state)
    ids, mask, labels = batch()
    logits, loss = model(ids, mask, labels)
    loss.backward()
    stored = grads_of(model)
    ref = {"logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
    ref.update(stored)
    save_file(ref, os.path.join(CHATGLM_DIR, "lora_reference.safetensors"))
    adapter = os.path.join(CHATGLM_DIR, "adapter")
    model.save_pretrained(adapter)
    if os.path.exists(os.path.join(adapter, "README.md")):
        os.remove(os.path.join(adapter, "README.md"))  # a generated model card
    print("chatglm3 LoRA loss", loss.item())

    story = failure_story(state, stored)
    with open(os.path.join(CHATGLM_DIR, "failure.json"), "w") as f:
        json.dump(story, f, indent=2)
    print(json.dumps(story, indent=2))


if __name__ == "__main__":
    main()
