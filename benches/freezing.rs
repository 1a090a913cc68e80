//! Freezing: forward + backward of 16 residual MLP blocks with none, half or all but the last
//! block frozen. A frozen prefix records nothing, so backward stops where training starts.

use criterion::{Criterion, criterion_group, criterion_main};
use rewind::Tensor;
use rewind::nn::ResidualMlp;
use rewind::nn::{Module, Parameters, freeze, unfreeze};

#[path = "alloc.rs"]
mod alloc;

fn frozen(c: &mut Criterion) {
    alloc::keep_freed_memory();
    rewind::rng::manual_seed(0);
    let (depth, rows) = (16, 1024);
    let m = ResidualMlp::new(depth, 256, 1024).unwrap();
    let x = Tensor::randn(&[rows, 256]).unwrap();
    let named = m.named_parameters();
    let mut g = c.benchmark_group("freezing_fwd_bwd_L16");
    g.sample_size(10);
    for frozen_blocks in [0usize, 8, 15] {
        unfreeze(&named, "blocks.").unwrap();
        for i in 0..frozen_blocks {
            freeze(&named, &format!("blocks.{i}.")).unwrap();
        }
        g.bench_function(format!("{frozen_blocks}_of_16_frozen"), |b| {
            b.iter(|| {
                let y = m.forward(&x).unwrap();
                y.mean().unwrap().backward().unwrap();
                named.iter().for_each(|(_, p)| p.zero_grad());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, frozen);
criterion_main!(benches);
