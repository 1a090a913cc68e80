//! ChatGLM3 and GLM: one tiny random network (2 layers, 4 query heads over 2 KV groups of 16,
//! RoPE on half of each head in interleaved pairs) saved by `scripts/glm_fixture.py` as
//! transformers 5.25's `GlmForCausalLM` writes it and under THUDM's ChatGLM3 names and config
//! (bf16 shards with an index). Loaded either way it gives the reference logits and loss within
//! 1e-5 relative and every gradient within 1e-4 of its largest — stored, every layer
//! checkpointed and with SaveMatmuls; PEFT's LoRA on `query_key_value` gives PEFT's; what rewind
//! does not build is an error naming it.

#[path = "hf_fixture/mod.rs"]
mod hf_fixture;

use hf_fixture::{batch, compare, fixture, floats, max_abs, plans, read, stored_logits, worst};
use rewind::checkpoint::{CheckpointMode, Plan, SavePolicy, Segmentation, plan};
use rewind::nn::Parameters;
use rewind_lab::models::lm::Checkpoint;
use rewind_lab::models::{CausalLm, Glm, GlmConfig};
use safetensors::SafeTensors;

/// Whether position `i` (one per token, rows of T) holds a real token of the fixture's batch:
/// ChatGLM3's own mask lets padded queries see every key, transformers' does not, so the
/// ChatGLM3 reference's logits agree with rewind's on real tokens only (padding has no loss).
fn real(dir: &std::path::Path) -> impl Fn(usize) -> bool + use<> {
    let bytes = read(dir, "reference.safetensors");
    let mask = hf_fixture::ints(&SafeTensors::deserialize(&bytes).unwrap(), "attention_mask");
    move |i| mask[i] != 0
}

fn check(name: &str, reference: &str, lora: bool) {
    let dir = fixture(name);
    let bytes = read(&dir, reference);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let x = batch(&fixture("glm-tiny"));
    let mut m = Glm::load(&dir).unwrap();
    if lora {
        m.load_adapter(&dir.join("adapter")).unwrap();
    }
    let compared: Box<dyn Fn(usize) -> bool> = if name == "glm-tiny" {
        Box::new(|_| true)
    } else {
        Box::new(real(&fixture("glm-tiny")))
    };
    for (what, seg, policy) in plans(m.layers()) {
        let params = if lora {
            m.lora_parameters()
        } else {
            m.named_parameters()
        };
        compare(
            &format!("{name} {reference} {what}"),
            &m,
            &x,
            &st,
            &params,
            &seg,
            &policy,
            CheckpointMode::NonReentrant,
            &compared,
        );
    }
}

#[test]
fn a_glm_written_by_transformers_matches_transformers() {
    check("glm-tiny", "reference.safetensors", false);
}

#[test]
fn a_chatglm3_checkpoint_in_bf16_shards_matches_chatglm3_and_transformers_glm() {
    check("chatglm3-tiny", "reference.safetensors", false);
    // The same network: transformers' GLM loss on the weights under GLM's names.
    let glm = read(&fixture("glm-tiny"), "reference.safetensors");
    let chatglm = read(&fixture("chatglm3-tiny"), "reference.safetensors");
    let (a, b) = (
        floats(&SafeTensors::deserialize(&glm).unwrap(), "loss")[0],
        floats(&SafeTensors::deserialize(&chatglm).unwrap(), "loss")[0],
    );
    assert!((a - b).abs() <= 1e-6 * a, "{a} vs {b}");
}

#[test]
fn peft_lora_on_chatglm3_query_key_value_loads_trains_saves_and_merges_like_peft() {
    // PEFT 0.21.2, target_modules=["query_key_value"] (its default for chatglm), r 4, alpha 8.
    check("chatglm3-tiny", "lora_reference.safetensors", true);
    let dir = fixture("chatglm3-tiny");
    let mut m = Glm::load(&dir).unwrap();
    m.load_adapter(&dir.join("adapter")).unwrap();
    assert_eq!(m.lora_targets(), ["query_key_value"]);
    let trainable = m
        .named_parameters()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .count();
    assert_eq!(
        trainable, 4,
        "one A and one B per layer train, nothing else"
    );

    // Saved back: PEFT's file, tensor for tensor.
    let out = std::env::temp_dir().join(format!("rewind-chatglm3-adapter-{}", std::process::id()));
    m.save_adapter(&out).unwrap();
    let ours = read(&out, "adapter_model.safetensors");
    let ours = SafeTensors::deserialize(&ours).unwrap();
    let peft = read(&dir.join("adapter"), "adapter_model.safetensors");
    let peft = SafeTensors::deserialize(&peft).unwrap();
    let (mut a, mut b) = (ours.names(), peft.names());
    a.sort();
    b.sort();
    assert_eq!(a, b, "PEFT's tensor names");
    for n in a {
        let (o, p) = (ours.tensor(n).unwrap(), peft.tensor(n).unwrap());
        assert_eq!((o.shape(), o.data()), (p.shape(), p.data()), "{n}");
    }
    std::fs::remove_dir_all(&out).ok();

    // Merged and saved under ChatGLM3's names: reloads with the same logits, bit for bit.
    let x = batch(&fixture("glm-tiny"));
    let logits = |m: &Glm| stored_logits(m, &x);
    let adapted = logits(&m);
    m.merge_lora().unwrap();
    let merged = logits(&m);
    let d = worst(&adapted, &merged);
    assert!(
        d <= 1e-5 * max_abs(&adapted),
        "merging moved the logits by {d}"
    );
    let out = std::env::temp_dir().join(format!("rewind-chatglm3-merged-{}", std::process::id()));
    m.save_pretrained(&out).unwrap();
    let back = Glm::load(&out).unwrap();
    assert_eq!(
        logits(&back),
        merged,
        "a saved checkpoint reloads bit for bit"
    );
    let names: Vec<String> = back
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.contains(&"transformer.encoder.layers.1.self_attention.query_key_value.bias".into())
    );
    std::fs::remove_dir_all(&out).ok();
}

fn config(edit: impl FnOnce(&mut serde_json::Value)) -> rewind::error::Result<GlmConfig> {
    let text = std::fs::read_to_string(fixture("chatglm3-tiny").join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    GlmConfig::from_value(v)
}

#[test]
fn chatglm3_config_keys_map_onto_the_network() {
    let c = config(|_| {}).unwrap();
    // multi_query_group_num 2, kv_channels 16, RotaryEmbedding(kv_channels // 2): 4 pairs.
    assert_eq!((c.heads, c.kv_heads, c.head_dim), (4, 2, 16));
    assert_eq!(
        (c.hidden, c.intermediate, c.vocab, c.positions),
        (64, 96, 512, 64)
    );
    assert_eq!(c.rope.rotary_dim(), 8);
    assert!(c.qkv_bias);
    // rope_ratio scales the base: 10000 · 50, first pair's frequency 1, second 500000^(-2/8).
    let c = config(|v| v["rope_ratio"] = 50.into()).unwrap();
    let f = (500000f32).powf(-0.25);
    assert!((c.rope.inv_freq[1] - 1.0 / (1.0 / f)).abs() <= 1e-6 * f);
}

#[test]
fn chatglm3_variants_rewind_does_not_build_are_errors_naming_the_key() {
    for (key, value, says) in [
        ("rmsnorm", serde_json::json!(false), "`rmsnorm: false`"),
        (
            "add_bias_linear",
            serde_json::json!(true),
            "`add_bias_linear`",
        ),
        (
            "pre_seq_len",
            serde_json::json!(128),
            "`pre_seq_len` is set",
        ),
        (
            "original_rope",
            serde_json::json!(false),
            "`original_rope: false`",
        ),
        (
            "apply_residual_connection_post_layernorm",
            serde_json::json!(true),
            "`apply_residual_connection_post_layernorm`",
        ),
        // ChatGLM-6B, the first version, shares model_type "chatglm".
        (
            "position_encoding_2d",
            serde_json::json!(true),
            "ChatGLM-6B (first version)",
        ),
    ] {
        let e = config(|v| v[key] = value).unwrap_err().to_string();
        assert!(e.contains(says), "{key}: {e}");
    }
    let e = config(|v| {
        v.as_object_mut().unwrap().remove("ffn_hidden_size");
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("`ffn_hidden_size` is missing"), "{e}");
}

#[test]
fn glm4_and_unknown_tensors_are_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("rewind-glm4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(fixture("glm-tiny").join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), text.replace("\"glm\"", "\"glm4\"")).unwrap();
    let e = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(e.contains("\"glm4\" is not one rewind loads"), "{e}");

    // A tensor the network does not have (glm4's post-sublayer norms) is not dropped unread.
    std::fs::write(dir.join("config.json"), text).unwrap();
    let weights = read(&fixture("glm-tiny"), "model.safetensors");
    let st = SafeTensors::deserialize(&weights).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.push((
        "model.layers.0.post_self_attn_layernorm.weight".into(),
        vec![64],
        vec![0u8; 256],
    ));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d);
            (n.clone(), v.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let e = Glm::load(&dir).unwrap_err().to_string();
    assert!(
        e.contains(
            "`model.layers.0.post_self_attn_layernorm.weight` that this glm network does not have"
        ),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_original_report_on_chatglm3_fails_like_pytorch_and_both_fixes_give_pytorchs_lora_gradients()
{
    // failure.json: PEFT's LoRA on ChatGLM3 (base and embeddings frozen) under ChatGLM3's
    // `torch.utils.checkpoint.checkpoint(layer, hidden_states, attention_mask, rotary_pos_emb,
    // kv_caches[index], use_cache)` per layer, in PyTorch 2.15. PyTorch also warns there that
    // `use_reentrant` should be passed explicitly (the call omits it); rewind's checkpoint API
    // takes the mode explicitly, so that warning has no counterpart here.
    let dir = fixture("chatglm3-tiny");
    let story: serde_json::Value = serde_json::from_slice(&read(&dir, "failure.json")).unwrap();
    let mut m = Glm::load(&dir).unwrap();
    m.load_adapter(&dir.join("adapter")).unwrap();
    let x = batch(&fixture("glm-tiny"));
    let every = plan::segment(Plan::EveryBlock, m.layers(), None).unwrap();
    rewind::warnings::take();
    let err = m
        .loss(
            &x,
            &every,
            CheckpointMode::Reentrant,
            &SavePolicy::RecomputeAll,
        )
        .and_then(|loss| loss.backward())
        .unwrap_err();
    assert_eq!(err.to_string(), story["error"].as_str().unwrap());
    let pytorch_warned: Vec<&str> = story["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .filter(|w| !w.contains("use_reentrant"))
        .collect();
    assert_eq!(pytorch_warned.len(), 2, "once per layer");
    assert_eq!(rewind::warnings::take(), pytorch_warned);
    let explained = format!("{err:#}");
    for layer in [
        "transformer.encoder.layers.0",
        "transformer.encoder.layers.1",
    ] {
        assert!(
            explained.contains(&format!("reentrant segment `{layer}`")),
            "{explained}"
        );
    }
    rewind::tape::clear();

    // Both fixes give the LoRA gradients PyTorch got by storing everything (and PyTorch's own
    // fixes gave those too, bit for bit).
    assert_eq!(story["enable_input_require_grads_equals_stored"], true);
    assert_eq!(story["use_reentrant_false_equals_stored"], true);
    let bytes = read(&dir, "lora_reference.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let compared = real(&fixture("glm-tiny"));
    for (what, mode, thudm_fix) in [
        (
            "THUDM's fix: enable_input_require_grads + reentrant",
            CheckpointMode::Reentrant,
            true,
        ),
        ("use_reentrant=False", CheckpointMode::NonReentrant, false),
    ] {
        let _hook = thudm_fix.then(|| m.token_embedding().enable_input_require_grads());
        let params = m.lora_parameters();
        compare(
            what,
            &m,
            &x,
            &st,
            &params,
            &every,
            &SavePolicy::RecomputeAll,
            mode,
            &compared,
        );
    }
}

#[test]
fn lora_dropout_masks_replay_exactly_under_checkpointing_and_vanish_in_eval_mode() {
    // THUDM's demo: LoRA dropout 0.1 on query_key_value. Same generator state, same masks:
    // stored, reentrant with THUDM's fix and non-reentrant give the same gradient bits; the
    // masks do change them (against dropout 0); eval mode gives the dropout-free logits.
    let x = batch(&fixture("glm-tiny"));
    let mut m = Glm::load(&fixture("chatglm3-tiny")).unwrap();
    m.load_adapter(&fixture("chatglm3-tiny").join("adapter"))
        .unwrap();
    let every = plan::segment(Plan::EveryBlock, m.layers(), None).unwrap();
    let store = Segmentation::store_all(m.layers());
    let grads = |m: &Glm, seg: &Segmentation, mode, hook: bool| -> Vec<Vec<u32>> {
        let params = m.lora_parameters();
        params.iter().for_each(|(_, p)| p.zero_grad());
        let h = hook.then(|| m.token_embedding().enable_input_require_grads());
        rewind::rng::manual_seed(77);
        m.loss(&x, seg, mode, &SavePolicy::RecomputeAll)
            .unwrap()
            .backward()
            .unwrap();
        if let Some(h) = h {
            m.token_embedding().hooks.remove(h);
        }
        params
            .iter()
            .map(|(_, p)| {
                p.grad()
                    .unwrap()
                    .to_vec_f32()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect()
    };
    let plain = grads(&m, &store, CheckpointMode::NonReentrant, false);
    m.set_lora_dropout(0.1).unwrap();
    let stored = grads(&m, &store, CheckpointMode::NonReentrant, false);
    assert_ne!(stored, plain, "the dropout masks change the gradients");
    assert_eq!(grads(&m, &every, CheckpointMode::Reentrant, true), stored);
    assert_eq!(
        grads(&m, &every, CheckpointMode::NonReentrant, false),
        stored
    );
    let logits = |m: &Glm| stored_logits(m, &x);
    m.train(false);
    let eval = logits(&m);
    m.set_lora_dropout(0.0).unwrap();
    assert_eq!(eval, logits(&m), "no dropout in eval mode");
}
