//! Process-wide telemetry: tracing output and the Prometheus recorder.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Sets up `tracing`, filtered by `RUST_LOG` (default `info`): to stderr, or
/// appended to `file` when one is given (the demo's, whose terminal is for a
/// person). A file that cannot be opened falls back to stderr, saying so.
pub fn init_tracing(format: LogFormat, file: Option<&Path>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let opened = file.map(|path| {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| format!("cannot write logs to {}: {error}", path.display()))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match (opened, format) {
        (Some(Ok(file)), LogFormat::Text) => builder
            .with_writer(Mutex::new(file))
            .with_ansi(false)
            .try_init(),
        (Some(Ok(file)), LogFormat::Json) => {
            builder.with_writer(Mutex::new(file)).json().try_init()
        }
        (failed, format) => {
            if let Some(Err(why)) = failed {
                eprintln!("warning: {why}; logging to stderr");
            }
            let builder = builder
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal());
            match format {
                LogFormat::Text => builder.try_init(),
                LogFormat::Json => builder.json().try_init(),
            }
        }
    };
}

/// How often histogram samples are folded into their summaries.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the global Prometheus recorder, returning the handle `/metrics`
/// renders, and starts its upkeep.
///
/// The recorder keeps every histogram sample until upkeep folds it into the
/// histogram's summary. Without upkeep, a process nobody scrapes (or scrapes
/// rarely) grows by every latency it ever recorded: ingest grew 12 MiB in a
/// 30-minute soak that way.
pub fn install_metrics() -> Option<PrometheusHandle> {
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            let upkeep = handle.clone();
            // A plain thread: the recorder outlives any one runtime, and the
            // work is a few microseconds every few seconds.
            let started = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = started {
                tracing::warn!(%error, "metrics upkeep not started; histograms grow until scraped");
            }
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "metrics recorder not installed");
            None
        }
    }
}
