//! One optimizer step on 16M parameters: 8-bit AdamW vs fp32 AdamW vs a plain copy of the same
//! bytes (the bandwidth floor), in one run. Criterion reports GB/s of the bytes each step must
//! move (fp32 AdamW: p, g, m, v read and p, m, v written, 28 B/param; 8-bit: p, g and two codes
//! read, p and two codes written, 16 B/param plus 16 B per 256-block); parameters/s is
//! 16,777,216 / time.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use rewind::Tensor;
use rewind::optim::{AdamW, AdamW8bit, Optimizer, ParamGroup};

#[path = "alloc.rs"]
mod alloc;

const N: usize = 1 << 24;

fn setup() -> (Tensor, Vec<ParamGroup>) {
    let p = Tensor::from_vec(vec![0.01f32; N], &[N])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    p.set_grad(Some(
        Tensor::from_vec(
            (0..N)
                .map(|i| ((i % 1000) as f32 - 500.0) * 1e-4)
                .collect::<Vec<f32>>(),
            &[N],
        )
        .unwrap(),
    ));
    (p.clone(), vec![ParamGroup::new(vec![p], 1e-3, 0.01)])
}

fn optimizers(c: &mut Criterion) {
    alloc::keep_freed_memory();
    let mut g = c.benchmark_group("optimizer_step_16M");
    g.sample_size(10);
    let (_p, groups) = setup();
    let mut fp32 = AdamW::new(groups.clone());
    g.throughput(Throughput::Bytes(28 * N as u64));
    g.bench_function("adamw_fp32", |b| b.iter(|| fp32.step().unwrap()));
    let mut q8 = AdamW8bit::new(groups);
    g.throughput(Throughput::Bytes(16 * N as u64 + 16 * (N / 256) as u64));
    g.bench_function("adamw_8bit", |b| b.iter(|| q8.step().unwrap()));
    g.throughput(Throughput::Bytes(28 * N as u64));
    // The same bytes an fp32 AdamW step touches (p, g, m, v read; p, m, v written) as copies.
    let src = vec![1.0f32; 4 * N];
    let mut dst = vec![0.0f32; 3 * N];
    g.bench_function("copy_same_bytes_as_fp32_adamw", |b| {
        b.iter(|| {
            dst.copy_from_slice(&src[..3 * N]);
            black_box(&src[3 * N..]);
            black_box(&mut dst);
        })
    });
    g.finish();
}

criterion_group!(benches, optimizers);
criterion_main!(benches);
