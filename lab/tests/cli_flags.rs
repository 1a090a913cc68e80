//! Every flag of every subcommand refuses bad values before any work starts: exit code 2 (a
//! usage error), a message naming the flag, no panic, no abort, and an answer within seconds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HUGE: &str = "1000000000000"; // 10¹²

fn fixture(name: &str) -> String {
    format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `rewind args…`, killing it after `limit`; returns (exit code, stderr, elapsed).
fn run_bounded(args: &[&str], limit: Duration) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            return (status.code(), err, start.elapsed());
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("rewind {} ran past {limit:?}: a hang", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// (subcommand, flag, bad values). Values a flag accepts (a seed of 0 or 10¹²) are not listed;
/// 10¹² is refused by a range or by the memory it implies.
fn table() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let counts = |extra: &[&'static str]| {
        let mut v = vec!["-1", "nan", "many", ""];
        v.extend_from_slice(extra);
        v
    };
    let floats = |extra: &[&'static str]| {
        let mut v = vec!["nan", "inf", "-inf", "-1", "fast", ""];
        v.extend_from_slice(extra);
        v
    };
    let mut t = Vec::new();
    for cmd in ["train", "compare"] {
        t.push((cmd, "steps", counts(&["0", HUGE])));
        t.push((cmd, "seed", counts(&["18446744073709551616"])));
        t.push((cmd, "d", counts(&["0", HUGE])));
        t.push((cmd, "heads", counts(&["0", HUGE, "3"])));
        t.push((cmd, "layers", counts(&["0", HUGE])));
        t.push((cmd, "max-len", counts(&["0", "1", HUGE])));
        t.push((cmd, "vocab", counts(&["0", "256", HUGE])));
        t.push((cmd, "samples", counts(&["0", "1", HUGE])));
        t.push((cmd, "batch-size", counts(&["0", HUGE])));
        t.push((cmd, "lr", floats(&["0"])));
        t.push((cmd, "text-file", vec!["/nonexistent/notes.txt", "/tmp", ""]));
    }
    t.push(("compare", "out", vec!["/proc/rewind-out", "/dev/null", ""]));
    t.push((
        "train",
        "checkpoint",
        vec!["0", "-1", "nan", "some", "budget:", "budget:-1", ""],
    ));
    t.push((
        "train",
        "checkpoint-mode",
        vec!["0", "-1", "nan", "both", ""],
    ));
    t.push(("train", "optimizer", vec!["0", "-1", "nan", "adam", ""]));
    t.push(("train", "weight-decay", floats(&[])));
    t.push(("train", "accumulation", counts(&["0", HUGE])));
    t.push((
        "train",
        "freeze",
        vec!["0", "-1", "nan", "all", "lower:99", "lower:-1", ""],
    ));
    t.push(("train", "lora-rank", counts(&[HUGE, "65"])));
    // Without --model (the table gives none) P-tuning has nothing to act on; --lora-alpha
    // needs a rank.
    t.push(("train", "prefix-tokens", counts(&["0", "8"])));
    t.push(("train", "lora-alpha", floats(&["0", "32"])));
    t.push(("train", "lora-dropout", floats(&["1", "0.1"])));
    t.push(("train", "padding", vec!["0", "-1", "nan", "none", ""]));
    t.push((
        "train",
        "save",
        vec!["/proc/rewind/run.safetensors", "/tmp", ""],
    ));
    t.push(("train", "save-every", counts(&["0"])));
    t.push(("train", "model", vec!["/nonexistent/gpt2", "/tmp", ""]));
    t.push(("train", "data", vec!["/nonexistent/chat.jsonl", "/tmp", ""]));
    t.push(("train", "hf-activation-checkpointing", counts(&["0"])));
    // Without --model (the table gives none) the targets have nothing to act on.
    t.push(("train", "lora-targets", vec!["c_attn", "wte", ""]));
    t.push((
        "train",
        "resume",
        vec!["/nonexistent/run.safetensors", "/tmp", ""],
    ));
    t.push((
        "train",
        "json",
        vec!["/proc/rewind/summary.json", "/tmp", ""],
    ));
    t.push(("repro", "reps", counts(&["0", HUGE])));
    t.push(("repro", "blocks", counts(&["0", "1", HUGE])));
    t.push(("repro", "model", vec!["/nonexistent/chatglm3", "/tmp", ""]));
    t.push(("bench", "reps", counts(&["0", HUGE])));
    t.push(("bench", "depths", counts(&["0", HUGE, "4,0", "4,-1"])));
    t.push(("bench", "rows", counts(&["0", HUGE])));
    t.push(("bench", "out", vec!["/proc/rewind-bench", "/dev/null", ""]));
    t.push((
        "bench",
        "from-csv",
        vec!["/nonexistent/bench.csv", "/tmp", ""],
    ));
    t.push(("memory", "depth", counts(&["0", HUGE])));
    t.push(("memory", "width", counts(&["0", HUGE])));
    t.push(("memory", "rows", counts(&["0", HUGE])));
    t.push(("memory", "reps", counts(&["0", HUGE])));
    t.push(("memory", "model", vec!["/nonexistent/chatglm3", "/tmp", ""]));
    t.push(("eval", "model", vec!["/nonexistent/llama", "/tmp", ""]));
    t.push((
        "eval",
        "text-file",
        vec!["/nonexistent/notes.txt", "/tmp", ""],
    ));
    // The Llama fixture has 64 positions.
    t.push(("eval", "max-len", counts(&["0", "1", "65", HUGE])));
    t.push(("eval", "batch-size", counts(&["0", HUGE])));
    t.push(("eval", "adapter", vec!["/nonexistent/adapter", "/tmp", ""]));
    t.push(("generate", "model", vec!["/nonexistent/llama", "/tmp", ""]));
    t.push((
        "generate",
        "adapter",
        vec!["/nonexistent/adapter", "/tmp", ""],
    ));
    // The Llama fixture has 64 positions.
    t.push(("generate", "max-new-tokens", counts(&["0", "65", HUGE])));
    t.push(("generate", "temperature", floats(&["0"])));
    t.push(("generate", "top-p", floats(&["0", "1.5"])));
    t.push(("generate", "seed", counts(&["18446744073709551616"])));
    t.push(("bench-core", "reps", counts(&["0", HUGE])));
    t.push(("bench-core", "depth", counts(&["0", HUGE])));
    t
}

#[test]
fn every_bad_flag_value_is_a_usage_error_naming_the_flag_before_any_work() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for (cmd, flag, values) in table() {
        for value in values {
            let long = format!("--{flag}");
            let mut args = vec![cmd, long.as_str(), value];
            if flag == "save-every" {
                args.extend(["--save", "/tmp/rewind-never-written.safetensors"]);
            }
            // eval's required flags, good, beside the bad one.
            let (model, text) = (fixture("llama-tiny"), fixture("eval/text.txt"));
            if cmd == "eval" && flag != "model" {
                args.extend(["--model", model.as_str()]);
            }
            if cmd == "eval" && flag != "text-file" {
                args.extend(["--text-file", text.as_str()]);
            }
            // generate's required flags; top-p and seed act only with a temperature.
            if cmd == "generate" && flag != "model" {
                args.extend(["--model", model.as_str()]);
            }
            if cmd == "generate" {
                args.extend(["--prompt", "Hello"]);
                if flag == "top-p" || flag == "seed" {
                    args.extend(["--temperature", "1"]);
                }
            }
            let (code, err, took) = run_bounded(&args, Duration::from_secs(20));
            runs += 1;
            let named = err.contains(&format!("--{flag}"));
            let crashed = err.contains("panicked") || code.is_none();
            if code != Some(2) || !named || crashed || took > Duration::from_secs(5) {
                failures.push(format!(
                    "rewind {cmd} --{flag} {value:?}: exit {code:?} after {took:?}: {}",
                    err.lines().next().unwrap_or("")
                ));
            }
        }
    }
    eprintln!("{runs} bad values refused");
    assert!(runs > 200, "the table shrank to {runs} runs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_size_too_large_for_the_machine_is_refused_with_the_estimate_and_the_limit() {
    let (code, err, _) = run_bounded(&["train", "--d", HUGE], Duration::from_secs(20));
    assert_eq!(code, Some(2), "{err}");
    // 16 bytes per parameter (weights, gradients, two AdamW moments) of ≈ 12·d²·layers.
    assert!(
        err.contains("--d 1000000000000: a run of this size needs ≈ "),
        "{err}"
    );
    assert!(err.contains("more than this machine's "), "{err}");
    assert!(err.contains(" of memory"), "{err}");
}

#[test]
fn nothing_is_silently_raised_a_one_block_repro_is_refused_with_the_minimum() {
    let (code, err, _) = run_bounded(&["repro", "--blocks", "1"], Duration::from_secs(20));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--blocks 1: must be at least 2"), "{err}");
}

#[test]
fn the_flag_named_is_the_one_at_fault_and_its_value_is_echoed_as_given() {
    // `--d 0` with the default `--heads 2`: the width is wrong, not the heads.
    let (code, err, _) = run_bounded(&["train", "--d", "0"], Duration::from_secs(20));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.starts_with("error: --d 0: must be at least 1"), "{err}");
    // 2⁶² as typed, not the nearest double (4611686018427387904 is exact; 2⁶² + 1 is not).
    for width in ["4611686018427387904", "4611686018427387905"] {
        let (code, err, _) = run_bounded(&["memory", "--width", width], Duration::from_secs(20));
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains(&format!("--width {width}: a run of this size")),
            "{err}"
        );
    }
}

#[test]
fn adapter_outputs_without_a_model_are_refused_and_no_folder_is_made() {
    for flag in ["--save-adapter", "--merge"] {
        let dir = std::env::temp_dir().join(format!(
            "rewind-no-model{}-{}",
            flag.replace('-', "_"),
            std::process::id()
        ));
        let d = dir.to_str().unwrap();
        let (code, err, _) = run_bounded(
            &["train", "--steps", "1", "--lora-rank", "2", flag, d],
            Duration::from_secs(20),
        );
        // The command line's own check: --model is required with these flags.
        assert_eq!(code, Some(2), "{flag}: {err}");
        assert!(
            err.contains("required arguments were not provided:\n  --model <DIR>"),
            "{err}"
        );
        assert!(err.contains(&format!("{flag} <DIR>")), "{err}");
        assert!(!dir.exists(), "{flag}: the refused run made {d}");
    }
}

/// Clears the immutable flag it set, however the test ends.
struct Immutable(std::path::PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn an_immutable_save_file_is_refused_before_training() {
    let file = std::env::temp_dir().join(format!("rewind-immutable-{}.json", std::process::id()));
    std::fs::write(&file, "{}").unwrap();
    let set = Command::new("chattr").arg("+i").arg(&file).status();
    let _guard = Immutable(file.clone());
    assert!(
        set.is_ok_and(|s| s.success()),
        "this test needs `chattr +i` (e2fsprogs, root, ext4 or another filesystem with the flag)"
    );
    let f = file.to_str().unwrap();
    for flag in ["--json", "--save"] {
        let (code, err, took) = run_bounded(
            &["train", "--steps", "100000", flag, f],
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{flag}: {err}");
        assert!(
            err.starts_with(&format!("error: {flag} {f}: cannot be replaced")),
            "{err}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{flag}: refused only after {took:?}"
        );
    }
}

#[test]
fn model_flags_are_checked_against_the_loaded_model_not_the_small_transformer() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/gpt2-tiny");
    // GPT-2's blocks name only `attn_probs`: a name of the small transformer's is refused.
    let (code, err, _) = run_bounded(
        &[
            "train",
            "--model",
            fixture,
            "--steps",
            "1",
            "--checkpoint",
            "every",
            "--checkpoint-policy",
            "save-names:mlp_hidden",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with(
            "error: --checkpoint-policy save-names:mlp_hidden: the model names no tensor `mlp_hidden`; it names attn_probs"
        ),
        "{err}"
    );
    // The fixture has 64 positions: without --max-len, the run uses 64, not the default 128.
    let (code, err, _) = run_bounded(
        &["train", "--model", fixture, "--steps", "1", "--quiet"],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, err, _) = run_bounded(
        &[
            "train",
            "--model",
            fixture,
            "--steps",
            "1",
            "--max-len",
            "65",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with("error: --max-len 65: the model at --model has 64 positions"),
        "{err}"
    );
}

#[test]
fn a_directory_of_pickled_weights_is_refused_naming_them_before_any_work() {
    let dir = std::env::temp_dir().join(format!("rewind-pickled-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let llama = fixture("llama-tiny");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(format!("{llama}/{f}"), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("pytorch_model.bin"), b"not read").unwrap();
    let d = dir.display().to_string();
    let text = fixture("eval/text.txt");
    for args in [
        vec!["eval", "--model", d.as_str(), "--text-file", text.as_str()],
        vec!["train", "--model", d.as_str(), "--steps", "1"],
    ] {
        let (code, err, _) = run_bounded(&args, Duration::from_secs(20));
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("--model")
                && err.contains("pytorch_model*.bin")
                && err.contains("safe_serialization=True"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
