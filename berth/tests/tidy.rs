//! Mechanical checks of the invariants ARCHITECTURE.md states as absences.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `[dependencies]` table of a manifest, as text.
fn normal_dependencies(manifest: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == "[dependencies]" || t.starts_with("[dependencies.");
            continue;
        }
        if inside {
            out.push_str(t);
            out.push('\n');
        }
    }
    out
}

#[test]
fn solver_has_no_io_runtime_or_cloud_dependencies() {
    let manifest = fs::read_to_string(root().join("solver/Cargo.toml")).unwrap();
    let deps = normal_dependencies(&manifest);
    for banned in [
        "tokio", "aws-", "bollard", "polars", "axum", "hyper", "reqwest", "rusqlite",
    ] {
        assert!(
            !deps.contains(banned),
            "solver/Cargo.toml depends on {banned}: solver/ must stay pure"
        );
    }
}

#[test]
fn traces_has_no_heavy_dependencies() {
    let manifest = fs::read_to_string(root().join("traces/Cargo.toml")).unwrap();
    let deps = normal_dependencies(&manifest);
    for banned in ["tokio", "aws-", "bollard", "polars"] {
        assert!(
            !deps.contains(banned),
            "traces/Cargo.toml depends on {banned}"
        );
    }
}

#[test]
fn solver_never_reads_a_clock_or_global_randomness() {
    let mut files = Vec::new();
    rust_files(&root().join("solver/src"), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            // A map used for lookups only (never iterated) is allowed where the line says so.
            let lookup_only = line.ends_with("// tidy: lookup only");
            for banned in [
                "Instant::now",
                "SystemTime::now",
                "thread_rng",
                "rand::rng()",
                "rand::random",
                "std::fs",
                "std::net",
                "std::env",
                "HashMap",
                "HashSet",
            ] {
                let allowed = lookup_only && banned.starts_with("Hash");
                assert!(
                    allowed || !code.contains(banned),
                    "{}:{}: `{banned}` in decide-code",
                    f.display(),
                    i + 1
                );
            }
        }
    }
}

#[test]
fn architecture_md_names_every_crate_folder() {
    let arch = fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let ws = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members = ws
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members line");
    for member in members.split('"').skip(1).step_by(2) {
        assert!(
            arch.contains(&format!("`{member}/`")),
            "ARCHITECTURE.md does not map `{member}/`"
        );
        let manifest = fs::read_to_string(root().join(member).join("Cargo.toml")).unwrap();
        let expected = if member == "berth" {
            "berth".to_string()
        } else {
            format!("berth-{member}")
        };
        assert!(
            manifest.contains(&format!("name = \"{expected}\"")),
            "{member}/Cargo.toml: package must be named {expected} (folder name = crate name)"
        );
    }
}

#[test]
fn shared_traces_are_never_copied_into_the_repo() {
    let out = std::process::Command::new("git")
        .args(["ls-files"])
        .current_dir(root())
        .output();
    let Ok(out) = out else {
        eprintln!("SKIP: git not available");
        return;
    };
    let files = String::from_utf8_lossy(&out.stdout);
    for name in [
        "openb_pod_list_default.csv",
        "openb_pod_list_gpuspec33.csv",
        "openb_node_list_gpu_node.csv",
        "openb_node_list_all_node.csv",
        "batch_task.csv",
        "wagap-2013.swf",
        "hpc2n.swf",
    ] {
        assert!(
            !files
                .lines()
                .any(|f| f.ends_with(&format!("/{name}")) || f == name),
            "{name} is a shared trace: read it from ../shared/traces, don't commit it"
        );
    }
}
