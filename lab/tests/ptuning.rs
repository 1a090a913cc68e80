//! ChatGLM3's P-tuning v2 (`pre_seq_len` 4, with and without `prefix_projection`): a prefix
//! encoder saved under THUDM's names loads onto the ChatGLM3 fixture and gives the logits, loss
//! and prefix gradients of ChatGLM3's network (`scripts/ptuning_fixture.py`, prefix dropout 0,
//! checked there against transformers' GLM fed the prefix through its cache) — stored, every
//! layer checkpointed non-reentrantly, and with SaveMatmuls; and the checkpoint story as
//! PyTorch 2.15 tells it: the prefix reaches each layer inside a tuple, so a reentrant
//! checkpoint does not count it — without a fix PyTorch's warning and error; with THUDM's
//! `enable_input_require_grads` the second layer's backward meets the prefix graph the first
//! one freed ("backward through the graph a second time"); `use_reentrant=False` trains.

#[path = "hf_fixture/mod.rs"]
mod hf_fixture;

use hf_fixture::{batch, compare, fixture, plans, read};
use rewind::checkpoint::{CheckpointMode, Plan, SavePolicy, plan};
use rewind::error::GRAPH_FREED_MSG;
use rewind::nn::Parameters;
use rewind_lab::models::{CausalLm, Glm};
use safetensors::SafeTensors;

fn with_prefix(kind: &str) -> Glm {
    let mut m = Glm::load(&fixture("chatglm3-tiny")).unwrap();
    m.load_adapter(&fixture("chatglm3-tiny/ptuning").join(kind))
        .unwrap();
    m.prefix.as_mut().unwrap().dropout = 0.0;
    m
}

fn prefix_params(m: &Glm) -> Vec<(String, rewind::tensor::Tensor)> {
    m.prefix.as_ref().unwrap().named_parameters()
}

#[test]
fn a_prefix_encoder_gives_chatglm3s_logits_and_prefix_gradients() {
    let x = batch(&fixture("glm-tiny"));
    for kind in ["plain", "projection"] {
        let m = with_prefix(kind);
        let trainable: Vec<String> = m
            .named_parameters()
            .into_iter()
            .filter(|(_, p)| p.requires_grad())
            .map(|(n, _)| n)
            .collect();
        assert!(
            trainable.iter().all(|n| n.contains("prefix_encoder")),
            "{trainable:?}"
        );
        let bytes = read(
            &fixture("chatglm3-tiny/ptuning").join(kind),
            "reference.safetensors",
        );
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (what, seg, policy) in plans(m.layers()) {
            // With a prefix no query is blind: every logit, padded positions too.
            compare(
                &format!("{kind} {what}"),
                &m,
                &x,
                &st,
                &prefix_params(&m),
                &seg,
                &policy,
                CheckpointMode::NonReentrant,
                &|_| true,
            );
        }
    }
}

#[test]
fn reentrant_checkpointing_fails_p_tuning_twice_over_as_pytorch_does() {
    let story: serde_json::Value =
        serde_json::from_slice(&read(&fixture("chatglm3-tiny/ptuning"), "story.json")).unwrap();
    let x = batch(&fixture("glm-tiny"));
    for kind in ["plain", "projection"] {
        let told = &story[kind]["story"];
        let m = with_prefix(kind);
        let every = plan::segment(Plan::EveryBlock, m.layers(), None).unwrap();
        let step = |mode| {
            m.loss(&x, &every, mode, &SavePolicy::RecomputeAll)
                .and_then(|l| l.backward())
        };
        // No fix: no explicit input requires grad.
        rewind::warnings::take();
        let e = step(CheckpointMode::Reentrant).unwrap_err();
        assert_eq!(e.to_string(), told["reentrant"]["error"].as_str().unwrap());
        let warned: Vec<String> =
            serde_json::from_value(told["reentrant"]["warnings"].clone()).unwrap();
        assert_eq!(rewind::warnings::take(), warned, "{kind}");
        rewind::tape::clear();
        // THUDM's fix: the layers' inputs require grad, but the prefix graph is shared.
        let hook = m.token_embedding().enable_input_require_grads();
        let e = step(CheckpointMode::Reentrant).unwrap_err();
        let pytorch = &told["reentrant + enable_input_require_grads"];
        assert_eq!(e.to_string(), pytorch["error"].as_str().unwrap(), "{kind}");
        assert_eq!(e.to_string(), GRAPH_FREED_MSG);
        assert!(rewind::warnings::take().is_empty());
        m.token_embedding().hooks.remove(hook);
        rewind::tape::clear();
        // use_reentrant=False: PyTorch's gradients equal storing everything, as rewind's do
        // (the test above).
        assert_eq!(told["use_reentrant=False"]["equals_stored"], true);
        for (_, p) in prefix_params(&m) {
            p.zero_grad();
        }
        step(CheckpointMode::NonReentrant).unwrap();
        assert!(prefix_params(&m).iter().all(|(_, p)| p.grad().is_some()));
    }
}

#[test]
fn a_trained_prefix_saves_and_loads_back_bit_for_bit() {
    let m = with_prefix("projection");
    let out = std::env::temp_dir().join(format!("rewind-prefix-{}", std::process::id()));
    m.save_adapter(&out).unwrap();
    let mut back = Glm::load(&fixture("chatglm3-tiny")).unwrap();
    back.load_adapter(&out).unwrap();
    let bits = |m: &Glm| -> Vec<Vec<u32>> {
        prefix_params(m)
            .iter()
            .map(|(_, p)| p.to_vec_f32().iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits(&back), bits(&m));
    std::fs::remove_dir_all(&out).ok();
}
