//! Every CUDA kernel compiles through NVRTC for sm_80 and sm_90 and assembles with ptxas for
//! the same targets, with no error, no warning and no register spill. Needs no GPU; the test
//! command installs the tools (scripts/cuda-tools.sh), and this test fails if they are missing.
#![cfg(feature = "cuda")]

use rewind::cuda::kernels::{SOURCES, compile_ptx};
use std::process::Command;

fn ptxas() -> String {
    std::env::var("REWIND_PTXAS").unwrap_or_else(|_| "ptxas".to_string())
}

/// `ptxas -v` output lines that report spills, as (line, stores + loads).
fn spills(report: &str) -> Vec<(String, u64)> {
    report
        .lines()
        .filter(|l| l.contains("spill"))
        .map(|l| {
            let n: u64 = l
                .split(',')
                .filter(|part| part.contains("spill"))
                .filter_map(|part| part.split_whitespace().next()?.parse::<u64>().ok())
                .sum();
            (l.to_string(), n)
        })
        .collect()
}

#[test]
fn every_kernel_compiles_and_assembles_for_sm80_and_sm90_without_spills() {
    let dir = std::env::temp_dir().join(format!("rewind-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for k in SOURCES {
        for arch in ["sm_80", "sm_90"] {
            let ptx =
                compile_ptx(&k, arch).unwrap_or_else(|e| panic!("{} for {arch}: {e}", k.file));
            for entry in k.entries {
                assert!(
                    ptx.contains(&format!(".entry {entry}(")),
                    "{}: no entry point {entry} in the PTX",
                    k.file
                );
            }
            let path = dir.join(format!("{}.{arch}.ptx", k.file));
            std::fs::write(&path, &ptx).unwrap();
            let out = Command::new(ptxas())
                .args([
                    format!("-arch={arch}"),
                    "-v".into(),
                    "-o".into(),
                    "/dev/null".into(),
                    path.display().to_string(),
                ])
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run ptxas ({}): {e}; run scripts/cuda-tools.sh",
                        ptxas()
                    )
                });
            let report = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "ptxas failed on {} for {arch}:\n{report}",
                k.file
            );
            assert!(
                !report.to_lowercase().contains("warning"),
                "ptxas warned on {} for {arch}:\n{report}",
                k.file
            );
            let spilled: Vec<_> = spills(&report)
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect();
            assert!(
                spilled.is_empty(),
                "{} spills registers for {arch}: {spilled:?}",
                k.file
            );
            let used: Vec<&str> = report.lines().filter(|l| l.contains("Used")).collect();
            eprintln!("{} {arch}: {}", k.file, used.join(" | "));
        }
    }
}

#[test]
fn spill_parser_reads_ptxas_lines() {
    let line = "ptxas info    : 0 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads";
    assert_eq!(spills(line), vec![(line.to_string(), 20)]);
    assert_eq!(
        spills("ptxas info    : 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads")[0]
            .1,
        0
    );
}

/// A kernel that keeps 64 accumulators live: fine with enough registers, spills at 32.
const HUNGRY: &str = r#"
extern "C" __global__ void hungry(const float* x, float* y, int n) {
    float acc[64];
    #pragma unroll
    for (int j = 0; j < 64; ++j) acc[j] = x[j];
    for (int i = 0; i < n; ++i) {
        #pragma unroll
        for (int j = 0; j < 64; ++j) acc[j] = acc[j] * x[i + j] + acc[(j + 1) % 64];
    }
    float s = 0.0f;
    #pragma unroll
    for (int j = 0; j < 64; ++j) s += acc[j];
    y[threadIdx.x] = s;
}
"#;

#[test]
fn the_spill_check_catches_a_starved_kernel() {
    let k = rewind::cuda::kernels::KernelSource {
        file: "hungry.cu",
        source: HUNGRY,
        fmad: true,
        entries: &["hungry"],
    };
    let ptx = compile_ptx(&k, "sm_90").unwrap();
    let path = std::env::temp_dir().join(format!("rewind-hungry-{}.ptx", std::process::id()));
    std::fs::write(&path, ptx).unwrap();
    let run = |regs: &str| {
        let mut args = vec![
            "-arch=sm_90".to_string(),
            "-v".into(),
            "-o".into(),
            "/dev/null".into(),
        ];
        if !regs.is_empty() {
            args.push(format!("--maxrregcount={regs}"));
        }
        args.push(path.display().to_string());
        let out = Command::new(ptxas()).args(&args).output().unwrap();
        spills(&String::from_utf8_lossy(&out.stderr))
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!(
        run(""),
        0,
        "with all the registers it wants it does not spill"
    );
    assert!(
        run("24") > 0,
        "squeezed into 24 registers it must spill, and the parser must see it"
    );
}
