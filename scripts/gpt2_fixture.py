#!/usr/bin/env python3
"""Writes tests/fixtures/gpt2-tiny/: a byte-level BPE trained by the `tokenizers` library on the
shipped corpus (tokenizer.json) with the ids it gives a set of texts (tokenizer_ids.json); a
tiny random GPT-2 of that vocabulary as transformers saves it (config.json, model.safetensors);
and reference.safetensors with transformers' logits, loss and the gradient of every parameter
for one padded batch (full fine-tuning).

Run from the repository root with a venv holding torch, transformers and tokenizers:
    cargo run --release -q -p rewind-lab --example corpus > /tmp/corpus.txt
    .venv-ref/bin/python scripts/gpt2_fixture.py /tmp/corpus.txt
CI does not run this; the files it writes are committed.
"""

import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel

OUT = os.path.join("tests", "fixtures", "gpt2-tiny")

# Texts whose ids the tests compare: Unicode, emoji, whitespace runs, contractions, long words,
# the special token, digits and punctuation runs.
HARD = [
    "Hello world",
    " leading space and  two spaces   three",
    "tabs\tand\nnew\n\nlines \n trailing   ",
    "I'm sure you're right, it's what we'll do; they've said I'd, O'NEIL'S",
    "café naïve façade Ærøskøbing straße",
    "日本語のテキスト 中文 한국어",
    "emoji 🙂👍🏽 and flags 🇫🇷 family 👨‍👩‍👧",
    "Ünïcödé combining: e\u0301 a\u0308 हिन्दी",
    "numbers 1234567890 3.14159 1,000,000 ½ ² ٣",
    "punctuation!!! ... ??? --- (brackets) [x] {y} <z>",
    "a" * 300,
    "supercalifragilisticexpialidocious" * 5,
    "end of text<|endoftext|>next document",
    "<|endoftext|>",
    "",
    "   ",
    "\u00a0non-breaking\u2003em space\u3000ideographic",
]


def train_tokenizer(corpus_path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train([corpus_path], trainer)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    with open(corpus_path) as f:
        samples = [p for p in f.read().split("\n\n") if p.strip()][:100]
    texts = samples + HARD
    ids = [tok.encode(t).ids for t in texts]
    with open(os.path.join(OUT, "tokenizer_ids.json"), "w") as f:
        json.dump({"texts": texts, "ids": ids}, f, ensure_ascii=False)
    return tok.get_vocab_size()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.makedirs(OUT, exist_ok=True)
    vocab = train_tokenizer(sys.argv[1])
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        bos_token_id=0,
        eos_token_id=0,
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg)
    model.train()
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
            "tokenizers": tokenizers.__version__,
        },
    )
    with open(os.path.join(OUT, "versions.json"), "w") as f:
        json.dump(
            {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
            },
            f,
            indent=1,
        )
    print(f"wrote {OUT}: loss {out.loss.item():.6f}")


if __name__ == "__main__":
    main()
