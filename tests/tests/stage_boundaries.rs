//! No stage imports another stage's crate (issue 21, acceptance check 1).
//!
//! The stages meet only through the contract crates (`sqi-schemas` with its
//! lake contract, `sqi-kafka`): ingest writes the Kafka record, the processor
//! reads it and writes the lake, and the `sqi` binary is the one crate that
//! depends on every role. A stage that depended on another would let one
//! reach into the other's internals (as the batch once took its marker paths
//! and Parquet settings from the processor), so this reads the workspace's
//! `cargo metadata` and fails on any such edge. It needs no services.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// The stage crates. Each may depend on the contract crates and libraries,
/// never on another stage nor on the binary (a new role's crate joins this
/// list).
const STAGES: &[&str] = &["sqi-ingest", "sqi-processor", "sqi-batch", "sqi-report"];

/// The crate of the `sqi` binary, which runs every role and so depends on all.
const BINARY: &str = "sqi";

/// Every dependency edge between workspace members, as (from, to, kind).
/// Dev- and build-dependencies count too: a stage's own tests that need
/// another stage's output belong in `tests/`, which may depend on everyone.
fn workspace_edges() -> Vec<(String, String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let packages = metadata["packages"].as_array().expect("a package list");
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut edges = Vec::new();
    for package in packages {
        let from = package["name"].as_str().unwrap_or_default();
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let to = dependency["name"].as_str().unwrap_or_default();
            if members.contains(&to) {
                let kind = dependency["kind"].as_str().unwrap_or("normal");
                edges.push((from.to_owned(), to.to_owned(), kind.to_owned()));
            }
        }
    }
    edges
}

#[test]
fn no_stage_depends_on_another_stage_or_the_binary() {
    let edges = workspace_edges();
    let mut forbidden: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (from, to, kind) in &edges {
        let from_stage = STAGES.contains(&from.as_str());
        let to_stage_or_binary = STAGES.contains(&to.as_str()) || to == BINARY;
        if from_stage && to_stage_or_binary && from != to {
            forbidden
                .entry(from.clone())
                .or_default()
                .push(format!("{to} ({kind})"));
        }
    }
    assert!(
        forbidden.is_empty(),
        "stage crates must depend only on the contract crates (sqi-schemas, \
         sqi-kafka), never on another stage or on `{BINARY}`; found: {forbidden:?}"
    );
    // The check is only worth something if it sees the stages at all.
    for stage in STAGES {
        assert!(
            edges.iter().any(|(from, _, _)| from == stage),
            "{stage} is not in the workspace, or depends on no member: {edges:?}"
        );
    }
}
