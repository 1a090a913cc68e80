//! Trains a fixture model's PEFT adapter (GPT-2, Llama or Qwen2) for a few SGD steps with
//! rewind, then writes the adapter (PEFT's format), rewind's logits for the fixture's reference
//! batch, and the merged model (`merged/`, transformers' format) into OUT_DIR, for
//! `scripts/check_rewind_adapter.py` to load in PEFT and transformers and compare.
//! Usage: `adapter_roundtrip FIXTURE_DIR OUT_DIR`.
use rewind::checkpoint::{CheckpointMode, SavePolicy, Segmentation};
use rewind::indices::Indices;
use rewind::optim::{Optimizer, ParamGroup, Sgd};
use rewind::tensor::Tensor;
use rewind_lab::data::Batch;
use std::path::Path;

fn main() -> rewind::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err(rewind::Error::invalid(
            "adapter_roundtrip",
            "usage: adapter_roundtrip FIXTURE_DIR OUT_DIR",
        ));
    }
    let (fixture, out) = (Path::new(&args[1]), Path::new(&args[2]));
    let ckpt = rewind_lab::models::lm::Checkpoint::open(fixture)?;
    let mut m = rewind_lab::eval::load_model(&ckpt, Some(&fixture.join("adapter")))?;
    let bytes = std::fs::read(fixture.join("reference.safetensors"))
        .map_err(|e| rewind::Error::io("adapter_roundtrip", fixture, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| rewind::Error::invalid("adapter_roundtrip", e.to_string()))?;
    let ints = |k: &str| -> Vec<i64> { bytemuck::pod_collect_to_vec(st.tensor(k).unwrap().data()) };
    let shape = st.tensor("input_ids").unwrap().shape().to_vec();
    let (b, t) = (shape[0], shape[1]);
    let (ids, mask, labels) = (ints("input_ids"), ints("attention_mask"), ints("labels"));
    // transformers' causal-LM loss: position i predicts label i + 1.
    let next: Vec<i64> = (0..b * t)
        .map(|k| if k % t + 1 < t { labels[k + 1] } else { -100 })
        .collect();
    let hidden: Vec<f32> = mask
        .iter()
        .map(|&v| if v == 0 { 1.0 } else { 0.0 })
        .collect();
    let batch = Batch {
        ids: Indices::new(ids, &shape)?,
        labels: Indices::new(next, &[b * t])?,
        key_pad_mask: Tensor::from_vec(hidden, &[b, 1, t])?,
        lengths: (0..b)
            .map(|r| mask[r * t..(r + 1) * t].iter().filter(|&&v| v != 0).count())
            .collect(),
        sample_ids: (0..b).collect(),
    };
    let store = Segmentation::store_all(m.layers());
    let (mode, policy) = (CheckpointMode::NonReentrant, SavePolicy::RecomputeAll);
    let params: Vec<_> = m
        .named_parameters()
        .into_iter()
        .filter(|(_, p)| p.requires_grad())
        .map(|(_, p)| p)
        .collect();
    let mut opt = Sgd::new(vec![ParamGroup::new(params, 0.5, 0.0)], 0.0, false)?;
    for step in 0..5 {
        let loss = m.loss(&batch, &store, mode, &policy)?;
        println!("step {step}: loss {:.6}", loss.item()?);
        loss.backward()?;
        opt.step()?;
        opt.zero_grad();
    }
    m.save_adapter(out)?;
    let logits = rewind::tape::no_grad(|| m.logits(&batch, &store, mode, &policy))?;
    rewind::weights::save(
        &out.join("rewind_logits.safetensors"),
        &[("logits".to_string(), logits)],
    )?;
    // The adapter merged into the base: a plain transformers checkpoint.
    m.merge_and_save(&out.join("merged"))?;
    println!("wrote {}", out.display());
    Ok(())
}
