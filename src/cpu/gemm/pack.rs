//! Packing: copies of the operands' current blocks in the order a micro-kernel reads them.
//! A's block becomes panels of `mr` rows, each stored k-major (`[kc][mr]`); B's block becomes
//! panels of `nr` columns, each k-major (`[kc][nr]`). Rows and columns past the matrix are
//! zeros: the kernel computes them into a scratch tile whose padding is never stored.

use super::Layout;

/// Where a block starts and how big it is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Block {
    /// First row (A) or column (B) of the block.
    pub at: usize,
    /// Rows (A) or columns (B) in the block.
    pub len: usize,
    /// First k of the block.
    pub k0: usize,
    /// k values in the block.
    pub kc: usize,
}

/// Packs rows `blk.at..blk.at + blk.len` and k values `blk.k0..blk.k0 + blk.kc` of the m×k
/// operand `a` (stored as `l`) into `out`, `mr` rows per panel.
pub(super) fn pack_a<T: Copy + Default>(
    a: &[T],
    l: Layout,
    (m, k): (usize, usize),
    blk: Block,
    mr: usize,
    out: &mut [T],
) {
    for (p, panel) in out.chunks_mut(mr * blk.kc).enumerate() {
        let r0 = blk.at + p * mr;
        let rows = mr.min(blk.at + blk.len - r0);
        match l {
            // Row-major m×k: element (i, q) at i·k + q.
            Layout::Normal => {
                for r in 0..mr {
                    if r < rows {
                        let row = &a[(r0 + r) * k + blk.k0..][..blk.kc];
                        for (q, &v) in row.iter().enumerate() {
                            panel[q * mr + r] = v;
                        }
                    } else {
                        for q in 0..blk.kc {
                            panel[q * mr + r] = T::default();
                        }
                    }
                }
            }
            // Stored k×m: element (i, q) at q·m + i, so each k holds `mr` neighbours.
            Layout::Transposed => {
                for q in 0..blk.kc {
                    let src = &a[(blk.k0 + q) * m + r0..][..rows];
                    let dst = &mut panel[q * mr..][..mr];
                    dst[..rows].copy_from_slice(src);
                    dst[rows..].fill(T::default());
                }
            }
        }
    }
}

/// Packs panel `p` (`nr` columns from `blk.at + p·nr`) of columns `blk.at..blk.at + blk.len`
/// and k values `blk.k0..blk.k0 + blk.kc` of the k×n operand `b` (stored as `l`).
pub(super) fn pack_b_panel<T: Copy + Default>(
    b: &[T],
    l: Layout,
    (k, n): (usize, usize),
    blk: Block,
    nr: usize,
    p: usize,
    panel: &mut [T],
) {
    let c0 = blk.at + p * nr;
    let cols = nr.min(blk.at + blk.len - c0);
    match l {
        // Row-major k×n: element (q, j) at q·n + j, so each k holds `nr` neighbours.
        Layout::Normal => {
            for q in 0..blk.kc {
                let src = &b[(blk.k0 + q) * n + c0..][..cols];
                let dst = &mut panel[q * nr..][..nr];
                dst[..cols].copy_from_slice(src);
                dst[cols..].fill(T::default());
            }
        }
        // Stored n×k: element (q, j) at j·k + q.
        Layout::Transposed => {
            for c in 0..nr {
                if c < cols {
                    let col = &b[(c0 + c) * k + blk.k0..][..blk.kc];
                    for (q, &v) in col.iter().enumerate() {
                        panel[q * nr + c] = v;
                    }
                } else {
                    for q in 0..blk.kc {
                        panel[q * nr + c] = T::default();
                    }
                }
            }
        }
    }
}
