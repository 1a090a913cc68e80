#!/usr/bin/env python3
"""Writes tests/fixtures/sentencepiece/: SentencePiece models trained by the `sentencepiece`
library on the shipped corpus plus the hard strings, and ids.json with the library's
`encode(text)` ids and `decode(ids)` text for 100 corpus samples, the hard strings and strings
around each model's special pieces:

- bpe.model: BPE, 600 pieces, byte_fallback, identity normalization, add_dummy_prefix,
  remove_extra_whitespaces off, digits split, whitespace-only pieces allowed, user-defined
  pieces `<|custom|>` and `xyz`, a control piece `<ctrl>` (ChatGLM3's and Llama 2's settings);
- unigram.model: unigram, 600 pieces, byte_fallback, remove_extra_whitespaces on (the default),
  user-defined `<|custom|>`;
- unigram_unk.model: unigram, 200 pieces, no byte_fallback, character coverage 0.98: unseen
  characters become `<unk>`.

It also writes tests/fixtures/chatglm3-tiny/tokenizer.model (BPE as bpe.model, 500 pieces, so
ChatGLM3's nine special tokens follow at 500…508 inside the tiny model's 512 ids) and the
tokenizer_config.json ChatGLM3 ships (`ChatGLMTokenizer`).

Run from the repository root with a venv holding sentencepiece:
    cargo run --release -q -p rewind-lab --example corpus > /tmp/corpus.txt
    .venv-ref/bin/python scripts/sentencepiece_fixture.py /tmp/corpus.txt
CI does not run this; the files it writes are committed.
"""

import io
import json
import os
import sys

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(__file__))
from gpt2_fixture import HARD  # noqa: E402
from tokenizer_fixture import MORE, UNSEEN  # noqa: E402

OUT = os.path.join("tests", "fixtures", "sentencepiece")
CHATGLM = os.path.join("tests", "fixtures", "chatglm3-tiny")
SPECIAL = [
    "<|custom|> x<|custom|>y<|custom|><|custom|>",
    "xyz xyzxyz axyzb",
    "<ctrl> <s> </s> <unk> <0x41>",
    "12345678 3.14",
    "  two leading, two trailing  ",
    "\n",
    "a\u3000b\u00a0c",
    "▁▁ already ▁ meta",
    "<|user|>\nHello<|assistant|>",
]


def train(corpus, **options):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model,
                                   normalization_rule_name="identity", num_threads=1,
                                   minloglevel=2, **options)
    return model.getvalue()


BPE = dict(model_type="bpe", byte_fallback=True, add_dummy_prefix=True,
           remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
           character_coverage=0.9995, max_sentence_length=100000)


def main():
    with open(sys.argv[1]) as f:
        samples = [p for p in f.read().split("\n\n") if p.strip()]
    with open(os.path.join("tests", "fixtures", "eval", "text.txt")) as f:
        extra = [p for p in f.read().split("\n\n") if p.strip()]
    corpus = samples + HARD + MORE + extra
    models = {
        "bpe": train(corpus, vocab_size=600, user_defined_symbols=["<|custom|>", "xyz"],
                     control_symbols=["<ctrl>"], **BPE),
        "unigram": train(corpus, model_type="unigram", vocab_size=600, byte_fallback=True,
                         user_defined_symbols=["<|custom|>"], character_coverage=0.9995,
                         max_sentence_length=100000),
        "unigram_unk": train(corpus, model_type="unigram", vocab_size=200,
                             character_coverage=0.98, max_sentence_length=100000),
    }
    os.makedirs(OUT, exist_ok=True)
    record = {"sentencepiece": spm.__version__}
    texts = samples[:100] + HARD + MORE + UNSEEN + SPECIAL
    for name, blob in models.items():
        with open(os.path.join(OUT, f"{name}.model"), "wb") as f:
            f.write(blob)
        sp = spm.SentencePieceProcessor(model_proto=blob)
        ids = [sp.encode(t) for t in texts]
        record[name] = {"vocab_size": sp.get_piece_size(), "texts": texts, "ids": ids,
                        "decoded": [sp.decode(i) for i in ids]}
        print(name, sp.get_piece_size(), sp.encode("Hello <|custom|> world 🙂", out_type=str))
    with open(os.path.join(OUT, "ids.json"), "w") as f:
        json.dump(record, f, ensure_ascii=False)

    blob = train(corpus, vocab_size=500, **BPE)
    with open(os.path.join(CHATGLM, "tokenizer.model"), "wb") as f:
        f.write(blob)
    with open(os.path.join(CHATGLM, "tokenizer_config.json"), "w") as f:
        json.dump({
            "name_or_path": "THUDM/chatglm3-6b (tiny, random)",
            "remove_space": False,
            "do_lower_case": False,
            "tokenizer_class": "ChatGLMTokenizer",
            "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
            "padding_side": "left",
            "clean_up_tokenization_spaces": False,
        }, f, indent=2)
    stale = os.path.join(CHATGLM, "tokenizer.json")
    if os.path.exists(stale):
        os.remove(stale)


if __name__ == "__main__":
    main()
