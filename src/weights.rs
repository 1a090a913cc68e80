//! Saving and loading named parameters in the safetensors format (names kept as given, e.g.
//! HF's `model.layers.0.attn.q_proj.lora_A`). Loading copies into existing tensors by name and
//! checks dtype and shape; a corrupt or truncated file is an error, never a panic.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::Buffer;
use crate::tensor::Tensor;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors, serialize};
use std::path::Path;

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F16 => Dtype::F16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("safetensors", msg)
}

/// The safetensors bytes of `params`.
pub fn to_bytes(params: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let raw: Vec<(String, DType, Vec<usize>, Vec<u8>)> = params
        .iter()
        .map(|(n, t)| {
            let bytes = match &*t.data() {
                Buffer::F16(v) => bytemuck::cast_slice(v).to_vec(),
                Buffer::F32(v) => bytemuck::cast_slice(v).to_vec(),
                Buffer::F64(v) => bytemuck::cast_slice(v).to_vec(),
            };
            (n.clone(), t.dtype(), t.shape().to_vec(), bytes)
        })
        .collect();
    let views = raw
        .iter()
        .map(|(n, d, s, b)| TensorView::new(st_dtype(*d), s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{e}")))?;
    serialize(views, None).map_err(|e| err(format!("{e}")))
}

/// Copies the tensors of a safetensors file's bytes into `params`, by name.
pub fn from_bytes(bytes: &[u8], params: &[(String, Tensor)]) -> Result<()> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| err(format!("corrupt or truncated file: {e}")))?;
    for (name, p) in params {
        let view = st
            .tensor(name)
            .map_err(|_| err(format!("no tensor named `{name}` in the file")))?;
        if view.dtype() != st_dtype(p.dtype()) || view.shape() != p.shape() {
            return Err(err(format!(
                "`{name}` is {:?} {:?} in the file but {:?} {:?} in the model",
                view.dtype(),
                view.shape(),
                p.dtype(),
                p.shape()
            )));
        }
        let data = match p.dtype() {
            DType::F16 => Buffer::F16(bytemuck::pod_collect_to_vec(view.data())),
            DType::F32 => Buffer::F32(bytemuck::pod_collect_to_vec(view.data())),
            DType::F64 => Buffer::F64(bytemuck::pod_collect_to_vec(view.data())),
        };
        p.update_data(|b| *b = data)?;
    }
    Ok(())
}

/// Writes `params` to `path`.
pub fn save(path: &Path, params: &[(String, Tensor)]) -> Result<()> {
    std::fs::write(path, to_bytes(params)?)
        .map_err(|e| err(format!("writing {}: {e}", path.display())))
}

/// Reads `path` into `params`.
pub fn load(path: &Path, params: &[(String, Tensor)]) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| err(format!("reading {}: {e}", path.display())))?;
    from_bytes(&bytes, params)
}
