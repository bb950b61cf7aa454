//! `sqi batch --shard i/N`: the N shards' files union to exactly the rows of
//! one unsharded run, in `sqi/`, `daily/`, `daily_urls/` and `first_seen/`, and each run leaves only its
//! own split's files in the day's partition.

use crate::fixture;

use std::collections::BTreeSet;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sqi_batch::{Gate, Shard};
use sqi_schemas::lake::{Lake, Table, day_partition};

/// Every row of every file in the day's partition of `table`, each rendered
/// exactly (floats in shortest round-trip form), sorted; and the file names.
#[cfg(test)]
async fn day_rows(lake: &Lake, table: Table) -> (Vec<String>, BTreeSet<String>) {
    let dir = lake.path(&format!(
        "{}/{}",
        table.prefix(),
        day_partition(fixture::day())
    ));
    let metas: Vec<_> = lake.store().list(Some(&dir)).try_collect().await.unwrap();
    let mut rows = Vec::new();
    let mut names = BTreeSet::new();
    for meta in metas {
        let _ = names.insert(meta.location.filename().unwrap().to_owned());
        let bytes = lake
            .store()
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            rows.extend(fixture::render_rows(&batch.unwrap()));
        }
    }
    rows.sort();
    (rows, names)
}

/// Fails with the first few differing rows, not two 5,000-row dumps.
#[cfg(test)]
fn assert_same_rows(what: &str, got: &[String], want: &[String]) {
    let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
    let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
    assert!(
        got == want,
        "{what}: {} rows vs {} unsharded; first unsharded rows missing: {missing:#?}; first unexpected: {extra:#?}",
        got.len(),
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_union_to_exactly_the_unsharded_rows() {
    let (_dir, lake) = fixture::random_lake().await;
    let gate = Gate::allowing_incomplete("share-events");
    let whole = sqi_batch::run_day(&lake, fixture::day(), &gate, Shard::WHOLE)
        .await
        .unwrap();
    let (whole_sqi, _) = day_rows(&lake, Table::Sqi).await;
    let (whole_daily, _) = day_rows(&lake, Table::Daily).await;
    let (whole_urls, _) = day_rows(&lake, Table::DailyUrls).await;
    let (whole_first_seen, _) = day_rows(&lake, Table::FirstSeen).await;
    assert_eq!(whole_sqi.len(), 5200);

    let mut sharded_rows = 0;
    let mut categories_per_shard = Vec::new();
    for index in 0..4 {
        let shard = Shard { index, count: 4 };
        let outcome = sqi_batch::run_day(&lake, fixture::day(), &gate, shard)
            .await
            .unwrap();
        sharded_rows += outcome.sqi_rows;
        let batch = sqi_batch::compute_sqi_shard(&lake, fixture::day(), shard)
            .await
            .unwrap();
        let categories: BTreeSet<String> = fixture::render_rows(&batch)
            .iter()
            .map(|row| row.split('|').nth(2).unwrap().to_owned())
            .collect();
        categories_per_shard.push(categories);
    }
    assert_eq!(sharded_rows, whole.sqi_rows);
    // Categories never straddle shards, and the work is actually spread.
    for (i, a) in categories_per_shard.iter().enumerate() {
        for b in &categories_per_shard[i + 1..] {
            assert!(a.is_disjoint(b), "{a:?} and {b:?}");
        }
    }
    assert!(
        categories_per_shard
            .iter()
            .filter(|c| !c.is_empty())
            .count()
            >= 3,
        "{categories_per_shard:?}"
    );

    let (sharded_sqi, sqi_files) = day_rows(&lake, Table::Sqi).await;
    let (sharded_daily, daily_files) = day_rows(&lake, Table::Daily).await;
    let (sharded_urls, url_files) = day_rows(&lake, Table::DailyUrls).await;
    let (sharded_first_seen, first_seen_files) = day_rows(&lake, Table::FirstSeen).await;
    let expected_files: BTreeSet<String> = (0..4)
        .map(|index| Shard { index, count: 4 }.file_name())
        .collect();
    assert_eq!(sqi_files, expected_files);
    assert_eq!(daily_files, expected_files);
    assert_eq!(url_files, expected_files);
    assert_eq!(first_seen_files, expected_files);
    // Bit-identical rows, network-scored small categories included.
    assert!(whole_sqi.iter().any(|row| row.contains("|network|")));
    assert_same_rows("sqi", &sharded_sqi, &whole_sqi);
    assert_same_rows("daily", &sharded_daily, &whole_daily);
    assert_same_rows("daily_urls", &sharded_urls, &whole_urls);
    assert_same_rows("first_seen", &sharded_first_seen, &whole_first_seen);

    // Going back to one run removes the shards' files.
    let _ = sqi_batch::run_day(&lake, fixture::day(), &gate, Shard::WHOLE)
        .await
        .unwrap();
    let (again, files) = day_rows(&lake, Table::Sqi).await;
    assert_same_rows("sqi after an unsharded rerun", &again, &whole_sqi);
    assert_eq!(files, BTreeSet::from([Shard::WHOLE.file_name()]));
}
