//! Hostile input: report. See `main.rs`.
