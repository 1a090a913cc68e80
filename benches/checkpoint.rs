//! Recompute vs store: one SGD-free training step (forward + backward) of 16 residual MLP
//! blocks 256→1024→256 on 2048 rows under store-everything, every-block and √L plans.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rewind::Tensor;
use rewind::checkpoint::{CheckpointMode, Plan, plan, run_blocks};
use rewind::nn::Parameters;
use rewind::nn::ResidualMlp;

#[path = "alloc.rs"]
mod alloc;

fn plans(c: &mut Criterion) {
    alloc::keep_freed_memory();
    rewind::rng::manual_seed(0);
    let (depth, rows) = (16, 2048);
    let m = ResidualMlp::new(depth, 256, 1024).unwrap();
    let x = Tensor::randn(&[rows, 256]).unwrap();
    let params = m.parameters();
    let mut g = c.benchmark_group("checkpoint_plans_L16");
    g.sample_size(10);
    g.throughput(Throughput::Elements((3.0 * m.forward_flops(rows)) as u64));
    for (name, p) in [
        ("store", Plan::None),
        ("every_block", Plan::EveryBlock),
        ("sqrt", Plan::Sqrt),
    ] {
        let seg = plan::segment(p, depth, None).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let y = run_blocks(
                    &m.modules(),
                    &x,
                    &seg,
                    CheckpointMode::NonReentrant,
                    "blocks",
                )
                .unwrap();
                y.mean().unwrap().backward().unwrap();
                params.iter().for_each(Tensor::zero_grad);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, plans);
criterion_main!(benches);
