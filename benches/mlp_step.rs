//! One SGD training step of the residual MLP: 16 blocks Linear(256→1024)→GELU→Linear(1024→256)
//! with residual, 2048 rows, f32. Throughput is counted in FLOPs (3 × forward matmul FLOPs).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rewind::Tensor;
use rewind::nn::ResidualMlp;
use rewind::nn::{Module, Parameters};
use rewind::optim::{Optimizer, ParamGroup, Sgd};

#[path = "alloc.rs"]
mod alloc;

fn step(c: &mut Criterion) {
    alloc::keep_freed_memory();
    rewind::rng::manual_seed(0);
    let model = ResidualMlp::new(16, 256, 1024).unwrap();
    let rows = 2048;
    let x = Tensor::randn(&[rows, 256]).unwrap();
    let mut opt = Sgd::new(
        vec![ParamGroup::new(model.parameters(), 1e-3, 0.0)],
        0.0,
        false,
    )
    .unwrap();
    let mut g = c.benchmark_group("mlp_step");
    g.sample_size(10);
    g.throughput(Throughput::Elements(
        (3.0 * model.forward_flops(rows)) as u64,
    ));
    g.bench_function("16x256x1024_rows2048_sgd", |bench| {
        bench.iter(|| {
            let y = model.forward(&x).unwrap();
            y.mul(&y).unwrap().mean().unwrap().backward().unwrap();
            opt.step().unwrap();
            opt.zero_grad();
        })
    });
    g.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
