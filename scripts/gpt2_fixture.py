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


def checkpointing_story(ref):
    """The original report on this model: embeddings, position table and final norm frozen
    (only the blocks train, as with LoRA), every block in a reentrant checkpoint. transformers
    5.24's gradient_checkpointing_enable() adds enable_input_require_grads() itself, so the
    failure appears once that hook is removed (as before transformers 4.35, or in custom
    modelling code that calls torch.utils.checkpoint). Records PyTorch's warnings and error, and
    the blocks' gradients under each fix."""
    import warnings

    def fresh():
        m = GPT2LMHeadModel.from_pretrained(OUT, attn_implementation="eager")
        m.train()
        t = m.transformer
        for p in [t.wte.weight, t.wpe.weight, t.ln_f.weight, t.ln_f.bias]:
            p.requires_grad_(False)
        return m

    def run(m):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            out = m(
                input_ids=ref["input_ids"],
                attention_mask=ref["attention_mask"],
                labels=ref["labels"],
            )
        warned = [
            str(x.message)
            for x in w
            if "requires_grad" in str(x.message)
        ]
        return out, warned

    story = {}
    m = fresh()
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    m.disable_input_require_grads()
    out, warned = run(m)
    story["reentrant_warnings"] = warned
    story["reentrant_loss_requires_grad"] = out.loss.requires_grad
    try:
        out.loss.backward()
        story["reentrant_error"] = None
    except RuntimeError as e:
        story["reentrant_error"] = str(e)

    grads = {}
    for fix in ["input_require_grads", "non_reentrant", "modern_default", "none"]:
        m = fresh()
        if fix == "input_require_grads":
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        elif fix == "non_reentrant":
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            m.disable_input_require_grads()
        elif fix == "modern_default":
            m.activation_checkpointing_enable()
        out, warned = run(m)
        out.loss.backward()
        story[f"{fix}_warnings"] = warned
        story[f"{fix}_loss"] = out.loss.item()
        for name, p in m.named_parameters():
            if p.requires_grad:
                grads[f"{fix}.{name}"] = p.grad.detach().contiguous()
    # The fixes agree with each other; only the reentrant fix's gradients are kept (size).
    kept = {k: v for k, v in grads.items() if k.startswith("input_require_grads.")}
    for fix in ["non_reentrant", "modern_default", "none"]:
        story[f"{fix}_max_abs_diff_to_input_require_grads"] = max(
            (grads[f"{fix}.{k.split('.', 1)[1]}"] - v).abs().max().item()
            for k, v in kept.items()
        )
    save_file(kept, os.path.join(OUT, "checkpointing_grads.safetensors"))
    with open(os.path.join(OUT, "checkpointing.json"), "w") as f:
        json.dump(story, f, indent=1)
    return story


def peft_story(ref):
    """PEFT's LoRA on c_attn (r 4, alpha 8, both matrices random so every gradient is non-zero):
    the adapter as PEFT saves it (adapter/), and logits, loss and the LoRA gradients."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(2)
    base = GPT2LMHeadModel.from_pretrained(OUT, attn_implementation="eager")
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["c_attn"],
        fan_in_fan_out=True,
        lora_dropout=0.0,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, cfg)
    model.train()
    out = model(
        input_ids=ref["input_ids"],
        attention_mask=ref["attention_mask"],
        labels=ref["labels"],
    )
    out.loss.backward()
    lora = {
        "logits": out.logits.detach().contiguous(),
        "loss": out.loss.detach().reshape(1),
    }
    for name, p in model.named_parameters():
        if p.requires_grad:
            lora["grad." + name.replace(".default", "")] = p.grad.detach().contiguous()
    save_file(lora, os.path.join(OUT, "lora_reference.safetensors"))
    model.save_pretrained(os.path.join(OUT, "adapter"))
    os.remove(os.path.join(OUT, "adapter", "README.md"))  # a generated model card
    return out.loss.item()


def second_config(vocab, ref):
    """Another random GPT-2 (3 layers, n_embd 32, 8 heads of 4, gelu_pytorch_tanh, epsilon
    1e-6, 16 positions) with its logits for the reference batch: gpt2-tiny/other/."""
    torch.manual_seed(3)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=16,
        n_embd=32,
        n_layer=3,
        n_head=8,
        activation_function="gelu_pytorch_tanh",
        layer_norm_epsilon=1e-6,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg)
    # Non-trivial norms, so their parameters matter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    path = os.path.join(OUT, "other")
    model.save_pretrained(path, safe_serialization=True)
    with torch.no_grad():
        logits = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits
    save_file({"logits": logits.contiguous()}, os.path.join(path, "logits.safetensors"))
    # The same model stored in f16 (as many hub checkpoints are): rewind loads f32 master
    # copies of the f16 values; the reference is that upcast model's f32 logits.
    half = os.path.join(OUT, "other-f16")
    model.half().save_pretrained(half, safe_serialization=True)
    model.float()
    with torch.no_grad():
        logits = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits
    save_file({"logits": logits.contiguous()}, os.path.join(half, "logits.safetensors"))


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
    second_config(vocab, ref)
    story = checkpointing_story(ref)
    print("PEFT LoRA loss:", peft_story(ref))
    print("reentrant over frozen embeddings:", story["reentrant_error"])
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
