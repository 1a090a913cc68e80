//! Data parallelism over MPI, run for real: `mpirun -np N rewind train …` against one process
//! taking the same micro-batches by accumulation. With 2 ranks each rank's gradient is one
//! micro-batch's, scaled by 1/2 as accumulation scales it, and the all-reduce adds the two —
//! the same single addition accumulation makes (a + b = b + a in floating point) — so the
//! saved runs (weights and optimizer state) are bit-identical. With 3 ranks MPI's order of
//! summation is its own: within a tolerance.
#![cfg(feature = "mpi")]

use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::Command;

fn rewind() -> &'static str {
    env!("CARGO_BIN_EXE_rewind")
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rewind-dist-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `rewind train` with `args`, under `mpirun -np ranks` when `ranks > 1`.
fn train(ranks: usize, args: &[&str], save: &Path) {
    let mut cmd = if ranks > 1 {
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-np", &ranks.to_string(), rewind()]);
        c
    } else {
        Command::new(rewind())
    };
    // Open MPI refuses root unless told (CI runs as root).
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .args(["train", "--steps", "5", "--quiet"])
        .args(args)
        .arg("--save")
        .arg(save);
    let out = cmd.output().expect("mpirun and rewind run");
    assert!(
        out.status.success(),
        "{ranks} ranks, {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every tensor of a saved run (weights and optimizer state), by name.
fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn two_ranks_train_bit_for_bit_as_one_process_accumulating_two_micro_batches() {
    let d = dir("two");
    for (i, extra) in [
        &[][..],
        &["--checkpoint", "every"][..],
        &["--checkpoint", "every", "--checkpoint-mode", "reentrant"][..],
        &["--amp"][..],
        &["--optimizer", "adamw8bit"][..],
    ]
    .iter()
    .enumerate()
    {
        let (one, two) = (d.join(format!("one{i}")), d.join(format!("two{i}")));
        let mut base = vec!["--batch-size", "4", "--layers", "3"];
        if !extra.contains(&"--optimizer") {
            base.extend_from_slice(&["--optimizer", "adamw"]);
        }
        base.extend_from_slice(extra);
        let mut accum = base.clone();
        accum.extend_from_slice(&["--accumulation", "2"]);
        train(1, &accum, &one);
        train(2, &base, &two);
        let (a, b) = (tensors(&one), tensors(&two));
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert!(ta == tb, "{extra:?}: {na} differs");
        }
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn three_ranks_train_as_one_process_accumulating_three_within_rounding() {
    let d = dir("three");
    let (one, three) = (d.join("one"), d.join("three"));
    let base = ["--batch-size", "4", "--layers", "3", "--optimizer", "adamw"];
    let mut accum = base.to_vec();
    accum.extend_from_slice(&["--accumulation", "3"]);
    train(1, &accum, &one);
    train(3, &base, &three);
    let (a, b) = (tensors(&one), tensors(&three));
    let mut worst = 0f64;
    for ((na, ta), (_, tb)) in a.iter().zip(&b) {
        if !na.starts_with("optimizer") || na.ends_with("exp_avg") {
            for (x, y) in floats(ta).iter().zip(floats(tb)) {
                let scale = f64::from(x.abs()).max(1e-3);
                worst = worst.max(f64::from((x - y).abs()) / scale);
            }
        }
    }
    // Weights and first moments after 5 AdamW steps at lr 3e-3.
    assert!(worst <= 1e-4, "largest relative difference {worst}");
    std::fs::remove_dir_all(&d).ok();
}
