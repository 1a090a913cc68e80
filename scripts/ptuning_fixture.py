#!/usr/bin/env python3
"""Writes tests/fixtures/chatglm3-tiny/ptuning/: ChatGLM3's P-tuning v2 on the tiny fixture
(`pre_seq_len` 4; without and with `prefix_projection`), on the network of
scripts/chatglm3_model.py (THUDM's code restated), with the prefix dropout at 0 so gradients are
comparable:

- plain/ and projection/: a random prefix encoder as rewind saves one
  (prefix_encoder.safetensors under THUDM's names, `transformer.prefix_encoder.embedding.weight`,
  `...trans.{0,2}.{weight,bias}`, and prefix_config.json), and reference.safetensors: logits,
  loss and the prefix encoder's gradients for the fixture batch (a right-padded and a
  left-padded row), everything stored;
- story.json: what PyTorch 2.15 does with ChatGLM3's per-layer reentrant checkpoint
  (`checkpoint(layer, hidden_states, attention_mask, rotary_pos_emb, kv_caches[index],
  use_cache)`) when the prefix keys and values reach each layer inside the `kv_caches[index]`
  tuple — not as a tensor argument, so the checkpoint does not count them: the warnings and the
  error, with and without THUDM's `enable_input_require_grads`, and whether `use_reentrant=False`
  gives the stored gradients.

The prefix run is checked against transformers' GlmForCausalLM fed the same prefix keys and
values through its cache (positions 0…T−1 given explicitly, as ChatGLM3 numbers them).

Run from the repository root with a venv holding torch and transformers:
    .venv-ref/bin/python scripts/ptuning_fixture.py
"""

import json
import os
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, GlmForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from chatglm3_model import ChatGLM, batch, chatglm_names  # noqa: E402

FIX = os.path.join("tests", "fixtures")
OUT = os.path.join(FIX, "chatglm3-tiny", "ptuning")
P = 4


def model(projection):
    m = ChatGLM(pre_seq_len=P, prefix_projection=projection, prefix_dropout=0.0)
    base = chatglm_names(load_file(os.path.join(FIX, "glm-tiny", "model.safetensors")))
    missing, unexpected = m.load_state_dict(base, strict=False)
    assert not unexpected and all("prefix_encoder" in k for k in missing), (missing, unexpected)
    torch.manual_seed(7 + projection)
    with torch.no_grad():
        for name, p in m.transformer.prefix_encoder.named_parameters():
            p.normal_(0.0, 0.5)
    m.train()
    return m


def prefix_state(m):
    return {"transformer.prefix_encoder." + n: p.detach().contiguous()
            for n, p in m.transformer.prefix_encoder.named_parameters()}


def grads(m):
    return {"grad.transformer.prefix_encoder." + n: p.grad.detach().contiguous()
            for n, p in m.transformer.prefix_encoder.named_parameters()}


def run(m, **checkpoint):
    enc = m.transformer.encoder
    enc.gradient_checkpointing = bool(checkpoint)
    enc.checkpoint_kwargs = {k: v for k, v in checkpoint.items() if k != "on"}
    m.zero_grad(set_to_none=True)
    ids, mask, labels = batch()
    logits, loss = m(ids, mask, labels)
    loss.backward()
    return logits, loss, grads(m)


def through_transformers(m):
    """GlmForCausalLM with the prefix keys and values in its cache: the same loss."""
    glm = GlmForCausalLM.from_pretrained(os.path.join(FIX, "glm-tiny"),
                                         attn_implementation="eager")
    ids, mask, labels = batch()
    with torch.no_grad():
        cache = DynamicCache()
        for i, (k, v) in enumerate(m.transformer.get_prompt(ids.shape[0])):
            cache.update(k, v, i)
        full_mask = torch.cat([torch.ones(ids.shape[0], P, dtype=mask.dtype), mask], dim=-1)
        positions = torch.arange(ids.shape[1])[None].expand(ids.shape[0], -1)
        out = glm(input_ids=ids, attention_mask=full_mask, past_key_values=cache,
                  position_ids=positions, labels=labels)
    return out.loss.item()


def story(projection, stored):
    said, outcome = [], {}
    for name, kwargs, fix in [("reentrant", {"on": True}, False),
                              ("reentrant + enable_input_require_grads", {"on": True}, True),
                              ("use_reentrant=False", {"on": True, "use_reentrant": False}, False)]:
        m = model(projection)
        if fix:
            m.enable_input_require_grads()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                _, _, g = run(m, **kwargs)
                result = {"error": None, "equals_stored": all(
                    torch.equal(g[k], stored[k]) for k in stored),
                    "max_abs_difference": max(
                        (g[k] - stored[k]).abs().max().item() for k in stored)}
            except RuntimeError as e:
                result = {"error": str(e)}
        result["warnings"] = [str(w.message) for w in caught
                              if "use_reentrant parameter" not in str(w.message)]
        outcome[name] = result
        said.append(name)
    return outcome


def main():
    os.makedirs(OUT, exist_ok=True)
    record = {"torch": torch.__version__, "pre_seq_len": P}
    for projection in [False, True]:
        out = os.path.join(OUT, "projection" if projection else "plain")
        os.makedirs(out, exist_ok=True)
        m = model(projection)
        save_file(prefix_state(m), os.path.join(out, "prefix_encoder.safetensors"))
        with open(os.path.join(out, "prefix_config.json"), "w") as f:
            json.dump({"pre_seq_len": P, "prefix_projection": projection}, f, indent=2)
        logits, loss, g = run(m)
        ref = {"logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
        ref.update(g)
        save_file(ref, os.path.join(out, "reference.safetensors"))
        theirs = through_transformers(m)
        assert abs(theirs - loss.item()) <= 1e-6 * abs(theirs), (theirs, loss.item())
        record["projection" if projection else "plain"] = {
            "loss": loss.item(), "transformers_loss": theirs, "story": story(projection, g)}
    with open(os.path.join(OUT, "story.json"), "w") as f:
        json.dump(record, f, indent=2)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
