//! The `sqi` command line (`CONTRACTS.md` §4): one binary, one subcommand per role.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use sqi_ingest::IngestConfig;
use sqi_processor::{Processor, ProcessorConfig};
use sqi_schemas::cli::LakeArgs;
use sqi_schemas::lake::Lake;
use tokio::net::TcpListener;

use crate::demo::{self, DemoArgs};
use crate::error::Error;
use crate::telemetry;
use sqi_batch::{self as batch, BatchArgs, publishers};
use sqi_report::{self as report, ReportArgs};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// SQI Engine: social-share analytics, from widget event to Social Quality Index.
#[derive(Debug, Parser)]
#[command(name = "sqi", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "SQI_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Where logs go instead of stderr. Only the demo's have a place: a file
    /// in its lake directory (chosen here if the flag left it open), unless
    /// `RUST_LOG` is set, because its terminal shows a table to a person.
    pub fn log_file(&mut self) -> Option<PathBuf> {
        match &mut self.command {
            Command::Demo(args) if std::env::var_os("RUST_LOG").is_none() => {
                let dir = args.lake_dir.get_or_insert_with(demo::default_lake_dir);
                let file = dir.join("sqi-demo.log");
                args.log_file = Some(file.clone());
                Some(file)
            }
            _ => None,
        }
    }
}

/// The roles.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP ingest → Kafka.
    Ingest(IngestConfig),
    /// Kafka consumer group → lake (aggregates, url_counts, events).
    Process(ProcessorConfig),
    /// Daily rollup and SQI for a day or a range of days, idempotent.
    Batch(BatchArgs),
    /// The report API.
    Report(ReportArgs),
    /// The publisher dimension.
    Publishers {
        /// What to do with it.
        #[command(subcommand)]
        action: PublishersCommand,
    },
    /// Every role in one process on the embedded default, with synthetic traffic.
    Demo(DemoArgs),
}

/// `sqi publishers …`
#[derive(Debug, Subcommand)]
pub enum PublishersCommand {
    /// Load (replace) the publisher dimension from a CSV file.
    Import {
        /// CSV with a header: publisher[,domain,category,created_at].
        file: PathBuf,
        /// The lake.
        #[command(flatten)]
        lake: LakeArgs,
    },
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutdown requested");
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested");
}

/// Runs the chosen role to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ingest(config) => {
            let metrics = telemetry::install_metrics();
            let listener = TcpListener::bind(config.listen).await?;
            sqi_ingest::run(config, listener, metrics, shutdown_signal()).await?;
        }
        Command::Process(config) => {
            let metrics = telemetry::install_metrics();
            let lake = Lake::open(&config.lake.url, &config.lake.options())?;
            let admin = TcpListener::bind(config.listen).await?;
            let processor = Processor::new(config, lake)?;
            processor
                .run(Some(admin), metrics, shutdown_signal())
                .await?;
        }
        Command::Batch(args) => {
            // A person at a terminal gets a progress bar; logs and CronJobs get one line per day.
            let days = args.days()?.len() as u64;
            let bar = std::io::stderr()
                .is_terminal()
                .then(|| indicatif::ProgressBar::new(days).with_message("computing SQI"));
            if let Some(bar) = &bar {
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:40}] {pos}/{len} days, {elapsed} (eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
            }
            let _ = batch::run(&args, |day| match &bar {
                Some(bar) => {
                    bar.set_message(format!("{} done, {} scored", day.date, day.scored));
                    bar.inc(1);
                }
                None => tracing::info!(
                    date = %day.date,
                    daily_rows = day.daily_rows,
                    daily_url_rows = day.daily_url_rows,
                    daily_hour_rows = day.daily_hour_rows,
                    sqi_rows = day.sqi_rows,
                    first_seen_rows = day.first_seen_rows,
                    inputs = day.plan.inputs.name(),
                    scored = day.scored,
                    complete = day.complete,
                    "day computed"
                ),
            })
            .await?;
            if let Some(bar) = bar {
                bar.finish();
            }
        }
        Command::Report(args) => {
            let metrics = telemetry::install_metrics();
            let lake = Lake::open(&args.lake.url, &args.lake.options())?;
            let keys = report::KeyRing::load(&args.api_keys_file)?;
            let state =
                report::ReportState::with_options(lake, keys, metrics, args.options()).await?;
            let listener = TcpListener::bind(args.listen).await?;
            tracing::info!(addr = %args.listen, "report API listening");
            report::serve(state, listener, shutdown_signal()).await?;
        }
        Command::Publishers {
            action: PublishersCommand::Import { file, lake },
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", file.display())))?;
            let rows = publishers::parse_csv(&text)?;
            let lake = Lake::open(&lake.url, &lake.options())?;
            publishers::write(&lake, &rows).await?;
            tracing::info!(publishers = rows.len(), "publishers imported");
        }
        Command::Demo(args) => {
            let mut out = std::io::stdout().lock();
            let _ = demo::run(&args, &mut out).await?;
        }
    }
    Ok(())
}
