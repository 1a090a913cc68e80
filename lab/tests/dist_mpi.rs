//! Data parallelism over MPI, run for real: `mpirun -np N rewind train …` against one process
//! taking the same micro-batches by accumulation. With 2 ranks each rank's gradient is one
//! micro-batch's, scaled by 1/2 as accumulation scales it, and the all-reduce adds the two —
//! the same single addition accumulation makes (a + b = b + a in floating point) — so the
//! saved runs (weights and optimizer state) are bit-identical. With 3 ranks MPI's order of
//! summation is its own: within a tolerance. A rank that dies or stops ends the job, named.
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
    train_steps(ranks, 5, args, save)
}

fn train_steps(ranks: usize, steps: usize, args: &[&str], save: &Path) {
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
        .args(["train", "--steps", &steps.to_string(), "--quiet"])
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
        // GPT-2: the embedding is also the head, a tied weight ready after both uses.
        &[
            "--model",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/gpt2-tiny"),
            "--max-len",
            "32",
            "--checkpoint",
            "every",
        ][..],
        &[
            "--model",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/gpt2-tiny"),
            "--max-len",
            "32",
            "--lora-rank",
            "4",
        ][..],
    ]
    .iter()
    .enumerate()
    {
        let (one, two) = (d.join(format!("one{i}")), d.join(format!("two{i}")));
        let mut base = vec!["--batch-size", "4"];
        if !extra.contains(&"--model") {
            base.extend_from_slice(&["--layers", "3"]);
        }
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
        // The whole save too: the same configuration (2 micro-batches a step), step, data
        // position and generator.
        assert!(
            std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(),
            "{extra:?}: the saves differ"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_run_saved_by_two_ranks_resumes_on_one_process_bit_for_bit() {
    // 3 steps on 2 ranks, then 2 more on one process taking both micro-batches itself: the
    // same file as 5 steps of that one process.
    let d = dir("resume");
    let (half, resumed, whole) = (d.join("half"), d.join("resumed"), d.join("whole"));
    let base = ["--batch-size", "4", "--layers", "3", "--optimizer", "adamw"];
    train_steps(2, 3, &base, &half);
    let mut on_one = base.to_vec();
    on_one.extend_from_slice(&["--accumulation", "2", "--resume", half.to_str().unwrap()]);
    train_steps(1, 2, &on_one, &resumed);
    let mut accum = base.to_vec();
    accum.extend_from_slice(&["--accumulation", "2"]);
    train(1, &accum, &whole);
    assert!(std::fs::read(&resumed).unwrap() == std::fs::read(&whole).unwrap());
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

/// Starts a long 2-rank run tagged `tag`, waits until rank 1 trains, signals it with `signal`
/// and returns how mpirun ended (its stderr) — failing if the job outlives `deadline`.
fn signal_rank_one(tag: &str, signal: &str, extra: &[&str], deadline: u64) -> String {
    use std::time::{Duration, Instant};
    let err = dir(tag).join("stderr");
    let mut job = Command::new("mpirun")
        .args([
            "--oversubscribe",
            "-np",
            "2",
            rewind(),
            "train",
            "--steps",
            "1000000",
        ])
        .arg("--quiet")
        .args(["--batch-size", "4", "--layers", "3"])
        .args(extra)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .env("REWIND_TEST_TAG", tag)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // Rank 1: the process whose environment carries the tag and rank 1.
    let find = || {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let env = String::from_utf8_lossy(&env);
            let mine = env
                .split('\0')
                .any(|v| v == format!("REWIND_TEST_TAG={tag}"));
            let one = env.split('\0').any(|v| v == "OMPI_COMM_WORLD_RANK=1");
            (mine && one).then(|| e.file_name().to_string_lossy().into_owned())
        })
    };
    let start = Instant::now();
    let pid = loop {
        if let Some(p) = find() {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "rank 1 never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(2)); // well into training
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
    let signalled = Instant::now();
    let status = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        if signalled.elapsed() > Duration::from_secs(deadline) {
            let _ = job.kill();
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("the job outlived {deadline} s after rank 1 was signalled");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Gone already, or stopped and left behind: make sure.
    let _ = Command::new("kill")
        .args(["-KILL", &pid])
        .stderr(std::process::Stdio::null())
        .status();
    assert!(!status.success(), "the job must fail");
    std::fs::read_to_string(&err).unwrap()
}

#[test]
fn a_rank_killed_mid_run_ends_the_job_with_its_rank_named() {
    let said = signal_rank_one("killed", "-KILL", &[], 60);
    assert!(said.contains("rank 1"), "{said}");
}

#[test]
fn a_stopped_rank_ends_the_job_at_the_watchdog() {
    // Rank 1 stops (SIGSTOP) without dying, so the launcher sees nothing; rank 0's wait for the
    // all-reduce runs into --dist-timeout and ends the job.
    let said = signal_rank_one("stopped", "-STOP", &["--dist-timeout", "3"], 60);
    assert!(
        said.contains("error (rank 0 of 2): dist: rank 0 of 2: no collective finished within 3 s"),
        "{said}"
    );
}
