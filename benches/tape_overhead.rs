//! Per-op tape overhead: a 1,000-op elementwise chain on 8-element tensors, forward + backward.
//! Reported per chain; divide by 1,000 ops (tanh) or 2,000 ops (x*a+b) for µs per op.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use rewind::{DType, Tensor};

#[path = "alloc.rs"]
mod alloc;

fn chains(c: &mut Criterion) {
    alloc::keep_freed_memory();
    let x = Tensor::full(&[8], 0.5, DType::F32)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let a = Tensor::full(&[8], 0.999, DType::F32).unwrap();
    let b = Tensor::full(&[8], 0.001, DType::F32).unwrap();
    let mut g = c.benchmark_group("tape_overhead");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("tanh_x1000_fwd_bwd", |bench| {
        bench.iter(|| {
            let mut y = x.clone();
            for _ in 0..1000 {
                y = y.tanh().unwrap();
            }
            y.sum().unwrap().backward().unwrap();
            x.zero_grad();
        })
    });
    g.throughput(Throughput::Elements(2000));
    g.bench_function("mul_add_x1000_fwd_bwd", |bench| {
        bench.iter(|| {
            let mut y = x.clone();
            for _ in 0..1000 {
                y = y.mul(black_box(&a)).unwrap().add(black_box(&b)).unwrap();
            }
            y.sum().unwrap().backward().unwrap();
            x.zero_grad();
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("tanh_x1000_no_grad", |bench| {
        let _ng = rewind::NoGradGuard::new();
        bench.iter(|| {
            let mut y = x.clone();
            for _ in 0..1000 {
                y = y.tanh().unwrap();
            }
            black_box(y);
        })
    });
    g.finish();
}

criterion_group!(benches, chains);
criterion_main!(benches);
