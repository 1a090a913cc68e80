//! Llama (4 query heads over 2 KV heads, untied head) and Qwen2 (q/k/v biases, tied embeddings,
//! rope base 1e6) loaded from the directories transformers 5.25 wrote match transformers on a
//! batch with a right-padded and a left-padded row: logits and loss within 1e-5 relative, every
//! gradient within 1e-4 of its largest magnitude — stored, every layer checkpointed and with
//! SaveMatmuls (`scripts/llama_fixture.py`). PEFT's LoRA adapters on each give PEFT's logits and
//! LoRA gradients, save back as PEFT wrote them, and merge into a checkpoint that reloads bit for
//! bit. llama3 rope scaling gives transformers' inverse frequencies.

#[path = "hf_fixture/mod.rs"]
mod hf_fixture;

use hf_fixture::{batch, compare, fixture, max_abs, plans, read, stored_logits, worst};
use rewind::checkpoint::CheckpointMode;
use rewind::nn::Parameters;
use rewind_lab::models::{Llama, LlamaConfig};
use safetensors::SafeTensors;

fn check(name: &str) {
    let dir = fixture(name);
    let bytes = read(&dir, "reference.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let x = batch(&dir);
    let m = Llama::load(&dir).unwrap();
    for (what, seg, policy) in plans(m.blocks.len()) {
        let params = m.named_parameters();
        compare(
            &format!("{name} {what}"),
            &m,
            &x,
            &st,
            &params,
            &seg,
            &policy,
            CheckpointMode::NonReentrant,
            &|_| true,
        );
    }
}

/// PEFT's adapter (r 4, α 8, both matrices random, `targets`) loads: PEFT's logits, loss and
/// LoRA gradients in every plan; saved back it is PEFT's file tensor for tensor, and merged
/// then saved with `save_pretrained` it reloads with the same logits bit for bit.
fn check_peft(name: &str, targets: &[&str]) {
    let dir = fixture(name);
    let bytes = read(&dir, "lora_reference.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let x = batch(&dir);
    let mut m = Llama::load(&dir).unwrap();
    m.load_adapter(&dir.join("adapter")).unwrap();
    assert_eq!(m.lora_targets(), targets, "{name}: the adapter's targets");
    let trainable = m
        .named_parameters()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .count();
    assert_eq!(
        trainable,
        m.lora_parameters().len(),
        "only the adapters train"
    );
    for (what, seg, policy) in plans(m.blocks.len()) {
        let params = m.lora_parameters();
        compare(
            &format!("{name} LoRA {what}"),
            &m,
            &x,
            &st,
            &params,
            &seg,
            &policy,
            CheckpointMode::NonReentrant,
            &|_| true,
        );
    }

    let out = std::env::temp_dir().join(format!("rewind-{name}-adapter-{}", std::process::id()));
    m.save_adapter(&out).unwrap();
    let ours = read(&out, "adapter_model.safetensors");
    let ours = SafeTensors::deserialize(&ours).unwrap();
    let peft = read(&dir.join("adapter"), "adapter_model.safetensors");
    let peft = SafeTensors::deserialize(&peft).unwrap();
    let (mut a, mut b) = (ours.names(), peft.names());
    a.sort();
    b.sort();
    assert_eq!(a, b, "{name}: PEFT's tensor names");
    for n in a {
        let (o, p) = (ours.tensor(n).unwrap(), peft.tensor(n).unwrap());
        assert_eq!((o.shape(), o.data()), (p.shape(), p.data()), "{name}: {n}");
    }
    let mut again = Llama::load(&dir).unwrap();
    again.load_adapter(&out).unwrap();
    assert_eq!(again.lora_targets(), targets);
    std::fs::remove_dir_all(&out).ok();

    let logits = |m: &Llama| stored_logits(m, &x);
    let adapted = logits(&m);
    assert!(
        m.save_pretrained(&std::env::temp_dir()).is_err(),
        "LoRA must be merged first"
    );
    m.merge_lora().unwrap();
    let merged = logits(&m);
    let d = worst(&adapted, &merged);
    assert!(
        d <= 1e-5 * max_abs(&adapted),
        "merging moved the logits by {d}"
    );
    let out = std::env::temp_dir().join(format!("rewind-{name}-merged-{}", std::process::id()));
    m.save_pretrained(&out).unwrap();
    let back = Llama::load(&out).unwrap();
    assert_eq!(
        logits(&back),
        merged,
        "a saved checkpoint reloads bit for bit"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_grouped_query_llama_with_an_untied_head_matches_transformers() {
    check("llama-tiny");
}

#[test]
fn a_qwen2_with_qkv_biases_and_tied_embeddings_matches_transformers() {
    check("qwen2-tiny");
}

#[test]
fn a_peft_adapter_on_a_llama_loads_trains_saves_and_merges_like_peft() {
    // PEFT 0.21.2, target_modules=["q_proj", "v_proj", "down_proj"].
    check_peft("llama-tiny", &["q_proj", "v_proj", "down_proj"]);
}

#[test]
fn a_peft_adapter_with_qwen2_default_targets_loads_trains_saves_and_merges_like_peft() {
    // PEFT 0.21.2, target_modules=None: PEFT's Qwen2 default, ["q_proj", "v_proj"].
    check_peft("qwen2-tiny", &["q_proj", "v_proj"]);
}

#[test]
fn llama3_rope_scaling_gives_transformers_inverse_frequencies() {
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llama3-rope.json")).unwrap())
            .unwrap();
    let cfg = serde_json::json!({
        "model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "head_dim": 64,
        "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 8,
        "max_position_embeddings": 8192, "rope_parameters": f["config"],
    });
    let c = LlamaConfig::from_json(&cfg.to_string()).unwrap();
    let want: Vec<f32> = f["inv_freq"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let d = worst(&c.rope.inv_freq, &want);
    assert!(d <= 1e-6 * max_abs(&want), "inverse frequencies off by {d}");
    let yarn = cfg.to_string().replace("llama3", "yarn");
    let err = LlamaConfig::from_json(&yarn).unwrap_err().to_string();
    assert!(err.contains("rope type `yarn` is not supported"), "{err}");
}
