//! Saves never lose work: a `rewind train --save-every 1` killed at any moment (during a write
//! included) leaves a complete save from which `--resume` finishes the run bit for bit as an
//! uninterrupted run does, and a disk that fills up during a save keeps the previous one.

use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TINY: &[&str] = &[
    "--d",
    "16",
    "--heads",
    "2",
    "--layers",
    "2",
    "--max-len",
    "32",
    "--vocab",
    "300",
    "--samples",
    "40",
    "--batch-size",
    "4",
    "--optimizer",
    "adamw8bit",
    "--quiet",
];
const STEPS: u64 = 12;

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rewind-saves-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn train(extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rewind"));
    c.arg("train").args(TINY).args(extra);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn run_ok(mut c: Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every tensor of a save (weights and optimizer state) with its bytes, and its step.
fn contents(path: &Path) -> (u64, Vec<(String, Vec<u8>)>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("a complete safetensors file");
    let step = meta.metadata().as_ref().unwrap()["step"].parse().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut t: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    t.sort();
    (step, t)
}

fn temporaries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-")
        })
        .count()
}

/// A small deterministic generator for kill times.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[test]
fn a_run_killed_at_any_moment_leaves_a_save_that_resumes_bit_identically() {
    let dir = scratch("kill");
    let reference = dir.join("reference.safetensors");
    let steps = STEPS.to_string();
    // The reference saves every step too, so its timeline is the killed runs': when its first
    // save appears and when it ends.
    let start = Instant::now();
    let mut child = {
        let mut c = train(&["--steps", &steps, "--save-every", "1", "--save"]);
        c.arg(&reference);
        c.spawn().unwrap()
    };
    let mut first_save = None;
    while child.try_wait().unwrap().is_none() {
        if first_save.is_none() && reference.exists() {
            first_save = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(child.wait().unwrap().success(), "the reference run failed");
    let full_run = start.elapsed();
    let first_save = first_save.unwrap_or(full_run);
    let (ref_step, ref_tensors) = contents(&reference);
    assert_eq!(ref_step, STEPS);

    let save = dir.join("run.safetensors");
    let tmp_name = ".run.safetensors.tmp-";
    let mut rng = Lcg(2026);
    let (mut resumed, mut during_write, mut before_first) = (0, 0, 0);
    for round in 0..30 {
        let _ = std::fs::remove_file(&save);
        let mut c = train(&["--steps", &steps, "--save-every", "1", "--save"]);
        c.arg(&save);
        let mut child = c.spawn().unwrap();
        let t0 = Instant::now();
        if round % 2 == 0 {
            // At a random moment of the run once a save exists (before it there is nothing to
            // keep; drawing from the whole run left too few saves on a loaded machine).
            let span = full_run.saturating_sub(first_save).as_micros() as u64;
            let at = first_save + Duration::from_micros(rng.below(span));
            while t0.elapsed() < at && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_micros(200));
            }
        } else {
            // As soon as a save is being written (its temporary file exists), after a few.
            let after = 1 + rng.below(STEPS - 2);
            let mut seen = 0;
            let mut writing = false;
            while child.try_wait().unwrap().is_none() && t0.elapsed() < full_run * 20 {
                let now = temporaries(&dir) > 0;
                if now && !writing {
                    seen += 1;
                    if seen > after {
                        break;
                    }
                }
                writing = now;
            }
        }
        let writing_at_kill = temporaries(&dir) > 0;
        child.kill().ok();
        child.wait().unwrap();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(tmp_name)
            {
                std::fs::remove_file(p).unwrap();
            }
        }
        if !save.exists() {
            before_first += 1;
            continue;
        }
        during_write += writing_at_kill as usize;
        let (step, _) = contents(&save);
        assert!((1..=STEPS).contains(&step), "round {round}: step {step}");
        if step < STEPS {
            let left = (STEPS - step).to_string();
            let mut c = train(&["--steps", &left, "--resume"]);
            c.arg(&save).arg("--save").arg(&save);
            run_ok(c);
        }
        let (step, tensors) = contents(&save);
        assert_eq!(step, STEPS, "round {round}");
        assert!(
            tensors == ref_tensors,
            "round {round}: the resumed run differs from the uninterrupted one"
        );
        resumed += 1;
    }
    eprintln!(
        "30 kills: {resumed} resumed bit-identically ({during_write} killed while a save was being written), {before_first} before the first save"
    );
    assert!(resumed >= 20, "only {resumed} of 30 kills left a save");
    assert!(
        during_write >= 5,
        "only {during_write} kills landed during a write"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_disk_that_fills_up_during_a_save_keeps_the_previous_save() {
    let dir = scratch("full");
    let save = dir.join("run.safetensors");
    run_ok({
        let mut c = train(&["--steps", "2", "--save"]);
        c.arg(&save);
        c
    });
    let before = std::fs::read(&save).unwrap();
    assert!(before.len() > 64 * 1024);
    // The file-size limit makes every write past 64 KiB fail with EFBIG, as a full disk fails
    // with ENOSPC; SIGXFSZ is ignored so the write returns the error instead of killing.
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec \"$0\" train {} --steps 1 --resume \"$1\" --save \"$1\"",
        TINY.join(" ")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_rewind"))
        .arg(&save)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: save: "), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert_eq!(
        std::fs::read(&save).unwrap(),
        before,
        "the previous save changed"
    );
    assert_eq!(temporaries(&dir), 0, "a temporary file was left behind");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_same_text_file_named_by_a_relative_or_an_absolute_path_resumes() {
    let dir = scratch("relative");
    let text: Vec<String> = (0..12)
        .map(|i| format!("paragraph {i} says hello\nand goes on, item {i}."))
        .collect();
    std::fs::write(dir.join("notes.txt"), text.join("\n\n")).unwrap();
    let save = dir.join("run.safetensors");
    let mut c = train(&["--steps", "1", "--text-file", "notes.txt", "--save"]);
    c.arg(&save).current_dir(&dir);
    run_ok(c);
    let mut c = train(&["--steps", "1", "--resume"]);
    c.arg(&save).arg("--text-file").arg(dir.join("notes.txt"));
    run_ok(c);
    std::fs::remove_dir_all(&dir).ok();
}
