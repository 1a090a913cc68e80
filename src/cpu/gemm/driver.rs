//! The blocked product around a micro-kernel (the BLIS loop nest): for each block of B's
//! columns and of k, B's block is packed once; blocks of A's rows are packed and multiplied in
//! parallel on rayon. Threads split rows of C, never k, and every element is one FMA chain in k
//! order (carried through C between k blocks), so the bits depend on nothing but the operands.

use super::Layout;
use super::pack::{Block, Packable, pack_a, pack_b_panel};
use super::spec::Spec;
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread (splitting it would
/// cost more than it saves); a batch of such products splits over the batch instead.
pub(super) const SERIAL: usize = 1 << 21;

/// The k block for a product of depth `k` (≥ 1): as many blocks as `kc` needs, of equal size
/// (1024 is two of 512, not 768 and a short 256 whose tiles pay C's loads and stores for a
/// third of the work). Blocks only change where C carries the chain: the bits stay.
fn k_block(k: usize, kc: usize) -> usize {
    k.div_ceil(k.div_ceil(kc).max(1))
}

/// C's pointer, shared by the tasks that write disjoint tiles of it.
#[derive(Clone, Copy)]
struct Out<T>(*mut T);
// SAFETY: tasks write disjoint row blocks of C (each a distinct range of `ic`), and the caller
// of `drive` holds C exclusively for the call.
unsafe impl<T> Send for Out<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Out<T> {}

/// `c = a·b (+ c when beta)` with kernel `kern`; `a` is m×k, `b` k×n, `c` m×n row-major;
/// on rayon's threads when `parallel` and the product is large enough.
///
/// # Safety
/// `a` and `b` hold m×k and k×n elements laid out as `la` and `lb`; `c` points to m·n writable
/// elements, initialised when `beta`, aliasing neither.
#[allow(clippy::too_many_arguments)] // the BLAS signature
pub(super) unsafe fn drive<T: Packable>(
    kern: &Spec<T, T::Acc>,
    (m, k, n): (usize, usize, usize),
    a: &[T],
    la: Layout,
    b: &[T],
    lb: Layout,
    beta: bool,
    c: *mut T::Acc,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !beta {
            for e in 0..m * n {
                // SAFETY: e < m·n, inside C.
                unsafe { c.add(e).write(T::Acc::default()) };
            }
        }
        return;
    }
    let (mr, nr) = (kern.mr, kern.nr);
    let serial = !parallel
        || m.saturating_mul(n).saturating_mul(k) < SERIAL
        || rayon::current_num_threads() == 1;
    // Enough row blocks for every thread to take several (the last ones are short).
    let mc = kern.mc;
    // Parallel: each thread takes an equal share of A's row panels (one panel at most apart),
    // in blocks of up to `mc` rows.
    let panels_a = m.div_ceil(mr);
    let tasks = rayon::current_num_threads().min(panels_a);
    let share = |t: usize| (t * panels_a / tasks * mr).min(m);
    let out = Out(c);
    // C wider than tall (in panels): each thread takes an equal share of B's column panels and
    // runs the whole loop nest on them, packing its own B (no shared packing, no step-by-step
    // joins).
    let panels_b = n.div_ceil(nr);
    if !serial && panels_b > panels_a {
        let tasks = rayon::current_num_threads().min(panels_b);
        let cols = |t: usize| (t * panels_b / tasks * nr).min(n);
        (0..tasks).into_par_iter().for_each(|t| {
            // SAFETY: columns [cols(t), cols(t + 1)) of C are this task's alone.
            unsafe {
                columns(
                    kern,
                    (m, k, n),
                    (a, la),
                    (b, lb),
                    beta,
                    out,
                    cols(t)..cols(t + 1),
                )
            }
        });
        return;
    }
    if serial {
        // SAFETY: the caller's contract; one task, all of C.
        unsafe { columns(kern, (m, k, n), (a, la), (b, lb), beta, out, 0..n) };
        return;
    }
    let kb = k_block(k, kern.kc);
    let bp_len = kb * n.min(kern.nc).div_ceil(nr) * nr;
    T::with_buffer(1, bp_len, |bp| {
        for jc in (0..n).step_by(kern.nc) {
            let nc = kern.nc.min(n - jc);
            for k0 in (0..k).step_by(kb) {
                let kc = kb.min(k - k0);
                let bblk = Block {
                    at: jc,
                    len: nc,
                    k0,
                    kc,
                };
                let panels = &mut bp[..nc.div_ceil(nr) * nr * kc];
                let zero = k0 == 0 && !beta;
                // The rows [start, end) of A, in blocks of up to `mc` rows.
                let rows = |start: usize, end: usize, bp: &[T]| {
                    let len = mc.min(end - start).div_ceil(mr) * mr * kc;
                    T::with_buffer(0, len, |ap| {
                        for ic in (start..end).step_by(mc) {
                            let ablk = Block {
                                at: ic,
                                len: mc.min(end - ic),
                                k0,
                                kc,
                            };
                            let ap = &mut ap[..ablk.len.div_ceil(mr) * mr * kc];
                            pack_a(a, la, (m, k), ablk, mr, ap);
                            // SAFETY: rows [ic, ic + len) are this task's alone; the panels
                            // hold what the kernel reads.
                            unsafe { tiles(kern, ablk, bblk, ap, bp, n, zero, out) };
                        }
                    })
                };
                pack_b_parallel(b, lb, (k, n), bblk, nr, panels);
                let panels = &*panels;
                (0..tasks)
                    .into_par_iter()
                    .for_each(|t| rows(share(t), share(t + 1), panels));
            }
        }
    });
}

/// B's block packed on every thread. Row-major B goes as one run of whole panels per thread,
/// each packed k row by k row (as [`columns`] packs it): one task per panel would read `nr`
/// values from each of `kc` rows, a row apart — 4 KiB on a 1024-wide B, every read in the same
/// few cache sets. The same panels either way, so the same bits.
fn pack_b_parallel<T: Packable>(
    b: &[T],
    lb: Layout,
    (k, n): (usize, usize),
    bblk: Block,
    nr: usize,
    panels: &mut [T],
) {
    let kc = bblk.kc;
    if lb == Layout::Transposed {
        panels
            .par_chunks_mut(nr * kc)
            .enumerate()
            .for_each(|(p, panel)| pack_b_panel(b, lb, (k, n), bblk, nr, p, panel));
        return;
    }
    let per = bblk.len.div_ceil(nr).div_ceil(rayon::current_num_threads());
    panels
        .par_chunks_mut(per * nr * kc)
        .enumerate()
        .for_each(|(g, run)| {
            let at = g * per * nr;
            let blk = Block {
                at: bblk.at + at,
                len: (bblk.len - at).min(per * nr),
                ..bblk
            };
            pack_a(b, Layout::Transposed, (n, k), blk, nr, run);
        });
}

/// The whole loop nest on one thread for columns `cols` of C (all rows, all of k).
///
/// # Safety
/// As [`drive`]'s, and no one else writes columns `cols` of C meanwhile.
#[allow(clippy::too_many_arguments)] // the product and the columns
unsafe fn columns<T: Packable>(
    kern: &Spec<T, T::Acc>,
    (m, k, n): (usize, usize, usize),
    (a, la): (&[T], Layout),
    (b, lb): (&[T], Layout),
    beta: bool,
    out: Out<T::Acc>,
    cols: std::ops::Range<usize>,
) {
    let (mr, nr, mc) = (kern.mr, kern.nr, kern.mc);
    let width = cols.end - cols.start;
    let kb = k_block(k, kern.kc);
    let bp_len = kb * width.min(kern.nc).div_ceil(nr) * nr;
    T::with_buffer(1, bp_len, |bp| {
        for jc in (cols.start..cols.end).step_by(kern.nc) {
            let nc = kern.nc.min(cols.end - jc);
            for k0 in (0..k).step_by(kb) {
                let kc = kb.min(k - k0);
                let bblk = Block {
                    at: jc,
                    len: nc,
                    k0,
                    kc,
                };
                let panels = &mut bp[..nc.div_ceil(nr) * nr * kc];
                if lb == Layout::Normal {
                    // Row-major B is laid out as a transposed A: pack it k row by k row, each
                    // read front to back (panel by panel would read `nr` values a row apart).
                    pack_a(b, Layout::Transposed, (n, k), bblk, nr, panels);
                } else {
                    for (p, panel) in panels.chunks_mut(nr * kc).enumerate() {
                        pack_b_panel(b, lb, (k, n), bblk, nr, p, panel);
                    }
                }
                let zero = k0 == 0 && !beta;
                T::with_buffer(0, mc.min(m).div_ceil(mr) * mr * kc, |ap| {
                    for ic in (0..m).step_by(mc) {
                        let ablk = Block {
                            at: ic,
                            len: mc.min(m - ic),
                            k0,
                            kc,
                        };
                        let ap = &mut ap[..ablk.len.div_ceil(mr) * mr * kc];
                        pack_a(a, la, (m, k), ablk, mr, ap);
                        // SAFETY: the tiles lie in columns `cols`, this task's alone.
                        unsafe { tiles(kern, ablk, bblk, ap, panels, n, zero, out) };
                    }
                });
            }
        }
    });
}

/// Every tile of one block of C: rows of `ablk`, columns of `bblk`, from their packed panels.
///
/// # Safety
/// `out` points to C (m×n, rows `ldc` apart) and no one else writes the block's rows;
/// `ap` and `bp` hold the packed block of A and B.
#[allow(clippy::too_many_arguments)] // the block's coordinates
unsafe fn tiles<T: Packable>(
    kern: &Spec<T, T::Acc>,
    ablk: Block,
    bblk: Block,
    ap: &[T],
    bp: &[T],
    ldc: usize,
    zero: bool,
    out: Out<T::Acc>,
) {
    let (mr, nr, kc) = (kern.mr, kern.nr, ablk.kc);
    // Room for the widest tile (12×32); a kernel with a larger one is refused here, not
    // written past the scratch tile.
    let mut edge = [T::Acc::default(); 12 * 32];
    assert!(
        mr * nr <= edge.len(),
        "gemm: a {mr}×{nr} tile exceeds the scratch tile"
    );
    for (jp, bpanel) in bp.chunks(nr * kc).enumerate() {
        let (j0, cols) = (bblk.at + jp * nr, nr.min(bblk.len - jp * nr));
        for (ip, apanel) in ap.chunks(mr * kc).enumerate() {
            let (i0, rows) = (ablk.at + ip * mr, mr.min(ablk.len - ip * mr));
            // SAFETY: (i0, j0) is inside C; the tile's rows and columns too.
            let tile = unsafe { out.0.add(i0 * ldc + j0) };
            if rows == mr && cols == nr {
                // SAFETY: a full tile of C; panels of kc·mr and kc·nr elements.
                unsafe { (kern.run)(kc, apanel.as_ptr(), bpanel.as_ptr(), tile, ldc, zero) };
                continue;
            }
            // A ragged tile: through a full-size scratch tile, its padding never stored.
            for i in 0..rows {
                for j in 0..cols {
                    // SAFETY: (i, j) is inside the tile's valid part, initialised unless `zero`.
                    edge[i * nr + j] = if zero {
                        T::Acc::default()
                    } else {
                        unsafe { tile.add(i * ldc + j).read() }
                    };
                }
            }
            // SAFETY: the scratch tile holds mr·nr elements.
            unsafe {
                (kern.run)(
                    kc,
                    apanel.as_ptr(),
                    bpanel.as_ptr(),
                    edge.as_mut_ptr(),
                    nr,
                    zero,
                )
            };
            for i in 0..rows {
                for j in 0..cols {
                    // SAFETY: as above.
                    unsafe { tile.add(i * ldc + j).write(edge[i * nr + j]) };
                }
            }
        }
    }
}
