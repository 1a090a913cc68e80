//! A rotary embedding from a transformers `config.json`: transformers 5.x's `rope_parameters`
//! or older configs' `rope_theta` and `rope_scaling`, `partial_rotary_factor`; rope types
//! `default` and `llama3`, any other an error naming it. Shared by the families that rotate.

use rewind::error::{Error, Result};
use rewind::ops::rope::{Rope, RopeLayout};

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("rope", msg)
}

/// The rotary embedding `v` (a parsed `config.json`) describes for heads of `head_dim`.
pub fn rope(v: &serde_json::Value, head_dim: usize, layout: RopeLayout) -> Result<Rope> {
    let params = if v["rope_parameters"].is_object() {
        v["rope_parameters"].clone()
    } else {
        let mut p = v["rope_scaling"].clone();
        if !p.is_object() {
            p = serde_json::json!({});
        }
        p["rope_theta"] = v["rope_theta"].clone();
        p
    };
    let theta = params["rope_theta"].as_f64().unwrap_or(10000.0);
    let rope_type = params["rope_type"]
        .as_str()
        .or_else(|| params["type"].as_str())
        .unwrap_or("default");
    let partial = params["partial_rotary_factor"]
        .as_f64()
        .or_else(|| v["partial_rotary_factor"].as_f64())
        .unwrap_or(1.0);
    let rotary = (head_dim as f64 * partial) as usize;
    let mut rope = Rope::new(theta, rotary, layout)?;
    match rope_type {
        "default" => {}
        "llama3" => llama3(&mut rope, &params)?,
        other => {
            return Err(err(format!(
                "config.json: rope type `{other}` is not supported (default, llama3)"
            )));
        }
    }
    Ok(rope)
}

/// transformers' `llama3` rope scaling of the inverse frequencies, in f32 as it computes them.
fn llama3(rope: &mut Rope, p: &serde_json::Value) -> Result<()> {
    let get = |k: &str| {
        p[k].as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| err(format!("config.json: llama3 rope needs `{k}`")))
    };
    let (factor, low, high) = (
        get("factor")?,
        get("low_freq_factor")?,
        get("high_freq_factor")?,
    );
    let old = get("original_max_position_embeddings")?;
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    for f in &mut rope.inv_freq {
        let wavelen = 2.0 * std::f32::consts::PI / *f;
        let scaled = if wavelen > low_wavelen {
            *f / factor
        } else {
            *f
        };
        let smooth = (old / wavelen - low) / (high - low);
        let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
        let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
        *f = if medium { smoothed } else { scaled };
    }
    Ok(())
}
