//! The engine's f32 GEMM (`cpu::gemm`, the `gemm` crate) against the `matrixmultiply` crate it
//! replaced, on 1024³ and on the six products of one residual-MLP block's training step
//! (2048 rows, 256 → 1024 → 256), with the step's transposes.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rewind::cpu::gemm::{Gemm, Layout};

/// (name, m, k, n, a transposed, b transposed)
const SHAPES: [(&str, usize, usize, usize, bool, bool); 7] = [
    ("1024^3", 1024, 1024, 1024, false, false),
    ("fc1 x·W1t", 2048, 256, 1024, false, true),
    ("fc2 a·W2t", 2048, 1024, 256, false, true),
    ("fc2 dx g·W2", 2048, 256, 1024, false, false),
    ("fc2 dW gt·a", 256, 2048, 1024, true, false),
    ("fc1 dx g·W1", 2048, 1024, 256, false, false),
    ("fc1 dW gt·x", 1024, 2048, 256, true, false),
];

fn kernels(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm_f32");
    g.sample_size(10);
    for (name, m, k, n, ta, tb) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01 - 0.08).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
        let mut out = vec![0.0f32; m * n];
        let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
        let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
        let layout = |t| {
            if t {
                Layout::Transposed
            } else {
                Layout::Normal
            }
        };
        g.throughput(Throughput::Elements(2 * (m * k * n) as u64)); // FLOPs
        g.bench_function(format!("rewind {name}"), |bench| {
            bench.iter(|| f32::gemm(m, k, n, &a, layout(ta), &b, layout(tb), false, &mut out))
        });
        g.bench_function(format!("matrixmultiply {name}"), |bench| {
            bench.iter(|| {
                // SAFETY: the strides describe m×k, k×n and m×n matrices inside the buffers.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa as isize,
                        csa as isize,
                        b.as_ptr(),
                        rsb as isize,
                        csb as isize,
                        0.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
