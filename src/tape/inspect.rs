//! Reading the tape: its entries, how many are live, and a printable dump.

use super::accounting::{peak_saved_bytes, saved_bytes};
use super::graph::Input;
use super::stack::with_top;
use std::fmt::Write as _;

/// What a reader of the tape sees of one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryInfo {
    /// Position on the tape.
    pub index: usize,
    /// The op's name.
    pub op: &'static str,
    /// Each input: `#i` (entry i), `leaf` (a leaf that requires grad) or `const`.
    pub inputs: Vec<String>,
    /// The output's shape.
    pub output_shape: Vec<usize>,
    /// Activation bytes this entry's backward keeps (not deduplicated across entries).
    pub saved_bytes: usize,
    /// True once backward used and released it.
    pub freed: bool,
}

/// The current tape's entries, oldest first.
pub fn entries() -> Vec<EntryInfo> {
    with_top(|tape| {
        tape.entries
            .iter()
            .enumerate()
            .map(|(index, e)| EntryInfo {
                index,
                op: e.op.name,
                inputs: e
                    .inputs
                    .iter()
                    .map(|i| match i {
                        Input::Const => "const".to_string(),
                        Input::Node(id) => format!("#{}", id.index),
                        Input::Leaf(_) => "leaf".to_string(),
                    })
                    .collect(),
                output_shape: e.out_shape.to_vec(),
                saved_bytes: e.saved_bytes,
                freed: e.freed,
            })
            .collect()
    })
}

/// Number of entries on the current tape that backward has not yet used.
pub fn live_entries() -> usize {
    with_top(|t| t.live)
}

/// A readable listing of the current tape: index, op, inputs, output shape, requires_grad
/// (always true: only ops that require grad are recorded) and saved bytes.
pub fn dump() -> String {
    let mut out =
        String::from("  #  op               inputs          output shape       saved bytes\n");
    for e in entries() {
        let _ = writeln!(
            out,
            "{:>3}  {:<16} {:<15} {:<18} {:>11}{}",
            e.index,
            e.op,
            e.inputs.join(","),
            format!("{:?}", e.output_shape),
            e.saved_bytes,
            if e.freed { "  (freed)" } else { "" }
        );
    }
    let _ = writeln!(
        out,
        "saved now: {} bytes, peak: {} bytes",
        saved_bytes(),
        peak_saved_bytes()
    );
    out
}
