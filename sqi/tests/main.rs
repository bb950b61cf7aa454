//! The `sqi` crate's integration tests, as one test binary.
//!
//! One binary, not one per file: each binary links all of DataFusion
//! (about 265 MB unoptimized), so twenty of them cost gigabytes of disk and
//! minutes of linking on every CI run. `autotests = false` in `Cargo.toml`
//! means a new file here runs only once it is listed below;
//! `every_test_file_is_in_a_suite` (in `tests/tests/main.rs`) fails until
//! it is.
//!
//! Run one file's tests with `cargo test -p sqi --test suite golden::`.

mod batch_runs;
mod cli;
mod demo;
mod fixture;
mod golden;
mod hostile_report;
mod local_days;
mod published_sql;
mod report_api;
mod sharding;
mod sqi_independent;
mod stored_inputs;
