//! GPT-2 loaded from the directory transformers' `save_pretrained` wrote matches transformers
//! on a padded batch: logits and loss within 1e-5 relative, every gradient within 1e-4 of its
//! largest magnitude (`scripts/gpt2_fixture.py` wrote the fixture with transformers 5.24 and
//! PyTorch 2.15). Bad checkpoints are errors that name what is wrong.

use rewind::DType;
use rewind::checkpoint::{CheckpointMode, Plan, SavePolicy, Segmentation, plan};
use rewind::indices::Indices;
use rewind::ops::autocast::autocast;
use rewind_lab::models::{Gpt2, Gpt2Config};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny")
}

struct Reference {
    ids: Vec<i64>,
    mask: Vec<i64>,
    labels: Vec<i64>,
    shape: [usize; 2],
    logits: Vec<f32>,
    loss: f32,
    grads: Vec<(String, Vec<usize>, Vec<f32>)>,
}

fn reference() -> Reference {
    reference_from("reference.safetensors")
}

/// The batch of `reference.safetensors` with the logits, loss and gradients of `file`.
fn reference_from(file: &str) -> Reference {
    let batch = std::fs::read(fixture().join("reference.safetensors")).unwrap();
    let batch = SafeTensors::deserialize(&batch).unwrap();
    let ints =
        |k: &str| -> Vec<i64> { bytemuck::pod_collect_to_vec(batch.tensor(k).unwrap().data()) };
    let bytes = std::fs::read(fixture().join(file)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let floats =
        |k: &str| -> Vec<f32> { bytemuck::pod_collect_to_vec(st.tensor(k).unwrap().data()) };
    let shape = batch.tensor("input_ids").unwrap().shape().to_vec();
    let mut grads: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .names()
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("grad.")
                .map(|p| (n.to_string(), p.to_string()))
        })
        .map(|(full, name)| {
            let v = st.tensor(&full).unwrap();
            (name, v.shape().to_vec(), floats(&full))
        })
        .collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    Reference {
        ids: ints("input_ids"),
        mask: ints("attention_mask"),
        labels: ints("labels"),
        shape: [shape[0], shape[1]],
        logits: floats("logits"),
        loss: floats("loss")[0],
        grads,
    }
}

/// The largest elementwise difference of two equally long results.
fn worst_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "results of different sizes");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// Logits, loss and every gradient (transformers' layout, by name).
type Outcome = (Vec<f32>, f32, Vec<(String, Vec<f32>)>);

/// Runs the reference batch.
fn run(m: &Gpt2, r: &Reference, seg: &Segmentation, policy: &SavePolicy) -> Outcome {
    for (_, p) in m.hf_parameters() {
        p.zero_grad();
    }
    let ids = Indices::new(r.ids.clone(), &r.shape).unwrap();
    let logits = m
        .logits(
            &ids,
            Some(&r.mask),
            seg,
            CheckpointMode::NonReentrant,
            policy,
        )
        .unwrap();
    let loss = Gpt2::causal_lm_loss(&logits, &r.labels).unwrap();
    loss.backward().unwrap();
    let mut grads: Vec<(String, Vec<f32>)> = m
        .hf_parameters()
        .into_iter()
        .map(|(name, p)| {
            let g = p.grad().unwrap();
            let g = if g.shape().len() == 2 && name.contains(".h.") {
                g.transpose(0, 1).unwrap().to_vec_f32() // Conv1D: [in, out]
            } else {
                g.to_vec_f32()
            };
            (name, g)
        })
        .collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    (logits.to_vec_f32(), loss.item().unwrap() as f32, grads)
}

#[test]
fn a_transformers_gpt2_checkpoint_gives_transformers_logits_loss_and_gradients() {
    let r = reference();
    let m = Gpt2::load(&fixture()).unwrap();
    assert_eq!(m.cfg.n_layer, 2);
    let store = Segmentation::store_all(2);
    let every = plan::segment(Plan::EveryBlock, 2, None).unwrap();
    for (seg, policy) in [
        (&store, SavePolicy::RecomputeAll),
        (&every, SavePolicy::RecomputeAll),
        (&every, SavePolicy::SaveMatmuls),
    ] {
        let (logits, loss, grads) = run(&m, &r, seg, &policy);
        // Logits: 1e-5 relative to the largest logit.
        let scale = max_abs(&r.logits);
        let worst = worst_diff(&logits, &r.logits);
        assert!(
            worst <= 1e-5 * scale,
            "logits off by {worst} (scale {scale})"
        );
        eprintln!(
            "{policy:?}: logits within {:.1e} of the largest, loss {loss} vs {}",
            worst / scale,
            r.loss
        );
        assert!(
            (loss - r.loss).abs() <= 1e-5 * r.loss.abs(),
            "loss {loss} vs {}",
            r.loss
        );
        // Every parameter's gradient (the LM head's flows into wte, tied as in transformers).
        assert_eq!(grads.len(), r.grads.len());
        let mut worst_grad = 0.0f32;
        for ((name, g), (rname, shape, want)) in grads.iter().zip(&r.grads) {
            assert_eq!(name, rname);
            assert_eq!(g.len(), shape.iter().product::<usize>(), "{name}");
            let scale = max_abs(want);
            let worst = worst_diff(g, want);
            assert!(
                worst <= 1e-4 * scale,
                "{name}: off by {worst} (largest {scale})"
            );
            worst_grad = worst_grad.max(worst / scale);
        }
        eprintln!("  gradients within {worst_grad:.1e} of their largest");
    }
}

#[test]
fn under_bf16_autocast_gpt2_gives_transformers_bf16_logits_loss_and_gradients() {
    // transformers under `torch.autocast("cpu", dtype=torch.bfloat16)`
    // (`scripts/autocast_bf16_fixture.py`): bf16 logits, f32 loss, f32 master gradients.
    let r = reference_from("reference_bf16.safetensors");
    let m = Gpt2::load(&fixture()).unwrap();
    let store = Segmentation::store_all(2);
    let every = plan::segment(Plan::EveryBlock, 2, None).unwrap();
    let mut stored_grads = None;
    for (seg, policy) in [
        (&store, SavePolicy::RecomputeAll),
        (&every, SavePolicy::RecomputeAll),
        (&every, SavePolicy::SaveMatmuls),
    ] {
        let (logits, loss, grads) = {
            let _bf16 = autocast(Some(DType::BF16));
            run(&m, &r, seg, &policy)
        };
        // Every product's output is rounded to bf16 (8 significant bits) in both engines, and
        // f32 sums in a different order can round either way: logits within 2⁻⁷ of the
        // largest, the loss within 2⁻⁸ relative, gradients within 2⁻⁵ of their largest
        // (measured: 3.5e-3, 2e-5, 8.1e-3).
        let scale = max_abs(&r.logits);
        let worst = worst_diff(&logits, &r.logits);
        assert!(
            worst <= scale / 128.0,
            "logits off by {worst} (scale {scale})"
        );
        assert!(
            (loss - r.loss).abs() <= r.loss.abs() / 256.0,
            "loss {loss} vs {}",
            r.loss
        );
        let mut worst_grad = 0.0f32;
        for ((name, g), (rname, _, want)) in grads.iter().zip(&r.grads) {
            assert_eq!(name, rname);
            let (scale, worst) = (max_abs(want), worst_diff(g, want));
            assert!(
                worst <= scale / 32.0,
                "{name}: off by {worst} (largest {scale})"
            );
            worst_grad = worst_grad.max(worst / scale);
        }
        eprintln!(
            "bf16 {policy:?}: logits within {:.1e} of the largest, loss {loss} vs {}, gradients within {worst_grad:.1e}",
            worst / scale,
            r.loss
        );
        // Recomputation runs under the forward's autocast state: bit-identical to storing.
        match &stored_grads {
            None => stored_grads = Some(grads),
            Some(s) => assert!(
                s == &grads,
                "{policy:?}: checkpointed bf16 gradients differ"
            ),
        }
    }
    let _bf16 = autocast(Some(DType::BF16));
    let ids = Indices::new(r.ids.clone(), &r.shape).unwrap();
    let logits = m
        .logits(
            &ids,
            Some(&r.mask),
            &store,
            CheckpointMode::NonReentrant,
            &SavePolicy::RecomputeAll,
        )
        .unwrap();
    assert_eq!(
        logits.dtype(),
        DType::BF16,
        "the head's product runs in bf16"
    );
}

#[test]
fn bad_checkpoints_are_errors_that_name_the_problem() {
    let dir = std::env::temp_dir().join(format!("rewind-gpt2-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    let weights = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let load = |cfg: &str, w: &[u8]| -> String {
        std::fs::write(dir.join("config.json"), cfg).unwrap();
        std::fs::write(dir.join("model.safetensors"), w).unwrap();
        Gpt2::load(&dir).unwrap_err().to_string()
    };
    let e = load(&config.replace("\"gpt2\"", "\"llama\""), &weights);
    assert!(e.contains("model_type \"llama\" is not supported"), "{e}");
    let e = load(&config.replace("gelu_new", "relu"), &weights);
    assert!(
        e.contains("activation_function \"relu\" is not supported"),
        "{e}"
    );
    let e = load(
        &config.replace("\"n_embd\": 64", "\"n_embd\": 32"),
        &weights,
    );
    assert!(
        e.contains("`transformer.wte.weight` has shape [500, 64], the config needs [500, 32]"),
        "{e}"
    );
    let e = load(
        &config.replace("\"n_layer\": 2", "\"n_layer\": 3"),
        &weights,
    );
    assert!(e.contains("no tensor `transformer.h.2.ln_1.weight`"), "{e}");
    let e = load(&config, &weights[..weights.len() / 2]);
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(
        Gpt2Config::from_json("{}")
            .unwrap_err()
            .to_string()
            .contains("model_type")
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Gradients of the blocks (transformers' layout), by name.
fn block_grads(m: &Gpt2) -> Vec<(String, Vec<f32>)> {
    let mut g: Vec<(String, Vec<f32>)> = m
        .hf_parameters()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .map(|(name, p)| {
            let g = p.grad().expect("every block parameter gets a gradient");
            let g = if g.shape().len() == 2 {
                g.transpose(0, 1).unwrap().to_vec_f32()
            } else {
                g.to_vec_f32()
            };
            (name, g)
        })
        .collect();
    g.sort_by(|a, b| a.0.cmp(&b.0));
    g
}

#[test]
fn reentrant_checkpointing_over_frozen_embeddings_fails_like_transformers_and_the_fixes_match() {
    use rewind::checkpoint::NO_INPUT_REQUIRES_GRAD_WARNING;
    // transformers 5.24 + PyTorch 2.15 on the same model and batch: wte (also the head), wpe
    // and ln_f frozen, every block in checkpoint(..., use_reentrant=True), the input hook of
    // gradient_checkpointing_enable() removed (scripts/gpt2_fixture.py).
    let story: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("checkpointing.json")).unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(fixture().join("checkpointing_grads.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let r = reference();
    let m = Gpt2::load(&fixture()).unwrap();
    for p in [&m.wte.weight, &m.wpe.weight, &m.ln_f.weight, &m.ln_f.bias] {
        p.requires_grad_(false).unwrap();
    }
    let every = plan::segment(Plan::EveryBlock, 2, None).unwrap();
    let ids = Indices::new(r.ids.clone(), &r.shape).unwrap();
    let loss = |mode| {
        for (_, p) in m.hf_parameters() {
            p.zero_grad();
        }
        let logits = m
            .logits(&ids, Some(&r.mask), &every, mode, &SavePolicy::RecomputeAll)
            .unwrap();
        Gpt2::causal_lm_loss(&logits, &r.labels).unwrap()
    };

    rewind::warnings::take();
    let l = loss(CheckpointMode::Reentrant);
    let warned = rewind::warnings::take();
    let want: Vec<String> = story["reentrant_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert_eq!(warned, want);
    assert_eq!(want, vec![NO_INPUT_REQUIRES_GRAD_WARNING.to_string(); 2]);
    assert_eq!(
        l.requires_grad(),
        story["reentrant_loss_requires_grad"].as_bool().unwrap()
    );
    let err = l.backward().unwrap_err();
    assert_eq!(err.to_string(), story["reentrant_error"].as_str().unwrap());

    let compare = |what: &str| {
        for (name, g) in block_grads(&m) {
            let v = st.tensor(&format!("input_require_grads.{name}")).unwrap();
            let want: Vec<f32> = bytemuck::pod_collect_to_vec(v.data());
            let scale = max_abs(&want);
            let worst = worst_diff(&g, &want);
            assert!(
                worst <= 1e-4 * scale,
                "{what}, {name}: off by {worst} (largest {scale})"
            );
        }
    };
    // Fix a: enable_input_require_grads() keeps reentrant checkpointing.
    let hook = m.wte.enable_input_require_grads();
    let l = loss(CheckpointMode::Reentrant);
    l.backward().unwrap();
    compare("enable_input_require_grads + reentrant");
    m.wte.hooks.remove(hook);
    // Fix b: non-reentrant checkpointing (transformers 5.24's default).
    let l = loss(CheckpointMode::NonReentrant);
    l.backward().unwrap();
    compare("non-reentrant");
}

#[test]
fn a_peft_lora_adapter_loads_gives_peft_logits_and_gradients_and_saves_back_as_peft_wrote_it() {
    // PEFT 0.21.2: LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True,
    // init_lora_weights=False) on the fixture, adapter saved with save_pretrained.
    let r = reference();
    let bytes = std::fs::read(fixture().join("lora_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let floats =
        |k: &str| -> Vec<f32> { bytemuck::pod_collect_to_vec(st.tensor(k).unwrap().data()) };
    let mut m = Gpt2::load(&fixture()).unwrap();
    m.load_adapter(&fixture().join("adapter")).unwrap();
    // Only the adapters train (PEFT freezes the rest).
    let trainable: Vec<String> = m
        .hf_parameters()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(trainable.len(), 4, "{trainable:?}");
    let ids = Indices::new(r.ids.clone(), &r.shape).unwrap();
    let every = plan::segment(Plan::EveryBlock, 2, None).unwrap();
    for (seg, mode) in [
        (Segmentation::store_all(2), CheckpointMode::NonReentrant),
        (every.clone(), CheckpointMode::NonReentrant),
    ] {
        for (_, p) in m.lora_parameters() {
            p.zero_grad();
        }
        let logits = m
            .logits(&ids, Some(&r.mask), &seg, mode, &SavePolicy::RecomputeAll)
            .unwrap();
        let want = floats("logits");
        let scale = max_abs(&want);
        let got = logits.to_vec_f32();
        let worst = worst_diff(&got, &want);
        assert!(worst <= 1e-5 * scale, "logits off by {worst}");
        let loss = Gpt2::causal_lm_loss(&logits, &r.labels).unwrap();
        let want_loss = floats("loss")[0];
        assert!((loss.item().unwrap() as f32 - want_loss).abs() <= 1e-5 * want_loss);
        loss.backward().unwrap();
        for (name, p) in m.lora_parameters() {
            let want = floats(&format!("grad.{name}"));
            let g = p.grad().unwrap().to_vec_f32();
            let scale = max_abs(&want);
            assert!(scale > 0.0, "{name}: PEFT's gradient is zero");
            let worst = worst_diff(&g, &want);
            assert!(
                worst <= 1e-4 * scale,
                "{name}: off by {worst} (largest {scale})"
            );
        }
    }
    // Saved back: the same tensors under the same names, and a config PEFT reads.
    let dir = std::env::temp_dir().join(format!("rewind-adapter-{}", std::process::id()));
    m.save_adapter(&dir).unwrap();
    let ours = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let ours = SafeTensors::deserialize(&ours).unwrap();
    let peft = std::fs::read(fixture().join("adapter/adapter_model.safetensors")).unwrap();
    let peft = SafeTensors::deserialize(&peft).unwrap();
    let mut names = ours.names();
    names.sort();
    let mut peft_names = peft.names();
    peft_names.sort();
    assert_eq!(names, peft_names);
    for n in names {
        assert_eq!(
            ours.tensor(n).unwrap().data(),
            peft.tensor(n).unwrap().data(),
            "{n}"
        );
        assert_eq!(
            ours.tensor(n).unwrap().shape(),
            peft.tensor(n).unwrap().shape(),
            "{n}"
        );
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        (cfg["r"].as_u64(), cfg["lora_alpha"].as_f64()),
        (Some(4), Some(8.0))
    );
    let mut again = Gpt2::load(&fixture()).unwrap();
    again.load_adapter(&dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_merged_adapter_saves_as_a_transformers_checkpoint_with_the_same_logits() {
    let r = reference();
    let mut m = Gpt2::load(&fixture()).unwrap();
    m.load_adapter(&fixture().join("adapter")).unwrap();
    let ids = Indices::new(r.ids.clone(), &r.shape).unwrap();
    let store = Segmentation::store_all(2);
    let logits = |m: &Gpt2| {
        rewind::tape::no_grad(|| {
            m.logits(
                &ids,
                Some(&r.mask),
                &store,
                CheckpointMode::NonReentrant,
                &SavePolicy::RecomputeAll,
            )
        })
        .unwrap()
        .to_vec_f32()
    };
    let adapted = logits(&m);
    assert!(
        m.save_pretrained(&std::env::temp_dir()).is_err(),
        "LoRA must be merged first"
    );
    m.merge_lora().unwrap();
    let merged = logits(&m);
    let scale = max_abs(&adapted);
    let worst = worst_diff(&adapted, &merged);
    assert!(worst <= 1e-5 * scale, "merging moved the logits by {worst}");
    let dir = std::env::temp_dir().join(format!("rewind-merged-{}", std::process::id()));
    m.save_pretrained(&dir).unwrap();
    let back = Gpt2::load(&dir).unwrap();
    assert_eq!(
        logits(&back),
        merged,
        "a saved checkpoint reloads bit for bit"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn another_gpt2_config_with_the_pytorch_tanh_gelu_matches_too() {
    // 3 layers, n_embd 32, 8 heads of 4, gelu_pytorch_tanh, epsilon 1e-6, perturbed norms;
    // stored in f32, and in f16 (loaded as f32 master copies of the f16 values).
    for sub in ["other", "other-f16"] {
        other_config_matches(sub);
    }
}

fn other_config_matches(sub: &str) {
    let r = reference();
    let dir = fixture().join(sub);
    let m = Gpt2::load(&dir).unwrap();
    assert_eq!(
        (m.cfg.n_layer, m.cfg.n_head, m.cfg.layer_norm_epsilon),
        (3, 8, 1e-6)
    );
    let ids = Indices::new(r.ids.clone(), &r.shape).unwrap();
    let got = rewind::tape::no_grad(|| {
        m.logits(
            &ids,
            Some(&r.mask),
            &Segmentation::store_all(3),
            CheckpointMode::NonReentrant,
            &SavePolicy::RecomputeAll,
        )
    })
    .unwrap()
    .to_vec_f32();
    let bytes = std::fs::read(dir.join("logits.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let want: Vec<f32> = bytemuck::pod_collect_to_vec(st.tensor("logits").unwrap().data());
    let scale = max_abs(&want);
    let worst = worst_diff(&got, &want);
    assert!(
        worst <= 1e-5 * scale,
        "logits off by {worst} (largest {scale})"
    );
    eprintln!("{sub}: logits within {:.1e} of the largest", worst / scale);
}

#[test]
fn lora_on_every_projection_round_trips_through_peft_files_and_merges() {
    // PEFT's target_modules ["c_attn", "c_proj", "c_fc"]: c_proj names both the attention
    // output and the MLP down projection, as PEFT's suffix match does: 4 adapters a block.
    let r = reference();
    let ids = Indices::new(r.ids.clone(), &r.shape).unwrap();
    let store = Segmentation::store_all(2);
    let logits = |m: &Gpt2| {
        rewind::tape::no_grad(|| {
            m.logits(
                &ids,
                Some(&r.mask),
                &store,
                CheckpointMode::NonReentrant,
                &SavePolicy::RecomputeAll,
            )
        })
        .unwrap()
        .to_vec_f32()
    };
    rewind::rng::manual_seed(4);
    let mut m = Gpt2::load(&fixture()).unwrap();
    m.add_lora_to(4, 8.0, &["c_attn", "c_proj", "c_fc"])
        .unwrap();
    assert_eq!(m.lora_parameters().len(), 2 * 4 * 2);
    assert_eq!(m.lora_targets(), ["c_attn", "c_proj", "c_fc"]);
    // Give B values (it starts at zero) so the adapters change the output.
    for (n, p) in m.lora_parameters() {
        if n.ends_with("lora_B.weight") {
            let v: Vec<f32> = (0..p.numel())
                .map(|i| ((i % 7) as f32 - 3.0) * 1e-2)
                .collect();
            p.set_data(v).unwrap();
        }
    }
    let adapted = logits(&m);
    assert_ne!(adapted, logits(&Gpt2::load(&fixture()).unwrap()));
    let dir = std::env::temp_dir().join(format!("rewind-lora-all-{}", std::process::id()));
    m.save_adapter(&dir).unwrap();
    let mut back = Gpt2::load(&fixture()).unwrap();
    back.load_adapter(&dir).unwrap();
    assert_eq!(
        logits(&back),
        adapted,
        "the adapter files reload bit for bit"
    );
    m.merge_lora().unwrap();
    let merged = logits(&m);
    let scale = max_abs(&adapted);
    let worst = worst_diff(&adapted, &merged);
    assert!(worst <= 1e-5 * scale, "merging moved the logits by {worst}");
    assert!(
        Gpt2::load(&fixture())
            .unwrap()
            .add_lora_to(4, 8.0, &["wte"])
            .is_err()
    );
    std::fs::remove_dir_all(&dir).ok();
}
