//! One training run on the synthetic corpus: builds the tokenizer, model, optimizer and
//! scaler from a [`TrainConfig`], then takes optimizer steps of `accumulation` micro-batches,
//! reporting loss, throughput and memory per step.

use super::config::{AmpChoice, OptimChoice, PaddingChoice, PlanChoice, TrainConfig};
use super::data::Data;
use crate::data::{Batch, Padding, batches};
use crate::dist::Reducer;
use crate::models::{CausalLm, Transformer, TransformerConfig};
use rewind::amp::GradScaler;
use rewind::checkpoint::{CheckpointMode, Plan, Segmentation, diagnose, plan};
use rewind::error::{Error, Result};
use rewind::nn::{HookHandle, freeze};
use rewind::ops::autocast::autocast;
use rewind::optim::{
    AdamW, AdamW8bit, MIN_8BIT_SIZE, Optimizer, ParamGroup, Sgd, clip_grad_norm_,
    clip_grad_norm_agreeing_,
};
use rewind::{BackwardOptions, GradReady, Tensor, tape};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

/// Where the data stream stands: epoch and micro-batch within it (saved for exact resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataPosition {
    /// Completed epochs.
    pub epoch: u64,
    /// Next micro-batch of this epoch.
    pub batch: usize,
}

/// Draws reserved for each micro-batch of a step (2⁴⁰: a trillion dropout draws).
const MICRO_BATCH_DRAWS: u64 = 1 << 40;

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// Steps taken so far, this one included.
    pub step: u64,
    /// Mean loss of its micro-batches.
    pub loss: f64,
    /// Non-padding tokens processed.
    pub real_tokens: usize,
    /// Token slots processed, padding included.
    pub slots: usize,
    /// Wall time of the step.
    pub seconds: f64,
    /// Peak bytes the tape held saved during the step.
    pub peak_saved_bytes: usize,
    /// Bytes of gradients held when the optimizer ran.
    pub grad_bytes: usize,
    /// False when the scaler skipped the update (non-finite gradients).
    pub updated: bool,
}

/// Earlier micro-batches' gradients waiting for this backward's: each parameter's added once
/// its new gradient is final (`earlier + new`, as PyTorch's `AccumulateGrad` adds).
#[derive(Default)]
struct Merge {
    pending: Vec<(Tensor, Option<Tensor>)>,
    error: Option<Error>,
}

impl Merge {
    fn add(p: &Tensor, earlier: Tensor) -> Result<()> {
        match p.grad() {
            Some(g) => p.set_grad(Some(earlier.add(&g)?)),
            None => p.set_grad(Some(earlier)),
        }
        Ok(())
    }

    fn ready(&mut self, leaf: &Tensor) {
        let Some((p, e)) = self.pending.iter_mut().find(|(p, _)| p.same_handle(leaf)) else {
            return;
        };
        if let Some(e) = e.take()
            && let Err(err) = Merge::add(p, e)
        {
            self.error.get_or_insert(err);
        }
    }

    /// After the backward: the parameters it did not reach keep their earlier gradient.
    fn finish(&mut self) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        for (p, e) in std::mem::take(&mut self.pending) {
            if let Some(e) = e {
                Merge::add(&p, e)?;
            }
        }
        Ok(())
    }
}

/// A training run in progress.
pub struct Trainer {
    /// Its configuration.
    pub cfg: TrainConfig,
    /// Its data.
    pub data: Data,
    /// The model.
    pub model: Box<dyn CausalLm>,
    pub(super) opt: Box<dyn Optimizer>,
    /// The trainable parameters (under ZeRO-1 `opt` trains this rank's pieces of them).
    pub(super) params: Vec<Tensor>,
    pub(super) scaler: Option<GradScaler>,
    pub(super) seg: Segmentation,
    pub(super) position: DataPosition,
    pub(super) steps_done: u64,
    epoch_batches: Vec<Batch>,
    checked_reach: bool,
    _input_grads: Option<HookHandle>,
    /// Data parallelism: this rank's end of the gradient buckets.
    pub(super) dist: Option<Reducer>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("cfg", &self.cfg)
            .field("steps_done", &self.steps_done)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// Freezes what `cfg.freeze` names (LoRA has already frozen the base weights).
fn apply_freezing(model: &dyn CausalLm, cfg: &TrainConfig) -> Result<()> {
    let named = model.named_parameters();
    if cfg.freeze.embeddings {
        for prefix in model.embedding_prefixes() {
            freeze(&named, prefix)?;
        }
    }
    for i in 0..cfg.freeze.lower_blocks {
        freeze(&named, &model.block_prefix(i))?;
    }
    Ok(())
}

/// The model `cfg` describes: the lab's transformer, or the checkpoint `cfg.model`
/// (its family by `config.json`'s `model_type`; LoRA on `cfg.lora_targets` as PEFT puts it,
/// everything else frozen, with `lora_rank > 0`).
fn build_model(cfg: &TrainConfig, data: &Data) -> Result<Box<dyn CausalLm>> {
    let Some(ckpt) = &cfg.model else {
        return Ok(Box::new(Transformer::new(TransformerConfig {
            vocab: data.tokenizer.vocab_size(),
            max_len: cfg.max_len,
            d: cfg.d,
            heads: cfg.heads,
            layers: cfg.layers,
            lora_rank: cfg.lora_rank,
        })?));
    };
    let targets: Vec<&str> = cfg.lora_targets.iter().map(String::as_str).collect();
    let alpha = cfg.lora_alpha.unwrap_or(2.0 * cfg.lora_rank as f64);
    let mut m = ckpt.load(cfg.lora_rank, alpha, &targets)?;
    if cfg.lora_rank > 0 && cfg.lora_dropout > 0.0 {
        m.set_lora_dropout(cfg.lora_dropout)?;
    }
    if cfg.prefix_tokens > 0 {
        m.add_prefix(cfg.prefix_tokens, cfg.prefix_projection)?;
    }
    if cfg.max_len > m.max_positions() {
        return Err(Error::invalid(
            "train",
            format!(
                "max_len {} exceeds the model's {} positions",
                cfg.max_len,
                m.max_positions()
            ),
        ));
    }
    if data.tokenizer.vocab_size() > m.vocab_size() {
        return Err(Error::invalid(
            "train",
            format!(
                "the tokenizer has {} ids, the model {}",
                data.tokenizer.vocab_size(),
                m.vocab_size()
            ),
        ));
    }
    Ok(m)
}

fn build_optimizer(cfg: &TrainConfig, model: &dyn CausalLm) -> Result<Box<dyn Optimizer>> {
    let params: Vec<_> = model
        .parameters()
        .into_iter()
        .filter(|p| p.requires_grad())
        .collect();
    if params.is_empty() {
        return Err(Error::invalid(
            "train",
            "every parameter is frozen: nothing to train",
        ));
    }
    let blockwise: Vec<bool> = params.iter().map(|p| p.numel() >= MIN_8BIT_SIZE).collect();
    optimizer_over(cfg, params, &blockwise)
}

/// `cfg`'s optimizer over `params`; with 8-bit AdamW, `blockwise` says which keep 8-bit state
/// (a ZeRO piece keeps its whole tensor's kind).
pub(super) fn optimizer_over(
    cfg: &TrainConfig,
    params: Vec<Tensor>,
    blockwise: &[bool],
) -> Result<Box<dyn Optimizer>> {
    let groups = vec![ParamGroup::new(params, cfg.lr, cfg.weight_decay)];
    Ok(match cfg.optimizer {
        OptimChoice::Sgd => Box::new(Sgd::new(groups, 0.9, false)?),
        OptimChoice::AdamW => Box::new(AdamW::new(groups)),
        OptimChoice::AdamW8bit => {
            let mut o = AdamW8bit::new(groups);
            for (i, &b) in blockwise.iter().enumerate() {
                o.set_blockwise(i, b)?;
            }
            Box::new(o)
        }
    })
}

impl Trainer {
    /// A fresh run: model and data drawn from `cfg.seed`.
    pub fn new(cfg: TrainConfig) -> Result<Trainer> {
        cfg.validate()?;
        let data = Data::build(&cfg)?;
        rewind::rng::manual_seed(cfg.seed);
        let model = build_model(&cfg, &data)?;
        apply_freezing(model.as_ref(), &cfg)?;
        let opt = build_optimizer(&cfg, model.as_ref())?;
        let input_grads = cfg
            .enable_input_require_grads
            .then(|| model.token_embedding().enable_input_require_grads());
        let seg = segmentation(&cfg, model.as_ref(), &data)?;
        let mut t = Trainer {
            params: opt.params(),
            scaler: (cfg.amp == AmpChoice::Fp16).then(GradScaler::new),
            cfg,
            data,
            model,
            opt,
            seg,
            position: DataPosition::default(),
            steps_done: 0,
            epoch_batches: Vec::new(),
            checked_reach: false,
            _input_grads: input_grads,
            dist: None,
        };
        t.load_epoch()?;
        Ok(t)
    }

    /// Optimizer steps taken.
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    /// Where the data stream stands.
    pub fn position(&self) -> DataPosition {
        self.position
    }

    /// The checkpoint segmentation the blocks run under.
    pub fn segmentation(&self) -> &Segmentation {
        &self.seg
    }

    /// The current loss scale, when AMP is on.
    pub fn loss_scale(&self) -> Option<f32> {
        self.scaler.as_ref().map(GradScaler::get_scale)
    }

    pub(super) fn load_epoch(&mut self) -> Result<()> {
        let padding = match self.cfg.padding {
            PaddingChoice::Fixed => Padding::Fixed(self.cfg.max_len),
            PaddingChoice::Dynamic => Padding::Dynamic,
            PaddingChoice::Grouped => Padding::Grouped { chunk_batches: 8 },
        };
        let seed = self
            .cfg
            .seed
            .wrapping_add(self.position.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.epoch_batches = batches(&self.data.train, self.cfg.batch_size, padding, seed)?;
        Ok(())
    }

    fn next_batch(&mut self) -> Result<Batch> {
        if self.position.batch >= self.epoch_batches.len() {
            self.position = DataPosition {
                epoch: self.position.epoch + 1,
                batch: 0,
            };
            self.load_epoch()?;
        }
        let b = self.epoch_batches[self.position.batch].clone();
        self.position.batch += 1;
        Ok(b)
    }

    /// One optimizer step over `accumulation` micro-batches — shared by the ranks under data
    /// parallelism: of those N·K micro-batches rank r takes the r-th K, each loss weighted by
    /// its share of the step's targets as one process weights it, so the summed gradient is
    /// that process's (and, up to rounding, that of one batch holding them all).
    pub fn step(&mut self) -> Result<StepStats> {
        let start = Instant::now();
        tape::reset_peak_saved_bytes();
        let total = self.cfg.accumulation;
        let (rank, ranks) = self.dist.as_ref().map_or((0, 1), |d| (d.rank(), d.size()));
        let accum = total / ranks;
        let policy = self.cfg.policy.policy();
        let (mut loss_sum, mut real, mut slots) = (0.0, 0, 0);
        // Every rank reads the whole step's micro-batches, so each knows the step's target
        // count: each loss (a mean over its own targets) is weighted by its share of them, and
        // the summed gradient is that of the mean over all the step's targets (transformers'
        // `num_items_in_batch`), however the micro-batches are spread over ranks.
        let step_batches = (0..total)
            .map(|_| self.next_batch())
            .collect::<Result<Vec<_>>>()?;
        let targets: usize = step_batches.iter().map(Batch::targets).sum();
        // Micro-batch i draws (dropout) from its own stretch of the counter-based generator,
        // wherever it runs: ranks draw the masks one process accumulating draws.
        let rng0 = rewind::rng::get_state();
        let stretch = |i: usize| rewind::rng::GeneratorState {
            seed: rng0.seed,
            offset: rng0
                .offset
                .wrapping_add((i as u64).wrapping_mul(MICRO_BATCH_DRAWS)),
        };
        for (i, batch) in step_batches.into_iter().enumerate() {
            if i / accum != rank {
                continue;
            }
            rewind::rng::set_state(stretch(i));
            real += batch.real_tokens();
            slots += batch.slots();
            let loss = {
                let _amp = self.cfg.amp.dtype().map(|d| autocast(Some(d)));
                self.model.loss(&batch, &self.seg, self.cfg.mode, &policy)?
            };
            self.check_reach(&loss)?;
            loss_sum += loss.item()?;
            // loss · (its targets / the step's): 1/(N·K) when the micro-batches hold as many.
            let mut scaled = match (total, targets) {
                (1, _) => loss,
                (_, 0) => loss.mul_scalar(1.0 / total as f64)?,
                _ => loss.mul_scalar(batch.targets() as f64 / targets as f64)?,
            };
            if let Some(s) = &self.scaler {
                scaled = s.scale(&scaled)?;
            }
            // As PyTorch accumulates: this backward's gradient (a tied weight's contributions
            // summed first) is added to the earlier micro-batches' once, so the sum's order
            // does not depend on how micro-batches are spread over ranks.
            let params = self.params.clone();
            let earlier: Vec<Option<rewind::Tensor>> = if i % accum > 0 {
                params
                    .iter()
                    .map(|p| p.grad().inspect(|_| p.set_grad(None)))
                    .collect()
            } else {
                Vec::new()
            };
            // Gradients are reduced during the last micro-batch's backward only (PyTorch's
            // `no_sync` for the others), the earlier ones' added in the buckets. Otherwise each
            // earlier gradient is added the moment the new one is final, so the two sets are
            // never all held at once.
            let mut opts = BackwardOptions::default();
            let merging = Rc::new(RefCell::new(Merge::default()));
            match &mut self.dist {
                Some(d) if i % accum == accum - 1 => {
                    opts.on_grad_ready = Some(d.hook(&params, earlier)?);
                }
                _ if !earlier.is_empty() => {
                    merging.borrow_mut().pending = params.iter().cloned().zip(earlier).collect();
                    let m = merging.clone();
                    opts.on_grad_ready = Some(GradReady::new(move |leaf| {
                        m.borrow_mut().ready(leaf);
                    }));
                }
                _ => {}
            }
            scaled.backward_with(None, opts)?;
            let _ng = rewind::NoGradGuard::new();
            merging.borrow_mut().finish()?;
        }
        rewind::rng::set_state(stretch(total));
        if let Some(d) = &mut self.dist {
            d.finish()?;
            let all = d.sum_stats(vec![loss_sum, real as f64, slots as f64])?;
            (loss_sum, real, slots) = (all[0], all[1] as usize, all[2] as usize);
        }
        let grad_bytes = self
            .opt
            .params()
            .iter()
            .filter_map(|p| p.grad().map(|g| g.nbytes()))
            .sum();
        // Under ZeRO-1 each rank sees its shard: all skip if any shard overflowed, and the
        // clipping norm is the whole gradient's.
        let zero = self.dist.as_ref().filter(|d| d.shards().is_some());
        if let Some(s) = &mut self.scaler
            && (zero.is_some() || self.cfg.max_grad_norm.is_some())
        {
            // As PyTorch: unscale before clipping.
            s.unscale_agreeing_(self.opt.as_ref(), &mut |found| match zero {
                Some(d) => d.any(found),
                None => Ok(found),
            })?;
        }
        if let Some(max) = self.cfg.max_grad_norm {
            let params = self.opt.params();
            match zero {
                Some(d) => clip_grad_norm_agreeing_(&params, max, &mut |sq| d.total_squares(sq))?,
                None => clip_grad_norm_(&params, max)?,
            };
        }
        let updated = match &mut self.scaler {
            Some(s) => {
                let ran = s.step(self.opt.as_mut())?;
                s.update();
                ran
            }
            None => {
                self.opt.step()?;
                true
            }
        };
        self.opt.zero_grad();
        if let Some(d) = self.dist.as_mut().filter(|d| d.shards().is_some())
            && updated
        {
            d.all_gather_params(&self.params)?;
        }
        self.steps_done += 1;
        Ok(StepStats {
            step: self.steps_done,
            loss: loss_sum / total as f64,
            real_tokens: real,
            slots,
            seconds: start.elapsed().as_secs_f64(),
            peak_saved_bytes: tape::peak_saved_bytes(),
            grad_bytes,
            updated,
        })
    }

    /// Before the first backward under reentrant checkpointing: if the loss still requires
    /// grad but some trainable parameters are cut off (PyTorch trains on silently, warning
    /// only), stop with the diagnosis instead.
    fn check_reach(&mut self, loss: &rewind::tensor::Tensor) -> Result<()> {
        if self.checked_reach || self.cfg.mode != CheckpointMode::Reentrant {
            return Ok(());
        }
        self.checked_reach = true;
        if !loss.requires_grad() {
            return Ok(()); // backward raises PyTorch's error with the explanation
        }
        let findings = diagnose(loss, &self.model.named_parameters());
        if findings.is_empty() {
            return Ok(());
        }
        let named = self.model.named_parameters();
        let scalars = |names: &mut dyn Iterator<Item = &str>| -> usize {
            names
                .filter_map(|n| named.iter().find(|(m, _)| m == n))
                .map(|(_, p)| p.numel())
                .sum()
        };
        let cut = scalars(&mut findings.iter().map(|f| f.param.as_str()));
        let mut msg = format!(
            "{} of the {} trainable tensors ({cut} of {} parameters) would get no gradient (PyTorch would train on, leaving them unchanged):",
            findings.len(),
            self.trainable_tensors(),
            self.trainable_params()
        );
        const SHOWN: usize = 3;
        for f in findings.iter().take(SHOWN) {
            msg.push_str(&format!("\n- {}: {}", f.param, f.reason));
        }
        if findings.len() > SHOWN {
            msg.push_str(&format!(
                "\n- and {} more tensors cut the same way",
                findings.len() - SHOWN
            ));
        }
        tape::clear();
        Err(Error::invalid("train", msg))
    }

    /// Token-weighted mean loss on the held-out samples (no grad, f32, stored activations).
    pub fn eval_loss(&self) -> Result<f64> {
        // Eval mode (no dropout), as transformers' Trainer evaluates; in training's batch size,
        // so its logits (B·T·vocab floats, 206 MB for GPT-2 at 8 × 128) fit in the memory a
        // step's logits left free instead of raising the process's peak.
        self.model.train(false);
        let r = crate::eval::mean_loss(
            self.model.as_ref(),
            &self.data.eval,
            self.cfg.batch_size,
            Padding::Dynamic,
        );
        self.model.train(true);
        Ok(r?.0)
    }

    /// Bytes of all parameters (trainable or not).
    pub fn param_bytes(&self) -> usize {
        self.model.parameters().iter().map(|p| p.nbytes()).sum()
    }

    /// Trainable scalar parameters (elements of the trainable tensors).
    pub fn trainable_params(&self) -> usize {
        self.params.iter().map(|p| p.numel()).sum()
    }

    /// Trainable tensors (holding [`Self::trainable_params`] scalars between them).
    pub fn trainable_tensors(&self) -> usize {
        self.params.len()
    }

    /// Bytes of optimizer state this process holds now (under ZeRO-1, its shard's).
    pub fn optimizer_state_bytes(&self) -> usize {
        self.opt.state_bytes()
    }
}

/// The segmentation of `cfg.plan`; a budget is planned from block costs measured on a
/// full-length batch, the largest any padding produces, so every batch fits.
fn segmentation(cfg: &TrainConfig, model: &dyn CausalLm, data: &Data) -> Result<Segmentation> {
    let n = cfg.layers;
    match cfg.plan {
        PlanChoice::None => Ok(Segmentation::store_all(n)),
        PlanChoice::Every => plan::segment(Plan::EveryBlock, n, None),
        PlanChoice::Sqrt => plan::segment(Plan::Sqrt, n, None),
        PlanChoice::EveryNth(k) => plan::segment(Plan::EveryNth(k), n, None),
        PlanChoice::Budget(bytes) => {
            let probe: Vec<Vec<u32>> = (0..cfg.batch_size)
                .map(|i| {
                    let s = &data.train[i % data.train.len()].ids;
                    (0..cfg.max_len).map(|j| s[j % s.len()]).collect()
                })
                .collect();
            let b = &batches(&probe, cfg.batch_size, Padding::Dynamic, 0)?[0];
            let costs = {
                let _amp = cfg.amp.dtype().map(|d| autocast(Some(d)));
                model.block_costs(b)?
            };
            plan::segment(Plan::Budget(bytes), n, Some(&costs))
        }
    }
}

/// For a failed run, the flags that fix it (`None` when the error is not the checkpointing
/// failure).
pub fn suggest_fix(cfg: &TrainConfig, err: &Error) -> Option<String> {
    let cut =
        matches!(err, Error::NoGradFn { .. }) || err.to_string().contains("would get no gradient");
    (cut && cfg.mode == CheckpointMode::Reentrant).then(|| {
        String::from(
            "fix: rerun with --enable-input-require-grads (HF's model.enable_input_require_grads(), keeps reentrant checkpointing), \
or with --checkpoint-mode non-reentrant (use_reentrant=False); both keep the memory saving"
        )
    })
}
