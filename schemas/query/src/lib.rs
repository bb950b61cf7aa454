//! DataFusion over the lake: a session with the lake's object store registered
//! and every table declared with its contract schema and Hive partitions, so
//! that an empty or young lake still has well-typed (empty) tables.
//!
//! This is the lake contract as SQL sees it, shared by the batch job
//! (`sqi-batch`) and the report API (`sqi-report`): which tables exist, their
//! schemas and partitions, and the session settings each workload needs. It
//! must not know any role's queries, nor write to the lake.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::options::ParquetReadOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use sqi_schemas::lake::{Lake, Table};

/// Why a session could not be built or a query's result read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DataFusion failed: a corrupt or foreign file in the lake, or a bad query.
    #[error("query failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// Shaping Arrow data failed (internal).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A query's result lacks a column its contract schema has (a query bug).
    #[error("query produced no column `{0}`")]
    MissingColumn(String),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a session is for; the two differ in what they may keep in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One job over a fixed set of files, then exit: per-file statistics
    /// gathered at planning prune whole files, and the caches die with it.
    Batch,
    /// A long-lived API over the hourly tables, which gain files all day: its
    /// memory must not follow the number of files.
    Serving,
    /// A long-lived API over the batch's day tables (`daily`, `daily_urls`,
    /// `sqi`): one file a table a day, so every footer of the days a report
    /// reads can stay in memory, and must, since a 30-day question opens 30.
    ServingDays,
}

impl Workload {
    /// Parquet footers kept in memory (as DataFusion accounts them).
    fn footer_cache_bytes(self) -> usize {
        match self {
            Self::Batch => 16 * 1024 * 1024,
            Self::Serving => 4 * 1024 * 1024,
            Self::ServingDays => 64 * 1024 * 1024,
        }
    }

    /// Per-file statistics kept in memory (as DataFusion accounts them).
    fn statistics_cache_bytes(self) -> usize {
        match self {
            Self::Batch => 4 * 1024 * 1024,
            Self::Serving | Self::ServingDays => 0,
        }
    }
}

/// A DataFusion session over `lake` with the given tables registered.
pub async fn session(
    lake: &Lake,
    tables: &[Table],
    target_partitions: usize,
    workload: Workload,
) -> Result<SessionContext> {
    // DATAFUSION_* environment variables tune the engine without a release;
    // the partition count is ours to set. Batches of 32Ki rows (not 8Ki) cut
    // stage 1 of the SQI by a tenth at network scale (BENCHMARKS.md).
    let mut config = SessionConfig::from_env()?;
    if std::env::var_os("DATAFUSION_EXECUTION_BATCH_SIZE").is_none() {
        config = config.with_batch_size(32 * 1024);
    }
    let mut config = config
        .with_target_partitions(target_partitions.max(1))
        .with_information_schema(false);
    if workload != Workload::Batch {
        // Statistics at planning read every file's footer before the query
        // starts and hold them all until it ends, so a question about today
        // costs memory in proportion to today's file count: the report grew
        // 2.6 MiB a minute in the soak, at 240 new files a minute. Without
        // them each file is opened in turn and its row groups are still
        // pruned by the footer's statistics.
        config = config.with_collect_statistics(false);
    }
    // DataFusion caches file listings forever by default; a long-lived report
    // API would then never see the processor's new files. Listings are cheap
    // next to the report's own answer cache, so every query lists afresh.
    // Footers (and, for batches, statistics) stay cached, since a file never
    // changes under its name, within a budget smaller than DataFusion's
    // defaults (50 + 20 MiB): a report pod fills whatever budget it has, and
    // repeat questions are answered from the report's own answer cache.
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0)
                .with_metadata_cache_limit(workload.footer_cache_bytes())
                .with_file_statistics_cache_limit(workload.statistics_cache_bytes()),
        )
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let _ = ctx.register_object_store(&lake.store_url(), lake.store().clone());
    for table in tables {
        register(&ctx, lake, *table).await?;
    }
    Ok(ctx)
}

/// Declares one lake table on `ctx` under its prefix name.
pub async fn register(ctx: &SessionContext, lake: &Lake, table: Table) -> Result<()> {
    register_as(ctx, lake, table, table.prefix()).await
}

/// Declares one lake table on `ctx` under `name`.
pub async fn register_as(
    ctx: &SessionContext,
    lake: &Lake,
    table: Table,
    name: &str,
) -> Result<()> {
    let schema = viewed(&table.schema());
    let partitions: Vec<(String, DataType)> = table
        .partition_columns()
        .iter()
        .map(|c| ((*c).to_owned(), DataType::Utf8))
        .collect();
    let options = ParquetReadOptions::default()
        .schema(&schema)
        .table_partition_cols(partitions)
        .file_extension(".parquet");
    ctx.register_parquet(name, lake.table_url(table), options)
        .await?;
    Ok(())
}

/// `schema` with every string read as a view: keys of up to 12 bytes
/// (publisher ids) then hash and compare inline, which halves the cost of
/// grouping by them.
pub fn viewed(schema: &SchemaRef) -> SchemaRef {
    Arc::new(arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Runs `sql` and returns one batch (possibly empty), strings as `Utf8`.
pub async fn collect_one(ctx: &SessionContext, sql: &str) -> Result<RecordBatch> {
    let frame = ctx.sql(sql).await?;
    let declared: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await?;
    // Tables are read as string views, and operators may emit views where the
    // plan declares strings: the batches' own schema is the truth, and callers
    // get plain strings.
    let schema = batches.first().map_or(declared, RecordBatch::schema);
    without_views(&concat_batches(&schema, &batches)?)
}

/// `batch` with every string view column as a plain string column.
pub fn without_views(batch: &RecordBatch) -> Result<RecordBatch> {
    let fields: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            _ => f.as_ref().clone(),
        })
        .collect();
    conform(batch, &Arc::new(arrow::datatypes::Schema::new(fields)))
}

/// Re-types `batch` column by column to `schema` (matching by name), so that
/// files carry exactly the contract's types whatever SQL produced.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch
                .column_by_name(field.name())
                .ok_or_else(|| Error::MissingColumn(field.name().to_owned()))?;
            Ok(cast(column, field.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
