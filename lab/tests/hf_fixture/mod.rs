//! What the family tests share: the fixtures' padded batch as the trainer's `Batch`, the
//! stored / checkpointed / SaveMatmuls plans, and the comparison with a reference library's
//! logits, loss and gradients (logits and loss within 1e-5 relative, each gradient within 1e-4
//! of its largest magnitude).
#![allow(dead_code)]

use rewind::checkpoint::{CheckpointMode, Plan, SavePolicy, Segmentation, plan};
use rewind::indices::Indices;
use rewind::tensor::Tensor;
use rewind_lab::data::Batch;
use rewind_lab::models::CausalLm;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

pub fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

pub fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn floats(st: &SafeTensors, k: &str) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(st.tensor(k).unwrap().data())
}

pub fn ints(st: &SafeTensors, k: &str) -> Vec<i64> {
    bytemuck::pod_collect_to_vec(st.tensor(k).unwrap().data())
}

/// The batch the reference library ran (`input_ids`, `attention_mask`, `labels` `[B, T]` in
/// `dir/reference.safetensors`) as the trainer's batch: labels shifted as transformers' loss
/// shifts them (position i predicts label i + 1), padded keys marked.
pub fn batch(dir: &Path) -> Batch {
    let bytes = read(dir, "reference.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (ids, mask, labels) = (
        ints(&st, "input_ids"),
        ints(&st, "attention_mask"),
        ints(&st, "labels"),
    );
    let t = st.tensor("input_ids").unwrap().shape()[1];
    let b = ids.len() / t;
    let shifted: Vec<i64> = (0..b * t)
        .map(|k| if k % t + 1 < t { labels[k + 1] } else { -100 })
        .collect();
    let hidden: Vec<f32> = mask
        .iter()
        .map(|&v| if v == 0 { 1.0 } else { 0.0 })
        .collect();
    Batch {
        ids: Indices::new(ids, &[b, t]).unwrap(),
        labels: Indices::new(shifted, &[b, t]).unwrap(),
        key_pad_mask: Tensor::from_vec(hidden, &[b, 1, t]).unwrap(),
        lengths: mask
            .chunks(t)
            .map(|r| r.iter().filter(|&&v| v != 0).count())
            .collect(),
        sample_ids: (0..b).collect(),
    }
}

/// Stored, every layer checkpointed, and checkpointed with SaveMatmuls.
pub fn plans(layers: usize) -> Vec<(&'static str, Segmentation, SavePolicy)> {
    let every = plan::segment(Plan::EveryBlock, layers, None).unwrap();
    vec![
        (
            "stored",
            Segmentation::store_all(layers),
            SavePolicy::RecomputeAll,
        ),
        ("checkpointed", every.clone(), SavePolicy::RecomputeAll),
        ("save-matmuls", every, SavePolicy::SaveMatmuls),
    ]
}

/// Logits (at the positions where `compared` holds, one per token) and loss within 1e-5
/// relative of `st`'s (segments checkpointed in `mode`), then each of `params` (names as in
/// `st`'s `grad.` entries) within 1e-4 of the largest magnitude of its reference gradient;
/// `params` are every gradient `st` has.
#[allow(clippy::too_many_arguments)]
pub fn compare(
    what: &str,
    m: &dyn CausalLm,
    x: &Batch,
    st: &SafeTensors,
    params: &[(String, Tensor)],
    seg: &Segmentation,
    policy: &SavePolicy,
    mode: CheckpointMode,
    compared: &dyn Fn(usize) -> bool,
) {
    for (_, p) in params {
        p.zero_grad();
    }
    let logits = m.logits(x, seg, mode, policy).unwrap();
    let got = logits.to_vec_f32();
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: no NaN under left padding"
    );
    let want = floats(st, "logits");
    let v = m.vocab_size();
    let pick = |l: &[f32]| -> Vec<f32> {
        l.chunks(v)
            .enumerate()
            .filter(|(i, _)| compared(*i))
            .flat_map(|(_, r)| r.to_vec())
            .collect()
    };
    let (got, want) = (pick(&got), pick(&want));
    let d = worst(&got, &want);
    assert!(d <= 1e-5 * max_abs(&want), "{what}: logits off by {d}");
    let loss = logits
        .reshape(&[x.ids.len(), v])
        .unwrap()
        .cross_entropy(&x.labels, -100)
        .unwrap();
    let want_loss = floats(st, "loss")[0];
    let l = loss.item().unwrap() as f32;
    assert!(
        (l - want_loss).abs() <= 1e-5 * want_loss.abs(),
        "{what}: loss {l} vs {want_loss}"
    );
    loss.backward()
        .unwrap_or_else(|e| panic!("{what}: backward: {e:?}"));
    for (pname, p) in params {
        let want = floats(st, &format!("grad.{pname}"));
        let scale = max_abs(&want);
        assert!(
            scale > 0.0,
            "{what}: the reference gradient of {pname} is zero"
        );
        let d = worst(&p.grad().unwrap().to_vec_f32(), &want);
        assert!(
            d <= 1e-4 * scale,
            "{what}: gradient of {pname} off by {d} (largest {scale})"
        );
    }
    let expected = st.names().iter().filter(|n| n.starts_with("grad.")).count();
    assert_eq!(
        params.len(),
        expected,
        "{what}: every parameter the reference has"
    );
}

/// The model's logits on `x` with every activation stored, recording nothing.
pub fn stored_logits(m: &dyn CausalLm, x: &Batch) -> Vec<f32> {
    let store = Segmentation::store_all(m.layers());
    rewind::tape::no_grad(|| {
        m.logits(
            x,
            &store,
            CheckpointMode::NonReentrant,
            &SavePolicy::RecomputeAll,
        )
    })
    .unwrap()
    .to_vec_f32()
}
