//! What stands in front of every `/v1` handler: the key check, the key's rate
//! limit, and a response cache keyed by the request and the lake's state.
//!
//! - **Rate limits** are per key (GCRA, `governor`). Every answer carries
//!   `X-RateLimit-Limit` and `X-RateLimit-Remaining`; over the limit the
//!   answer is 429 with `Retry-After`, so a client can see its quota.
//! - **Caching:** the same URL over the same lake state gives the same bytes,
//!   whichever key asks (the key check runs first). The lake's state is the
//!   newest write time of the tables the API reads, refreshed in the
//!   background every `--cache-refresh`, so an answer is at most that stale.
//!   Only the recent partitions are watched (the processor's late events land
//!   within hours), so every answer also expires after [`MAX_AGE`], which
//!   bounds how long a rewrite of an old day can go unseen. The same refresh
//!   notes which days the batch and hourly tables answer (`days.rs`),
//!   which the handlers plan their queries by.
//!   Answers carry a strong `ETag`; `If-None-Match` gets 304 without a body.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{Days, Utc};
use futures::TryStreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqi_schemas::lake::{Lake, Table, day_partition};
use tokio::sync::watch;

use super::days::{FooterMemo, LakeDays};
use super::{ApiKey, ReportError, ReportState, Scope, authenticate, authorize};
use crate::error::Result;

/// How the report API protects itself and caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOptions {
    /// Requests a key may make per minute, sustained; 0 disables limits.
    pub requests_per_minute: u32,
    /// Requests a key may make at once.
    pub burst: u32,
    /// How often the lake's state is re-read (the longest a cached answer lives).
    pub cache_refresh: Duration,
    /// Answers kept in the cache; 0 turns the cache (and so ETags) off.
    pub cache_entries: usize,
    /// Questions answered at once; the rest wait their turn, first come first served.
    pub query_concurrency: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            requests_per_minute: 600,
            burst: 60,
            cache_refresh: Duration::from_secs(15),
            cache_entries: 10_000,
            query_concurrency: default_query_concurrency(),
        }
    }
}

/// Twice the cores: a question is CPU-bound on local files, and with two in
/// flight per core one waits on its reads while the other computes.
pub(super) fn default_query_concurrency() -> usize {
    2 * std::thread::available_parallelism().map_or(2, usize::from)
}

/// The longest any answer is served from the cache.
pub(super) const MAX_AGE: Duration = Duration::from_secs(300);

type KeyLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// One cached answer.
#[derive(Debug, Clone)]
struct Cached {
    headers: HeaderMap,
    etag: HeaderValue,
    body: Bytes,
}

/// The rate limiter, the cache and the lake-state watch, shared by all requests.
pub(super) struct Guard {
    limiter: Option<KeyLimiter>,
    limit: u32,
    cache: Mutex<HashMap<String, Cached>>,
    cache_entries: usize,
    /// Permits to run a question's queries. With every request let in at
    /// once, 50 clients on 2 cores each waited on all the others (p99 twice
    /// p50); in turn, a request waits only for those before it.
    queries: tokio::sync::Semaphore,
    lake: watch::Receiver<LakeView>,
}

/// The lake as the last refresh saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LakeView {
    /// The newest write time of each table the API reads, as one string.
    state: String,
    /// Which days the batch tables answer.
    days: Arc<LakeDays>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("limit", &self.limit).finish()
    }
}

impl Guard {
    /// Starts watching `lake` and returns the guard.
    pub(super) async fn start(lake: Lake, options: ReportOptions) -> Arc<Self> {
        let limiter = NonZeroU32::new(options.requests_per_minute).map(|rate| {
            let burst = NonZeroU32::new(options.burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
                .with_middleware::<StateInformationMiddleware>()
        });
        let mut memo = FooterMemo::default();
        let initial = match read_lake(&lake, &mut memo).await {
            Ok(view) => view,
            Err(error) => {
                tracing::warn!(%error, "cannot read the lake's state; every day is read from the hourly tables until it can");
                LakeView::default()
            }
        };
        let (sender, receiver) = watch::channel(initial);
        let refresh = options.cache_refresh.max(Duration::from_millis(10));
        // Ends when the last receiver (the guard) is gone.
        drop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(refresh).await;
                match read_lake(&lake, &mut memo).await {
                    Ok(view) => {
                        let _ = sender.send_if_modified(|old| {
                            let changed = *old != view;
                            *old = view.clone();
                            changed
                        });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the lake's state; answers stay cached")
                    }
                }
                if sender.is_closed() {
                    return;
                }
            }
        }));
        Arc::new(Self {
            limiter,
            limit: options.burst,
            cache: Mutex::new(HashMap::new()),
            cache_entries: options.cache_entries,
            queries: tokio::sync::Semaphore::new(options.query_concurrency.max(1)),
            lake: receiver,
        })
    }

    /// Which days the batch tables answered at the last refresh.
    pub(super) fn lake_days(&self) -> Arc<LakeDays> {
        self.lake.borrow().days.clone()
    }

    /// Takes one request from `key`'s allowance: what remains, or how long to wait.
    fn take(&self, key: &str) -> Result<Option<u32>, Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        match limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => Ok(Some(snapshot.remaining_burst_capacity())),
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Runs the handler once a query permit is free.
    async fn answer(&self, next: Next, request: Request) -> Response {
        // The semaphore is never closed, so acquiring cannot fail; if it
        // did, answering without a permit is still an answer.
        let _permit = self.queries.acquire().await.ok();
        next.run(request).await
    }

    fn get(&self, key: &str) -> Option<Cached> {
        self.cache.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: String, value: Cached) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.cache_entries && !cache.contains_key(&key) {
                // Answers are cheap to recompute; a full cache just starts over.
                cache.clear();
            }
            let _ = cache.insert(key, value);
        }
    }
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
    let (batch_newest, days) = super::days::read(lake, memo).await?;
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

/// The key check for `path`, as the handlers do it, so a cached answer is
/// never given to a key the handler would refuse.
fn check<'a>(
    state: &'a ReportState,
    headers: &HeaderMap,
    path: &str,
) -> Result<&'a ApiKey, ReportError> {
    let key = authenticate(state, headers)?;
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "publishers", publisher, ..] => authorize(state, headers, publisher)?,
        ["v1", "sqi", "leaderboard"] if key.scope != Scope::Marketer => {
            return Err(ReportError::Forbidden);
        }
        _ => {}
    }
    Ok(key)
}

fn etag_matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag.as_bytes())
}

fn with_quota(mut response: Response, limit: u32, remaining: Option<u32>) -> Response {
    if let Some(remaining) = remaining {
        let headers = response.headers_mut();
        let _ = headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
        let _ = headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    }
    response
}

/// The middleware: key check, rate limit, cache, conditional GET.
pub(super) async fn guard(
    State(state): State<ReportState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::GET || !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let guard = state.guard.clone();
    // A known key pays for every request, refused ones included, and so
    // every answer to it carries its quota.
    let key_name = match authenticate(&state, request.headers()) {
        Ok(key) => key.name.clone(),
        Err(error) => return error.into_response(),
    };
    let remaining = match guard.take(&key_name) {
        Ok(remaining) => remaining,
        Err(wait) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"error": {
                    "code": "rate_limited",
                    "message": format!("this key made more than {} requests a minute; retry in {seconds} s", state.options.requests_per_minute),
                }})),
            )
                .into_response();
            let _ = response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            return with_quota(response, guard.limit, Some(0));
        }
    };
    if let Err(error) = check(&state, request.headers(), request.uri().path()) {
        return with_quota(error.into_response(), guard.limit, remaining);
    }
    let epoch = Utc::now().timestamp() / MAX_AGE.as_secs().max(1) as i64;
    // `/v1/me` describes the key itself; every other answer depends on the URL only.
    if request.uri().path() == "/v1/me" {
        return with_quota(next.run(request).await, guard.limit, remaining);
    }
    if guard.cache_entries == 0 {
        return with_quota(guard.answer(next, request).await, guard.limit, remaining);
    }
    let cache_key = format!("{epoch}|{}\n{}", guard.lake.borrow().state, request.uri());
    let conditional = request.headers().clone();
    let cached = match guard.get(&cache_key) {
        Some(hit) => hit,
        None => {
            let response = guard.answer(next, request).await;
            if response.status() != StatusCode::OK {
                return with_quota(response, guard.limit, remaining);
            }
            let (parts, body) = response.into_parts();
            let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
                return with_quota(
                    ReportError::Internal(crate::error::Error::Invalid(
                        "response body unreadable".into(),
                    ))
                    .into_response(),
                    guard.limit,
                    remaining,
                );
            };
            let digest = hex::encode(Sha256::digest(&body));
            let mut headers = parts.headers;
            let _ = headers.remove(header::CONTENT_LENGTH);
            let cached = Cached {
                headers,
                etag: HeaderValue::from_str(&format!("\"{}\"", &digest[..32]))
                    .unwrap_or_else(|_| HeaderValue::from_static("\"0\"")),
                body,
            };
            guard.put(cache_key, cached.clone());
            cached
        }
    };
    let mut response = if etag_matches(&conditional, &cached.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(cached.body.clone()));
        response.headers_mut().extend(cached.headers.clone());
        response
    };
    let headers = response.headers_mut();
    let _ = headers.insert(header::ETAG, cached.etag.clone());
    // Clients may keep answers but must ask (cheaply, with the ETag) before reuse.
    let _ = headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    with_quota(response, guard.limit, remaining)
}
