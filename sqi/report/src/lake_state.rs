//! The report's view of the lake, refreshed in the background: which days
//! each batch table answers ([`LakeDays`], which the read layer plans by),
//! the newest write time of the tables the API reads (which keys the answer
//! cache), and when the lake was last read (which `/readyz` reports).
//!
//! Owns: the refresher task and its view. Must not touch: requests, keys or
//! the cache (`guard.rs`), or how a question is read (`read.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{Days, Utc};
use futures::TryStreamExt;
use sqi_schemas::lake::{Lake, Table, day_partition};
use tokio::sync::watch;

use crate::days::{FooterMemo, LakeDays};
use crate::error::Result;

/// The lake as the last refresh saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LakeView {
    /// The newest write time of each table the API reads, as one string.
    state: String,
    /// Which days the batch tables answer.
    days: Arc<LakeDays>,
}

/// The lake's state, kept fresh by a background task.
#[derive(Debug)]
pub(crate) struct LakeState {
    view: watch::Receiver<LakeView>,
    /// Unix milliseconds of the last successful read; 0 until one succeeds.
    read_at: Arc<AtomicI64>,
}

impl LakeState {
    /// Reads `lake` once, then again every `refresh` until this is dropped.
    pub(crate) async fn watch(lake: Lake, refresh: Duration) -> Self {
        let read_at = Arc::new(AtomicI64::new(0));
        let mut memo = FooterMemo::default();
        let initial = match read_lake(&lake, &mut memo).await {
            Ok(view) => {
                mark_read(&read_at);
                view
            }
            Err(error) => {
                metrics::counter!(crate::metric::LAKE_REFRESH_FAILURES).increment(1);
                tracing::warn!(%error, "cannot read the lake's state; unready until it can");
                LakeView::default()
            }
        };
        let (sender, view) = watch::channel(initial);
        let refresh = refresh.max(Duration::from_millis(10));
        let task_read_at = read_at.clone();
        // Ends when the receiver (this state) is gone.
        drop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(refresh).await;
                match read_lake(&lake, &mut memo).await {
                    Ok(view) => {
                        mark_read(&task_read_at);
                        let _ = sender.send_if_modified(|old| {
                            let changed = *old != view;
                            *old = view.clone();
                            changed
                        });
                    }
                    Err(error) => {
                        metrics::counter!(crate::metric::LAKE_REFRESH_FAILURES).increment(1);
                        tracing::warn!(%error, "cannot read the lake's state; answers stay cached")
                    }
                }
                if sender.is_closed() {
                    return;
                }
            }
        }));
        Self { view, read_at }
    }

    /// Which days the batch tables answered at the last refresh.
    pub(crate) fn days(&self) -> Arc<LakeDays> {
        self.view.borrow().days.clone()
    }

    /// The newest write time of each table the API reads, as one string: an
    /// answer cached under another state is stale.
    pub(crate) fn state(&self) -> String {
        self.view.borrow().state.clone()
    }

    /// How long ago the lake was last read, or `None` if it never was.
    pub(crate) fn read_age(&self) -> Option<Duration> {
        let at = self.read_at.load(Ordering::Relaxed);
        (at > 0).then(|| {
            Duration::from_millis(
                u64::try_from(Utc::now().timestamp_millis() - at).unwrap_or_default(),
            )
        })
    }
}

fn mark_read(at: &AtomicI64) {
    let now = Utc::now();
    at.store(now.timestamp_millis(), Ordering::Relaxed);
    metrics::gauge!(crate::metric::LAKE_REFRESHED).set(now.timestamp_millis() as f64 / 1000.0);
}

/// The lake's state (the newest write time of each table the API reads) and
/// the days the batch tables answer.
async fn read_lake(lake: &Lake, memo: &mut FooterMemo) -> Result<LakeView> {
    let today = Utc::now().date_naive();
    let mut parts = Vec::new();
    for table in [Table::Aggregates, Table::UrlCounts] {
        let mut newest = None;
        for back in 0..2u64 {
            let Some(day) = today.checked_sub_days(Days::new(back)) else {
                continue;
            };
            newest = newest.max(
                newest_write(lake, &format!("{}/{}", table.prefix(), day_partition(day))).await?,
            );
        }
        parts.push(newest);
    }
    let (batch_newest, days) = crate::days::read(lake, memo).await?;
    parts.extend(batch_newest);
    Ok(LakeView {
        state: parts
            .iter()
            .map(|t| t.map(|t| t.to_rfc3339()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("|"),
        days: Arc::new(days),
    })
}

async fn newest_write(lake: &Lake, prefix: &str) -> Result<Option<chrono::DateTime<Utc>>> {
    Ok(lake
        .store()
        .list(Some(&lake.path(prefix)))
        .try_fold(
            None,
            |newest: Option<chrono::DateTime<Utc>>, meta| async move {
                Ok(Some(
                    newest.map_or(meta.last_modified, |n| n.max(meta.last_modified)),
                ))
            },
        )
        .await?)
}
