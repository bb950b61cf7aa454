//! `sqi batch` on a local lake: reruns and concurrent runs write identical
//! bytes and no stray files; bad input is a clear error, never a panic.

use std::collections::BTreeMap;
use std::process::Command;

use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sqi_batch::Gate;
use sqi_batch::publishers;
use sqi_schemas::lake::{Lake, LakeOptions, Table};

#[cfg(test)]
fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 15).unwrap()
}

#[cfg(test)]
async fn files(lake: &Lake, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let store = lake.store();
    let metas: Vec<_> = store
        .list(Some(&lake.path(prefix)))
        .try_collect()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for meta in metas {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let _ = out.insert(meta.location.to_string(), bytes.to_vec());
    }
    out
}

/// A small lake written through the real processor encoder: 40 publishers in two categories.
#[cfg(test)]
async fn small_lake() -> (tempfile::TempDir, Lake) {
    use sqi_processor::window::PartitionBuffer;
    use sqi_schemas::event::EventType;
    use sqi_schemas::record::{Device, EventRecord};
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        &format!("file://{}", dir.path().display()),
        &LakeOptions::default(),
    )
    .unwrap();
    let noon = day()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    let mut buffer = PartitionBuffer::new(0);
    let mut offset = 0;
    let mut dimension = Vec::new();
    for p in 0..40 {
        let publisher = format!("pub-{p:02}");
        for n in 0..(1000 + p * 37) {
            let kind = match n % 50 {
                0 => EventType::Share,
                1 if p % 3 == 0 => EventType::Clickback,
                _ => EventType::Pageview,
            };
            let record = EventRecord {
                v: 1,
                event_id: uuid::Uuid::new_v4().to_string(),
                publisher: publisher.clone(),
                event_type: kind,
                channel: (kind != EventType::Pageview).then(|| "facebook".to_owned()),
                url: format!("https://{publisher}.example/"),
                referrer: None,
                visitor: None,
                ts: noon + i64::from(n),
                received_at: noon,
                device: Device::Desktop,
                ip_prefix: None,
                props: Default::default(),
            };
            buffer.add(offset, 0, &record.as_view().unwrap()).unwrap();
            offset += 1;
        }
        dimension.push(publishers::Publisher {
            publisher,
            domain: None,
            category: Some(if p % 2 == 0 { "news" } else { "food" }.to_owned()),
            created_at: Some(0),
        });
    }
    let encoded = sqi_processor::sink::encode("t", 0, buffer).unwrap();
    sqi_processor::sink::upload(&lake, &encoded).await.unwrap();
    publishers::write(&lake, &dimension).await.unwrap();
    (dir, lake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reruns_and_concurrent_runs_write_identical_files_and_nothing_else() {
    let (_dir, lake) = small_lake().await;
    let gate = Gate::allowing_incomplete("share-events");
    let first = sqi_batch::run_day(&lake, day(), &gate, sqi_batch::Shard::WHOLE)
        .await
        .unwrap();
    assert_eq!(first.sqi_rows, 40);
    let before = (files(&lake, "sqi").await, files(&lake, "daily").await);

    // A stale file from some older layout must disappear on the rerun.
    let stale = lake.path("sqi/dt=2025-06-15/old-part.parquet");
    lake.store()
        .put(&stale, PutPayload::from_static(b"stale"))
        .await
        .unwrap();

    let (a, b) = tokio::join!(
        sqi_batch::run_day(&lake, day(), &gate, sqi_batch::Shard::WHOLE),
        sqi_batch::run_day(&lake, day(), &gate, sqi_batch::Shard::WHOLE)
    );
    assert_eq!(a.unwrap(), first);
    assert_eq!(b.unwrap(), first);
    let after = (files(&lake, "sqi").await, files(&lake, "daily").await);
    assert_eq!(after, before, "reruns changed bytes or left files behind");
    assert_eq!(after.0.len(), 1);
}

#[cfg(test)]
fn sqi_cli(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sqi"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dimension_or_a_corrupt_file_is_a_clear_error() {
    let (dir, lake) = small_lake().await;
    let url = format!("file://{}", dir.path().display());

    lake.store()
        .delete(&lake.path(sqi_schemas::lake::paths::PUBLISHERS_FILE))
        .await
        .unwrap();
    let (code, stderr) = sqi_cli(&[
        "batch",
        "--date",
        "2025-06-15",
        "--lake-url",
        &url,
        "--allow-incomplete",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the publishers table is missing")
            && stderr.contains("sqi publishers import"),
        "{stderr}"
    );

    let csv = dir.path().join("pubs.csv");
    std::fs::write(&csv, "publisher,category\npub-00,news\nbad id,news\n").unwrap();
    let (code, stderr) = sqi_cli(&[
        "publishers",
        "import",
        csv.to_str().unwrap(),
        "--lake-url",
        &url,
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("line 3") && stderr.contains("nothing was imported"),
        "{stderr}"
    );

    std::fs::write(&csv, "publisher,category\npub-00,news\n").unwrap();
    let (code, stderr) = sqi_cli(&[
        "publishers",
        "import",
        csv.to_str().unwrap(),
        "--lake-url",
        &url,
    ]);
    assert_eq!(code, 0, "{stderr}");

    let corrupt = lake.path("aggregates/dt=2025-06-15/hour=03/garbage.parquet");
    lake.store()
        .put(
            &corrupt,
            PutPayload::from_static(b"PAR1 this is not parquet"),
        )
        .await
        .unwrap();
    let (code, stderr) = sqi_cli(&[
        "batch",
        "--date",
        "2025-06-15",
        "--lake-url",
        &url,
        "--allow-incomplete",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("error: query failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_day_is_refused_unless_allowed_and_then_marked() {
    use arrow::array::AsArray;
    let (dir, lake) = small_lake().await;
    let url = format!("file://{}", dir.path().display());
    let midnight = day()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    let mark = |hour: i64| {
        let lake = lake.clone();
        async move {
            let marker = sqi_schemas::lake::paths::completeness::hour_marker(
                "share-events",
                midnight + hour * sqi_schemas::lake::HOUR_MS,
            );
            lake.store()
                .put(&lake.path(&marker), PutPayload::from_static(b"{}"))
                .await
                .unwrap();
        }
    };
    for hour in (0..24).filter(|h| *h != 13) {
        mark(hour).await;
    }

    // One open hour: refused, with the hour named and the way out.
    let (code, stderr) = sqi_cli(&["batch", "--date", "2025-06-15", "--lake-url", &url]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("2025-06-15 is not complete: hours 13 have no completeness marker")
            && stderr.contains("--allow-incomplete"),
        "{stderr}"
    );
    assert!(files(&lake, "sqi").await.is_empty(), "nothing written");

    let complete_column = |table: Table| {
        let lake = lake.clone();
        async move {
            let ctx = sqi_query::session(&lake, &[table], 1, sqi_query::Workload::Batch)
                .await
                .unwrap();
            let batch = sqi_query::collect_one(
                &ctx,
                &format!("SELECT DISTINCT complete FROM {}", table.prefix()),
            )
            .await
            .unwrap();
            let values = batch.column(0).as_boolean();
            (0..batch.num_rows())
                .map(|i| values.value(i))
                .collect::<Vec<_>>()
        }
    };
    let (code, stderr) = sqi_cli(&[
        "batch",
        "--date",
        "2025-06-15",
        "--lake-url",
        &url,
        "--allow-incomplete",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(complete_column(Table::Sqi).await, vec![false]);
    assert_eq!(complete_column(Table::Daily).await, vec![false]);

    mark(13).await;
    let outcome = sqi_batch::run_day(
        &lake,
        day(),
        &Gate {
            topic: "share-events".into(),
            allow_incomplete: false,
        },
        sqi_batch::Shard::WHOLE,
    )
    .await
    .unwrap();
    assert!(outcome.complete);
    assert_eq!(complete_column(Table::Sqi).await, vec![true]);
    assert_eq!(complete_column(Table::Daily).await, vec![true]);
}
