//! Llama (4 query heads over 2 KV heads, untied head) and Qwen2 (q/k/v biases, tied embeddings,
//! rope base 1e6) loaded from the directories transformers 5.25 wrote match transformers on a
//! batch with a right-padded and a left-padded row: logits and loss within 1e-5 relative, every
//! gradient within 1e-4 of its largest magnitude — stored, every layer checkpointed and with
//! SaveMatmuls (`scripts/llama_fixture.py`). llama3 rope scaling gives transformers' inverse
//! frequencies.

use rewind::checkpoint::{CheckpointMode, Plan, SavePolicy, Segmentation, plan};
use rewind::indices::Indices;
use rewind::nn::Parameters;
use rewind::tensor::Tensor;
use rewind_lab::models::{Llama, LlamaConfig};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// transformers' causal-LM loss: position i predicts label i + 1.
fn shifted(labels: &[i64], b: usize, t: usize) -> Vec<i64> {
    (0..b * t)
        .map(|k| {
            let (row, i) = (k / t, k % t);
            if i + 1 < t {
                labels[row * t + i + 1]
            } else {
                -100
            }
        })
        .collect()
}

fn check(name: &str) {
    let dir = fixture(name);
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ints = |k: &str| -> Vec<i64> { bytemuck::pod_collect_to_vec(st.tensor(k).unwrap().data()) };
    let floats =
        |k: &str| -> Vec<f32> { bytemuck::pod_collect_to_vec(st.tensor(k).unwrap().data()) };
    let (ids, mask, labels) = (ints("input_ids"), ints("attention_mask"), ints("labels"));
    let (b, t) = (2, ids.len() / 2);
    let want_logits = floats("logits");
    let want_loss = floats("loss")[0];
    let m = Llama::load(&dir).unwrap();
    let every = plan::segment(Plan::EveryBlock, m.blocks.len(), None).unwrap();
    for (what, seg, policy) in [
        (
            "stored",
            Segmentation::store_all(m.blocks.len()),
            SavePolicy::RecomputeAll,
        ),
        ("checkpointed", every.clone(), SavePolicy::RecomputeAll),
        ("save-matmuls", every, SavePolicy::SaveMatmuls),
    ] {
        for (_, p) in m.named_parameters() {
            p.zero_grad();
        }
        let hidden: Vec<f32> = mask
            .iter()
            .map(|&v| if v == 0 { 1.0 } else { 0.0 })
            .collect();
        let hidden = Tensor::from_vec(hidden, &[b, t]).unwrap();
        let logits = m
            .logits_hidden(
                &Indices::new(ids.clone(), &[b, t]).unwrap(),
                Some(&hidden),
                &seg,
                CheckpointMode::NonReentrant,
                &policy,
            )
            .unwrap();
        let got = logits.to_vec_f32();
        assert!(
            got.iter().all(|v| v.is_finite()),
            "{name} {what}: no NaN under left padding"
        );
        let d = worst(&got, &want_logits);
        assert!(
            d <= 1e-5 * max_abs(&want_logits),
            "{name} {what}: logits off by {d}"
        );
        let v = m.cfg.vocab;
        let loss = logits
            .reshape(&[b * t, v])
            .unwrap()
            .cross_entropy(
                &Indices::new(shifted(&labels, b, t), &[b * t]).unwrap(),
                -100,
            )
            .unwrap();
        let l = loss.item().unwrap() as f32;
        assert!(
            (l - want_loss).abs() <= 1e-5 * want_loss.abs(),
            "{name} {what}: loss {l} vs {want_loss}"
        );
        loss.backward().unwrap();
        let mut checked = 0;
        for (pname, p) in m.named_parameters() {
            let want = floats(&format!("grad.{pname}"));
            let got = p.grad().unwrap().to_vec_f32();
            let d = worst(&got, &want);
            assert!(
                d <= 1e-4 * max_abs(&want),
                "{name} {what}: gradient of {pname} off by {d} (largest {})",
                max_abs(&want)
            );
            checked += 1;
        }
        let expected = st.names().iter().filter(|n| n.starts_with("grad.")).count();
        assert_eq!(
            checked, expected,
            "{name}: every parameter transformers has"
        );
    }
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
