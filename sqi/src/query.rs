//! DataFusion over the lake: a session with the lake's object store registered
//! and every table declared with its contract schema and Hive partitions, so
//! that an empty or young lake still has well-typed (empty) tables.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::options::ParquetReadOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use sqi_schemas::lake::{Lake, Table};

use crate::error::{Error, Result};

/// Parquet footers kept in memory (as DataFusion accounts them).
const FOOTER_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Per-file statistics kept in memory (as DataFusion accounts them).
const STATISTICS_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// A DataFusion session over `lake` with the given tables registered.
pub async fn session(
    lake: &Lake,
    tables: &[Table],
    target_partitions: usize,
) -> Result<SessionContext> {
    // DATAFUSION_* environment variables tune the engine without a release;
    // the partition count is ours to set. Batches of 32Ki rows (not 8Ki) cut
    // stage 1 of the SQI by a tenth at network scale (BENCHMARKS.md).
    let mut config = SessionConfig::from_env()?;
    if std::env::var_os("DATAFUSION_EXECUTION_BATCH_SIZE").is_none() {
        config = config.with_batch_size(32 * 1024);
    }
    let config = config
        .with_target_partitions(target_partitions.max(1))
        .with_information_schema(false);
    // DataFusion caches file listings forever by default; a long-lived report
    // API would then never see the processor's new files. Listings are cheap
    // next to the report's own answer cache, so every query lists afresh.
    // Footers and statistics stay cached (a file never changes under its
    // name) within an explicit budget, smaller than DataFusion's defaults
    // (50 + 20 MiB): the processor adds files all day, so a report pod fills
    // whatever budget it has, and repeat questions are answered from the
    // report's own answer cache anyway. (The soak's steady growth of the
    // report is not these caches: it was the same at 4 + 1 MiB.)
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0)
                .with_metadata_cache_limit(FOOTER_CACHE_BYTES)
                .with_file_statistics_cache_limit(STATISTICS_CACHE_BYTES),
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
    // Strings are read as views: keys of up to 12 bytes (publisher ids) then
    // hash and compare inline, which halves the cost of grouping by them.
    let schema = Arc::new(arrow::datatypes::Schema::new(
        table
            .schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ));
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
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                Error::Invalid(format!("query produced no column `{}`", field.name()))
            })?;
            Ok(cast(column, field.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
