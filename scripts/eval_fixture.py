#!/usr/bin/env python3
"""Writes tests/fixtures/eval/reference.json: transformers' token-weighted mean next-token loss
on tests/fixtures/eval/text.txt (one sample per paragraph, as `rewind eval` reads it) for the
tiny GPT-2, Llama (with and without its PEFT adapter; and with a tokenizer that adds a BOS) and
Qwen2 fixtures. Each paragraph is encoded by the `tokenizers` library's `encode` (post-processor
included) from the model's tokenizer.json, truncated to MAX_LEN, run
alone (no padding) as model(ids, labels=ids); its loss is weighted by its predicted tokens.

Run from the repository root with a venv holding torch, transformers, tokenizers and peft:
    .venv-ref/bin/python scripts/eval_fixture.py
"""

import json
import os

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

FIX = os.path.join("tests", "fixtures")
TEXT = os.path.join(FIX, "eval", "text.txt")
MAX_LEN = 48


def paragraphs(path):
    out, cur = [], []
    with open(path, encoding="utf-8") as f:
        for line in f.read().split("\n"):
            line = line.removesuffix("\r")
            if line.strip() == "":
                if cur:
                    out.append("\n".join(cur))
                    cur = []
            else:
                cur.append(line)
    if cur:
        out.append("\n".join(cur))
    return out


# A tokenizer that adds a BOS as Llama's does: the fixture's with a TemplateProcessing
# post-processor putting <|endoftext|> (id 0) first. The test writes the same file.
BOS_PROCESSOR = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
               {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0],
                                         "tokens": ["<|endoftext|>"]}},
}


def mean_loss(model_dir, adapter=None, bos=False):
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        spec = json.load(f)
    if bos:
        spec["post_processor"] = BOS_PROCESSOR
    tok = Tokenizer.from_str(json.dumps(spec))
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    total, tokens, samples = 0.0, 0, 0
    with torch.no_grad():
        for p in paragraphs(TEXT):
            ids = tok.encode(p).ids[:MAX_LEN]
            if len(ids) < 2:
                continue
            x = torch.tensor([ids])
            total += model(input_ids=x, labels=x).loss.double().item() * (len(ids) - 1)
            tokens += len(ids) - 1
            samples += 1
    return {"loss": total / tokens, "tokens": tokens, "samples": samples}


runs = []
for name, adapter, bos in [("gpt2-tiny", None, False), ("llama-tiny", None, False),
                           ("llama-tiny", "adapter", False), ("qwen2-tiny", None, False),
                           ("llama-tiny", None, True)]:
    d = os.path.join(FIX, name)
    r = mean_loss(d, adapter and os.path.join(d, adapter), bos)
    r.update({"model": name, "adapter": adapter, "bos": bos})
    runs.append(r)
    print(r)
with open(os.path.join(FIX, "eval", "reference.json"), "w") as f:
    json.dump({"max_len": MAX_LEN, "transformers": transformers.__version__, "runs": runs}, f,
              indent=1)
