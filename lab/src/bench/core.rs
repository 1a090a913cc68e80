//! The core engine's headline figures: per-op tape overhead, GEMM throughput, and a training
//! step of the residual MLP.

use super::try_timed;
use rewind::dtype::DType;
use rewind::error::Result;
use rewind::nn::Parameters;
use rewind::nn::ResidualMlp;
use rewind::ops::autocast::autocast;
use rewind::optim::{Optimizer, ParamGroup, Sgd};
use rewind::rng;
use rewind::tensor::Tensor;

/// Which elementwise chain to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// y ← tanh(y).
    Tanh,
    /// y ← y·a + b.
    MulAdd,
}

/// Microseconds per op of a chain of `n` ops on 8-element tensors, forward + backward (median).
pub fn tape_overhead_us(chain: Chain, n: usize, reps: usize) -> Result<f64> {
    let x = Tensor::full(&[8], 0.5, DType::F32)?.requires_grad_(true)?;
    let a = Tensor::full(&[8], 0.999, DType::F32)?;
    let b = Tensor::full(&[8], 0.001, DType::F32)?;
    let secs = try_timed(reps, || {
        let mut y = x.clone();
        for _ in 0..n {
            y = match chain {
                Chain::Tanh => y.tanh()?,
                Chain::MulAdd => y.mul(&a)?.add(&b)?,
            };
        }
        y.sum()?.backward()?;
        x.zero_grad();
        Ok(())
    })?
    .median;
    let ops = match chain {
        Chain::Tanh => n,
        Chain::MulAdd => 2 * n,
    };
    Ok(secs * 1e6 / ops as f64)
}

/// GFLOP/s of an n×n×n f32 matmul (median).
pub fn matmul_gflops(n: usize, reps: usize) -> Result<f64> {
    matmul_gflops_in(n, reps, DType::F32)
}

/// GFLOP/s of an n×n×n matmul of `dtype` operands (median; f32 accumulation for half types).
pub fn matmul_gflops_in(n: usize, reps: usize, dtype: DType) -> Result<f64> {
    rng::manual_seed(1);
    let a = Tensor::from_vec(
        rng::uniform_vec(n * n)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        &[n, n],
    )?;
    let b = Tensor::from_vec(
        rng::uniform_vec(n * n)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        &[n, n],
    )?;
    let (a, b) = (a.to_dtype(dtype)?, b.to_dtype(dtype)?);
    let secs = try_timed(reps, || a.matmul(&b).map(drop))?.median;
    Ok(2.0 * (n * n * n) as f64 / secs / 1e9)
}

/// Shape of the residual-MLP training step.
#[derive(Debug, Clone, Copy)]
pub struct MlpConfig {
    /// Number of blocks.
    pub depth: usize,
    /// Width.
    pub d: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Rows in the batch.
    pub rows: usize,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            depth: 16,
            d: 256,
            hidden: 1024,
            rows: 2048,
        }
    }
}

/// How the MLP step checkpoints its blocks (non-reentrant), as in the PyTorch harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPlan {
    /// Store every activation.
    Store,
    /// Every block a segment (PyTorch: `checkpoint(block, x, use_reentrant=False)` per block).
    Every,
    /// Four segments, the last stored (`checkpoint_sequential(blocks, 4, x)`).
    Sqrt,
    /// Every block a segment keeping its matmul outputs (PyTorch: `context_fn` from
    /// `create_selective_checkpoint_contexts` saving `aten.mm`/`aten.addmm`).
    EveryDots,
}

impl StepPlan {
    /// Every plan, in table order.
    pub const ALL: [StepPlan; 4] = [
        StepPlan::Store,
        StepPlan::Every,
        StepPlan::Sqrt,
        StepPlan::EveryDots,
    ];

    /// Its name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            StepPlan::Store => "store",
            StepPlan::Every => "every",
            StepPlan::Sqrt => "sqrt4",
            StepPlan::EveryDots => "every+dots",
        }
    }
}

/// Median seconds of one SGD step under `plan`, and the step's effective GFLOP/s (3 × forward
/// matmul FLOPs / time, whatever is recomputed).
pub fn mlp_step_with(cfg: MlpConfig, plan: StepPlan, reps: usize) -> Result<(f64, f64)> {
    let (secs, gflops, _) = mlp_step_under(cfg, plan, reps, None)?;
    Ok((secs, gflops))
}

/// [`mlp_step_with`] with the forward under `autocast(amp)` (as PyTorch's
/// `torch.autocast("cpu", dtype=…)` around it), and the step's peak saved activation bytes.
pub fn mlp_step_under(
    cfg: MlpConfig,
    plan: StepPlan,
    reps: usize,
    amp: Option<DType>,
) -> Result<(f64, f64, usize)> {
    use rewind::checkpoint::{CheckpointMode, Plan, SavePolicy, plan, run_blocks_with_policy};
    rng::manual_seed(0);
    let model = ResidualMlp::new(cfg.depth, cfg.d, cfg.hidden)?;
    let x = Tensor::randn(&[cfg.rows, cfg.d])?;
    let mut opt = Sgd::new(
        vec![ParamGroup::new(model.parameters(), 1e-3, 0.0)],
        0.0,
        false,
    )?;
    let (seg, policy) = match plan {
        StepPlan::Store => (
            plan::segment(Plan::None, cfg.depth, None)?,
            SavePolicy::RecomputeAll,
        ),
        StepPlan::Every => (
            plan::segment(Plan::EveryBlock, cfg.depth, None)?,
            SavePolicy::RecomputeAll,
        ),
        StepPlan::Sqrt => (
            plan::segment(Plan::Sequential(4), cfg.depth, None)?,
            SavePolicy::RecomputeAll,
        ),
        StepPlan::EveryDots => (
            plan::segment(Plan::EveryBlock, cfg.depth, None)?,
            SavePolicy::SaveMatmuls,
        ),
    };
    let modules = model.modules();
    rewind::tape::reset_peak_saved_bytes();
    let secs = try_timed(reps, || {
        let loss = {
            let _amp = amp.map(|d| autocast(Some(d)));
            let y = run_blocks_with_policy(
                &modules,
                &x,
                &seg,
                CheckpointMode::NonReentrant,
                "b",
                &policy,
            )?;
            y.mul(&y)?.mean()?
        };
        loss.backward()?;
        opt.step()?;
        opt.zero_grad();
        Ok(())
    })?
    .median;
    let peak = rewind::tape::peak_saved_bytes();
    Ok((secs, 3.0 * model.forward_flops(cfg.rows) / secs / 1e9, peak))
}

/// Median seconds of the stored step's matrix products alone: per block the two forward
/// products and the four backward ones (input and weight gradients), with the step's shapes and
/// transposes, through the engine's GEMM — the floor a step with free everything-else would
/// reach.
pub fn step_gemms_secs(cfg: MlpConfig, reps: usize) -> Result<f64> {
    use rewind::cpu::gemm::{Layout::*, product};
    let (r, d, h) = (cfg.rows, cfg.d, cfg.hidden);
    let filled =
        |n: usize| -> Vec<f32> { (0..n).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect() };
    let (x, w1, a, w2) = (filled(r * d), filled(h * d), filled(r * h), filled(d * h));
    let (g2, g1) = (filled(r * d), filled(r * h));
    let t = try_timed(reps, || {
        for _ in 0..cfg.depth {
            product("fc1", r, d, h, &x, Normal, &w1, Transposed)?;
            product("fc2", r, h, d, &a, Normal, &w2, Transposed)?;
            product("fc2 dx", r, d, h, &g2, Normal, &w2, Normal)?;
            product("fc2 dW", d, r, h, &g2, Transposed, &a, Normal)?;
            product("fc1 dx", r, h, d, &g1, Normal, &w1, Normal)?;
            product("fc1 dW", h, r, d, &g1, Transposed, &x, Normal)?;
        }
        Ok(())
    })?;
    Ok(t.median)
}

/// Median milliseconds of one AdamW step (fp32 or blockwise 8-bit state) on `n` parameters.
pub fn adamw_step_ms(n: usize, eight_bit: bool, reps: usize) -> Result<f64> {
    use rewind::optim::{AdamW, AdamW8bit};
    let p = Tensor::from_vec(vec![0.01f32; n], &[n])?.requires_grad_(true)?;
    p.set_grad(Some(Tensor::from_vec(
        (0..n)
            .map(|i| ((i % 1000) as f32 - 500.0) * 1e-4)
            .collect::<Vec<f32>>(),
        &[n],
    )?));
    let groups = vec![ParamGroup::new(vec![p], 1e-3, 0.01)];
    let mut opt: Box<dyn Optimizer> = if eight_bit {
        Box::new(AdamW8bit::new(groups))
    } else {
        Box::new(AdamW::new(groups))
    };
    let secs = try_timed(reps, || opt.step())?.median;
    Ok(secs * 1e3)
}
