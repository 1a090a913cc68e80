//! Text files as `train` and `eval` read them: one sample per paragraph.

use rewind::error::{Error, Result};
use std::path::Path;

/// The paragraphs of a UTF-8 text file (blocks separated by blank lines) and the file's
/// content hash.
pub fn read_paragraphs(op: &'static str, path: &Path) -> Result<(Vec<String>, u64)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(op, path, e))?;
    let hash = super::Fnv1a::of(&bytes);
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::invalid(op, format!("{} is not UTF-8 text: {e}", path.display())))?;
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            if !cur.is_empty() {
                cur.push('\n');
            }
            cur.push_str(line);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok((out, hash))
}
