//! NCCL as the transport, on one GPU: one rank (one GPU cannot hold two NCCL ranks) runs the
//! same buckets, ZeRO-1 shards and gathers as MPI, every buffer through the device and back.
//! With one rank each collective returns its input, so every result is checked exactly
//! against the local values. Needs a CUDA device and libnccl: `#[ignore]`d, run by
//! `scripts/gpu-check.sh` with `--include-ignored` (without them they fail saying so).
#![cfg(feature = "nccl")]

use rewind::optim::{AdamW, Optimizer, ParamGroup};
use rewind::{BackwardOptions, Tensor};
use rewind_lab::dist::{Backend, BucketSizes, Reducer};

fn reducer() -> Reducer {
    let sizes = BucketSizes {
        first_bytes: 16,
        bytes: 64,
        ..BucketSizes::default()
    };
    Backend::Nccl
        .start(sizes)
        .unwrap_or_else(|e| panic!("skipped: NCCL could not start here ({e})"))
}

fn params() -> Vec<Tensor> {
    [5usize, 300, 7, 40]
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let v = (0..n)
                .map(|i| ((i * 7 + k) % 11) as f32 * 0.1 - 0.5)
                .collect();
            Tensor::from_vec(v, &[n])
                .unwrap()
                .requires_grad_(true)
                .unwrap()
        })
        .collect()
}

/// Σ_p Σ_i p_i² · (i + 1): gradients 2·p_i·(i + 1), different in every element.
fn backward(ps: &[Tensor], hook: Option<rewind::GradReady>) {
    let mut loss = None::<Tensor>;
    for p in ps {
        let n = p.numel();
        let w = Tensor::from_vec((1..=n).map(|i| i as f32).collect(), &[n]).unwrap();
        let term = p.mul(p).unwrap().mul(&w).unwrap().sum().unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => l.add(&term).unwrap(),
        });
    }
    let opts = BackwardOptions {
        on_grad_ready: hook,
        ..Default::default()
    };
    loss.unwrap().backward_with(None, opts).unwrap();
}

#[test]
#[ignore = "needs a CUDA device and libnccl: run scripts/gpu-check.sh"]
fn one_nccl_rank_reduces_buckets_and_keeps_every_gradient() {
    let mut r = reducer();
    assert_eq!((r.rank(), r.size()), (0, 1));
    let (ps, local) = (params(), params());
    backward(&local, None);
    let hook = r.hook(&ps, Vec::new()).unwrap();
    backward(&ps, Some(hook));
    r.finish().unwrap();
    for (p, q) in ps.iter().zip(&local) {
        assert_eq!(
            p.grad().unwrap().to_vec_f32(),
            q.grad().unwrap().to_vec_f32()
        );
    }
    assert_eq!(r.sum_stats(vec![1.5, -2.0]).unwrap(), [1.5, -2.0]);
    r.broadcast(&ps).unwrap();
    assert!(r.times().bytes > 0);
}

#[test]
#[ignore = "needs a CUDA device and libnccl: run scripts/gpu-check.sh"]
fn one_nccl_rank_under_zero_one_steps_as_the_whole_optimizer() {
    // ZeRO-1 with one rank: one shard holding everything, reduce-scattered, stepped, and
    // all-gathered through the GPU — the same parameters and state as AdamW on the whole.
    let mut r = reducer();
    let (ps, whole) = (params(), params());
    let pieces = r.enable_zero(&ps).unwrap();
    let tensors: Vec<Tensor> = pieces.iter().map(|(_, t)| t.clone()).collect();
    let mut shard = AdamW::new(vec![ParamGroup::new(tensors, 1e-2, 0.1)]);
    let mut one = AdamW::new(vec![ParamGroup::new(whole.clone(), 1e-2, 0.1)]);
    for _ in 0..3 {
        let hook = r.hook(&ps, Vec::new()).unwrap();
        backward(&ps, Some(hook));
        r.finish().unwrap();
        shard.step().unwrap();
        shard.zero_grad();
        r.all_gather_params(&ps).unwrap();
        backward(&whole, None);
        one.step().unwrap();
        one.zero_grad();
    }
    for (p, q) in ps.iter().zip(&whole) {
        assert_eq!(p.to_vec_f32(), q.to_vec_f32());
    }
    let gathered = r.gather_state(&shard.state_dict()).unwrap().unwrap();
    assert_eq!(gathered, one.state_dict());
}
