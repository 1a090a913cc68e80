//! The engine's source layout: no import cycles between its files, and no file over 450 lines.
//!
//! A file depends on another when its code names it: a `crate::…`, `super::…` or `self::…`
//! path (in a `use` line or inline), resolved to the deepest module file it reaches. A parent
//! module's `mod` declarations and re-exports (`pub use child::…`) are not dependencies;
//! anything else a parent takes from a child is. Comments and `#[cfg(test)]` modules are
//! ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`tape::recompute::segment`; `""` for lib.rs) → file.
fn modules(root: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            (parts.join("::"), f)
        })
        .collect()
}

/// The code of a file without comments, string contents and `#[cfg(test)]` modules.
fn code(src: &str) -> String {
    let src = match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    };
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let line = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every path a line names, as segments: `crate::a::b` and each item of `crate::{a::b, c}`.
fn paths(text: &str, head: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(head) {
        let before = rest[..i].chars().last();
        rest = &rest[i + head.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                found.push(segments(item));
            }
        } else {
            found.push(segments(rest));
        }
    }
    found
}

fn segments(s: &str) -> Vec<String> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end]
        .split("::")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn resolve(mods: &BTreeMap<String, PathBuf>, parts: &[String]) -> Option<String> {
    (0..=parts.len())
        .rev()
        .map(|k| parts[..k].join("::"))
        .find(|m| mods.contains_key(m))
}

fn graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(root);
    let mut edges = BTreeMap::new();
    for (m, file) in &mods {
        let here: Vec<String> = if m.is_empty() {
            vec![]
        } else {
            m.split("::").map(str::to_string).collect()
        };
        let is_dir_module = file.ends_with("mod.rs") || file.ends_with("lib.rs");
        let parent: Vec<String> = here[..here.len().saturating_sub(1)].to_vec();
        let mut deps = BTreeSet::new();
        for line in code(&std::fs::read_to_string(file).unwrap()).lines() {
            let t = line.trim_start();
            let declaration = t.starts_with("mod ")
                || t.starts_with("pub mod ")
                || t.starts_with("pub(crate) mod ")
                || t.starts_with("pub use ")
                || t.starts_with("pub(crate) use ");
            let mut named: Vec<Vec<String>> = paths(line, "crate::");
            for p in paths(line, "super::") {
                named.push(parent.iter().cloned().chain(p).collect());
            }
            for p in paths(line, "self::") {
                named.push(here.iter().cloned().chain(p).collect());
            }
            // A directory module's `use child::…` names its child directly.
            if is_dir_module && t.starts_with("use ") && !t.starts_with("use crate") {
                named.push(here.iter().cloned().chain(segments(&t[4..])).collect());
            }
            for p in named {
                let Some(target) = resolve(&mods, &p) else {
                    continue;
                };
                let child_of_here = target.starts_with(&format!("{m}::")) || m.is_empty();
                if target != *m && !(declaration && child_of_here) {
                    deps.insert(target);
                }
            }
        }
        edges.insert(m.clone(), deps);
    }
    edges
}

/// The cycles' members (strongly connected components of two or more files).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(v) = stack.pop() {
            for w in edges.get(&v).into_iter().flatten() {
                if seen.insert(w.clone()) {
                    stack.push(w.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|k| (k, reach(k))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for a in edges.keys() {
        let comp: Vec<String> = edges
            .keys()
            .filter(|b| reached[a].contains(*b) && reached[*b].contains(a))
            .cloned()
            .collect();
        if comp.len() > 1 && !out.contains(&comp) {
            out.push(comp);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_engine_has_no_import_cycles() {
    let edges = graph(&src());
    assert!(edges.len() > 40, "the scan found the engine's files");
    assert!(
        edges["tape::record"].contains("tape::stack"),
        "the scan sees `use super::…` edges"
    );
    let found = cycles(&edges);
    assert!(found.is_empty(), "import cycles: {found:?}");
}

#[test]
fn the_cycle_check_catches_a_cycle() {
    let dir = std::env::temp_dir().join(format!("rewind-layout-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(
        dir.join("a/mod.rs"),
        "mod c;\npub use c::C;\nfn f() { crate::b::g() }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a/c.rs"),
        "pub struct C;\n// crate::b in a comment\n",
    )
    .unwrap();
    std::fs::write(dir.join("b.rs"), "use crate::a::C;\npub fn g() {}\n").unwrap();
    let found = cycles(&graph(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found, vec![vec!["a".to_string(), "b".to_string()]]);
}

#[test]
fn no_engine_file_is_over_450_lines() {
    let long: Vec<(String, usize)> = modules(&src())
        .into_iter()
        .map(|(m, f)| (m, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, n)| *n > 450)
        .collect();
    assert!(long.is_empty(), "{long:?}");
}
