#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizers/: tokenizer.json files of the kinds today's models ship, each
trained by the `tokenizers` library on the shipped corpus plus the hard strings, and ids.json
with the library's ids for 100 corpus samples, the hard strings and strings around each kind's
special tokens — `encode(text).ids` (post-processor included: a BOS for Llama) and
`encode(text, add_special_tokens=False).ids`.

- qwen2.json: NFC normalizer, Split on Qwen2's regex (isolated), ByteLevel(add_prefix_space=False,
  use_regex=False), ByteLevel post-processor; <|endoftext|>, <|im_start|>, <|im_end|>.
- llama3.json: byte-level BPE with ignore_merges, Split on Llama 3's regex, a TemplateProcessing
  post-processor adding <|begin_of_text|>.
- llama2.json: SentencePiece-style BPE as Llama 2's tokenizer.json has it: vocabulary <unk>, <s>,
  </s>, <0x00>…<0xFF>, then pieces; byte_fallback, fuse_unk; normalizer Prepend("▁") +
  Replace(" ", "▁"), no pre-tokenizer; TemplateProcessing adding <s>.
- metaspace.json: the same model with no normalizer and a Metaspace pre-tokenizer
  (prepend_scheme "first", split false), as newer conversions write it.

Run from the repository root with a venv holding tokenizers:
    cargo run --release -q -p rewind-lab --example corpus > /tmp/corpus.txt
    .venv-ref/bin/python scripts/tokenizer_fixture.py /tmp/corpus.txt
"""

import json
import os
import sys

import tokenizers
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

sys.path.insert(0, os.path.dirname(__file__))
from gpt2_fixture import HARD  # noqa: E402

OUT = os.path.join("tests", "fixtures", "tokenizers")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
MORE = [
    "line one\r\nline two\r\n\r\n  indented\n\n\n",
    "Ça va? ÉCOLE Straße — “quotes” ‘single’ …",
    "I'M LOUD, YOU'RE LOUD, WE'LL SEE, IT'S 12345678 O'CLOCK",
    "x  \n  y \t\n\tz   ",
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ﬁ ligature",
    "e\u0301 vs \u00e9, A\u030a vs \u00c5",
    "🙂🙂🙂 rare: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ᚠᛇᚻ ꙮ",
    " ",
    "▁already▁has▁meta",
]
# Never trained on: characters no vocabulary holds (byte fallback, byte-level bytes).
UNSEEN = ["Ω≈ç√∫˜µ≤≥÷ 𐍈𐌰 ☃☄ ߷", "known words ☃ and ☃☃ again"]
SPECIAL = {
    "qwen2": ["<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>",
              "text<|endoftext|>more", "<|im_start|><|im_end|>"],
    "llama3": ["say xyzzy and plugh, not xyzzyx or plughs", "<|begin_of_text|>Hello", "a<|end_of_text|>b<|reserved_special_token_0|>c",
               "<|begin_of_text|><|begin_of_text|>"],
    "llama2": ["<s> hello </s>", "Hello <s>world</s> ", "<unk>", " <s>", "a</s>b"],
}
SPECIAL["metaspace"] = SPECIAL["llama2"]


def byte_level(tok, regex, specials, ignore_merges, corpus, extra):
    """A byte-level BPE trained on `regex`'s splits. With `ignore_merges`, two words join the
    vocabulary with no merges that make them, as in vocabularies converted from tiktoken: only
    `ignore_merges` gives them whole."""
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus + extra, trainer)
    if ignore_merges:
        model = json.loads(tok.to_str())["model"]
        vocab, merges = model["vocab"], model["merges"]
        for word in ["Ġxyzzy", "plugh"]:
            vocab[word] = max(vocab.values()) + 1
        tok.model = models.BPE(vocab, [tuple(m) for m in merges], ignore_merges=True)
    return tok


def qwen2(corpus, extra):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok = byte_level(tok, QWEN2, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], False, corpus,
                     extra)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def llama3(corpus, extra):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>"]
    tok = byte_level(Tokenizer(models.BPE()), LLAMA3, specials, True, corpus, extra)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return tok


def sentencepiece(corpus, extra, metaspace):
    # Pieces learnt on ▁-prefixed words, then laid out as Llama 2's vocabulary.
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    learner.train_from_iterator(corpus + extra, trainers.BpeTrainer(vocab_size=700))
    learnt = json.loads(learner.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    for piece, _ in sorted(learnt["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) for m in learnt["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ["<unk>", "<s>", "</s>"]])
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                     split=False)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok


def main():
    with open(sys.argv[1]) as f:
        samples = [p for p in f.read().split("\n\n") if p.strip()]
    extra = HARD + MORE
    with open(os.path.join("tests", "fixtures", "eval", "text.txt")) as f:
        extra = extra + [p for p in f.read().split("\n\n") if p.strip()]
    os.makedirs(OUT, exist_ok=True)
    record = {"tokenizers": tokenizers.__version__}
    for name, make in [("qwen2", lambda: qwen2(samples, extra)),
                       ("llama3", lambda: llama3(samples, extra)),
                       ("llama2", lambda: sentencepiece(samples, extra, False)),
                       ("metaspace", lambda: sentencepiece(samples, extra, True))]:
        tok = make()
        tok.save(os.path.join(OUT, f"{name}.json"))
        tok = Tokenizer.from_file(os.path.join(OUT, f"{name}.json"))
        texts = samples[:100] + HARD + MORE + UNSEEN + SPECIAL[name]
        record[name] = {
            "vocab_size": tok.get_vocab_size(),
            "texts": texts,
            "ids": [tok.encode(t).ids for t in texts],
            "plain": [tok.encode(t, add_special_tokens=False).ids for t in texts],
            "decoded": [tok.decode(tok.encode(t, add_special_tokens=False).ids, skip_special_tokens=False)
                        for t in texts],
        }
        print(name, tok.get_vocab_size(), tok.encode("Hello <s> world 🙂").tokens)
    with open(os.path.join(OUT, "ids.json"), "w") as f:
        json.dump(record, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
