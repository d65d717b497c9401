//! The repository stands alone: nothing `make dev`, `make test` or the
//! README needs lives outside it. A fresh clone has no sibling folders, so
//! no file may point at one, and every relative link of the README must
//! resolve inside the checkout.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file of the checkout but VCS data, build output and local state.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name();
        if matches!(name.to_str(), Some(".git" | ".local" | "target")) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn no_file_points_outside_the_repository() {
    // Spelled in two halves so that this file does not match itself.
    let needles = [
        format!("{}/shared", ".."),
        format!("shared/{}", "arq-vectors"),
    ];
    let mut all = Vec::new();
    files(&root(), &mut all);
    assert!(all.len() > 50, "walked only {} files", all.len());
    let mut offenders = Vec::new();
    for path in all {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // binary
        };
        for needle in &needles {
            if text.contains(needle.as_str()) {
                offenders.push(format!("{} mentions {needle}", path.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn every_relative_link_of_the_readme_resolves_inside_the_checkout() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut checked = 0;
    for (i, _) in readme.match_indices("](") {
        let rest = &readme[i + 2..];
        let Some(end) = rest.find(')') else { continue };
        let target = rest[..end].split('#').next().unwrap_or("");
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let path = root().join(target);
        assert!(
            path.exists(),
            "README links to {target}, which is not in the checkout"
        );
        assert!(
            path.canonicalize()
                .unwrap()
                .starts_with(root().canonicalize().unwrap()),
            "README links outside the checkout: {target}"
        );
        checked += 1;
    }
    assert!(checked > 0, "the README has no relative link to check");
}
