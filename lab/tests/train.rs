//! `rewind train`: exact resume (weights, 8-bit optimizer state, scaler, generator, data
//! position), clear errors for corrupt saves, the reentrant + frozen-embedding failure with
//! its fix, and the flags' vocabulary.

#[path = "../../tests/common/mod.rs"]
mod common;

use rewind::checkpoint::CheckpointMode;
use rewind::error::NO_GRAD_FN_MSG;
use rewind_lab::train::{
    AmpChoice, FreezeChoice, OptimChoice, PaddingChoice, PlanChoice, PolicyChoice, TrainConfig,
    Trainer, suggest_fix,
};

/// A model small enough for tests, still with matrices ≥ 4096 elements (embedding and head:
/// 300 × 16) so 8-bit AdamW keeps blockwise state, and few enough samples that a run crosses
/// an epoch boundary.
fn tiny() -> TrainConfig {
    let mut c = TrainConfig {
        d: 16,
        heads: 2,
        layers: 2,
        max_len: 32,
        vocab: 300,
        batch_size: 4,
        lr: 1e-2,
        ..TrainConfig::default()
    };
    c.corpus.samples = 40; // 36 training samples: 9 micro-batches per epoch
    c
}

fn weight_bits(t: &Trainer) -> Vec<(String, Vec<u32>)> {
    t.model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, common::bits(&p)))
        .collect()
}

/// Every tensor (name, bytes) and header entry of a save, sorted.
type Contents = (Vec<(String, Vec<u8>)>, Vec<(String, String)>);

fn save_contents(bytes: &[u8]) -> Contents {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    tensors.sort();
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut meta: Vec<_> = header.metadata().clone().unwrap().into_iter().collect();
    meta.sort();
    (tensors, meta)
}

fn steps(t: &mut Trainer, n: usize) {
    for _ in 0..n {
        t.step().unwrap();
    }
}

#[test]
fn selective_policies_on_the_transformer_train_bit_identically_to_storing_everything() {
    // Dropout-free transformer with padded, masked batches, AMP off, fp16 and bf16: the named
    // tensors (save_only_these_names) and save-matmuls keep less and change no bit of the
    // weights.
    for amp in [AmpChoice::Off, AmpChoice::Fp16, AmpChoice::Bf16] {
        let base = TrainConfig {
            amp,
            padding: PaddingChoice::Dynamic,
            ..tiny()
        };
        let mut stored = Trainer::new(base.clone()).unwrap();
        steps(&mut stored, 3);
        let store_peak = stored.step().unwrap().peak_saved_bytes;
        let mut peaks = Vec::new();
        for policy in [
            PolicyChoice::SaveMatmuls,
            PolicyChoice::SaveNames(vec!["attn_probs".into(), "mlp_hidden".into()]),
            PolicyChoice::RecomputeAll,
        ] {
            let cfg = TrainConfig {
                plan: PlanChoice::Every,
                policy: policy.clone(),
                ..base.clone()
            };
            let mut t = Trainer::new(cfg).unwrap();
            steps(&mut t, 3);
            peaks.push(t.step().unwrap().peak_saved_bytes);
            assert!(
                weight_bits(&t) == weight_bits(&stored),
                "{policy} (amp {amp:?}): weights differ from storing everything"
            );
        }
        // Each keeps less than storing and more than recomputing everything.
        let (dots, names, all) = (peaks[0], peaks[1], peaks[2]);
        assert!(
            all < names && names < store_peak,
            "{peaks:?} vs {store_peak}"
        );
        assert!(all < dots && dots < store_peak, "{peaks:?} vs {store_peak}");
    }
}

#[test]
fn resume_after_save_is_bit_identical_to_an_uninterrupted_run() {
    for optimizer in [OptimChoice::AdamW8bit, OptimChoice::AdamW, OptimChoice::Sgd] {
        let cfg = TrainConfig {
            optimizer,
            amp: AmpChoice::Fp16,
            accumulation: 2,
            padding: PaddingChoice::Grouped,
            plan: PlanChoice::Every,
            ..tiny()
        };
        // 2N = 8 steps of 2 micro-batches: 16 micro-batches, across the 9-batch epoch.
        let mut straight = Trainer::new(cfg.clone()).unwrap();
        steps(&mut straight, 8);

        let mut first = Trainer::new(cfg.clone()).unwrap();
        steps(&mut first, 4);
        let bytes = first.save_bytes().unwrap();
        drop(first);
        rewind::rng::manual_seed(999); // whatever the generator did meanwhile
        let mut resumed = Trainer::resume_from_bytes(cfg.clone(), &bytes).unwrap();
        assert_eq!(resumed.steps_done(), 4);
        steps(&mut resumed, 4);

        assert_eq!(resumed.position(), straight.position(), "{optimizer}");
        assert_eq!(resumed.loss_scale(), straight.loss_scale(), "{optimizer}");
        assert!(
            weight_bits(&resumed) == weight_bits(&straight),
            "{optimizer}: weights differ"
        );
        assert_eq!(
            resumed.optimizer_state_bytes(),
            straight.optimizer_state_bytes()
        );
        // The two runs' saves hold the same tensors and header (header order aside).
        let (a, b) = (
            resumed.save_bytes().unwrap(),
            straight.save_bytes().unwrap(),
        );
        assert!(
            save_contents(&a) == save_contents(&b),
            "{optimizer}: saves differ"
        );
    }
}

#[test]
fn corrupt_truncated_or_mismatched_saves_are_clear_errors() {
    let cfg = TrainConfig {
        optimizer: OptimChoice::AdamW8bit,
        ..tiny()
    };
    let mut t = Trainer::new(cfg.clone()).unwrap();
    steps(&mut t, 1);
    let good = t.save_bytes().unwrap();
    let msg = |bytes: &[u8], cfg: &TrainConfig| {
        Trainer::resume_from_bytes(cfg.clone(), bytes)
            .unwrap_err()
            .to_string()
    };
    for cut in [0, 7, 100, good.len() / 2, good.len() - 1] {
        let m = msg(&good[..cut], &cfg);
        assert!(m.contains("corrupt or truncated"), "cut at {cut}: {m}");
    }
    let mut flipped = good.clone();
    let last = flipped.len() - 3; // inside the last tensor's data
    flipped[last] ^= 0x40;
    assert!(msg(&flipped, &cfg).contains("checksum mismatch"));
    let other = TrainConfig {
        lr: 0.5,
        ..cfg.clone()
    };
    let m = msg(&good, &other);
    assert!(
        m.contains("different settings") && m.contains("lr: saved 0.01, now 0.5"),
        "{m}"
    );
    let weights_only = rewind::weights::to_bytes(&t.model.named_parameters()).unwrap();
    assert!(msg(&weights_only, &cfg).contains("not a rewind training save"));
    // A missing file is an I/O error that keeps the OS error as its source.
    let missing =
        Trainer::resume(cfg, std::path::Path::new("/nonexistent/run.safetensors")).unwrap_err();
    assert!(
        matches!(&missing, rewind::Error::Io { op: "resume", .. }),
        "{missing:?}"
    );
    assert!(
        missing
            .to_string()
            .starts_with("resume: /nonexistent/run.safetensors: ")
    );
    assert!(std::error::Error::source(&missing).is_some());
}

#[test]
fn reentrant_checkpoint_with_frozen_embeddings_fails_like_pytorch_and_the_flags_fix_it() {
    // LoRA freezes embeddings and base weights: under reentrant checkpointing no block input
    // requires grad, every segment is cut, and the loss has no grad_fn.
    let failing = TrainConfig {
        lora_rank: 4,
        plan: PlanChoice::Every,
        mode: CheckpointMode::Reentrant,
        ..tiny()
    };
    let mut t = Trainer::new(failing.clone()).unwrap();
    let err = t.step().unwrap_err();
    assert_eq!(err.to_string(), NO_GRAD_FN_MSG);
    let explained = format!("{err:#}");
    assert!(
        explained.contains("reentrant segment `model.layers.0`"),
        "{explained}"
    );
    let fix = suggest_fix(&failing, &err).unwrap();
    assert!(fix.contains("--enable-input-require-grads") && fix.contains("non-reentrant"));
    assert_eq!(
        rewind::warnings::take().first().map(String::as_str),
        Some("None of the inputs have requires_grad=True. Gradients will be None")
    );
    rewind::tape::clear();

    for fixed in [
        TrainConfig {
            enable_input_require_grads: true,
            ..failing.clone()
        },
        TrainConfig {
            mode: CheckpointMode::NonReentrant,
            ..failing.clone()
        },
    ] {
        let mut t = Trainer::new(fixed).unwrap();
        let before = weight_bits(&t);
        steps(&mut t, 2);
        let after = weight_bits(&t);
        let changed: Vec<&str> = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0.as_str())
            .collect();
        // Exactly the adapters train (lora_B starts at zero, so lora_A's gradient is zero
        // until the first step has moved lora_B: two steps move both).
        assert_eq!(changed.len(), 2 * 2 * 2, "{changed:?}");
        assert!(changed.iter().all(|n| n.contains("lora_")));
    }
}

#[test]
fn frozen_embeddings_without_lora_under_reentrant_checkpointing_are_caught_not_silent() {
    // The head still trains, so the loss requires grad and PyTorch would only warn while
    // every block stays untrained; the trainer stops with the diagnosis instead.
    let cfg = TrainConfig {
        freeze: FreezeChoice {
            embeddings: true,
            lower_blocks: 0,
        },
        plan: PlanChoice::Every,
        mode: CheckpointMode::Reentrant,
        ..tiny()
    };
    let err = Trainer::new(cfg.clone()).unwrap().step().unwrap_err();
    let m = err.to_string();
    assert!(
        m.contains("would get no gradient") && m.contains("model.layers.0"),
        "{m}"
    );
    // Counts name tensors and scalar parameters apart, and the list ends with what it left
    // out: 2 blocks × 16 tensors cut (ln1, q, k, v, o, ln2, fc1, fc2: weight and bias each)
    // of 35 (and the final norm's two and the bias-free head).
    assert!(m.contains("32 of the 35 trainable tensors ("), "{m}");
    assert!(
        m.contains("\n- and 29 more tensors cut the same way"),
        "{m}"
    );
    assert!(suggest_fix(&cfg, &err).is_some());
    rewind::warnings::take();
    rewind::tape::clear();
}

#[test]
fn freezing_and_lora_shrink_what_trains() {
    let full = Trainer::new(tiny()).unwrap();
    let frozen = Trainer::new(TrainConfig {
        freeze: "embeddings+lower:1".parse().unwrap(),
        ..tiny()
    })
    .unwrap();
    let lora = Trainer::new(TrainConfig {
        lora_rank: 2,
        ..tiny()
    })
    .unwrap();
    let per_block = 4 * (16 * 16 + 16) + (16 * 64 + 64) + (64 * 16 + 16) + 4 * 16;
    let embeddings = (300 + 32) * 16;
    assert_eq!(
        full.trainable_params() - frozen.trainable_params(),
        embeddings + per_block
    );
    // r × (d_in + d_out) per adapter, on q and v of each block.
    assert_eq!(lora.trainable_params(), 2 * 2 * 2 * (16 + 16));
}

#[test]
fn a_budget_plan_fits_its_budget_on_the_longest_batch() {
    let cfg = TrainConfig {
        layers: 4,
        plan: PlanChoice::Budget(200_000),
        padding: PaddingChoice::Fixed,
        ..tiny()
    };
    let mut t = Trainer::new(cfg).unwrap();
    assert!(
        t.segmentation().recompute_count() > 0,
        "{}",
        t.segmentation().describe()
    );
    steps(&mut t, 1);
    let too_small = Trainer::new(TrainConfig {
        plan: PlanChoice::Budget(10),
        ..tiny()
    });
    assert!(
        too_small
            .unwrap_err()
            .to_string()
            .contains("below the least")
    );
}

#[test]
fn flags_parse_from_their_cli_words_and_reject_others() {
    assert_eq!("every".parse::<PlanChoice>().unwrap(), PlanChoice::Every);
    assert_eq!(
        "budget:4MiB".parse::<PlanChoice>().unwrap(),
        PlanChoice::Budget(4 << 20)
    );
    assert_eq!(
        "adamw8bit".parse::<OptimChoice>().unwrap(),
        OptimChoice::AdamW8bit
    );
    assert_eq!(
        "grouped".parse::<PaddingChoice>().unwrap(),
        PaddingChoice::Grouped
    );
    let f: FreezeChoice = "embeddings+lower:3".parse().unwrap();
    assert_eq!((f.embeddings, f.lower_blocks), (true, 3));
    assert_eq!(f.to_string(), "embeddings+lower:3");
    assert_eq!(
        rewind_lab::train::config::parse_mode("reentrant").unwrap(),
        CheckpointMode::Reentrant
    );
    for bad in ["budget:lots", "everything"] {
        assert!(bad.parse::<PlanChoice>().is_err());
    }
    assert!(
        "adam"
            .parse::<OptimChoice>()
            .unwrap_err()
            .to_string()
            .contains("adamw8bit")
    );
    assert!("lower:x".parse::<FreezeChoice>().is_err());
    let bad = TrainConfig { heads: 3, ..tiny() };
    assert!(
        Trainer::new(bad)
            .unwrap_err()
            .to_string()
            .contains("3 heads")
    );
}

#[test]
fn a_users_text_file_trains_one_sample_per_paragraph_and_bad_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("rewind-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notes.txt");
    let paragraphs: Vec<String> = (0..12)
        .map(|i| format!("paragraph {i} says hello\nand continues on line two, item {i}."))
        .collect();
    std::fs::write(&path, paragraphs.join("\n\n\n")).unwrap();
    let cfg = TrainConfig {
        text_file: Some(path.clone()),
        ..tiny()
    };
    let mut t = Trainer::new(cfg).unwrap();
    assert_eq!(t.data.train.len() + t.data.eval.len(), 12);
    let decoded = t.data.tokenizer.decode(&t.data.train[0].ids);
    assert!(paragraphs[0].starts_with(&decoded), "{decoded:?}");
    steps(&mut t, 1);

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    for (file, msg) in [
        (empty, "at least 2 are needed"),
        (dir.join("missing.txt"), "missing.txt: No such file"),
    ] {
        let cfg = TrainConfig {
            text_file: Some(file),
            ..tiny()
        };
        let err = Trainer::new(cfg).unwrap_err().to_string();
        assert!(err.contains(msg), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn resume_refuses_a_text_file_whose_contents_changed_since_the_save() {
    let dir = std::env::temp_dir().join(format!("rewind-text-hash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notes.txt");
    let text = |word: &str| -> String {
        (0..12)
            .map(|i| format!("paragraph {i} says {word}\nand goes on, item {i}."))
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    std::fs::write(&path, text("hello")).unwrap();
    let cfg = TrainConfig {
        text_file: Some(path.clone()),
        ..tiny()
    };
    let mut t = Trainer::new(cfg.clone()).unwrap();
    steps(&mut t, 1);
    let saved = t.save_bytes().unwrap();
    // The same contents resume.
    Trainer::resume_from_bytes(cfg.clone(), &saved).unwrap();
    // Other contents at the same path (a different vocabulary follows) are named as such,
    // not as a shape mismatch further down.
    std::fs::write(&path, text("goodbye, with quite different words")).unwrap();
    let Err(err) = Trainer::resume_from_bytes(cfg, &saved) else {
        panic!("a changed text file is refused");
    };
    let err = err.to_string();
    assert!(err.contains("notes.txt changed since the save"), "{err}");
    assert!(err.contains("content hash saved "), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The GPT-2 fixture that transformers wrote (2 layers, n_embd 64, 4 heads, 500 tokens).
fn gpt2_fixture() -> TrainConfig {
    let mut c = TrainConfig {
        model: Some(
            rewind_lab::models::lm::Checkpoint::open(
                &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../tests/fixtures/gpt2-tiny"),
            )
            .unwrap(),
        ),
        d: 64,
        heads: 4,
        layers: 2,
        vocab: 500,
        max_len: 32,
        batch_size: 4,
        lr: 1e-3,
        ..TrainConfig::default()
    };
    c.corpus.samples = 40;
    c
}

#[test]
fn a_transformers_gpt2_fine_tunes_with_lora_checkpointing_and_resumes_bit_identically() {
    for (lora_rank, plan, optimizer, amp) in [
        (0, PlanChoice::None, OptimChoice::AdamW, AmpChoice::Off),
        (4, PlanChoice::Every, OptimChoice::AdamW8bit, AmpChoice::Off),
        (0, PlanChoice::Every, OptimChoice::AdamW, AmpChoice::Bf16),
    ] {
        let cfg = TrainConfig {
            lora_rank,
            plan,
            optimizer,
            amp,
            padding: PaddingChoice::Dynamic,
            ..gpt2_fixture()
        };
        let mut straight = Trainer::new(cfg.clone()).unwrap();
        // LoRA on c_attn: 2 blocks × (A, B); otherwise every parameter.
        assert_eq!(
            straight.trainable_tensors(),
            if lora_rank > 0 { 4 } else { 28 }
        );
        let first = straight.step().unwrap().loss;
        steps(&mut straight, 3);
        let mut a = Trainer::new(cfg.clone()).unwrap();
        steps(&mut a, 2);
        let bytes = a.save_bytes().unwrap();
        let mut b = Trainer::resume_from_bytes(cfg, &bytes).unwrap();
        steps(&mut b, 2);
        assert!(
            weight_bits(&b) == weight_bits(&straight),
            "lora {lora_rank} {amp:?}: resume differs"
        );
        let last = straight.step().unwrap().loss;
        assert!(
            last < first,
            "lora {lora_rank} {amp:?}: loss {first} → {last} did not fall"
        );
    }
}

#[test]
fn reentrant_checkpointing_of_a_lora_gpt2_fails_like_pytorch_and_the_flag_fixes_it() {
    let cfg = TrainConfig {
        lora_rank: 4,
        plan: PlanChoice::Every,
        mode: CheckpointMode::Reentrant,
        ..gpt2_fixture()
    };
    let err = Trainer::new(cfg.clone()).unwrap().step().unwrap_err();
    assert_eq!(err.to_string(), NO_GRAD_FN_MSG);
    assert!(suggest_fix(&cfg, &err).is_some());
    rewind::warnings::take();
    rewind::tape::clear();
    let fixed = TrainConfig {
        enable_input_require_grads: true,
        ..cfg
    };
    Trainer::new(fixed).unwrap().step().unwrap();
}

#[test]
fn transformers_activation_checkpointing_defaults_train_lora_without_error_and_change_no_bit() {
    // transformers 5.24's activation_checkpointing_enable(every_n_layers=n): every n-th block,
    // non-reentrant, enable_input_require_grads() on — the report's setup no longer fails.
    let base = TrainConfig {
        lora_rank: 4,
        ..gpt2_fixture()
    };
    let mut stored = Trainer::new(base.clone()).unwrap();
    steps(&mut stored, 2);
    for n in [1, 2] {
        let cfg = TrainConfig {
            plan: PlanChoice::EveryNth(n),
            mode: CheckpointMode::NonReentrant,
            enable_input_require_grads: true,
            ..base.clone()
        };
        let mut t = Trainer::new(cfg).unwrap();
        let segs: Vec<bool> = t
            .segmentation()
            .segments
            .iter()
            .map(|s| s.checkpointed)
            .collect();
        assert_eq!(
            segs,
            if n == 1 {
                vec![true, true]
            } else {
                vec![true, false]
            }
        );
        steps(&mut t, 2);
        assert!(
            weight_bits(&t) == weight_bits(&stored),
            "every_n_layers={n}"
        );
    }
}

#[test]
fn the_same_state_saves_to_the_same_bytes() {
    // The safetensors writer orders header metadata by a hash map's random order; saves sort
    // it, so two saves of one state (or of one run in two processes) are byte-identical.
    let mut t = Trainer::new(tiny()).unwrap();
    steps(&mut t, 1);
    let (a, b) = (t.save_bytes().unwrap(), t.save_bytes().unwrap());
    assert!(a == b, "two saves of one state differ");
}

#[test]
fn max_grad_norm_clips_the_step_to_that_norm() {
    // SGD's first step with momentum is w ← w − lr·g (the buffer starts as g), so the whole
    // update's norm is lr × the clipped gradient's: lr · max_norm · ‖g‖ / (‖g‖ + 1e-6).
    let max = 1e-3;
    let cfg = TrainConfig {
        optimizer: OptimChoice::Sgd,
        max_grad_norm: Some(max),
        ..tiny()
    };
    let lr = cfg.lr;
    let mut t = Trainer::new(cfg).unwrap();
    let before: Vec<Vec<f32>> = t
        .model
        .parameters()
        .iter()
        .map(|p| p.to_vec_f32())
        .collect();
    t.step().unwrap();
    let moved: f64 = t
        .model
        .parameters()
        .iter()
        .zip(&before)
        .flat_map(|(p, b)| {
            p.to_vec_f32()
                .into_iter()
                .zip(b.clone())
                .map(|(x, y)| (f64::from(x) - f64::from(y)).powi(2))
        })
        .sum::<f64>()
        .sqrt();
    // The gradient's norm is far above 1e-3, so the clipped norm is max_norm to ~1e-6.
    assert!(
        (moved / (lr * max) - 1.0).abs() < 1e-3,
        "update norm {moved}, expected {}",
        lr * max
    );
}
