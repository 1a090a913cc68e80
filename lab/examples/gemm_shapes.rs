//! The GEMM shapes of `rewind_lab::bench::gemm`, timed with the engine's chosen kernel (or every
//! SIMD kernel this CPU runs, and the `matrixmultiply` and `gemm` crates), one JSON line per
//! shape and candidate: what `scripts/gemm_side_by_side.py` sets beside NumPy's OpenBLAS.
//! Usage: `gemm_shapes [REPS] [all|chosen] [SHAPE-PREFIX[,SHAPE-PREFIX…]]`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rewind::cpu::gemm::Kernel;
use rewind_lab::bench::gemm::{SHAPES, Shape, gflops};
use rewind_lab::bench::timed;

/// Another crate's sgemm: A and its (row, column) strides, B and its, C.
type Sgemm<'a> = &'a dyn Fn(&[f32], (isize, isize), &[f32], (isize, isize), &mut [f32]);

/// GFLOP/s of `sh` through another crate's sgemm.
fn other(sh: &Shape, reps: usize, f: Sgemm<'_>) -> (f64, f64, f64) {
    let fill = |n: usize, p: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i % p) as f32 - (p / 2) as f32) * 0.01)
            .collect()
    };
    let (a, b) = (fill(sh.m * sh.k, 17), fill(sh.k * sh.n, 13));
    let mut c = vec![0.0f32; sh.m * sh.n];
    let sa = if sh.ta {
        (1, sh.m as isize)
    } else {
        (sh.k as isize, 1)
    };
    let sb = if sh.tb {
        (1, sh.k as isize)
    } else {
        (sh.n as isize, 1)
    };
    let t = timed(reps, || {
        for _ in 0..sh.batch {
            f(&a, sa, &b, sb, &mut c);
        }
    });
    let flop = 2.0 * (sh.m * sh.k * sh.n * sh.batch) as f64 / 1e9;
    (flop / t.median, flop / t.max, flop / t.min)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(5);
    let kernels = match args.get(2).map(String::as_str) {
        Some("all") => Kernel::available()
            .into_iter()
            .filter(|k| !k.name().starts_with("portable"))
            .collect(),
        _ => vec![Kernel::chosen()],
    };
    let all = args.get(2).is_some_and(|a| a == "all");
    let prefixes = args.get(3).cloned().unwrap_or_default();
    let wanted = |name: &str| prefixes.split(',').any(|p| name.starts_with(p));
    let print = |sh: &Shape, name: &str, (median, lo, hi): (f64, f64, f64)| {
        println!(
            "{{\"shape\": \"{}\", \"m\": {}, \"k\": {}, \"n\": {}, \"ta\": {}, \"tb\": {}, \"batch\": {}, \"kernel\": \"{name}\", \"threads\": {}, \"gflops\": {median:.2}, \"lo\": {lo:.2}, \"hi\": {hi:.2}}}",
            sh.name,
            sh.m,
            sh.k,
            sh.n,
            sh.ta,
            sh.tb,
            sh.batch,
            rayon::current_num_threads()
        );
    };
    // Untimed 1024³ products first: on a shared VM the first products of a process have run at
    // one thread's speed on two threads for longer than a shape's own warm-up.
    if let Some(k) = kernels.first() {
        gflops(&SHAPES[0], *k, 3);
    }
    for sh in SHAPES.iter().filter(|s| wanted(s.name)) {
        for k in &kernels {
            print(sh, &format!("rewind {}", k.name()), gflops(sh, *k, reps));
        }
        if !all {
            continue;
        }
        let (m, k, n) = (sh.m, sh.k, sh.n);
        print(
            sh,
            "matrixmultiply",
            other(sh, reps, &|a, sa, b, sb, c| {
                // SAFETY: the strides describe m×k, k×n and m×n matrices inside the buffers.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        sa.0,
                        sa.1,
                        b.as_ptr(),
                        sb.0,
                        sb.1,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            }),
        );
        let threads = rayon::current_num_threads();
        print(
            sh,
            "gemm crate",
            other(sh, reps, &|a, sa, b, sb, c| {
                let par = if threads > 1 {
                    gemm::Parallelism::Rayon(threads)
                } else {
                    gemm::Parallelism::None
                };
                // SAFETY: as above; dst = 1·a·b (read_dst false: dst is written, never read).
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        sa.1,
                        sa.0,
                        b.as_ptr(),
                        sb.1,
                        sb.0,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            }),
        );
    }
}
