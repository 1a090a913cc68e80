//! PEFT's LoRA adapters and transformers' `save_pretrained`, for every family: an adapter
//! directory is `adapter_config.json` plus `adapter_model.safetensors` whose names are the
//! model's own with `base_model.model.` in front and `lora_{A,B}.weight` after the module.

use rewind::error::{Error, Result};
use rewind::nn::{Linear, LoraLinear, Parameters, Projection, prefixed};
use rewind::tensor::Tensor;
use safetensors::SafeTensors;
use std::path::Path;

/// The prefix PEFT gives the wrapped model's names in an adapter file.
pub const PREFIX: &str = "base_model.model.";

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("adapter", msg)
}

/// What rewind reads from `adapter_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    /// Rank.
    pub r: usize,
    /// α (the update is scaled by α/r).
    pub alpha: f64,
    /// The module names LoRA wraps.
    pub targets: Vec<String>,
    /// `lora_dropout` (active in training mode).
    pub dropout: f64,
}

/// Reads `dir/adapter_config.json`: a LoRA adapter on a list of `supported` modules, without
/// DoRA, rsLoRA, biases, per-layer ranks or extra saved modules (each an error naming it).
pub fn read_config(dir: &Path, supported: &[&str]) -> Result<AdapterConfig> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("adapter", &path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("adapter_config.json: {e}")))?;
    let bad = |what: String| err(format!("adapter_config.json: {what} is not supported"));
    if v["peft_type"] != "LORA" {
        return Err(bad(format!("peft_type {}", v["peft_type"])));
    }
    let targets: Vec<String> = match &v["target_modules"] {
        serde_json::Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if targets.is_empty() || targets.iter().any(|t| !supported.contains(&t.as_str())) {
        return Err(bad(format!(
            "target_modules {} (a list of {})",
            v["target_modules"],
            supported.join(", ")
        )));
    }
    for flag in ["use_dora", "use_rslora"] {
        if v[flag] == true {
            return Err(bad(flag.to_string()));
        }
    }
    if v["bias"].as_str().is_some_and(|b| b != "none") || v["lora_bias"] == true {
        return Err(bad("a LoRA bias".to_string()));
    }
    let dropout = v["lora_dropout"].as_f64().unwrap_or(0.0);
    if !(0.0..1.0).contains(&dropout) {
        return Err(bad(format!("lora_dropout {}", v["lora_dropout"])));
    }
    for map in ["rank_pattern", "alpha_pattern"] {
        if v[map].as_object().is_some_and(|m| !m.is_empty()) {
            return Err(bad(map.to_string()));
        }
    }
    if v["modules_to_save"]
        .as_array()
        .is_some_and(|m| !m.is_empty())
    {
        return Err(bad(format!("modules_to_save {}", v["modules_to_save"])));
    }
    let r = v["r"]
        .as_u64()
        .and_then(|r| usize::try_from(r).ok())
        .filter(|&r| r > 0)
        .ok_or_else(|| err("adapter_config.json: `r` is missing or 0"))?;
    let alpha = v["lora_alpha"]
        .as_f64()
        .ok_or_else(|| err("adapter_config.json: `lora_alpha` is missing"))?;
    Ok(AdapterConfig {
        r,
        alpha,
        targets,
        dropout,
    })
}

/// Replaces a plain projection by a LoRA one of rank `r` (its base frozen); a LoRA one stays.
pub fn wrap(proj: &mut Projection, r: usize, alpha: f64) -> Result<()> {
    if r == 0 {
        return Err(err("LoRA rank 0"));
    }
    if matches!(proj, Projection::Plain(_)) {
        let placeholder = Projection::Plain(Linear::new(1, 1, false)?);
        if let Projection::Plain(base) = std::mem::replace(proj, placeholder) {
            *proj = Projection::Lora(LoraLinear::new(base, r, alpha)?);
        }
    }
    Ok(())
}

/// Folds a LoRA projection into its base weight (W ← W + (α/r)·B·A, PEFT's
/// `merge_and_unload`); the base keeps its `requires_grad`. A plain one stays.
pub fn merge(proj: &mut Projection) -> Result<()> {
    if matches!(proj, Projection::Lora(_)) {
        let placeholder = Projection::Plain(Linear::new(1, 1, false)?);
        if let Projection::Lora(l) = std::mem::replace(proj, placeholder) {
            let merged = rewind::tape::no_grad(|| {
                l.base.weight.add(&l.b.matmul(&l.a)?.mul_scalar(l.scale)?)
            })?;
            l.base.weight.set_data(merged.to_vec::<f32>()?)?;
            *proj = Projection::Plain(l.base);
        }
    }
    Ok(())
}

/// A projection's parameters under `name` (the base keeps transformers' names, the adapters
/// are `{name}.lora_{A,B}.weight` as PEFT names them without its prefix).
pub fn named(p: &mut Vec<(String, Tensor)>, name: &str, proj: &Projection) {
    match proj {
        Projection::Plain(l) => p.extend(prefixed(name, l.named_parameters())),
        Projection::Lora(l) => {
            p.extend(prefixed(name, l.base.named_parameters()));
            p.push((format!("{name}.lora_A.weight"), l.a.clone()));
            p.push((format!("{name}.lora_B.weight"), l.b.clone()));
        }
    }
}

/// The adapters among a model's named parameters, under PEFT's names.
pub fn lora_parameters(named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    named
        .into_iter()
        .filter(|(n, _)| n.contains(".lora_"))
        .map(|(n, p)| (format!("{PREFIX}{n}"), p))
        .collect()
}

/// Fills `params` (PEFT's names) from `dir/adapter_model.safetensors`; f32, f16 or bf16. A
/// missing or mis-shaped tensor names its key.
pub fn load_weights(dir: &Path, params: &[(String, Tensor)]) -> Result<()> {
    let path = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| Error::io("adapter", &path, e))?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| err(format!("{}: {e}", path.display())))?;
    for (name, p) in params {
        let view = st
            .tensor(name)
            .map_err(|_| err(format!("adapter_model.safetensors has no tensor `{name}`")))?;
        if view.shape() != p.shape() {
            return Err(err(format!(
                "`{name}` has shape {:?}, the adapter needs {:?}",
                view.shape(),
                p.shape()
            )));
        }
        let values = super::hf::to_f32(name, &view)?;
        p.set_data(values)?;
    }
    Ok(())
}

/// Writes `params` (PEFT's names) and an `adapter_config.json` PEFT reads, each file
/// crash-safely. `projections` are the model's (the adapters among them share one rank and α);
/// `targets` are the wrapped module names; `fan_in_fan_out` is true for GPT-2's `Conv1D` layers.
pub fn save<'a>(
    dir: &Path,
    projections: impl IntoIterator<Item = &'a Projection>,
    params: &[(String, Tensor)],
    targets: &[&str],
    fan_in_fan_out: bool,
) -> Result<()> {
    let any = projections
        .into_iter()
        .find_map(|p| match p {
            Projection::Lora(l) => Some(l),
            Projection::Plain(_) => None,
        })
        .ok_or_else(|| err("save_adapter: the model has no LoRA adapters"))?;
    let r = any.a.shape()[0];
    let alpha = any.scale * r as f64;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("adapter", dir, e))?;
    let bytes = rewind::weights::to_bytes(params)?;
    rewind::atomic_file::write_atomic("adapter", &dir.join("adapter_model.safetensors"), &bytes)?;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": any.dropout.p,
        "target_modules": targets,
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "use_dora": false,
        "use_rslora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "base_model_name_or_path": null,
    });
    let text = serde_json::to_string_pretty(&config).map_err(|e| err(e.to_string()))?;
    rewind::atomic_file::write_atomic("adapter", &dir.join("adapter_config.json"), text.as_bytes())
}

/// Writes `params` (transformers' names, as stored) as `model.safetensors` with PyTorch's
/// metadata and `config` as `config.json`, each file crash-safely.
pub fn save_pretrained(
    dir: &Path,
    params: &[(String, Tensor)],
    config: &serde_json::Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("save_pretrained", dir, e))?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = rewind::weights::serialize_raw(&rewind::weights::raw_params(params)?, Some(meta))?;
    rewind::atomic_file::write_atomic("save_pretrained", &dir.join("model.safetensors"), &bytes)?;
    let text = serde_json::to_string_pretty(config).map_err(|e| err(e.to_string()))?;
    rewind::atomic_file::write_atomic("save_pretrained", &dir.join("config.json"), text.as_bytes())
}
