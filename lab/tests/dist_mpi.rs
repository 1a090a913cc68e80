//! Data parallelism over MPI, run for real: `mpirun -np N rewind train …` against one process
//! taking the same micro-batches by accumulation. With 2 ranks each rank's gradient is one
//! micro-batch's, scaled by 1/2 as accumulation scales it, and the all-reduce adds the two —
//! the same single addition accumulation makes (a + b = b + a in floating point) — so the
//! saved runs (weights and optimizer state) are bit-identical — with ZeRO-1 too, where the
//! sum is a reduce-scatter and each rank updates its shard. With 3 ranks MPI's order of
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
    train_steps(ranks, 5, args, save);
}

/// [`train`] for `steps` steps; returns rank 0's JSON summary.
fn train_steps(ranks: usize, steps: usize, args: &[&str], save: &Path) -> serde_json::Value {
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
    serde_json::from_slice(&out.stdout).expect("one JSON summary on stdout")
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

/// The relative difference ‖a − b‖ / ‖a‖ between two saves, over all weights and (unless
/// `weights_only`) over all first moments (Adam) or momenta (SGD): the larger of the two.
/// Whole-state norms, not per element or per tensor: a sum of gradients of both signs can be
/// far smaller than its terms (a key bias's gradient is zero up to rounding), and its
/// rounding is relative to the terms.
fn worst_difference(a: &Path, b: &Path, weights_only: bool) -> f64 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.len(), b.len());
    // [weights, moments] × (‖a − b‖², ‖a‖²)
    let mut sums = [(0f64, 0f64); 2];
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let moments = na.ends_with("exp_avg") || na.ends_with("momentum_buffer");
        let k = match (na.starts_with("optimizer"), moments) {
            (false, _) => 0,
            (true, true) if !weights_only => 1,
            _ => continue,
        };
        for (x, y) in floats(ta).iter().zip(floats(tb)) {
            sums[k].0 += (f64::from(*x) - f64::from(y)).powi(2);
            sums[k].1 += f64::from(*x).powi(2);
        }
    }
    sums.iter()
        .filter(|(_, n)| *n > 0.0)
        .map(|(d, n)| (d / n).sqrt())
        .fold(0.0, f64::max)
}

#[test]
fn two_ranks_train_bit_for_bit_as_one_process_accumulating_two_micro_batches() {
    let d = dir("two");
    for (i, extra) in [
        &[][..],
        &["--checkpoint", "every"][..],
        &["--checkpoint", "every", "--checkpoint-mode", "reentrant"][..],
        &[
            "--checkpoint",
            "sqrt",
            "--checkpoint-policy",
            "save-matmuls",
        ][..],
        // Unscaled, then clipped: under ZeRO-1 the overflow flag and the norm are agreed.
        &["--amp", "--max-grad-norm", "0.05"][..],
        &["--optimizer", "adamw8bit", "--max-grad-norm", "0.05"][..],
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
            // Each micro-batch draws its masks from its own stretch of the generator.
            "--lora-dropout",
            "0.1",
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
        for zero in ["0", "1"] {
            let mut ranks = base.clone();
            ranks.extend_from_slice(&["--zero", zero]);
            train(2, &ranks, &two);
            let (a, b) = (tensors(&one), tensors(&two));
            assert_eq!(a.len(), b.len());
            for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
                assert_eq!(na, nb);
                assert!(ta == tb, "{extra:?} --zero {zero}: {na} differs");
            }
            // The whole save too: the same configuration (2 micro-batches a step), step, data
            // position and generator; under ZeRO-1 the optimizer state gathered whole.
            assert!(
                std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(),
                "{extra:?} --zero {zero}: the saves differ"
            );
        }
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_run_saved_by_two_ranks_resumes_on_one_process_bit_for_bit() {
    // 3 steps on 2 ranks, then 2 more on one process taking both micro-batches itself: the
    // same file as 5 steps of that one process.
    let d = dir("resume");
    let (half, resumed, whole) = (d.join("half"), d.join("resumed"), d.join("whole"));
    let base = [
        "--batch-size",
        "4",
        "--layers",
        "3",
        "--optimizer",
        "adamw8bit",
    ];
    let mut accum = base.to_vec();
    accum.extend_from_slice(&["--accumulation", "2"]);
    train(1, &accum, &whole);
    for zero in ["0", "1"] {
        let mut ranks = base.to_vec();
        ranks.extend_from_slice(&["--zero", zero]);
        train_steps(2, 3, &ranks, &half);
        let mut on_one = accum.clone();
        on_one.extend_from_slice(&["--resume", half.to_str().unwrap()]);
        train_steps(1, 2, &on_one, &resumed);
        assert!(
            std::fs::read(&resumed).unwrap() == std::fs::read(&whole).unwrap(),
            "--zero {zero}"
        );
    }
    // And the other way: 3 steps of one process, 2 more on 2 ranks cutting its whole state
    // into shards.
    for opt in ["adamw", "adamw8bit"] {
        let mut one = accum.clone();
        one[5] = opt;
        train(1, &one, &whole);
        train_steps(1, 3, &one, &half);
        let mut ranks = base.to_vec();
        ranks[5] = opt;
        ranks.extend_from_slice(&["--zero", "1", "--resume", half.to_str().unwrap()]);
        train_steps(2, 2, &ranks, &resumed);
        assert!(
            std::fs::read(&resumed).unwrap() == std::fs::read(&whole).unwrap(),
            "{opt}: one process, then two ranks with --zero 1"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_zero_run_saved_by_two_ranks_resumes_on_three_within_rounding() {
    // 6 micro-batches a step: 3 on each of 2 ranks, then 2 on each of 3 (a save is whole, so
    // the shards are cut anew); against one process accumulating 6. The sums' order differs,
    // so SGD (see `two_ranks_of_batch_b_match_one_process_of_batch_2b_to_rounding`).
    let d = dir("resume-three");
    let (half, resumed, whole) = (d.join("half"), d.join("resumed"), d.join("whole"));
    let base = [
        "--batch-size",
        "2",
        "--layers",
        "3",
        "--optimizer",
        "sgd",
        "--zero",
        "1",
    ];
    let mut two = base.to_vec();
    two.extend_from_slice(&["--accumulation", "3"]);
    train_steps(2, 3, &two, &half);
    let mut three = base.to_vec();
    three.extend_from_slice(&["--accumulation", "2", "--resume", half.to_str().unwrap()]);
    train_steps(3, 2, &three, &resumed);
    let mut one = base.to_vec();
    one.extend_from_slice(&["--accumulation", "6"]);
    train(1, &one, &whole);
    let worst = worst_difference(&whole, &resumed, false);
    assert!(worst <= 1e-6, "largest relative difference {worst}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn zero_one_keeps_one_shard_of_the_optimizer_state_on_each_rank() {
    // Rank r's state covers its shard: the flat gradient order cut at N-ths, each cut moved
    // down to a 256-element block of the tensor it falls in. With fp32 AdamW (8 bytes an
    // element) each rank holds 1/N of the state to within one block (2 KiB) plus the split
    // tensors' step counters; together exactly the single process's plus those counters.
    let d = dir("shard");
    let save = d.join("s");
    for ranks in [2usize, 3] {
        let base = ["--batch-size", "4", "--layers", "3", "--optimizer", "adamw"];
        let mut accum = base.to_vec();
        let k = ranks.to_string();
        accum.extend_from_slice(&["--accumulation", &k]);
        let whole = train_steps(1, 1, &accum, &save)["optimizer_state_bytes"]
            .as_u64()
            .unwrap() as f64;
        let mut zero = base.to_vec();
        zero.extend_from_slice(&["--zero", "1"]);
        let each: Vec<f64> = train_steps(ranks, 1, &zero, &save)["optimizer_state_bytes_per_rank"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_f64().unwrap())
            .collect();
        assert_eq!(each.len(), ranks);
        let counters = 4.0 * (ranks - 1) as f64;
        assert!(
            (each.iter().sum::<f64>() - whole).abs() <= counters,
            "{each:?} against {whole}"
        );
        for b in &each {
            assert!(
                (b - whole / ranks as f64).abs() <= 2048.0 + counters,
                "{each:?} against {whole} / {ranks}"
            );
        }
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn two_ranks_of_batch_b_match_one_process_of_batch_2b_to_rounding() {
    // Each loss is weighted by its share of the step's targets, so two micro-batches of 4
    // (padded to their own lengths) make the gradient of one batch of 8: up to f32 rounding.
    // SGD with momentum keeps the updates linear in the gradients; Adam's early steps divide
    // a gradient by its own magnitude, which turns rounding noise in near-zero elements into
    // whole-lr differences, so it is compared to accumulation (bit-identical) instead.
    let d = dir("two-b");
    let (big, two) = (d.join("big"), d.join("two"));
    let base = ["--layers", "3", "--optimizer", "sgd"];
    let mut one = base.to_vec();
    one.extend_from_slice(&["--batch-size", "8"]);
    train(1, &one, &big);
    for zero in ["0", "1"] {
        let mut ranks = base.to_vec();
        ranks.extend_from_slice(&["--batch-size", "4", "--zero", zero]);
        train(2, &ranks, &two);
        let worst = worst_difference(&big, &two, true);
        assert!(
            worst <= 1e-6,
            "--zero {zero}: largest relative difference {worst}"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn three_ranks_train_as_one_process_accumulating_three_within_rounding() {
    // MPI sums 3 ranks in an order of its own (the reduce-scatter in another than the
    // all-reduce): rounding, compared with SGD, whose updates are linear in the gradients.
    let d = dir("three");
    let (one, three) = (d.join("one"), d.join("three"));
    let base = ["--batch-size", "4", "--layers", "3", "--optimizer", "sgd"];
    let mut accum = base.to_vec();
    accum.extend_from_slice(&["--accumulation", "3"]);
    train(1, &accum, &one);
    for zero in ["0", "1"] {
        let mut ranks = base.to_vec();
        ranks.extend_from_slice(&["--zero", zero]);
        train(3, &ranks, &three);
        // Weights and momentum after 5 steps.
        let worst = worst_difference(&one, &three, false);
        assert!(
            worst <= 1e-6,
            "--zero {zero}: largest relative difference {worst}"
        );
    }
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

#[test]
fn rewind_memory_per_rank_matches_what_each_rank_holds() {
    // `rewind memory --ranks N --zero z`'s accounting against a 2-rank run on the tiny Llama:
    // every rank's optimizer state (the whole, or its ZeRO-1 shard), and the activations one
    // rank saves for its own batch, within 10% (the model lists tensors in its own order, so
    // a cut can fall elsewhere; the trainer also keeps a step counter per tensor).
    use rewind::checkpoint::Plan;
    use rewind_lab::memory_model::{
        Arch, Method, Optim, estimate, optimizer_bytes_per_rank, trainable_tensors,
    };
    let d = dir("memory");
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/llama-tiny");
    let ckpt = rewind_lab::models::lm::Checkpoint::open(Path::new(model)).unwrap();
    let a = Arch::from_checkpoint(&ckpt).unwrap();
    let (b, t) = (2, 48);
    for (zero, opt, optim) in [
        ("0", "adamw", Optim::AdamW),
        ("1", "adamw", Optim::AdamW),
        ("1", "adamw8bit", Optim::AdamW8bit),
    ] {
        let args = [
            "--model",
            model,
            "--batch-size",
            "2",
            "--max-len",
            "48",
            "--padding",
            "fixed",
            "--checkpoint",
            "every",
            "--optimizer",
            opt,
            "--zero",
            zero,
        ];
        let run = train_steps(2, 1, &args, &d.join("s"));
        let measured: Vec<f64> = run["optimizer_state_bytes_per_rank"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let tensors = trainable_tensors(&a, Method::Full, false);
        let predicted = optimizer_bytes_per_rank(&tensors, optim, 2, zero == "1");
        for (m, p) in measured.iter().zip(&predicted) {
            assert!(
                (m - *p as f64).abs() <= 0.10 * m,
                "--zero {zero} {opt}: predicted {predicted:?}, measured {measured:?}"
            );
        }
        let e = estimate(&a, false, Method::Full, optim, Some(Plan::EveryBlock), b, t).unwrap();
        let acts = run["peak_saved_bytes"].as_f64().unwrap();
        assert!(
            (e.activations as f64 - acts).abs() <= 0.10 * acts,
            "activations: predicted {}, measured {acts}",
            e.activations
        );
    }
    std::fs::remove_dir_all(&d).ok();
}
