// scratch: per-question cost of DataFusion over day files vs one compacted file
use datafusion::execution::options::ParquetReadOptions;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::prelude::*;
use std::time::Instant;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> datafusion::error::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = &args[1];
    if args[2] == "pages" { pages(dir); return Ok(()); }
    let mode = &args[2]; // "dt" (hive partitions) or "flat"
    let n: usize = args[3].parse().unwrap();
    let parts: usize = args.get(5).or(args.get(4).filter(|_| args[2] != "write")).map(|s| s.parse().unwrap()).unwrap_or(2);
    let config = SessionConfig::new().with_target_partitions(parts).with_collect_statistics(false);
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0)
                .with_metadata_cache_limit(512 << 20),
        )
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let mut opts = ParquetReadOptions::default().file_extension(".parquet");
    let cols = vec![("dt".to_string(), arrow::datatypes::DataType::Utf8)];
    if mode == "dt" {
        opts = opts.table_partition_cols(cols.clone());
    }
    if mode == "write" {
        ctx.register_parquet("d", dir, opts.table_partition_cols(cols)).await?;
        let b = ctx.sql("SELECT date, publisher, channel, event_type, device, events, complete FROM d ORDER BY publisher, date, channel, event_type, device").await?.collect().await?;
        let schema = b[0].schema();
        let rg: usize = args[3].parse().unwrap();
        use parquet::file::properties::EnabledStatistics;
        let props = parquet::file::properties::WriterProperties::builder().set_compression(if std::env::var_os("PLAIN").is_some() { parquet::basic::Compression::UNCOMPRESSED } else { parquet::basic::Compression::SNAPPY })
            .set_max_row_group_row_count(Some(rg))
            .set_data_page_row_count_limit(std::env::var("PAGE_ROWS").map(|s| s.parse().unwrap()).unwrap_or(4096))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_column_statistics_enabled("publisher".into(), EnabledStatistics::Page)
            .set_column_dictionary_enabled("publisher".into(), false).build();
        let f = std::fs::File::create(&args[4]).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, Some(props)).unwrap();
        for x in &b { w.write(x).unwrap(); }
        w.close().unwrap();
        return Ok(());
    }
    if mode == "direct" {
        return direct(&ctx, dir, n).await;
    }
    ctx.register_parquet("t", dir, opts).await?;
    let pubs: Vec<String> = (0..200u32)
        .map(|i| ((14.5f64 * i as f64 / 199.0).exp().round() as u32).clamp(1, 2_000_000))
        .map(|r| format!("pub-{r:07}"))
        .collect();
    let days: Vec<Expr> = (3..=30).map(|d| lit(format!("2025-06-{d:02}"))).collect();
    for pass in 0..2 {
        let (t0, c0) = (Instant::now(), cpu());
        let mut rows = 0;
        for i in 0..n {
            let p = &pubs[i % pubs.len()];
            let mut pred = col("publisher").eq(lit(p.as_str())).and(col("device").not_eq(lit("bot")));
            if mode == "dt" {
                pred = col("dt").in_list(days.clone(), false).and(pred);
            } else {
                pred = pred.and(col("date").gt_eq(lit(datafusion::common::ScalarValue::Date32(Some(20240)))))
                    .and(col("date").lt_eq(lit(datafusion::common::ScalarValue::Date32(Some(20269)))));
            }
            let df = ctx.table("t").await?.filter(pred)?
                .aggregate(vec![col("event_type")], vec![sum(col("events")).alias("events")])?;
            let b = if std::env::var_os("PLAN_ONLY").is_some() { let _ = df.create_physical_plan().await?; vec![] } else { df.collect().await? };
            rows += b.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        let (w, c) = (t0.elapsed().as_secs_f64(), cpu() - c0);
        println!("pass {pass}: {n} q, wall {:.3} ms/q, cpu {:.3} ms/q, rows {rows}", w * 1e3 / n as f64, c * 1e3 / n as f64);
    }
    Ok(())
}

async fn direct(ctx: &SessionContext, dir: &str, n: usize) -> datafusion::error::Result<()> {
    use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
    use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion::physical_plan::ExecutionPlan;
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(object_store::local::LocalFileSystem::new());
    let path = object_store::path::Path::from_filesystem_path(format!("{dir}/part-00000.parquet")).unwrap();
    let meta = store.head(&path).await?;
    let file = std::fs::File::open(format!("{dir}/part-00000.parquet")).unwrap();
    let schema = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().schema().clone();
    let dfschema = datafusion::common::DFSchema::try_from(schema.as_ref().clone())?;
    let state = ctx.state();
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    let factory: std::sync::Arc<dyn datafusion::datasource::physical_plan::ParquetFileReaderFactory> = if std::env::var_os("KEEP").is_some() { std::sync::Arc::new(KeepIndex { store: store.clone(), cache }) } else { std::sync::Arc::new(CachedParquetFileReaderFactory::new(store.clone(), cache)) };
    let pubs: Vec<String> = (0..200u32)
        .map(|i| ((14.5f64 * i as f64 / 199.0).exp().round() as u32).clamp(1, 2_000_000))
        .map(|r| format!("pub-{r:07}"))
        .collect();
    let pushdown = std::env::var_os("NO_PUSHDOWN").is_none();
    for pass in 0..2 {
        let (t0, c0) = (Instant::now(), cpu());
        let mut rows = 0;
        for i in 0..n {
            let p = &pubs[i % pubs.len()];
            let pred = col("publisher").eq(lit(p.as_str()));
            let physical = state.create_physical_expr(pred, &dfschema)?;
            let source = ParquetSource::new(schema.clone()).with_predicate(physical)
                .with_pushdown_filters(pushdown).with_parquet_file_reader_factory(factory.clone());
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), std::sync::Arc::new(source))
                .with_file(PartitionedFile::new_from_meta(meta.clone()))
                .with_projection_indices(Some((0..schema.fields().len()).collect()))?.with_batch_size(std::env::var("BS").ok().map(|s| s.parse().unwrap()))
                .build();
            let plan = DataSourceExec::from_data_source(config);
            let b: Vec<_> = plan.execute(0, state.task_ctx())?.try_collect().await?;
            rows += b.iter().map(|b| b.num_rows()).sum::<usize>();
            if i == n - 1 { println!("{}", datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true)); }
        }
        let (w, c) = (t0.elapsed().as_secs_f64(), cpu() - c0);
        println!("direct pass {pass}: {n} q, wall {:.3} ms/q, cpu {:.3} ms/q, rows {rows}", w * 1e3 / n as f64, c * 1e3 / n as f64);
    }
    Ok(())
}

#[derive(Debug)]
struct KeepIndex { store: std::sync::Arc<dyn object_store::ObjectStore>, cache: std::sync::Arc<datafusion::execution::cache::cache_manager::FileMetadataCache> }
struct KeepIndexReader { store: std::sync::Arc<dyn object_store::ObjectStore>, cache: std::sync::Arc<datafusion::execution::cache::cache_manager::FileMetadataCache>, meta: object_store::ObjectMeta }
impl datafusion::datasource::physical_plan::ParquetFileReaderFactory for KeepIndex {
    fn create_reader(&self, _p: usize, file: datafusion::datasource::listing::PartitionedFile, _hint: Option<usize>, _m: &datafusion::physical_plan::metrics::ExecutionPlanMetricsSet) -> datafusion::error::Result<Box<dyn parquet::arrow::async_reader::AsyncFileReader + Send>> {
        Ok(Box::new(KeepIndexReader { store: self.store.clone(), cache: self.cache.clone(), meta: file.object_meta }))
    }
}
impl parquet::arrow::async_reader::AsyncFileReader for KeepIndexReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        use futures::FutureExt;
        use object_store::ObjectStoreExt;
        async move { self.store.get_range(&self.meta.location, range).await.map_err(|e| parquet::errors::ParquetError::External(Box::new(e))) }.boxed()
    }
    fn get_byte_ranges(&mut self, ranges: Vec<std::ops::Range<u64>>) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        use futures::FutureExt;
        async move { self.store.get_ranges(&self.meta.location, &ranges).await.map_err(|e| parquet::errors::ParquetError::External(Box::new(e))) }.boxed()
    }
    fn get_metadata<'a>(&'a mut self, _o: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>) -> futures::future::BoxFuture<'a, parquet::errors::Result<std::sync::Arc<parquet::file::metadata::ParquetMetaData>>> {
        use futures::FutureExt;
        async move {
            datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata::new(&self.store, &self.meta)
                .with_file_metadata_cache(Some(self.cache.clone()))
                .with_page_index_policy(Some(parquet::file::metadata::PageIndexPolicy::Optional))
                .fetch_metadata().await.map_err(|e| parquet::errors::ParquetError::General(e.to_string()))
        }.boxed()
    }
}
#[allow(dead_code)]
fn pages(path: &str) {
    let f = std::fs::File::open(path).unwrap();
    let r = parquet::file::serialized_reader::SerializedFileReader::new_with_options(f, parquet::file::serialized_reader::ReadOptionsBuilder::new().with_page_index().build()).unwrap();
    use parquet::file::reader::FileReader;
    let m = r.metadata();
    let oi = m.offset_index().unwrap();
    for (c, col) in oi[0].iter().enumerate() {
        println!("col {c} {} pages {} first sizes {:?}", m.row_group(0).column(c).column_path(), col.page_locations().len(), col.page_locations().iter().take(3).map(|p| (p.compressed_page_size, p.first_row_index)).collect::<Vec<_>>());
    }
}
