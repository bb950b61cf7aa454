//! Stage 1 and `first_seen` in their two forms (`sqi_batch::stored`): from
//! the batch's own `daily` and `first_seen` tables, and from the whole hourly
//! history. On one lake both give the same rows, and the batch takes the
//! stored form only while those tables cover the window.
#![cfg(test)]

use crate::fixture;

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int32Type;
use chrono::{Days, NaiveDate};
use object_store::{ObjectStoreExt, PutPayload};
use sqi_batch::{DayPlan, Form, Gate, Shard};
use sqi_schemas::lake::paths::{completeness, day_file};
use sqi_schemas::lake::{HOUR_MS, Lake, LakeOptions, Table};
use tokio::sync::OnceCell;

const TOPIC: &str = "share-events";

/// Marks every hour of `day` complete, as the processor would.
async fn mark_complete(lake: &Lake, day: NaiveDate) {
    let midnight = fixture::ms(day);
    for hour in 0..24 {
        let marker = completeness::hour_marker(TOPIC, midnight + hour * HOUR_MS);
        lake.store()
            .put(&lake.path(&marker), PutPayload::from_static(b"{}"))
            .await
            .unwrap();
    }
}

async fn assert_forms_agree(lake: &Lake, day: NaiveDate) {
    let stored = sqi_batch::compute_inputs(lake, day, Form::Stored)
        .await
        .unwrap();
    let history = sqi_batch::compute_inputs(lake, day, Form::History)
        .await
        .unwrap();
    assert!(stored.num_rows() > 5000, "{}", stored.num_rows());
    assert_eq!(
        fixture::render_rows(&stored),
        fixture::render_rows(&history),
        "stage 1 on {day}"
    );
    let stored = sqi_batch::compute_first_seen(lake, day, Shard::WHOLE, Form::Stored)
        .await
        .unwrap();
    let history = sqi_batch::compute_first_seen(lake, day, Shard::WHOLE, Form::History)
        .await
        .unwrap();
    assert_eq!(
        fixture::render_rows(&stored),
        fixture::render_rows(&history),
        "first_seen on {day}"
    );
}

/// The randomized lake after a daily run of every day of the window before
/// the fixture's day (each hour marked complete first), and the day's hours
/// marked too: built once per test run (in the target's scratch directory,
/// replacing the last run's), then copied for each test.
async fn window_lake() -> (tempfile::TempDir, Lake) {
    static BUILT: OnceCell<std::path::PathBuf> = OnceCell::const_new();
    let built = BUILT
        .get_or_init(|| async {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stored-inputs-window-lake");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let lake = Lake::open(
                &format!("file://{}", dir.display()),
                &LakeOptions::default(),
            )
            .unwrap();
            let (rows, dimension) = fixture::generate();
            fixture::write_lake(&lake, &rows, &dimension).await;
            let day = fixture::day();
            let window_from = day.checked_sub_days(Days::new(27)).unwrap();
            let gate = Gate {
                topic: TOPIC.to_owned(),
                allow_incomplete: false,
            };
            // The fixture has hours 40 days before the window, so the first
            // run cannot know first days without the history; from the second
            // on, the stored tables cover everything (days before the
            // window's first have no hours).
            let mut date = window_from;
            while date < day {
                mark_complete(&lake, date).await;
                let outcome = sqi_batch::run_day(&lake, date, &gate, Shard::WHOLE)
                    .await
                    .unwrap();
                let expected = if date == window_from {
                    DayPlan::HISTORY
                } else {
                    STORED
                };
                assert_eq!(outcome.plan, expected, "{date}");
                date = date.succ_opt().unwrap();
            }
            mark_complete(&lake, day).await;
            dir
        })
        .await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(built, copy.path());
    let lake = Lake::open(
        &format!("file://{}", copy.path().display()),
        &LakeOptions::default(),
    )
    .unwrap();
    (copy, lake)
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            let _ = std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

const STORED: DayPlan = DayPlan {
    inputs: Form::Stored,
    first_seen: Form::Stored,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_form_gives_the_historys_rows_and_is_taken_only_when_covered() {
    let (_dir, lake) = window_lake().await;
    let day = fixture::day();
    let gate = Gate {
        topic: TOPIC.to_owned(),
        allow_incomplete: false,
    };
    assert_eq!(DayPlan::of(&lake, day).await.unwrap(), STORED);
    assert_forms_agree(&lake, day).await;
    // Scored, too: the published day is the same whichever form ran.
    let stored = sqi_batch::run_day(&lake, day, &gate, Shard::WHOLE)
        .await
        .unwrap();
    assert_eq!(stored.plan.inputs, Form::Stored);
    let stored_sqi = fixture::render_rows(&sqi_batch::compute_sqi(&lake, day).await.unwrap());

    // A window day computed without every hour: its `daily` cannot stand
    // in for its hours, so the day takes the history for stage 1.
    let gap = day.checked_sub_days(Days::new(9)).unwrap();
    let incomplete = Gate::allowing_incomplete(TOPIC);
    let marker = completeness::hour_marker(TOPIC, fixture::ms(gap) + 5 * HOUR_MS);
    lake.store().delete(&lake.path(&marker)).await.unwrap();
    let _ = sqi_batch::run_day(&lake, gap, &incomplete, Shard::WHOLE)
        .await
        .unwrap();
    assert_eq!(
        DayPlan::of(&lake, day).await.unwrap(),
        DayPlan {
            inputs: Form::History,
            first_seen: Form::Stored,
        }
    );
    assert_forms_agree(&lake, day).await;

    // No `first_seen` for the day before: both from the history.
    let previous = day.pred_opt().unwrap();
    lake.store()
        .delete(&lake.path(&day_file(Table::FirstSeen, previous, Shard::WHOLE)))
        .await
        .unwrap();
    assert_eq!(DayPlan::of(&lake, day).await.unwrap(), DayPlan::HISTORY);
    let history = sqi_batch::run_day(&lake, day, &gate, Shard::WHOLE)
        .await
        .unwrap();
    assert_eq!(history.plan, DayPlan::HISTORY);
    assert_eq!(
        (history.sqi_rows, history.scored, history.first_seen_rows),
        (stored.sqi_rows, stored.scored, stored.first_seen_rows)
    );
    let history_sqi = fixture::render_rows(&sqi_batch::compute_sqi(&lake, day).await.unwrap());
    assert!(history_sqi == stored_sqi, "the scored rows differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_form_runs_unchanged_in_duckdb() {
    let (dir, lake) = window_lake().await;
    let day = fixture::day();
    let batch = sqi_batch::compute_sqi(&lake, day).await.unwrap();
    assert_eq!(DayPlan::of(&lake, day).await.unwrap(), STORED);
    let published = fixture::published_sql_rows(dir.path(), day, false);
    assert_eq!(published.len(), batch.num_rows());
    let publisher = batch
        .column_by_name("publisher")
        .unwrap()
        .as_string::<i32>();
    let sqi = batch
        .column_by_name("sqi")
        .unwrap()
        .as_primitive::<Int32Type>();
    let peer_group = batch
        .column_by_name("peer_group")
        .unwrap()
        .as_string::<i32>();
    let differ: Vec<String> = (0..batch.num_rows())
        .filter_map(|i| {
            let theirs = &published[publisher.value(i)];
            let ours = (!sqi.is_null(i)).then(|| i64::from(sqi.value(i)));
            let same = theirs["sqi"].as_i64() == ours
                && theirs["peer_group"].as_str() == Some(peer_group.value(i));
            (!same).then(|| format!("{}: sqi {ours:?}, duckdb {theirs}", publisher.value(i)))
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} differ: {:#?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
}
