//! A graph's saved tensors are released the moment its last output handle drops, as PyTorch
//! frees a graph when its last output dies — not at a tape-size threshold. (Its own test
//! binary: the RSS check must not see other tests' allocations.)

use rewind::tape::{live_entries, saved_bytes};
use rewind::{DType, Tensor};

const MIB: usize = 1 << 20;

/// Resident set size of this process, from /proc (Linux).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn ten_thousand_dropped_forwards_keep_one_graphs_worth_saved_and_rss_flat() {
    let x = Tensor::randn(&[4 * MIB])
        .unwrap()
        .requires_grad_(true)
        .unwrap(); // 16 MiB of f32
    let mut rss_after_warmup = 0;
    for i in 0..10_000 {
        let y = x.relu().unwrap(); // saves its 16 MiB output
        assert_eq!(saved_bytes(), 16 * MIB, "iteration {i}: one graph's worth");
        drop(y);
        assert_eq!(
            saved_bytes(),
            0,
            "iteration {i}: freed when the output dropped"
        );
        if i == 100 {
            rss_after_warmup = rss_bytes();
        }
    }
    assert_eq!(live_entries(), 0);
    let growth = rss_bytes().saturating_sub(rss_after_warmup);
    assert!(growth < 64 * MIB, "RSS grew by {} MiB", growth / MIB);
}

#[test]
fn dropping_a_chains_output_frees_the_whole_chain() {
    let x = Tensor::ones(&[1024], DType::F32)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let before = saved_bytes();
    let y = x.tanh().unwrap().exp().unwrap().relu().unwrap();
    assert_eq!(
        saved_bytes() - before,
        3 * 4096,
        "tanh, exp and relu each save 4 KiB"
    );
    drop(y);
    assert_eq!(saved_bytes(), before);
}

#[test]
fn an_intermediate_whose_handle_dropped_stays_while_a_later_op_needs_it() {
    // z = exp(tanh(x)); dz/dx = z·(1 − tanh²x)
    let x = Tensor::from_vec(vec![0.5f32, -1.0], &[2])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let t = x.tanh().unwrap();
    let z = t.exp().unwrap();
    drop(t);
    z.sum().unwrap().backward().unwrap();
    let want: Vec<f32> = [0.5f32, -1.0]
        .iter()
        .map(|&v| v.tanh().exp() * (1.0 - v.tanh() * v.tanh()))
        .collect();
    let got = x.grad().unwrap().to_vec_f32();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6, "{got:?} vs {want:?}");
    }
}

#[test]
fn a_loss_dropped_after_backward_with_retain_graph_frees_its_graph() {
    let x = Tensor::ones(&[256], DType::F32)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let before = saved_bytes();
    let loss = x.tanh().unwrap().sum().unwrap();
    loss.backward_with(
        None,
        rewind::BackwardOptions {
            retain_graph: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(saved_bytes() - before, 1024, "retained: tanh's output");
    drop(loss);
    assert_eq!(saved_bytes(), before);
}
