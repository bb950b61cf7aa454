//! The hostile-input suite (issue 19): every attack a client on the open
//! internet, a copied widget or a holder of a report key can make, one test
//! each, against the real broker and S3 server. `SECURITY.md` lists each
//! attack with the test here (or beside the code) that covers it.
//!
//! - `ingest`: what anonymous HTTP clients can send to `POST /v1/events`,
//!   the pixel and the ingest server's sockets;
//! - `processor`: records on the topic chosen by whoever can write to it
//!   (ingest's output, or anything that reaches Kafka);
//! - `report`: what a holder of a report API key, or anyone without one,
//!   can ask the report API;
//! - `iam`: what each role's own credentials can reach in the lake, should a
//!   pod be taken over (`deploy/iam/`, enforced by moto).

mod iam;
mod ingest;
mod processor;
mod report;
