//! Hostile input: report. See `main.rs`.
//!
//! The report's attacks (issue 19, items 6–9 and 14–16) run in-process over
//! the `sqi` crate's own fixture lake, which needs neither the broker nor S3,
//! so they live beside it: `sqi/tests/hostile_report.rs`
//! (`cargo test -p sqi --test hostile_report`), with unit tests in
//! `sqi/report/src/{guard,days,endpoints,window}.rs` and `sqi/batch/src/lib.rs`.
