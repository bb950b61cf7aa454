//! The end-to-end suite, as one test binary.
//!
//! One binary, not one per file: each binary links all of DataFusion
//! (about 265 MB unoptimized), so twenty of them cost gigabytes of disk and
//! minutes of linking on every CI run. With `autotests = false` in
//! `Cargo.toml`, a new file here runs only once it is listed below, and
//! `every_test_file_is_in_a_suite` fails until it is. The same holds for
//! `sqi/tests/main.rs`.
//!
//! Tests that restart or kill a broker use one of their own
//! (`sqi_integration_tests::OwnBroker`), never the shared one, so any two
//! tests of this binary can run side by side.
//!
//! Run one file's tests with `cargo test -p sqi-integration-tests --test
//! suite ingest::`.

mod chaos;
mod dashboard;
mod deploy;
mod exactly_once;
mod hostile;
mod ingest;
mod kafka_security;
mod month_merge;
mod processor;
mod skeleton;
mod stage_boundaries;
mod widget;

use std::path::Path;

/// Fails for a test file, or a directory with a `mod.rs`, that `main.rs`
/// beside it does not declare: with `autotests = false` it would never run.
fn assert_every_file_is_a_module(tests_dir: &Path) {
    let suite = std::fs::read_to_string(tests_dir.join("main.rs")).expect("main.rs is readable");
    for entry in std::fs::read_dir(tests_dir).expect("the tests directory is readable") {
        let path = entry.expect("a directory entry").path();
        let is_module = if path.is_dir() {
            path.join("mod.rs").is_file()
        } else {
            path.extension().is_some_and(|ext| ext == "rs")
        };
        let Some(name) = path.file_stem().and_then(|name| name.to_str()) else {
            continue;
        };
        if !is_module || name == "main" {
            continue;
        }
        assert!(
            suite.contains(&format!("\nmod {name};\n")),
            "{} is not a module of {}, so none of its tests run",
            path.display(),
            tests_dir.join("main.rs").display()
        );
    }
}

#[test]
fn every_test_file_is_in_a_suite() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert_every_file_is_a_module(&workspace.join("tests/tests"));
    assert_every_file_is_a_module(&workspace.join("sqi/tests"));
}
