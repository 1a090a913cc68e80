//! Saving and resuming a run exactly. One safetensors file holds the weights (HF names),
//! the optimizer state (`optimizer.{i}.{buffer}`: fp32 moments, or 8-bit codes and absmax),
//! and in its header the configuration, step, scaler, generator and data position, with an
//! FNV-1a checksum over everything, so a corrupt or truncated file is a clear error.

use super::config::TrainConfig;
use super::trainer::{DataPosition, Trainer};
use crate::data::Fnv1a;
use rewind::amp::ScalerState;
use rewind::error::{Error, Result};
use rewind::optim::{OptimState, StateBuffer};
use rewind::rng::{self, GeneratorState};
use rewind::weights::{self, Raw};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Version 3: the tokenizer is the `tokenizers`-compatible byte-level BPE (version 2 saves hold
/// ids of the lab's former BPE and cannot resume).
const FORMAT: &str = "rewind-train/3";

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("resume", msg)
}

/// FNV-1a over every tensor (name, dtype, shape, bytes) in name order and every header entry
/// but the checksum itself.
fn checksum<'a>(
    tensors: impl Iterator<Item = (&'a str, String, &'a [u8])>,
    meta: &BTreeMap<String, String>,
) -> u64 {
    let mut h = Fnv1a::default();
    let mut eat = |bytes: &[u8]| h.eat(bytes);
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (name, desc, bytes) in sorted {
        eat(name.as_bytes());
        eat(desc.as_bytes());
        eat(bytes);
    }
    for (k, v) in meta.iter().filter(|(k, _)| k.as_str() != "checksum") {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    h.finish()
}

fn describe(dtype: Dtype, shape: &[usize]) -> String {
    format!("{dtype:?}{shape:?}")
}

/// `v` as JSON with every object's keys in order.
fn sorted_json(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(k.as_str()).to_string());
                out.push(':');
                sorted_json(v, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                sorted_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The same safetensors file with its header's keys in order: the safetensors crate writes
/// the metadata in a hash map's order, which differs from process to process, and the same
/// run's state must give the same bytes.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let bad = || err("the safetensors writer produced no header");
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let n = usize::try_from(n).map_err(|_| bad())?;
    let header = bytes.get(8..8 + n).ok_or_else(bad)?;
    let v: serde_json::Value = serde_json::from_slice(header).map_err(|e| err(e.to_string()))?;
    let mut h = String::with_capacity(n);
    sorted_json(&v, &mut h);
    // Padded with spaces to a multiple of 8, as the writer pads it.
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

impl Trainer {
    /// The run's full state as safetensors bytes (the same state, the same bytes). Under
    /// ZeRO-1 every rank must call it (the optimizer state is gathered to rank 0), and the
    /// other ranks get an error instead of bytes.
    pub fn save_bytes(&self) -> Result<Vec<u8>> {
        self.gathered_save_bytes()?.ok_or_else(|| {
            err(format!(
                "rank {} holds a shard of the optimizer: rank 0 gets the save",
                self.rank()
            ))
        })
    }

    /// [`Self::save_bytes`], `None` on the ranks that only sent their shard.
    fn gathered_save_bytes(&self) -> Result<Option<Vec<u8>>> {
        let Some(opt) = self.whole_optimizer_state()? else {
            return Ok(None);
        };
        let mut raw = weights::raw_params(&self.model.named_parameters())?;
        let mut meta: BTreeMap<String, String> = BTreeMap::new();
        meta.insert("format".into(), FORMAT.into());
        for (k, v) in self.cfg.settings() {
            meta.insert(format!("config.{k}"), v.to_string());
        }
        meta.insert("step".into(), self.steps_done.to_string());
        meta.insert("optimizer.step".into(), opt.step.to_string());
        meta.insert("optimizer.params".into(), opt.buffers.len().to_string());
        for (i, bufs) in opt.buffers.iter().enumerate() {
            let names: Vec<&str> = bufs.iter().map(|(n, _)| n.as_str()).collect();
            meta.insert(format!("optimizer.{i}.buffers"), names.join(","));
            for (name, b) in bufs {
                let (dtype, bytes) = match b {
                    StateBuffer::F32(v) => (Dtype::F32, bytemuck::cast_slice(v).to_vec()),
                    StateBuffer::U8(v) => (Dtype::U8, v.clone()),
                };
                let n = bytes.len() / if dtype == Dtype::F32 { 4 } else { 1 };
                raw.push(Raw {
                    name: format!("optimizer.{i}.{name}"),
                    dtype,
                    shape: vec![n],
                    bytes,
                });
            }
        }
        if let Some(s) = self.scaler.as_ref().map(|s| s.state_dict()) {
            meta.insert("scaler.scale_bits".into(), s.scale.to_bits().to_string());
            meta.insert("scaler.growth_tracker".into(), s.growth_tracker.to_string());
        }
        let g = rng::get_state();
        meta.insert("rng.seed".into(), g.seed.to_string());
        meta.insert("rng.offset".into(), g.offset.to_string());
        if let Some(h) = self.data.text_hash {
            meta.insert("data.text_hash".into(), format!("{h:016x}"));
        }
        meta.insert(
            "data.tokenizer_hash".into(),
            format!("{:016x}", self.data.tokenizer.content_hash()),
        );
        meta.insert("data.epoch".into(), self.position.epoch.to_string());
        meta.insert("data.batch".into(), self.position.batch.to_string());
        let sum = checksum(
            raw.iter()
                .map(|r| (r.name.as_str(), describe(r.dtype, &r.shape), &r.bytes[..])),
            &meta,
        );
        meta.insert("checksum".into(), format!("{sum:016x}"));
        let bytes =
            weights::serialize_raw(&raw, Some(meta.into_iter().collect::<HashMap<_, _>>()))?;
        canonical_header(bytes).map(Some)
    }

    /// Writes the run's state to `path` (under data parallelism every rank calls; rank 0
    /// writes).
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.rank() != 0 && !self.zero() {
            return Ok(());
        }
        match self.gathered_save_bytes()? {
            Some(b) if self.rank() == 0 => rewind::atomic_file::write_atomic("save", path, &b),
            _ => Ok(()),
        }
    }

    /// Continues the run saved in `path`; `cfg` must equal the saved configuration.
    pub fn resume(cfg: TrainConfig, path: &Path) -> Result<Trainer> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("resume", path, e))?;
        Trainer::resume_from_bytes(cfg, &bytes)
    }

    /// Continues the run saved in `bytes`.
    pub fn resume_from_bytes(cfg: TrainConfig, bytes: &[u8]) -> Result<Trainer> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("corrupt or truncated save file: {e}")))?;
        let meta: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let st = weights::parse(bytes).map_err(|e| err(e.to_string()))?;
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(err(format!(
                "not a rewind training save (header format {:?}, expected {FORMAT:?})",
                meta.get("format")
            )));
        }
        let want: String = meta
            .get("checksum")
            .cloned()
            .ok_or_else(|| err("the save has no checksum"))?;
        let views = st.tensors();
        let got = checksum(
            views
                .iter()
                .map(|(n, v)| (n.as_str(), describe(v.dtype(), v.shape()), v.data())),
            &meta,
        );
        if format!("{got:016x}") != want {
            return Err(err(format!(
                "checksum mismatch (file says {want}, contents hash to {got:016x}): the save is corrupt"
            )));
        }
        let diffs: Vec<String> = cfg
            .settings()
            .into_iter()
            .filter_map(|(k, v)| {
                let saved = meta.get(&format!("config.{k}"));
                let v = v.to_string();
                (saved != Some(&v)).then(|| {
                    format!(
                        "{k}: saved {}, now {v}",
                        saved.map_or("(absent)", |s| s.as_str())
                    )
                })
            })
            .collect();
        if !diffs.is_empty() {
            return Err(err(format!(
                "the save was made with different settings; pass the same training flags ({})",
                diffs.join("; ")
            )));
        }
        let mut t = Trainer::new(cfg)?;
        check_same_data(&t, &meta)?;
        weights::copy_into(&st, &t.model.named_parameters()).map_err(|e| err(e.to_string()))?;
        t.opt.load_state_dict(optimizer_state(&st, &meta)?)?;
        if let Some(s) = t.scaler.as_mut() {
            s.load_state_dict(ScalerState {
                scale: f32::from_bits(num(&meta, "scaler.scale_bits")?),
                growth_tracker: num(&meta, "scaler.growth_tracker")?,
            });
        }
        rng::set_state(GeneratorState {
            seed: num(&meta, "rng.seed")?,
            offset: num(&meta, "rng.offset")?,
        });
        t.steps_done = num(&meta, "step")?;
        t.position = DataPosition {
            epoch: num(&meta, "data.epoch")?,
            batch: num(&meta, "data.batch")?,
        };
        t.load_epoch()?;
        Ok(t)
    }
}

/// The text file and the tokenizer trained on it are those of the save.
fn check_same_data(t: &Trainer, meta: &BTreeMap<String, String>) -> Result<()> {
    let now = t.data.text_hash.map(|h| format!("{h:016x}"));
    if meta.get("data.text_hash") != now.as_ref() {
        let path = t
            .cfg
            .text_file
            .as_ref()
            .or(t.cfg.data_file.as_ref())
            .map_or_else(String::new, |p| format!(" {}", p.display()));
        return Err(err(format!(
            "the text file{path} changed since the save (content hash saved {}, now {}): resume with the text the run was trained on",
            meta.get("data.text_hash").map_or("(none)", |s| s.as_str()),
            now.as_deref().unwrap_or("(none)")
        )));
    }
    let tok = format!("{:016x}", t.data.tokenizer.content_hash());
    if meta.get("data.tokenizer_hash") != Some(&tok) {
        return Err(err(format!(
            "the tokenizer trained now differs from the save's (hash saved {}, now {tok})",
            meta.get("data.tokenizer_hash")
                .map_or("(none)", |s| s.as_str())
        )));
    }
    Ok(())
}

fn num<T: std::str::FromStr>(meta: &BTreeMap<String, String>, key: &str) -> Result<T> {
    meta.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err(format!("header entry `{key}` is missing or malformed")))
}

fn optimizer_state(st: &SafeTensors<'_>, meta: &BTreeMap<String, String>) -> Result<OptimState> {
    let n: usize = num(meta, "optimizer.params")?;
    let mut buffers = Vec::with_capacity(n.min(1 << 20));
    for i in 0..n {
        let key = format!("optimizer.{i}.buffers");
        let names = meta
            .get(&key)
            .ok_or_else(|| err(format!("header entry `{key}` is missing")))?;
        let mut bufs = Vec::new();
        for name in names.split(',').filter(|s| !s.is_empty()) {
            let tname = format!("optimizer.{i}.{name}");
            let v = st
                .tensor(&tname)
                .map_err(|_| err(format!("no tensor `{tname}` in the save")))?;
            let b = match v.dtype() {
                Dtype::F32 => StateBuffer::F32(bytemuck::pod_collect_to_vec(v.data())),
                Dtype::U8 => StateBuffer::U8(v.data().to_vec()),
                other => return Err(err(format!("`{tname}` has dtype {other:?}"))),
            };
            bufs.push((name.to_string(), b));
        }
        buffers.push(bufs);
    }
    Ok(OptimState {
        step: num(meta, "optimizer.step")?,
        buffers,
    })
}
