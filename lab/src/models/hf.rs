//! Reading a transformers checkpoint's weights: `model.safetensors`, or the shards a
//! `model.safetensors.index.json` lists; f32, f16 and bf16 tensors become f32 master copies.

use rewind::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("load", msg)
}

/// A checkpoint's tensors by name: shape and f32 values.
pub type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every tensor of the checkpoint in `dir`, by name: its shape and its values in f32.
pub fn read_weights(dir: &Path) -> Result<Weights> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<std::path::PathBuf> = if single.exists() {
        vec![single]
    } else if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io("load", &index, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", index.display())))?;
        let map = v["weight_map"]
            .as_object()
            .ok_or_else(|| err(format!("{} has no weight_map", index.display())))?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        shards.into_iter().map(|f| dir.join(f)).collect()
    } else if dir.join("pytorch_model.bin").exists()
        || dir.join("pytorch_model.bin.index.json").exists()
    {
        return Err(err(format!(
            "{} holds pickled PyTorch weights (pytorch_model*.bin), which rewind does not read; save the model with safe_serialization=True",
            dir.display()
        )));
    } else {
        return Err(err(format!(
            "{} has neither model.safetensors nor model.safetensors.index.json",
            dir.display()
        )));
    };
    let mut out = BTreeMap::new();
    for path in files {
        out.append(&mut read_file(&path)?);
    }
    Ok(out)
}

/// Every tensor of one safetensors file, by name: its shape and its values in f32.
pub fn read_file(path: &Path) -> Result<Weights> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("load", path, e))?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut out = BTreeMap::new();
    for name in st.names() {
        let view = st.tensor(name).map_err(|e| err(format!("{name}: {e}")))?;
        let values = to_f32(name, &view)?;
        out.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// A tensor's values in f32 from f32, f16 or bf16 storage; another dtype names the tensor.
pub fn to_f32(name: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f32>> {
    Ok(match view.dtype() {
        Dtype::F32 => bytemuck::pod_collect_to_vec(view.data()),
        Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(view.data())
            .into_iter()
            .map(f32::from)
            .collect(),
        Dtype::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(view.data())
            .into_iter()
            .map(f32::from)
            .collect(),
        other => {
            return Err(err(format!(
                "`{name}` has dtype {other:?}; f32, f16 and bf16 are supported"
            )));
        }
    })
}
