#!/usr/bin/env python3
"""Writes tests/fixtures/generate.json: transformers 5.25's greedy continuations
(`generate(do_sample=False)`, key/value cache on) of prompts on every family fixture, with the
stop ids rewind reads (generation_config.json's eos_token_id, else config.json's), and
tests/fixtures/chatglm3-tiny/generation_config.json (ChatGLM3's: stop at </s>, <|user|> and
<|observation|>). ChatGLM3 runs as transformers' GlmForCausalLM on the same weights
(tests/fixtures/glm-tiny), its prompt ids from ChatGLM3's tokenizer restated in
scripts/conversation_fixture.py: plain (`[gMASK] sop` + text) and as a chat turn
(`build_chat_input`: `[gMASK] sop <|user|>` + encode("\\n") + encode(query) + `<|assistant|>`).

Run from the repository root with a venv holding torch, transformers, tokenizers and
sentencepiece:
    .venv-ref/bin/python scripts/generate_fixture.py
"""

import json
import os
import sys

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from conversation_fixture import MODEL as CHATGLM_TOKENIZER, ChatGLM3Tokenizer  # noqa: E402

FIX = os.path.join("tests", "fixtures")
PROMPTS = ["Hello world", "The checkpoint recomputes", "日本語 🙂"]
NEW = 12


def stop_ids(d):
    for f in ["generation_config.json", "config.json"]:
        p = os.path.join(d, f)
        if os.path.exists(p):
            eos = json.load(open(p)).get("eos_token_id")
            if eos is not None:
                return eos if isinstance(eos, list) else [eos]
    return []


def greedy(model, ids, stop):
    out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=NEW,
                         eos_token_id=stop or None, pad_token_id=0, use_cache=True)
    return out[0, len(ids):].tolist()


def main():
    chatglm = os.path.join(FIX, "chatglm3-tiny")
    with open(os.path.join(chatglm, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [2, 506, 508], "pad_token_id": 0, "do_sample": False}, f,
                  indent=2)
    record = {"transformers": transformers.__version__, "max_new_tokens": NEW, "runs": []}
    for name in ["gpt2-tiny", "llama-tiny", "qwen2-tiny", "glm-tiny"]:
        d = os.path.join(FIX, name)
        model = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").eval()
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        for p in PROMPTS:
            ids = tok.encode(p).ids
            stop = stop_ids(d)
            record["runs"].append({"model": name, "prompt": p, "chat": False, "prompt_ids": ids,
                                   "new_ids": greedy(model, ids, stop)})
    model = AutoModelForCausalLM.from_pretrained(os.path.join(FIX, "glm-tiny"),
                                                 attn_implementation="eager").eval()
    tok = ChatGLM3Tokenizer(CHATGLM_TOKENIZER)
    stop = stop_ids(chatglm)
    for p in PROMPTS:
        plain = [tok.get_command("[gMASK]"), tok.get_command("sop")] + tok.encode(p)
        chat = ([tok.get_command("[gMASK]"), tok.get_command("sop")]
                + tok.build_single_message("user", "", p) + [tok.get_command("<|assistant|>")])
        for ids, is_chat in [(plain, False), (chat, True)]:
            record["runs"].append({"model": "chatglm3-tiny", "prompt": p, "chat": is_chat,
                                   "prompt_ids": ids, "new_ids": greedy(model, ids, stop)})
    with open(os.path.join(FIX, "generate.json"), "w") as f:
        json.dump(record, f, ensure_ascii=False)
    for r in record["runs"]:
        print(r["model"], r["chat"], r["new_ids"])


if __name__ == "__main__":
    main()
