//! The decoder-only transformer: padding does not change a sample's loss or gradients,
//! checkpointed gradients equal stored ones bit for bit (key masks replayed), and LoRA trains
//! only the adapters — and fails under reentrant checkpointing exactly like PyTorch.

use approx::assert_relative_eq;
use rewind::checkpoint::{CheckpointMode, Plan, Segmentation, plan};
use rewind::nn::Parameters;
use rewind_lab::data::{Padding, batches};
use rewind_lab::models::{Transformer, TransformerConfig};

/// Vocabulary 260: `<|endoftext|>`, the 256 bytes and a few merges, as a trained BPE gives.
const CFG: TransformerConfig = TransformerConfig {
    vocab: 260,
    max_len: 24,
    d: 16,
    heads: 2,
    layers: 2,
    lora_rank: 0,
};

fn model(cfg: TransformerConfig) -> Transformer {
    rewind::rng::manual_seed(17);
    Transformer::new(cfg).unwrap()
}

fn grads(m: &Transformer) -> Vec<Vec<f32>> {
    m.parameters()
        .iter()
        .map(|p| p.grad().map(|g| g.to_vec_f32()).unwrap_or_default())
        .collect()
}

#[test]
fn a_samples_loss_and_gradients_do_not_depend_on_padding() {
    let m = model(CFG);
    let sample = vec![vec![3u32, 7, 1, 9, 12, 5, 5, 2]];
    let run = |padding| {
        for p in m.parameters() {
            p.zero_grad();
        }
        let b = &batches(&sample, 1, padding, 0).unwrap()[0];
        let loss = m
            .loss(b, &Segmentation::store_all(2), CheckpointMode::NonReentrant)
            .unwrap();
        loss.backward().unwrap();
        (loss.item().unwrap(), grads(&m))
    };
    let (l0, g0) = run(Padding::Dynamic);
    let (l1, g1) = run(Padding::Fixed(20)); // 12 padded positions, hidden and ignored
    // Masked keys get exactly zero attention; only the GEMM shapes differ.
    assert_relative_eq!(l0, l1, max_relative = 1e-6);
    for (a, b) in g0.iter().zip(&g1) {
        assert_relative_eq!(
            a.as_slice(),
            b.as_slice(),
            max_relative = 1e-4,
            epsilon = 1e-6
        );
    }
}

#[test]
fn checkpointed_transformer_grads_are_bit_identical_to_stored() {
    let m = model(CFG);
    let samples: Vec<Vec<u32>> = vec![
        vec![1, 2, 3, 4, 5, 6],
        vec![7, 8, 9],
        vec![10, 11, 12, 13, 14, 15, 16, 17],
    ];
    let b = &batches(&samples, 3, Padding::Dynamic, 0).unwrap()[0];
    let run = |seg: &Segmentation, mode| {
        for p in m.parameters() {
            p.zero_grad();
        }
        m.loss(b, seg, mode).unwrap().backward().unwrap();
        grads(&m)
            .iter()
            .map(|g| g.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let store = run(&Segmentation::store_all(2), CheckpointMode::NonReentrant);
    let every = plan::segment(Plan::EveryBlock, 2, None).unwrap();
    assert_eq!(run(&every, CheckpointMode::NonReentrant), store);
}

#[test]
fn lora_trains_only_adapters_and_fails_under_reentrant_checkpointing() {
    let m = model(TransformerConfig {
        lora_rank: 4,
        ..CFG
    });
    let trainable: Vec<String> = m
        .named_parameters()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        trainable.len(),
        2 * 2 * 2,
        "lora_A and lora_B on q and v in each of 2 layers"
    );
    assert!(
        trainable
            .iter()
            .all(|n| n.contains("lora_") && (n.contains("q_proj") || n.contains("v_proj"))),
        "{trainable:?}"
    );
    let b = &batches(&[vec![1u32, 2, 3, 4]], 1, Padding::Dynamic, 0).unwrap()[0];
    let every = plan::segment(Plan::EveryBlock, 2, None).unwrap();
    let loss = m.loss(b, &every, CheckpointMode::Reentrant).unwrap();
    assert_eq!(
        loss.backward().unwrap_err().to_string(),
        "element 0 of tensors does not require grad and does not have a grad_fn"
    );
    rewind::warnings::take();
    m.loss(b, &every, CheckpointMode::NonReentrant)
        .unwrap()
        .backward()
        .unwrap();
    assert!(
        m.named_parameters()
            .iter()
            .all(|(n, p)| p.grad().is_some() == n.contains("lora_"))
    );
}

#[test]
fn key_mask_hides_a_key_as_if_it_were_not_there() {
    // Hiding key 1 of [x0, x1, x2, x3] must give positions 2 and 3 the outputs that positions
    // 1 and 2 get for [x0, x2, x3] (attention is the only place positions meet in a block).
    let m = model(CFG);
    let x = rewind::Tensor::randn(&[1, 4, 16]).unwrap();
    let mask = rewind::Tensor::from_vec(vec![0.0f32, 1.0, 0.0, 0.0], &[1, 1, 1, 4]).unwrap();
    let hidden = m.blocks[0]
        .forward_masked(&x, Some(&mask))
        .unwrap()
        .to_vec_f32();
    let rows: Vec<f32> = x
        .to_vec_f32()
        .chunks(16)
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .flat_map(|(_, r)| r.to_vec())
        .collect();
    let removed = m.blocks[0]
        .forward_masked(&rewind::Tensor::from_vec(rows, &[1, 3, 16]).unwrap(), None)
        .unwrap()
        .to_vec_f32();
    assert_relative_eq!(
        &hidden[2 * 16..4 * 16],
        &removed[16..3 * 16],
        max_relative = 1e-5,
        epsilon = 1e-6
    );
    let unmasked = m.blocks[0].forward_masked(&x, None).unwrap().to_vec_f32();
    assert!(
        unmasked[2 * 16..]
            .iter()
            .zip(&hidden[2 * 16..])
            .any(|(a, b)| (a - b).abs() > 1e-4),
        "the mask changes what later positions see"
    );
}
