//! The `sqi` binary's library: the command line that runs every role, its
//! telemetry, and the embedded demo.
//!
//! ```text
//!  widget ──HTTP──▶ ingest ──Kafka──▶ processor ──Parquet──▶ lake ◀── batch (DataFusion)
//!                   (sqi-ingest)       (sqi-processor)        │        (sqi-batch)
//!                                                             └──▶ report API (sqi-report)
//! ```
//!
//! This is the one crate that depends on every role's crate; it owns no part
//! of the lake and no role's logic, only how a role is started from flags
//! and environment and how the demo wires them together. `main.rs` only
//! parses the command line, sets up telemetry and calls [`cli::run`].

pub mod cli;
pub mod demo;
pub mod error;
pub mod telemetry;

pub use error::{Error, Result};
