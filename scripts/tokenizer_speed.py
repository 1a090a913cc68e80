#!/usr/bin/env python3
"""The `tokenizers` library's encode_batch throughput on a text file (one sample per
paragraph), best of 5, beside `cargo run --release -p rewind-lab --example tokenizer_speed`.

    RAYON_NUM_THREADS=1 .venv-ref/bin/python scripts/tokenizer_speed.py TEXT tokenizer.json
    RAYON_NUM_THREADS=2 .venv-ref/bin/python scripts/tokenizer_speed.py TEXT tokenizer.json
(The library's thread pool reads RAYON_NUM_THREADS when it starts: one process per setting.)
"""
import sys
import time

from tokenizers import Tokenizer

if len(sys.argv) != 3:
    sys.exit(__doc__)
tok = Tokenizer.from_file(sys.argv[2])
texts = [p for p in open(sys.argv[1], encoding="utf-8").read().split("\n\n") if p.strip()]
best = float("inf")
for _ in range(5):
    t = time.perf_counter()
    enc = tok.encode_batch(texts)
    best = min(best, time.perf_counter() - t)
n = sum(len(e.ids) for e in enc)
print(f"{n} tokens, {best * 1e3:.1f} ms, {n / best / 1e6:.2f} M tokens/s")
