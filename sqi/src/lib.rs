//! The `sqi` binary's library: the batch job, the report API, the publisher
//! import, the demo, and the command line that runs every role.
//!
//! ```text
//!  widget ──HTTP──▶ ingest ──Kafka──▶ processor ──Parquet──▶ lake ◀── batch (DataFusion)
//!                   (sqi-ingest)       (sqi-processor)        │        writes daily/, sqi/
//!                                                             └──▶ report API (DataFusion)
//! ```
//!
//! It owns `daily/`, `daily_urls/`, `sqi/`, `monthly/`, `monthly_urls/` and
//! `publishers/` in the lake and reads the rest;
//! it never writes the processor's prefixes. `main.rs` only parses the command
//! line, sets up telemetry and calls [`cli::run`].

pub mod batch;
pub mod cli;
pub mod compact;
pub mod demo;
pub mod error;
pub mod publishers;
pub mod query;
pub mod report;
pub mod telemetry;

pub use error::{Error, Result};

/// A lake in a fresh temporary directory, for the crate's own tests; the
/// directory lives as long as the guard.
#[cfg(test)]
pub(crate) fn test_lake() -> (tempfile::TempDir, sqi_schemas::lake::Lake) {
    // Test code only: a machine that cannot make a temp dir fails the test here.
    #[allow(clippy::expect_used)]
    let dir = tempfile::tempdir().expect("a temporary directory");
    #[allow(clippy::expect_used)]
    let lake = sqi_schemas::lake::Lake::open(
        &format!("file://{}", dir.path().display()),
        &sqi_schemas::lake::LakeOptions::default(),
    )
    .expect("a local lake opens");
    (dir, lake)
}
