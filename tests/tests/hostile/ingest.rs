//! Hostile input: ingest. See `main.rs`.
