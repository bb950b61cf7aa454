//! What stands in front of every `/v1` handler: the key check, the key's rate
//! limit, and a response cache keyed by the request and the lake's state.
//!
//! `GET` and `HEAD` (which axum answers from every `get` route) pass through
//! it alike: a `HEAD` is answered as the `GET` it mirrors, body dropped.
//!
//! - **Rate limits** are per key (GCRA, `governor`), keyed by the key's
//!   identity (the hash of its secret), never by its name. Every answer carries
//!   `X-RateLimit-Limit` and `X-RateLimit-Remaining`; over the limit the
//!   answer is 429 with `Retry-After`, so a client can see its quota.
//!   Requests without a valid key are limited per client address (IPv6 by
//!   /64) in a fixed table of buckets, so guessing costs the guesser and the
//!   table's memory does not grow with addresses; a valid key is never
//!   refused for its address, so one client behind a shared address (NAT, an
//!   ingress) cannot lock the others out.
//! - **Parameters:** each endpoint takes the query parameters its OpenAPI
//!   description lists, once each; anything else is a 400 naming it, so no
//!   request reaches the cache with a parameter that does not change the answer.
//! - **Caching:** the same URL over the same lake state gives the same bytes,
//!   whichever key asks (the key check runs first). The cache is bounded in
//!   bytes and entries, and each key has a share of it (`cache.rs` says how
//!   it evicts). The lake's state is the newest write time of the tables the
//!   API reads, refreshed in the background every `--cache-refresh`, so an
//!   answer is at most that stale.
//!   Only the recent partitions are watched (the processor's late events land
//!   within hours), so every answer also expires after [`MAX_AGE`], which
//!   bounds how long a rewrite of an old day can go unseen. The refresh is
//!   `lake_state.rs`'s; the same refresh notes which days each table
//!   answers, which the read layer plans by.
//!   Answers carry a strong `ETag`; `If-None-Match` gets 304 without a body.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::cache::{AnswerCache, Cached};
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
    /// Bytes the cached answers (bodies, headers, keys) may take; 0 turns the cache off.
    pub cache_bytes: usize,
    /// The percentage of the cache's bytes and entries that the answers one
    /// key asked for keep once the cache is full and other keys need room.
    pub cache_key_share_percent: u8,
    /// Requests without a valid key a client address may make per minute,
    /// sustained; 0 disables the limit.
    pub unauthorized_per_minute: u32,
    /// Requests without a valid key a client address may make at once.
    pub unauthorized_burst: u32,
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
            cache_bytes: 64 << 20,
            cache_key_share_percent: 10,
            unauthorized_per_minute: 30,
            unauthorized_burst: 10,
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

type KeyLimiter = RateLimiter<
    Arc<str>,
    DefaultKeyedStateStore<Arc<str>>,
    DefaultClock,
    StateInformationMiddleware,
>;

type AddressLimiter = RateLimiter<u16, DefaultKeyedStateStore<u16>, DefaultClock>;

/// Buckets of the per-address limit on requests without a valid key. A
/// fixed table: its memory is the same for ten addresses or ten million;
/// addresses that share a bucket share its allowance.
const ADDRESS_BUCKETS: u16 = 4096;

/// The rate limiter and the answer cache, shared by all requests.
pub(super) struct Guard {
    limiter: Option<KeyLimiter>,
    limit: u32,
    /// Requests without a valid key, by bucket of client address.
    strangers: Option<AddressLimiter>,
    /// Seeds the address buckets, so that no one can pick addresses that share one.
    bucket_seed: std::collections::hash_map::RandomState,
    cache: Mutex<AnswerCache>,
    cache_on: bool,
    /// The query parameters each `/v1` path takes, from the OpenAPI document.
    parameters: Vec<(Vec<String>, BTreeSet<String>)>,
    /// Permits to run a question's queries. With every request let in at
    /// once, 50 clients on 2 cores each waited on all the others (p99 twice
    /// p50); in turn, a request waits only for those before it.
    queries: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("limit", &self.limit).finish()
    }
}

impl Guard {
    /// The guard `options` describe.
    pub(super) fn new(options: ReportOptions) -> Arc<Self> {
        let limiter = NonZeroU32::new(options.requests_per_minute).map(|rate| {
            let burst = NonZeroU32::new(options.burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
                .with_middleware::<StateInformationMiddleware>()
        });
        let strangers = NonZeroU32::new(options.unauthorized_per_minute).map(|rate| {
            let burst = NonZeroU32::new(options.unauthorized_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        super::metric::register();
        Arc::new(Self {
            limiter,
            limit: options.burst,
            strangers,
            bucket_seed: std::collections::hash_map::RandomState::new(),
            cache: Mutex::new(AnswerCache::new(
                options.cache_bytes,
                options.cache_entries,
                options.cache_key_share_percent,
            )),
            cache_on: options.cache_entries > 0 && options.cache_bytes > 0,
            parameters: super::openapi::query_parameters(),
            queries: tokio::sync::Semaphore::new(options.query_concurrency.max(1)),
        })
    }

    /// Takes one request from `key`'s allowance: what remains, or how long to wait.
    fn take(&self, key: &Arc<str>) -> Result<Option<u32>, Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        match limiter.check_key(key) {
            Ok(snapshot) => Ok(Some(snapshot.remaining_burst_capacity())),
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Takes one request without a valid key from `address`'s allowance, or
    /// says how long to wait. IPv6 clients are limited by /64, the block one
    /// subscriber gets, so rotating addresses within it does not help.
    fn take_stranger(&self, address: Option<IpAddr>) -> Result<(), Duration> {
        let Some(limiter) = &self.strangers else {
            return Ok(());
        };
        let prefix: u128 = match address {
            Some(IpAddr::V4(v4)) => u128::from(u32::from(v4)),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => u128::from(u32::from(v4)),
                None => (u128::from(v6) >> 64) | (1 << 127),
            },
            None => 0,
        };
        let bucket = (self.bucket_seed.hash_one(prefix) % u64::from(ADDRESS_BUCKETS)) as u16;
        limiter
            .check_key(&bucket)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The parameters `path` takes, when it is a documented `/v1` path.
    fn parameters_of(&self, path: &str) -> Option<&BTreeSet<String>> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        self.parameters
            .iter()
            .find(|(template, _)| {
                template.len() == segments.len()
                    && template
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t == s || t.starts_with('{'))
            })
            .map(|(_, names)| names)
    }

    /// Runs the handler once a query permit is free.
    async fn answer(&self, next: Next, request: Request) -> Response {
        // The semaphore is never closed, so acquiring cannot fail; if it
        // did, answering without a permit is still an answer.
        let _permit = self.queries.acquire().await.ok();
        next.run(request).await
    }

    fn get(&self, key: &str) -> Option<Cached> {
        let hit = self.cache.lock().ok()?.get(key);
        let result = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!(super::metric::CACHE_LOOKUPS, "result" => result).increment(1);
        hit
    }

    fn put(&self, key: String, owner: Arc<str>, value: Cached) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(key, owner, value);
            metrics::gauge!(super::metric::CACHE_BYTES).set(cache.bytes() as f64);
            metrics::gauge!(super::metric::CACHE_ENTRIES).set(cache.entries() as f64);
        }
    }
}

/// A 429 saying `message`, with `Retry-After` in whole seconds (rounded up, at least one).
fn too_many(message: String, wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"error": {"code": "rate_limited", "message": message}})),
    )
        .into_response();
    let _ = response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// 400 when the query has a parameter `allowed` does not list, or one twice.
fn check_parameters(query: Option<&str>, allowed: &BTreeSet<String>) -> Result<(), ReportError> {
    let mut seen = BTreeSet::new();
    for (name, _) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !allowed.contains(name.as_ref()) {
            let listed: Vec<&str> = allowed.iter().map(String::as_str).collect();
            // Echoed in the answer: a name of any length is cut short.
            let name: String = name.chars().take(64).collect();
            return Err(crate::params::bad(
                name.clone(),
                format!(
                    "this endpoint takes no parameter `{name}`; it takes: {}",
                    if listed.is_empty() {
                        "none".to_owned()
                    } else {
                        listed.join(", ")
                    }
                ),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(crate::params::bad(
                name.into_owned(),
                "this parameter is given more than once",
            ));
        }
    }
    Ok(())
}

/// The key check for `path`, as the handlers do it, so a cached answer is
/// never given to a key the handler would refuse.
fn check(state: &ReportState, headers: &HeaderMap, path: &str) -> Result<ApiKey, ReportError> {
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

/// The middleware: key check, rate limit, parameters, cache, conditional GET.
pub(super) async fn guard(
    State(state): State<ReportState>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    if !(method == Method::GET || method == Method::HEAD)
        || !request.uri().path().starts_with("/v1/")
    {
        return next.run(request).await;
    }
    // A HEAD is the GET it mirrors, answered and cached as one; the router
    // drops the body because the request came as HEAD.
    *request.method_mut() = Method::GET;
    let guard = state.guard.clone();
    // A known key pays for every request, refused ones included, and so
    // every answer to it carries its quota.
    let key_id = match authenticate(&state, request.headers()) {
        Ok(key) => key.id.clone(),
        Err(error) => {
            let address = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            if let Err(wait) = guard.take_stranger(address) {
                metrics::counter!(super::metric::RATE_LIMITED, "reason" => "unauthorized")
                    .increment(1);
                return too_many(
                    format!(
                        "more than {} requests a minute without a valid key came from this address",
                        state.options.unauthorized_per_minute
                    ),
                    wait,
                );
            }
            return error.into_response();
        }
    };
    let remaining = match guard.take(&key_id) {
        Ok(remaining) => remaining,
        Err(wait) => {
            metrics::counter!(super::metric::RATE_LIMITED, "reason" => "key").increment(1);
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let response = too_many(
                format!(
                    "this key made more than {} requests a minute; retry in {seconds} s",
                    state.options.requests_per_minute
                ),
                wait,
            );
            return with_quota(response, guard.limit, Some(0));
        }
    };
    if let Err(error) = check(&state, request.headers(), request.uri().path()) {
        return with_quota(error.into_response(), guard.limit, remaining);
    }
    if let Some(allowed) = guard.parameters_of(request.uri().path())
        && let Err(error) = check_parameters(request.uri().query(), allowed)
    {
        return with_quota(error.into_response(), guard.limit, remaining);
    }
    let epoch = Utc::now().timestamp() / MAX_AGE.as_secs().max(1) as i64;
    // `/v1/me` describes the key itself; every other answer depends on the URL only.
    if request.uri().path() == "/v1/me" {
        return with_quota(next.run(request).await, guard.limit, remaining);
    }
    if !guard.cache_on {
        return with_quota(guard.answer(next, request).await, guard.limit, remaining);
    }
    let cache_key = format!("{epoch}|{}\n{}", state.lake_state.state(), request.uri());
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
            guard.put(cache_key, key_id, cached.clone());
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

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    /// Item 8: only the parameters an endpoint documents, each once.
    #[test]
    fn parameters_are_those_the_document_lists_once_each() {
        let allowed: BTreeSet<String> = ["period", "limit"].map(str::to_owned).into();
        assert!(check_parameters(Some("period=7d&limit=3"), &allowed).is_ok());
        assert!(check_parameters(None, &allowed).is_ok());
        let field = |query| match check_parameters(Some(query), &allowed) {
            Err(ReportError::BadRequest { field, .. }) => field.into_owned(),
            other => panic!("{query}: {other:?}"),
        };
        assert_eq!(field("period=7d&utm_source=x"), "utm_source");
        assert_eq!(field("limit=1&limit=2"), "limit");
        assert_eq!(field("lim%69t=1&limit=2"), "limit");
    }
}
