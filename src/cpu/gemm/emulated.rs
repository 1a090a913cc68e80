//! The AVX-512 kernels' machine code, as compiled into this test binary, run on Bochs's emulated
//! Sapphire Rapids (`scripts/emulate_kernel.py`): the check that holds on CPUs without the
//! instructions. The code pages, the panels and C are copied at their own addresses; the tile
//! the emulator leaves in C must equal, bit for bit, the definition: for the bf16 pair kernel
//! the lane `pairs::dot2` applied in k order (which `tests_pairs.rs` ties to the widened f32
//! chain), for the f32 kernel one FMA per k in k order, as every f32 kernel computes.
//! Needs the emulator: the test installs it (`scripts/bochs-tools.sh`) when it is missing.
use super::pairs::{Pair, dot2};
use super::x86::{AVX512_12X32, AVX512BF16_12X32};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

const PAGE: usize = 4096;

/// Where `scripts/bochs-tools.sh` put the emulator (installing it on first use).
fn tools() -> PathBuf {
    if let Ok(dir) = std::env::var("REWIND_BOCHS_TOOLS") {
        return dir.into();
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .args([
            "-c",
            ". scripts/bochs-tools.sh >&2 && printf %s \"$REWIND_BOCHS_TOOLS\"",
        ])
        .current_dir(root)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/bochs-tools.sh failed (it installs the emulator with pip): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a path").into()
}

/// The readable mapping of this process that holds `addr`: (start, end).
fn mapping(addr: usize) -> (usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|l| {
            let (range, rest) = l.split_once(' ')?;
            let (s, e) = range.split_once('-')?;
            let (s, e) = (
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            );
            (rest.starts_with('r') && s <= addr && addr < e).then_some((s, e))
        })
        .next()
        .expect("the address is mapped")
}

/// Pages holding `bytes` at `addr`, merged into `pages` (other bytes of a page are zero).
fn add_region(pages: &mut std::collections::BTreeMap<usize, Vec<u8>>, addr: usize, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        let at = addr + i;
        pages
            .entry(at / PAGE * PAGE)
            .or_insert_with(|| vec![0; PAGE])[at % PAGE] = b;
    }
}

fn as_bytes<T>(v: &[T]) -> &[u8] {
    // SAFETY: any initialised memory can be read as bytes; the length is the slice's size.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Runs the kernel whose code starts at `code` under the emulator on the panels; C (f32, rows
/// `ldc` apart) as it leaves it.
fn emulate<T>(
    code: usize,
    kc: usize,
    a: &[T],
    b: &[T],
    c: &[f32],
    ldc: usize,
    zero: bool,
) -> Vec<f32> {
    let mut pages = std::collections::BTreeMap::new();
    // The kernel's code: its page and the next three, within the mapping that holds it (the
    // kernel is well under 16 KiB; if it reached past them, the emulator would say so).
    let (_, end) = mapping(code);
    let start = code / PAGE * PAGE;
    for page in (start..(start + 4 * PAGE).min(end)).step_by(PAGE) {
        // SAFETY: the page lies inside a readable mapping of this process (/proc/self/maps).
        let bytes = unsafe { std::slice::from_raw_parts(page as *const u8, PAGE) };
        pages.insert(page, bytes.to_vec());
    }
    add_region(&mut pages, a.as_ptr() as usize, as_bytes(a));
    add_region(&mut pages, b.as_ptr() as usize, as_bytes(b));
    add_region(&mut pages, c.as_ptr() as usize, as_bytes(c));
    let mut case = String::new();
    for (addr, bytes) in &pages {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(case, "page {addr:x} {hex}").unwrap();
    }
    let args = [
        kc,
        a.as_ptr() as usize,
        b.as_ptr() as usize,
        c.as_ptr() as usize,
        ldc,
        usize::from(zero),
    ];
    for (reg, v) in ["rdi", "rsi", "rdx", "rcx", "r8", "r9"].iter().zip(args) {
        writeln!(case, "reg {reg} {v:x}").unwrap();
    }
    writeln!(case, "call {code:x}").unwrap();
    writeln!(
        case,
        "out {:x} {:x}",
        c.as_ptr() as usize,
        std::mem::size_of_val(c)
    )
    .unwrap();

    let tools = tools();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/emulate_kernel.py");
    let mut child = Command::new("python3")
        .arg(script)
        .env("PYTHONPATH", &tools)
        .env("LD_PRELOAD", tools.join("bochs_shim.so"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), case.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("out "))
        .unwrap_or_else(|| {
            let err = String::from_utf8_lossy(&out.stderr);
            panic!("the emulator returned no memory: {text}{err}")
        });
    let hex = line.split(' ').nth(2).unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    bytes
        .chunks_exact(4)
        .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect()
}

/// A bf16's bits from a small integer pattern: normal values of both signs, zeros, and (where
/// `i % 97 == 5`) a subnormal, which the instruction reads as zero.
fn element(i: usize, seed: usize) -> u32 {
    if i % 97 == 5 {
        return 0x0003;
    }
    let x = ((i * 29 + seed * 13) % 53) as f32 - 26.0;
    u32::from(half::bf16::from_f32(x * 0.043 * (1.0 + (i % 5) as f32)).to_bits())
}

#[test]
fn the_avx512_bf16_kernel_under_bochs_computes_each_lane_as_vdpbf16ps_defines_it() {
    let (mr, nr) = (AVX512BF16_12X32.mr, AVX512BF16_12X32.nr);
    for (kc, zero, ldc) in [
        (1, true, 32),
        (2, false, 40),
        (7, false, 32),
        (41, true, 48),
    ] {
        let mut a: Vec<Pair> = (0..kc * mr)
            .map(|i| Pair(element(2 * i, 1) << 16 | element(2 * i + 1, 1)))
            .collect();
        let mut b: Vec<Pair> = (0..kc * nr)
            .map(|i| Pair(element(2 * i, 2) << 16 | element(2 * i + 1, 2)))
            .collect();
        let mut c: Vec<f32> = (0..mr * ldc)
            .map(|i| ((i % 11) as f32 - 5.0) * 0.25)
            .collect();
        // The order-sensitive lane: 1 + 1·(−1) + 2⁻¹⁵·2⁻¹⁵ is 2⁻³⁰ high half first, 0 if not.
        c[0] = 1.0;
        let (one, minus, tiny) = (0x3f80u32, 0xbf80u32, 0x3800u32);
        a[(kc - 1) * mr] = Pair(one << 16 | tiny);
        b[(kc - 1) * nr] = Pair(minus << 16 | tiny);
        // The subnormal lane (1, 1): 2⁻¹³³ · 2¹⁰⁰ is 2⁻³³, but the instruction reads the
        // subnormal as zero, so the lane stays at its start, 0.
        c[ldc + 1] = 0.0;
        let (sub, big) = (0x0001u32, 0x7180u32);
        a[(kc - 1) * mr + 1] = Pair(sub << 16);
        b[(kc - 1) * nr + 1] = Pair(big << 16);
        // Earlier pairs of rows 0 and 1 contribute nothing.
        for q in 0..kc - 1 {
            a[q * mr] = Pair(0);
            a[q * mr + 1] = Pair(0);
        }
        let got = emulate(AVX512BF16_12X32.run as usize, kc, &a, &b, &c, ldc, zero);
        for i in 0..mr {
            for j in 0..ldc {
                let e = i * ldc + j;
                let want = if j >= nr {
                    c[e] // past the tile: untouched
                } else {
                    (0..kc).fold(if zero { 0.0 } else { c[e] }, |acc, q| {
                        dot2(acc, a[q * mr + i], b[q * nr + j])
                    })
                };
                assert_eq!(
                    got[e].to_bits(),
                    want.to_bits(),
                    "kc {kc} zero {zero} at ({i}, {j}): {} vs {want}",
                    got[e]
                );
            }
        }
        if !zero {
            assert_eq!(
                got[0],
                2f32.powi(-30),
                "the high half's product is added first"
            );
        }
    }
}

#[test]
fn the_avx512_f32_kernel_under_bochs_is_one_fma_chain_per_element_in_k_order() {
    let (mr, nr) = (AVX512_12X32.mr, AVX512_12X32.nr);
    for (kc, zero, ldc) in [(1, true, 32), (3, false, 40), (29, false, 32)] {
        let a: Vec<f32> = (0..kc * mr)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.137)
            .collect();
        let b: Vec<f32> = (0..kc * nr)
            .map(|i| ((i * 5 % 19) as f32 - 9.0) * 0.071)
            .collect();
        let c: Vec<f32> = (0..mr * ldc)
            .map(|i| ((i % 13) as f32 - 6.0) * 0.3)
            .collect();
        let got = emulate(AVX512_12X32.run as usize, kc, &a, &b, &c, ldc, zero);
        for i in 0..mr {
            for j in 0..ldc {
                let e = i * ldc + j;
                let want = if j >= nr {
                    c[e]
                } else {
                    (0..kc).fold(if zero { 0.0 } else { c[e] }, |acc, q| {
                        a[q * mr + i].mul_add(b[q * nr + j], acc)
                    })
                };
                assert_eq!(
                    got[e].to_bits(),
                    want.to_bits(),
                    "kc {kc} zero {zero} at ({i}, {j}): {} vs {want}",
                    got[e]
                );
            }
        }
    }
}
