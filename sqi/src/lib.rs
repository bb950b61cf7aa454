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
