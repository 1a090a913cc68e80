//! The blocked product around a micro-kernel (the BLIS loop nest): for each block of B's
//! columns and of k, B's block is packed once; blocks of A's rows are packed and multiplied in
//! parallel on rayon. Threads split rows of C, never k, and every element is one FMA chain in k
//! order (carried through C between k blocks), so the bits depend on nothing but the operands.

use super::Layout;
use super::pack::{Block, pack_a, pack_b_panel};
use super::spec::Spec;
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread (splitting it would
/// cost more than it saves); a batch of such products splits over the batch instead.
pub(super) const SERIAL: usize = 1 << 21;

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
pub(super) unsafe fn drive<T: Copy + Default + Send + Sync>(
    kern: &Spec<T>,
    (m, k, n): (usize, usize, usize),
    a: &[T],
    la: Layout,
    b: &[T],
    lb: Layout,
    beta: bool,
    c: *mut T,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !beta {
            for e in 0..m * n {
                // SAFETY: e < m·n, inside C.
                unsafe { c.add(e).write(T::default()) };
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
    let tasks = if serial {
        1
    } else {
        rayon::current_num_threads().min(panels_a)
    };
    let share = |t: usize| (t * panels_a / tasks * mr).min(m);
    let out = Out(c);
    let mut bp: Vec<T> = vec![T::default(); kern.kc.min(k) * n.min(kern.nc).div_ceil(nr) * nr];
    for jc in (0..n).step_by(kern.nc) {
        let nc = kern.nc.min(n - jc);
        for k0 in (0..k).step_by(kern.kc) {
            let kc = kern.kc.min(k - k0);
            let bblk = Block {
                at: jc,
                len: nc,
                k0,
                kc,
            };
            let panels = &mut bp[..nc.div_ceil(nr) * nr * kc];
            let zero = k0 == 0 && !beta;
            let block = |ic: usize, end: usize, ap: &mut Vec<T>, bp: &[T]| {
                let ablk = Block {
                    at: ic,
                    len: mc.min(end - ic),
                    k0,
                    kc,
                };
                ap.resize(ablk.len.div_ceil(mr) * mr * kc, T::default());
                pack_a(a, la, (m, k), ablk, mr, ap);
                // SAFETY: the block's rows [ic, ic + len) are this task's alone; the panels
                // hold what the kernel reads.
                unsafe { tiles(kern, ablk, bblk, ap, bp, n, zero, out) };
            };
            if serial {
                for (p, panel) in panels.chunks_mut(nr * kc).enumerate() {
                    pack_b_panel(b, lb, (k, n), bblk, nr, p, panel);
                }
                let mut ap = Vec::new();
                for ic in (0..m).step_by(mc) {
                    block(ic, m, &mut ap, panels);
                }
            } else {
                panels
                    .par_chunks_mut(nr * kc)
                    .enumerate()
                    .for_each(|(p, panel)| pack_b_panel(b, lb, (k, n), bblk, nr, p, panel));
                let panels = &*panels;
                (0..tasks).into_par_iter().for_each(|t| {
                    let (start, end) = (share(t), share(t + 1));
                    let mut ap = Vec::new();
                    for ic in (start..end).step_by(mc) {
                        block(ic, end, &mut ap, panels);
                    }
                });
            }
        }
    }
}

/// Every tile of one block of C: rows of `ablk`, columns of `bblk`, from their packed panels.
///
/// # Safety
/// `out` points to C (m×n, rows `ldc` apart) and no one else writes the block's rows;
/// `ap` and `bp` hold the packed block of A and B.
#[allow(clippy::too_many_arguments)] // the block's coordinates
unsafe fn tiles<T: Copy + Default>(
    kern: &Spec<T>,
    ablk: Block,
    bblk: Block,
    ap: &[T],
    bp: &[T],
    ldc: usize,
    zero: bool,
    out: Out<T>,
) {
    let (mr, nr, kc) = (kern.mr, kern.nr, ablk.kc);
    let mut edge = vec![T::default(); mr * nr];
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
                        T::default()
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
