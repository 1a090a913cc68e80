//! f32 matmul throughput through the engine (GEMM via the `gemm` crate).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rewind::Tensor;

#[path = "alloc.rs"]
mod alloc;

fn matmul(c: &mut Criterion) {
    alloc::keep_freed_memory();
    let mut g = c.benchmark_group("matmul_f32");
    g.sample_size(20);
    for n in [256usize, 1024] {
        rewind::rng::manual_seed(1);
        let a = Tensor::from_vec(
            rewind::rng::uniform_vec(n * n)
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            &[n, n],
        )
        .unwrap();
        let b = Tensor::from_vec(
            rewind::rng::uniform_vec(n * n)
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            &[n, n],
        )
        .unwrap();
        g.throughput(Throughput::Elements(2 * (n * n * n) as u64)); // FLOPs
        g.bench_function(format!("{n}x{n}x{n}"), |bench| {
            bench.iter(|| a.matmul(&b).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, matmul);
criterion_main!(benches);
