//! `rewind repro --model DIR`: the failure on the user's own checkpoint, as their fine-tuning
//! code met it — LoRA on PEFT's default targets (every base weight frozen, the embeddings
//! included) and a reentrant checkpoint around each layer, which is what ChatGLM3's
//! `GLMTransformer` did by default in December 2023 — then THUDM's fix
//! (`enable_input_require_grads`), the non-reentrant fix, and storing everything, whose LoRA
//! gradients both fixes must equal bit for bit. A checkpoint too big for the machine is told on
//! a tiny random model of its architecture made from its `config.json`.

use crate::bench::median_secs;
use crate::data::{Batch, Padding, batches};
use crate::fmt_mib;
use crate::models::CausalLm;
use crate::models::lm::Checkpoint;
use crate::repro::{FixCost, ReproReport};
use rewind::checkpoint::{
    CheckpointMode, NO_INPUT_REQUIRES_GRAD_WARNING, Plan, SavePolicy, Segmentation, plan,
};
use rewind::error::{Error, NO_GRAD_FN_MSG, Result};
use rewind::{rng, tape, warnings};

/// THUDM's finetune_demo LoRA: rank 8, α 32, dropout 0.1.
pub const DEMO_RANK: usize = 8;
/// THUDM's finetune_demo LoRA α.
pub const DEMO_ALPHA: f64 = 32.0;
/// THUDM's finetune_demo LoRA dropout: its masks must replay exactly under recomputation.
pub const DEMO_DROPOUT: f64 = 0.1;

/// What `repro --model` is asked.
#[derive(Debug, Clone)]
pub struct ModelStoryOptions {
    /// The user's checkpoint.
    pub ckpt: Checkpoint,
    /// Tell it on a tiny random model of the checkpoint's architecture instead of its weights,
    /// and why.
    pub tiny: Option<String>,
    /// Timed steps per fix (median reported).
    pub reps: usize,
}

/// Two samples of seeded token ids (48 and 64 tokens, or fewer where the model has fewer
/// positions), so the batch is padded.
fn story_batch(m: &dyn CausalLm) -> Result<Batch> {
    let t = m.max_positions().min(64);
    let v = m.vocab_size() as u64;
    let mut state = 0x5eed_u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % v) as u32
    };
    let samples: Vec<Vec<u32>> = [t * 3 / 4, t]
        .iter()
        .map(|&n| (0..n.max(2)).map(|_| next()).collect())
        .collect();
    batches(&samples, 2, Padding::Dynamic, 0).map(|mut b| b.remove(0))
}

type Bits = Vec<(String, Option<Vec<u32>>)>;

/// One forward + backward under `seg`/`mode` (THUDM's fix on when `hook`): the trainable
/// parameters' gradient bits and the peak saved bytes.
fn step(
    m: &dyn CausalLm,
    b: &Batch,
    seg: &Segmentation,
    mode: CheckpointMode,
    hook: bool,
) -> Result<(Bits, usize)> {
    let trainable: Vec<_> = m
        .named_parameters()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .collect();
    for (_, p) in &trainable {
        p.zero_grad();
    }
    let emb = m.token_embedding();
    let handle = hook.then(|| emb.enable_input_require_grads());
    rng::manual_seed(1234);
    tape::reset_peak_saved_bytes();
    let result = m
        .loss(b, seg, mode, &SavePolicy::RecomputeAll)
        .and_then(|l| l.backward());
    if let Some(h) = handle {
        emb.hooks.remove(h);
    }
    result?;
    let bits = trainable
        .into_iter()
        .map(|(n, p)| {
            let g = p
                .grad()
                .map(|g| g.to_vec_f32().iter().map(|v| v.to_bits()).collect());
            (n, g)
        })
        .collect();
    Ok((bits, tape::peak_saved_bytes()))
}

/// Tells the story of `o.ckpt` through `out`, checking each claim.
pub fn run_model_story(o: &ModelStoryOptions, out: &mut dyn FnMut(&str)) -> Result<ReproReport> {
    let mut r = ReproReport::default();
    let fam = o.ckpt.family;
    let targets = fam.default_lora_targets;
    let s = o.ckpt.sizes;
    out(&format!(
        "Checkpoint: {} (model_type {}): {} layers, hidden {}, {} heads, {} ids.",
        o.ckpt.dir.display(),
        fam.model_type,
        s.layers,
        s.d,
        s.heads,
        s.vocab
    ));
    rng::manual_seed(42);
    let m = match &o.tiny {
        Some(why) => {
            out(&format!(
                "Told on a tiny random model of the same architecture made from its config.json (2 layers, hidden 64, 4 heads, 512 ids): {why}."
            ));
            (fam.tiny)(&o.ckpt.config, DEMO_RANK, DEMO_ALPHA, targets)?
        }
        None => o.ckpt.load(DEMO_RANK, DEMO_ALPHA, targets)?,
    };
    let mut m = m;
    m.set_lora_dropout(DEMO_DROPOUT)?;
    let n = m.layers();
    let trainable = m
        .named_parameters()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .count();
    let b = story_batch(m.as_ref())?;
    out(&format!(
        "LoRA r {DEMO_RANK}, alpha {DEMO_ALPHA}, dropout {DEMO_DROPOUT} on {} (PEFT's default for {}; THUDM's demo settings): every base weight frozen, the token embeddings included; {trainable} trainable tensors. Batch: 2 samples of {} and {} tokens, padded.",
        targets.join(", "),
        fam.model_type,
        b.lengths[0],
        b.lengths[1]
    ));

    out(&format!(
        "\n1. The failure: a reentrant checkpoint around each of the {n} layers. ChatGLM3's GLMTransformer (December 2023) calls torch.utils.checkpoint.checkpoint(layer, hidden_states, attention_mask, rotary_pos_emb, kv_caches[index], use_cache) without use_reentrant: PyTorch's default, reentrant (PyTorch first warns that use_reentrant should be passed explicitly)."
    ));
    let every = plan::segment(Plan::EveryBlock, n, None)?;
    warnings::take();
    let result = m
        .loss(
            &b,
            &every,
            CheckpointMode::Reentrant,
            &SavePolicy::RecomputeAll,
        )
        .and_then(|l| l.backward());
    let warned = warnings::take();
    for w in &warned {
        out(&format!("  warning: {w}"));
    }
    r.check(
        out,
        format!("PyTorch's warning, once per checkpointed layer ({n})"),
        warned == vec![NO_INPUT_REQUIRES_GRAD_WARNING.to_string(); n],
    );
    match result {
        Err(e @ Error::NoGradFn { .. }) => {
            out(&format!("  loss.backward() → RuntimeError: {e}"));
            r.check(
                out,
                "backward fails with PyTorch's exact message",
                e.to_string() == NO_GRAD_FN_MSG,
            );
            let why = e.explain().unwrap_or("").to_string();
            for line in why.lines() {
                out(&format!("  why: {line}"));
            }
            r.check(
                out,
                "the diagnosis names every checkpointed layer",
                (0..n).all(|i| {
                    let prefix = m.block_prefix(i);
                    why.contains(&format!(
                        "reentrant segment `{}`",
                        prefix.trim_end_matches('.')
                    ))
                }),
            );
        }
        other => r.check(
            out,
            format!("backward fails with PyTorch's exact message (got {other:?})"),
            false,
        ),
    }
    tape::clear();

    out(
        "\n2. The fixes, whose LoRA gradients must equal storing everything bit for bit (the recomputation draws the same dropout masks)",
    );
    let store = Segmentation::store_all(n);
    let fixes: [(&'static str, &Segmentation, CheckpointMode, bool); 3] = [
        (
            "a. THUDM's fix: enable_input_require_grads()",
            &every,
            CheckpointMode::Reentrant,
            true,
        ),
        (
            "b. use_reentrant=False",
            &every,
            CheckpointMode::NonReentrant,
            false,
        ),
        (
            "c. no checkpointing (the usual advice)",
            &store,
            CheckpointMode::NonReentrant,
            false,
        ),
    ];
    let mut all_bits = Vec::new();
    for (name, seg, mode, hook) in fixes {
        let (bits, peak) = step(m.as_ref(), &b, seg, mode, hook)?;
        let mut err = Ok(());
        let secs = median_secs(o.reps, || {
            if let Err(e) = step(m.as_ref(), &b, seg, mode, hook) {
                err = Err(e);
            }
        });
        err?;
        warnings::take();
        out(&format!(
            "  {name:<46} peak saved activations {:>10}   step {:>8.1} ms",
            fmt_mib(peak),
            secs * 1e3
        ));
        r.check(
            out,
            format!("{name}: every LoRA tensor gets a gradient"),
            bits.len() == trainable && bits.iter().all(|(_, g)| g.is_some()),
        );
        r.fixes.push(FixCost {
            name,
            peak_saved: peak,
            step_secs: secs,
        });
        all_bits.push(bits);
    }
    r.check(
        out,
        "a's gradients equal c's bit for bit",
        all_bits[0] == all_bits[2],
    );
    r.check(
        out,
        "b's gradients equal c's bit for bit",
        all_bits[1] == all_bits[2],
    );
    r.check(
        out,
        "checkpointing keeps fewer activations than storing everything",
        r.fixes[0].peak_saved < r.fixes[2].peak_saved
            && r.fixes[1].peak_saved < r.fixes[2].peak_saved,
    );
    if matches!(fam.model_type, "chatglm" | "glm") {
        ptuning_story(o, &b, &mut r, out)?;
    }
    Ok(r)
}

/// THUDM's other method, P-tuning v2, under the same checkpoint: its prefix keys and values
/// reach each layer inside the `kv_caches[index]` tuple, which a reentrant checkpoint does not
/// count — so THUDM's fix does not save it (what PyTorch 2.15 does, recorded by
/// `scripts/ptuning_fixture.py`).
fn ptuning_story(
    o: &ModelStoryOptions,
    b: &Batch,
    r: &mut ReproReport,
    out: &mut dyn FnMut(&str),
) -> Result<()> {
    const PREFIX: usize = 8;
    rng::manual_seed(43);
    let mut m = match &o.tiny {
        Some(_) => (o.ckpt.family.tiny)(&o.ckpt.config, 0, 0.0, &[])?,
        None => o.ckpt.load(0, 0.0, &[])?,
    };
    m.add_prefix(PREFIX, false)?;
    let n = m.layers();
    out(&format!(
        "\n3. P-tuning v2 (pre_seq_len {PREFIX}, the prefix dropout on): the prefix keys and values reach each layer inside the kv_caches[index] tuple, not as a tensor argument."
    ));
    let every = plan::segment(Plan::EveryBlock, n, None)?;
    warnings::take();
    let plain = step(m.as_ref(), b, &every, CheckpointMode::Reentrant, false);
    let warned = warnings::take();
    tape::clear();
    out(&format!(
        "  reentrant: {} warnings, then {}",
        warned.len(),
        plain
            .as_ref()
            .err()
            .map_or("no error".into(), |e| e.to_string())
    ));
    r.check(
        out,
        "without a fix: PyTorch's warning per layer and its error",
        warned == vec![NO_INPUT_REQUIRES_GRAD_WARNING.to_string(); n]
            && matches!(&plain, Err(e) if e.to_string() == NO_GRAD_FN_MSG),
    );
    let fixed = step(m.as_ref(), b, &every, CheckpointMode::Reentrant, true);
    tape::clear();
    out(&format!(
        "  reentrant + enable_input_require_grads(): {}",
        fixed
            .as_ref()
            .err()
            .map_or("no error".into(), |e| e.to_string())
    ));
    r.check(
        out,
        "THUDM's fix is no fix here: the second layer's backward meets the prefix graph the first one freed, as in PyTorch",
        matches!(&fixed, Err(e) if e.to_string() == rewind::error::GRAPH_FREED_MSG),
    );
    // The prefix dropout draws from the generator: each run starts from the same state.
    let (stored, _) = step(
        m.as_ref(),
        b,
        &Segmentation::store_all(n),
        CheckpointMode::NonReentrant,
        false,
    )?;
    let (checkpointed, _) = step(m.as_ref(), b, &every, CheckpointMode::NonReentrant, false)?;
    r.check(
        out,
        "use_reentrant=False trains the prefix: its gradients equal storing everything bit for bit",
        checkpointed == stored && stored.iter().all(|(_, g)| g.is_some()),
    );
    Ok(())
}
