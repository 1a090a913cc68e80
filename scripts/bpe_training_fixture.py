"""Writes tests/fixtures/bpe-train/: texts chosen to stress BPE training (ties between equally
frequent pairs, overlapping pairs like "aaaa", multi-byte UTF-8, whitespace runs, a merge whose
token already exists) and the tokenizer.json that the `tokenizers` library's BpeTrainer learns
from them with train_from_iterator. rewind's trainer must write the same file byte for byte.

Run: .venv-ref/bin/python scripts/bpe_training_fixture.py  (needs `tokenizers`; not in CI)
"""
import json
import os

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

OUT = os.path.join("tests", "fixtures", "bpe-train")

TEXTS = [
    "aaaa aaa aa a aaaaaaa bbbb abab ababab",
    "ab ba ab ba abba baab cd dc cd dc",
    "the cat sat on the mat; the rat ate the hat",
    "café naïve façade Ærøskøbing straße café café",
    "日本語のテキスト 日本語 日本 中文 中文 한국어 한국어",
    "emoji 🙂👍🏽 🙂🙂 family 👨‍👩‍👧 flags 🇫🇷🇫🇷",
    "  two  spaces   three    four\t\ttabs\n\nnew lines \n ",
    "I'm you're it's we'll they've I'd O'NEIL'S don't",
    "1234567890 3.14159 1,000,000 12 12 123 1234",
    "!!! ... ??? --- ((( ))) [[x]] {{y}}",
    "xyz xy yz xyz zxy yzx",
] * 3 + ["lonely unique words appear once: quixotic zephyr"]


def train(vocab_size, name):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer)
    tok.save(os.path.join(OUT, name))
    print(name, "vocab", tok.get_vocab_size())


def main():
    os.makedirs(OUT, exist_ok=True)
    # 420 ids: stops at the size asked; 5000: stops when no pair is left.
    train(420, "tokenizer-420.json")
    train(5000, "tokenizer-5000.json")
    with open(os.path.join(OUT, "texts.json"), "w") as f:
        json.dump(
            {"tokenizers": tokenizers.__version__, "texts": TEXTS},
            f,
            ensure_ascii=False,
            indent=1,
        )


if __name__ == "__main__":
    main()
