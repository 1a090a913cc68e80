#!/usr/bin/env python3
"""Writes tests/fixtures/conversations/: train.jsonl, conversations in THUDM's ChatGLM3
finetune_demo format, and reference.json with the input ids and labels the demo's
`process_batch` gives each line with ChatGLM3's tokenizer on tests/fixtures/chatglm3-tiny's
tokenizer.model.

ChatGLM3's tokenizer code (`tokenization_chatglm.py`, which needs the model's own files) is
restated here on the `sentencepiece` library: `SPTokenizer.encode` is the SentencePiece model's
`encode`, the special tokens follow its vocabulary in `SPTokenizer.special_tokens` order,
`build_single_message(role, metadata, message)` is `[<|role|>] + encode(f"{metadata}\\n") +
encode(message)`; `process_batch` below is the demo's (finetune_hf.py, 2024), without its
`max_input_length + max_output_length + 1` truncation (rewind truncates at --max-len).

Run from the repository root with a venv holding sentencepiece:
    .venv-ref/bin/python scripts/conversation_fixture.py
"""

import json
import os

import sentencepiece as spm

OUT = os.path.join("tests", "fixtures", "conversations")
MODEL = os.path.join("tests", "fixtures", "chatglm3-tiny", "tokenizer.model")
SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>",
            "<|assistant|>", "<|observation|>"]

CONVERSATIONS = [
    [{"role": "user", "content": "What is gradient checkpointing?"},
     {"role": "assistant", "content": "It stores fewer activations and recomputes the rest."}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "Why does the reentrant checkpoint fail?"},
     {"role": "assistant", "content": "No input requires grad, so the output is cut."},
     {"role": "user", "content": "And the fix?"},
     {"role": "assistant", "content": "enable_input_require_grads(), or use_reentrant=False."}],
    [{"role": "user", "content": "Translate: café naïve façade"},
     {"role": "assistant", "content": "咖啡馆 天真 外观 🙂"}],
    [{"role": "user", "content": "  spaces  around  "},
     {"role": "assistant", "content": "\n\nnew lines\tand tabs\n"}],
    [{"role": "user", "content": ""},
     {"role": "assistant", "content": "An empty question gets an answer."}],
    [{"role": "system", "content": "Count."},
     {"role": "user", "content": "1 2 3"},
     {"role": "assistant", "content": "4 5 6 7 8 9 10"}],
]


class ChatGLM3Tokenizer:
    def __init__(self, path):
        self.sp = spm.SentencePieceProcessor(model_file=path)
        n = self.sp.vocab_size()
        self.special = {t: n + i for i, t in enumerate(SPECIALS)}
        self.eos_token_id = self.sp.eos_id()

    def get_command(self, token):
        return self.special[token]

    def encode(self, s):
        return self.sp.encode(s)

    def build_single_message(self, role, metadata, message):
        assert role in ["system", "user", "assistant", "observation"], role
        role_tokens = [self.get_command(f"<|{role}|>")] + self.encode(f"{metadata}\n")
        message_tokens = self.encode(message)
        return role_tokens + message_tokens


def process_batch(batch, tokenizer):
    batched_conv = batch["conversations"]
    batched_input_ids, batched_labels = [], []
    for conv in batched_conv:
        input_ids, loss_masks = [tokenizer.get_command("[gMASK]"), tokenizer.get_command("sop")], [False, False]
        for message in conv:
            loss_mask_val = message["role"] not in ("system", "user")
            new_input_ids = tokenizer.build_single_message(message["role"], "", message["content"])
            new_loss_masks = [loss_mask_val] * len(new_input_ids)
            input_ids += new_input_ids
            loss_masks += new_loss_masks
        input_ids.append(tokenizer.eos_token_id)
        loss_masks = [False, *loss_masks]
        labels = [i if m else -100 for i, m in zip(input_ids, loss_masks)]
        batched_input_ids.append(input_ids)
        batched_labels.append(labels)
    return {"input_ids": batched_input_ids, "labels": batched_labels}


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "train.jsonl"), "w") as f:
        for c in CONVERSATIONS:
            f.write(json.dumps({"conversations": c}, ensure_ascii=False) + "\n")
    tok = ChatGLM3Tokenizer(MODEL)
    ref = process_batch({"conversations": CONVERSATIONS}, tok)
    ref["sentencepiece"] = spm.__version__
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f)
    print(ref["input_ids"][0], ref["labels"][0], sep="\n")


if __name__ == "__main__":
    main()
