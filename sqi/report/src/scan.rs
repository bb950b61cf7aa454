//! One publisher's rows of known day or month files, read by DataFusion's
//! Parquet scan without planning a query.
//!
//! A report question over the batch tables needs a few dozen rows of files
//! the lake refresh has already listed. Planning it as a query (listing,
//! the logical and physical optimizers) cost 0.8 ms of CPU, more than reading
//! the rows; so the scan is built directly: the listed files, the predicate
//! pushed into the Parquet reader (row groups and pages pruned by the
//! footer's statistics, rows filtered while decoding), and the projection.
//! The endpoints then sum the rows themselves.
//!
//! Footers are kept with their page index ([`PageIndexedReaders`]):
//! DataFusion 55's own reader caches footers without it and parsed the
//! offset index of every column again for every question (1 ms for a month file).

use std::ops::Range;
use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use datafusion::common::DFSchema;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::prelude::{Expr, SessionContext};
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use sqi_schemas::lake::{Lake, Table};

use crate::error::Result;

/// Readers whose footers come from the session's footer cache with their
/// page index, loaded once per file.
#[derive(Debug)]
struct PageIndexedReaders {
    store: Arc<dyn ObjectStore>,
    footers: Arc<FileMetadataCache>,
}

impl ParquetFileReaderFactory for PageIndexedReaders {
    fn create_reader(
        &self,
        _partition_index: usize,
        file: PartitionedFile,
        _metadata_size_hint: Option<usize>,
        _metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        Ok(Box::new(PageIndexedReader {
            store: self.store.clone(),
            footers: self.footers.clone(),
            file: file.object_meta,
        }))
    }
}

struct PageIndexedReader {
    store: Arc<dyn ObjectStore>,
    footers: Arc<FileMetadataCache>,
    file: ObjectMeta,
}

fn external(error: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(error))
}

impl AsyncFileReader for PageIndexedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.file.location, range)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.file.location, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        // The opener asks for the footer without the page index and loads
        // the index itself when it prunes, uncached; answering with it
        // (cached) is what the opener's own comments allow for.
        async move {
            DFParquetMetadata::new(&self.store, &self.file)
                .with_file_metadata_cache(Some(self.footers.clone()))
                .with_page_index_policy(Some(PageIndexPolicy::Optional))
                .fetch_metadata()
                .await
                .map_err(|e| ParquetError::General(e.to_string()))
        }
        .boxed()
    }
}

/// Rows per batch of a scan. A publisher has a few hundred rows in a month,
/// and the reader allocates (and zeroes) every column's buffers for a whole
/// batch: at the session's 32Ki rows that was a third of an SQI lookup.
const SCAN_BATCH_ROWS: usize = 1024;

/// Scans of one lake's batch tables through one session.
#[derive(Clone)]
pub(super) struct Scanner {
    ctx: SessionContext,
    store_url: ObjectStoreUrl,
    readers: Arc<PageIndexedReaders>,
}

impl Scanner {
    /// Scans through `ctx`, whose footer cache holds the files' footers.
    pub(super) fn new(lake: &Lake, ctx: SessionContext) -> Result<Self> {
        let footers = ctx
            .state()
            .runtime_env()
            .cache_manager
            .get_file_metadata_cache();
        Ok(Self {
            store_url: ObjectStoreUrl::parse(lake.store_url())?,
            readers: Arc::new(PageIndexedReaders {
                store: lake.store().clone(),
                footers,
            }),
            ctx,
        })
    }

    /// The rows of `files` (all of `table`'s layout) where `predicate` holds,
    /// with `columns` only.
    pub(super) async fn rows(
        &self,
        table: Table,
        files: &[ObjectMeta],
        predicate: Expr,
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let schema = sqi_query::viewed(&table.schema());
        let state = self.ctx.state();
        let predicate =
            state.create_physical_expr(predicate, &DFSchema::try_from(schema.as_ref().clone())?)?;
        let projection = columns
            .iter()
            .map(|c| schema.index_of(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let source = ParquetSource::new(schema.clone())
            .with_predicate(predicate)
            .with_pushdown_filters(true)
            .with_parquet_file_reader_factory(self.readers.clone());
        let files = files
            .iter()
            .map(|m| PartitionedFile::new_from_meta(m.clone()))
            .collect();
        let scan = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_group(FileGroup::new(files))
            .with_projection_indices(Some(projection))?
            .with_batch_size(Some(SCAN_BATCH_ROWS))
            .build();
        let plan = DataSourceExec::from_data_source(scan);
        Ok(plan.execute(0, state.task_ctx())?.try_collect().await?)
    }
}
