//! Saving and loading named parameters in the safetensors format (names kept as given, e.g.
//! HF's `model.layers.0.attn.q_proj.lora_A`). Loading copies into existing tensors by name and
//! checks dtype and shape; a corrupt or truncated file is an error, never a panic.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::Buffer;
use crate::tensor::Tensor;
use safetensors::serialize;
use safetensors::tensor::TensorView;
pub use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// The safetensors dtype of a rewind dtype.
pub fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("safetensors", msg)
}

/// One tensor as the file stores it: for callers that add their own tensors (optimizer state,
/// say) beside the parameters before [`serialize_raw`].
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    /// Its name in the file.
    pub name: String,
    /// Its dtype in the file.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements as little-endian bytes.
    pub bytes: Vec<u8>,
}

/// `params` as raw little-endian bytes (a device tensor's copied to the host).
pub fn raw_params(params: &[(String, Tensor)]) -> Result<Vec<Raw>> {
    params
        .iter()
        .map(|(n, t)| {
            Ok(Raw {
                name: n.clone(),
                dtype: st_dtype(t.dtype()),
                shape: t.shape().to_vec(),
                bytes: t.with_host(
                    "save",
                    |b| crate::storage::with_buffer!(b, v => bytemuck::cast_slice(v).to_vec()),
                )?,
            })
        })
        .collect()
}

/// The safetensors bytes of `raw` with optional header metadata.
pub fn serialize_raw(
    raw: &[Raw],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let views = raw
        .iter()
        .map(|r| TensorView::new(r.dtype, r.shape.clone(), &r.bytes).map(|v| (r.name.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{e}")))?;
    serialize(views, metadata).map_err(|e| err(format!("{e}")))
}

/// The safetensors bytes of `params`.
pub fn to_bytes(params: &[(String, Tensor)]) -> Result<Vec<u8>> {
    serialize_raw(&raw_params(params)?, None)
}

/// Parses safetensors bytes; a corrupt or truncated file is an error.
pub fn parse(bytes: &[u8]) -> Result<SafeTensors<'_>> {
    SafeTensors::deserialize(bytes).map_err(|e| err(format!("corrupt or truncated file: {e}")))
}

/// Copies the tensors of a safetensors file's bytes into `params`, by name.
pub fn from_bytes(bytes: &[u8], params: &[(String, Tensor)]) -> Result<()> {
    copy_into(&parse(bytes)?, params)
}

/// Copies the tensors of a parsed file into `params`, by name, checking dtype and shape.
pub fn copy_into(st: &SafeTensors<'_>, params: &[(String, Tensor)]) -> Result<()> {
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
            DType::BF16 => Buffer::BF16(bytemuck::pod_collect_to_vec(view.data())),
            DType::F32 => Buffer::F32(bytemuck::pod_collect_to_vec(view.data())),
            DType::F64 => Buffer::F64(bytemuck::pod_collect_to_vec(view.data())),
        };
        p.set_buffer(data)?;
    }
    Ok(())
}

/// Writes `params` to `path`.
pub fn save(path: &Path, params: &[(String, Tensor)]) -> Result<()> {
    crate::atomic_file::write_atomic("save", path, &to_bytes(params)?)
}

/// Reads `path` into `params`.
pub fn load(path: &Path, params: &[(String, Tensor)]) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("load", path, e))?;
    from_bytes(&bytes, params)
}
