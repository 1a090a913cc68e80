//! The GEMM shapes that matter, each timed through the engine's GEMM: 1024³, the residual-MLP
//! step's six products, and GPT-2 small's (batch 8 × 128 tokens, width 768, 12 heads,
//! vocabulary 50,257) forward and backward products, with their transposes.

use super::timed;
use rewind::cpu::gemm::{Kernel, Layout};

/// One product: name, m, k, n, and whether A and B are stored transposed; `batch` products of
/// that shape (attention's per-head products).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// What it is.
    pub name: &'static str,
    /// Rows of A and C.
    pub m: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Columns of B and C.
    pub n: usize,
    /// A stored transposed (k×m).
    pub ta: bool,
    /// B stored transposed (n×k).
    pub tb: bool,
    /// Products of this shape in one step.
    pub batch: usize,
}

const fn s(name: &'static str, m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Shape {
    Shape {
        name,
        m,
        k,
        n,
        ta,
        tb,
        batch: 1,
    }
}

/// The shapes, in the order the harness prints them.
pub const SHAPES: [Shape; 17] = [
    s("1024^3", 1024, 1024, 1024, false, false),
    s("mlp fc1 x·W1t", 2048, 256, 1024, false, true),
    s("mlp fc2 a·W2t", 2048, 1024, 256, false, true),
    s("mlp fc2 dx g·W2", 2048, 256, 1024, false, false),
    s("mlp fc2 dW gt·a", 256, 2048, 1024, true, false),
    s("mlp fc1 dx g·W1", 2048, 1024, 256, false, false),
    s("mlp fc1 dW gt·x", 1024, 2048, 256, true, false),
    s("gpt2 c_attn x·W", 1024, 768, 2304, false, false),
    s("gpt2 c_attn dW xt·g", 768, 1024, 2304, true, false),
    s("gpt2 c_fc x·W", 1024, 768, 3072, false, false),
    s("gpt2 mlp c_proj x·W", 1024, 3072, 768, false, false),
    s("gpt2 mlp c_proj dx g·Wt", 1024, 768, 3072, false, true),
    Shape {
        batch: 96,
        ..s("gpt2 attn q·kt (×96)", 128, 64, 128, false, true)
    },
    Shape {
        batch: 96,
        ..s("gpt2 attn p·v (×96)", 128, 128, 64, false, false)
    },
    s("gpt2 head x·Et", 1024, 768, 50257, false, true),
    s("gpt2 head dx g·E", 1024, 50257, 768, false, false),
    s("gpt2 head dE gt·x", 50257, 1024, 768, true, false),
];

/// Operands for `sh`, filled with small repeating values.
fn operands(sh: &Shape) -> (Vec<f32>, Vec<f32>) {
    let fill = |n: usize, p: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i % p) as f32 - (p / 2) as f32) * 0.01)
            .collect()
    };
    (fill(sh.m * sh.k, 17), fill(sh.k * sh.n, 13))
}

/// GFLOP/s of `sh` with `kernel` (a batch: with the chosen kernel) (median of `reps`, with the
/// slowest and fastest run).
pub fn gflops(sh: &Shape, kernel: Kernel, reps: usize) -> (f64, f64, f64) {
    let (a, b) = operands(sh);
    let c = vec![0.0f32; sh.m * sh.n];
    let layout = |t: bool| {
        if t {
            Layout::Transposed
        } else {
            Layout::Normal
        }
    };
    // A batch of small products runs as the engine's batched matmul runs it (with the chosen
    // kernel, over the batch: A of one head times B of the same head).
    let (a, b, mut c) = if sh.batch > 1 {
        (a.repeat(sh.batch), b.repeat(sh.batch), c.repeat(sh.batch))
    } else {
        (a, b, c)
    };
    // The batched products write over memory they never read.
    let mut batch_c: Vec<std::mem::MaybeUninit<f32>> =
        c.iter().map(|&v| std::mem::MaybeUninit::new(v)).collect();
    let t = timed(reps, || {
        if sh.batch > 1 {
            rewind::cpu::gemm::batch(
                sh.batch,
                (sh.m, sh.k, sh.n),
                &a,
                layout(sh.ta),
                false,
                &b,
                layout(sh.tb),
                false,
                &mut batch_c,
            );
        } else {
            kernel.gemm(
                sh.m,
                sh.k,
                sh.n,
                &a,
                layout(sh.ta),
                &b,
                layout(sh.tb),
                false,
                &mut c,
            );
        }
    });
    let flop = 2.0 * (sh.m * sh.k * sh.n * sh.batch) as f64 / 1e9;
    (flop / t.median, flop / t.max, flop / t.min)
}
