//! The module map of `src/lib.rs` and the README, enforced: every module
//! sits on a layer and imports only from layers below its own, so the
//! arrows point one way. A new module must be given a layer here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first (as the README draws them).
const LAYERS: &[&[&str]] = &[
    &["domain"],
    &["config"],
    &[
        "store",
        "crd",
        "metrics",
        "cache",
        "telemetry",
        "shutdown",
        "tls",
    ],
    &["queue", "auth"],
    &["worker"],
    &["action"],
    &["provider"],
    &["engine", "alert"],
    &["api", "controller"],
    &["runtime"],
    &["demo"],
    &["app"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate's top-level modules a source text uses (`crate::x`, and the
/// names in `use crate::{x, y::z}`), comments left out.
fn uses(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for path in files {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let module = first.trim_end_matches(".rs");
        if matches!(module, "lib" | "main" | "bin") {
            continue;
        }
        let own = layer(module).unwrap_or_else(|| panic!("module `{module}` has no layer"));
        for used in uses(&std::fs::read_to_string(&path).unwrap()) {
            if used == module {
                continue;
            }
            let Some(theirs) = layer(&used) else {
                panic!("{} uses `crate::{used}`, which has no layer", rel.display());
            };
            checked += 1;
            if theirs >= own {
                violations.push(format!("{} ({module}) -> {used}", rel.display()));
            }
        }
    }
    assert!(checked > 100, "checked only {checked} imports");
    assert!(
        violations.is_empty(),
        "arrows pointing up or sideways:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_store_and_the_config_import_nothing_but_the_vocabulary() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    for (dir, allowed) in [("store", &["domain"][..]), ("config", &["domain"][..])] {
        let mut files = Vec::new();
        rust_files(&src.join(dir), &mut files);
        assert!(!files.is_empty());
        for path in files {
            for used in uses(&std::fs::read_to_string(&path).unwrap()) {
                assert!(
                    used == dir || allowed.contains(&used.as_str()),
                    "{} uses crate::{used}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn nothing_outside_the_engine_and_the_store_takes_a_pool_from_the_engine() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for path in files {
        let rel = path.strip_prefix(&src).unwrap();
        if rel.starts_with("engine") || rel.starts_with("store") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(".pool()"), "{} calls .pool()", rel.display());
    }
}

#[test]
fn no_source_file_but_the_pickle_codec_is_over_500_lines() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for path in files {
        if path.ends_with("queue/pickle.rs") {
            continue;
        }
        let n = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(n <= 500, "{} has {n} lines", path.display());
    }
}
