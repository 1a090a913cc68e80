//! Trains the fixture GPT-2's PEFT adapter for a few SGD steps with rewind, then writes the
//! adapter (PEFT's format), rewind's logits for the reference batch, and the merged model
//! (`merged/`, transformers' format) into OUT_DIR, for `scripts/check_rewind_adapter.py` to load
//! in PEFT and transformers and compare.
//! Usage: `gpt2_adapter FIXTURE_DIR OUT_DIR`.
use rewind::checkpoint::{CheckpointMode, SavePolicy, Segmentation};
use rewind::indices::Indices;
use rewind::optim::{Optimizer, ParamGroup, Sgd};
use rewind_lab::models::Gpt2;
use std::path::Path;

fn main() -> rewind::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err(rewind::Error::invalid(
            "gpt2_adapter",
            "usage: gpt2_adapter FIXTURE_DIR OUT_DIR",
        ));
    }
    let (fixture, out) = (Path::new(&args[1]), Path::new(&args[2]));
    let mut m = Gpt2::load(fixture)?;
    m.load_adapter(&fixture.join("adapter"))?;
    let bytes = std::fs::read(fixture.join("reference.safetensors"))
        .map_err(|e| rewind::Error::io("gpt2_adapter", fixture, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| rewind::Error::invalid("gpt2_adapter", e.to_string()))?;
    let ints = |k: &str| -> Vec<i64> { bytemuck::pod_collect_to_vec(st.tensor(k).unwrap().data()) };
    let shape = st.tensor("input_ids").unwrap().shape().to_vec();
    let (ids, mask, labels) = (ints("input_ids"), ints("attention_mask"), ints("labels"));
    let ids = Indices::new(ids, &shape)?;
    let store = Segmentation::store_all(m.cfg.n_layer);
    let params: Vec<_> = m.lora_parameters().into_iter().map(|(_, p)| p).collect();
    let mut opt = Sgd::new(vec![ParamGroup::new(params, 0.5, 0.0)], 0.0, false)?;
    for step in 0..5 {
        let logits = m.logits(
            &ids,
            Some(&mask),
            &store,
            CheckpointMode::NonReentrant,
            &SavePolicy::RecomputeAll,
        )?;
        let loss = Gpt2::causal_lm_loss(&logits, &labels)?;
        println!("step {step}: loss {:.6}", loss.item()?);
        loss.backward()?;
        opt.step()?;
        opt.zero_grad();
    }
    m.save_adapter(out)?;
    let logits = rewind::tape::no_grad(|| {
        m.logits(
            &ids,
            Some(&mask),
            &store,
            CheckpointMode::NonReentrant,
            &SavePolicy::RecomputeAll,
        )
    })?;
    rewind::weights::save(
        &out.join("rewind_logits.safetensors"),
        &[("logits".to_string(), logits)],
    )?;
    // The adapter merged into the base: a plain transformers checkpoint.
    m.merge_lora()?;
    m.save_pretrained(&out.join("merged"))?;
    println!("wrote {}", out.display());
    Ok(())
}
