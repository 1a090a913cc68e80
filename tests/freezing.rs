//! Freezing by name prefix: a frozen prefix records nothing and saves nothing; gradient
//! accumulation works by construction.

use approx::assert_relative_eq;
use rewind::nn::ResidualMlp;
use rewind::nn::{Module, Parameters, freeze, unfreeze};
use rewind::{Tensor, tape};

fn setup() -> (ResidualMlp, Tensor) {
    rewind::rng::manual_seed(4);
    let m = ResidualMlp::new(4, 8, 16).unwrap();
    let x = Tensor::randn(&[32, 8]).unwrap();
    (m, x)
}

#[test]
fn frozen_prefix_records_no_entries_and_saves_no_activations() {
    let (m, x) = setup();
    tape::clear();
    let y = m.forward(&x).unwrap();
    let (all_entries, all_saved) = (tape::entries().len(), tape::saved_bytes());
    drop(y);
    tape::clear();
    let named = m.named_parameters();
    assert_eq!(
        freeze(&named, "blocks.0.").unwrap() + freeze(&named, "blocks.1.").unwrap(),
        8
    );
    let y = m.forward(&x).unwrap();
    // Each block records linear, gelu, linear, add: the two frozen blocks record none of them.
    assert_eq!(tape::entries().len(), all_entries - 2 * 4);
    // What blocks 0 and 1 saved disappears: gelu's input and output [32,16] each, plus block
    // 1's input [32,8] (block 0's input is the caller's). Block 2 still saves its input.
    let (hidden, width) = (32 * 16 * 4, 32 * 8 * 4);
    assert_eq!(
        tape::saved_bytes(),
        all_saved - (2 * hidden) - (width + 2 * hidden)
    );
    y.mean().unwrap().backward().unwrap();
    assert!(
        named.iter().all(|(n, p)| p.grad().is_none()
            == (n.starts_with("blocks.0.") || n.starts_with("blocks.1.")))
    );
    assert_eq!(unfreeze(&named, "blocks.").unwrap(), 16);
}

#[test]
fn four_micro_batches_of_eight_equal_one_batch_of_thirty_two() {
    let (m, x) = setup();
    let grads = |micro: usize| {
        for p in m.parameters() {
            p.zero_grad();
        }
        let rows = 32 / micro;
        for k in 0..micro {
            let y = m.forward(&x.narrow(0, k * rows, rows).unwrap()).unwrap();
            y.mul(&y)
                .unwrap()
                .mean()
                .unwrap()
                .mul_scalar(1.0 / micro as f64)
                .unwrap()
                .backward()
                .unwrap();
        }
        m.parameters()
            .iter()
            .flat_map(|p| p.grad().unwrap().to_vec_f32())
            .collect::<Vec<_>>()
    };
    assert_relative_eq!(
        grads(4).as_slice(),
        grads(1).as_slice(),
        max_relative = 1e-4,
        epsilon = 1e-6
    );
}
