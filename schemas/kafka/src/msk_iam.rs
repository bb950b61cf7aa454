//! Amazon MSK IAM authentication: the SASL/OAUTHBEARER token that an MSK
//! cluster accepts in place of a password, and the task that keeps one fresh.
//!
//! A token is a presigned AWS SigV4 URL for the action `kafka-cluster:Connect`
//! on `https://kafka.<region>.amazonaws.com/`, base64url-encoded without
//! padding. [`sign`] makes it byte for byte as AWS's reference signer
//! (`aws-msk-iam-sasl-signer-python`) does: the same query order, the hash of
//! an empty payload, `X-Amz-Expires=900`, the session token when there is one,
//! and an unsigned `User-Agent` parameter after the signature
//! (`tests/msk_iam_reference.rs` compares the two).
//!
//! Credentials come from the standard AWS chain as `object_store` (already
//! the lake's client) implements it: `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN`), IRSA web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`), ECS task credentials,
//! EKS Pod Identity, then EC2 instance metadata. Shared profile files
//! (`~/.aws/credentials`) are not read: no pod has one. Why not the crate
//! `aws-msk-iam-sasl-signer`: it brings the AWS SDK's credential chain, 52
//! more crates in `Cargo.lock` (408 → 460, among them aws-lc-sys, a C build,
//! and second copies of `http`, `sha2` and `thiserror`) and 180 s more to
//! build on this project's 2-core machine, while this module adds no crate:
//! SigV4 is a page of code over `ring`, which `object_store` already builds
//! (figures and commands in `docs/kafka-security.md`).
//!
//! librdkafka asks for a token from its own thread through rust-rdkafka's
//! synchronous `generate_oauth_token`; other projects deadlocked calling async
//! code there. So [`MskIamTokens::current`] only copies the latest token out of
//! a mutex held for that copy, and a tokio task signs the next one ahead of
//! expiry. This module must not know about librdkafka itself: the client
//! context that calls `current` belongs to the rest of the crate.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use object_store::aws::{AmazonS3Builder, AwsCredential, AwsCredentialProvider};
use object_store::{BackoffConfig, RetryConfig};
use ring::{digest, hmac};

use crate::{Error, Result};

/// The `User-Agent` query parameter of every token. The reference signer
/// sends `aws-msk-iam-sasl-signer-python/<version>`; MSK only logs it, and
/// it is outside the signature.
pub const USER_AGENT: &str = concat!("sqi-engine/", env!("CARGO_PKG_VERSION"));

/// How long a presigned token is valid (`X-Amz-Expires`), as in the reference.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(TOKEN_LIFETIME_SECS as u64);
const TOKEN_LIFETIME_SECS: i64 = 900;

/// The least life temporary credentials have left when the chain hands them
/// out: `object_store` refetches them once fewer than 5 minutes remain. A URL
/// presigned with them is refused once they expire, even inside its own 900 s,
/// so a token signed with a session token is given out as valid for this long
/// only, and librdkafka asks again before the session can end.
const TEMPORARY_CREDENTIALS_MIN_LIFE_MS: i64 = 300_000;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "kafka-cluster";
const ACTION: &str = "kafka-cluster:Connect";
/// SHA-256 of the empty payload of a GET, hex.
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// One SASL/OAUTHBEARER token for MSK IAM, as librdkafka takes it.
#[derive(Clone, PartialEq, Eq)]
pub struct MskToken {
    /// The base64url presigned URL (a bearer secret until it expires).
    pub token: String,
    /// The principal librdkafka files the token under. MSK derives the real
    /// principal from the signature and ignores this; it is the access key id
    /// (not a secret: CloudTrail shows it) so logs can tell identities apart.
    pub principal: String,
    /// When librdkafka must stop using it, in Unix milliseconds.
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for MskToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MskToken")
            .field("token", &"******")
            .field("principal", &self.principal)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// The token for `credentials` in `region` at `now`, exactly as the
/// reference signer makes it (to the second: SigV4 dates have no fraction).
/// `expires_at_ms` is the URL's own expiry, as the reference returns it.
pub fn sign(credentials: &AwsCredential, region: &str, now: DateTime<Utc>) -> MskToken {
    let host = format!("kafka.{region}.amazonaws.com");
    let date = now.format("%Y%m%d").to_string();
    let timestamp = now.format("%Y%m%dT%H%M%SZ").to_string();
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    let credential = format!("{}/{scope}", credentials.key_id);
    let expires = TOKEN_LIFETIME_SECS.to_string();

    // The URL keeps this order (the operation's parameter, then the auth
    // parameters as the reference inserts them); the signature covers them sorted.
    let mut params = vec![
        ("Action", ACTION),
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", credential.as_str()),
        ("X-Amz-Date", timestamp.as_str()),
        ("X-Amz-Expires", expires.as_str()),
        ("X-Amz-SignedHeaders", "host"),
    ];
    if let Some(session_token) = &credentials.token {
        params.push(("X-Amz-Security-Token", session_token.as_str()));
    }
    let encoded: Vec<(String, String)> = params
        .iter()
        .map(|(key, value)| (uri_encode(key), uri_encode(value)))
        .collect();
    let query = join_query(&encoded);
    let mut sorted = encoded;
    sorted.sort();
    let canonical_query = join_query(&sorted);

    let canonical_request =
        format!("GET\n/\n{canonical_query}\nhost:{host}\n\nhost\n{EMPTY_PAYLOAD_SHA256}");
    let request_hash = hex::encode(digest::digest(
        &digest::SHA256,
        canonical_request.as_bytes(),
    ));
    let string_to_sign = format!("{ALGORITHM}\n{timestamp}\n{scope}\n{request_hash}");
    let signature = hex::encode(hmac::sign(
        &signing_key(&credentials.secret_key, &date, region),
        string_to_sign.as_bytes(),
    ));

    let url = format!(
        "https://{host}/?{query}&X-Amz-Signature={signature}&User-Agent={}",
        uri_encode(USER_AGENT)
    );
    MskToken {
        token: URL_SAFE_NO_PAD.encode(url),
        principal: credentials.key_id.clone(),
        expires_at_ms: now.timestamp() * 1000 + TOKEN_LIFETIME_SECS * 1000,
    }
}

/// SigV4's derived key: the secret, then the date, region, service and
/// terminator, each an HMAC of the next.
fn signing_key(secret: &str, date: &str, region: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let key = step(format!("AWS4{secret}").as_bytes(), date);
    let key = step(key.as_ref(), region);
    let key = step(key.as_ref(), SERVICE);
    let key = step(key.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, key.as_ref())
}

/// SigV4's URI encoding (and Python's `quote(safe="-_.~")`, which the
/// reference uses): unreserved characters stay, every other byte is `%XX`.
fn uri_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn join_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The current MSK IAM token of a process, kept fresh by a background task.
pub struct MskIamTokens {
    latest: Mutex<Latest>,
    clock: Clock,
}

impl std::fmt::Debug for MskIamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MskIamTokens").finish_non_exhaustive()
    }
}

/// The latest token and, while refreshes fail, why.
struct Latest {
    token: MskToken,
    refresh_error: Option<String>,
}

type CredentialFuture =
    Pin<Box<dyn Future<Output = object_store::Result<Arc<AwsCredential>>> + Send>>;
/// Where credentials come from: the chain in production, a stub in tests.
type CredentialSource = Arc<dyn Fn() -> CredentialFuture + Send + Sync>;
/// Wall-clock time; a test drives it from tokio's paused clock.
type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// When to refresh, and how to retry.
#[derive(Debug, Clone, Copy)]
struct RefreshPolicy {
    /// The fraction of a token's life after which the next one is signed.
    refresh_at: f64,
    first_retry: Duration,
    max_retry: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_at: 0.8,
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(30),
        }
    }
}

impl MskIamTokens {
    /// Signs the first token for `region` with credentials from the standard
    /// AWS chain (an error says which sources were tried), then refreshes it
    /// in a task on the current tokio runtime until the last `Arc` is dropped.
    pub async fn start(region: String) -> Result<Arc<Self>> {
        validate_region(&region)?;
        let chain = credential_chain(&region)?;
        Self::start_with_credentials(region, chain).await
    }

    /// [`MskIamTokens::start`] with credentials from `credentials` instead of
    /// the standard chain.
    pub async fn start_with_credentials(
        region: String,
        credentials: AwsCredentialProvider,
    ) -> Result<Arc<Self>> {
        let source: CredentialSource = Arc::new(move || {
            let credentials = Arc::clone(&credentials);
            Box::pin(async move { credentials.get_credential().await })
        });
        Self::start_with(region, source, RefreshPolicy::default(), Arc::new(Utc::now)).await
    }

    async fn start_with(
        region: String,
        source: CredentialSource,
        policy: RefreshPolicy,
        clock: Clock,
    ) -> Result<Arc<Self>> {
        validate_region(&region)?;
        let token = fetch_and_sign(&source, &region, &clock).await?;
        let signed_at = clock();
        let tokens = Arc::new(Self {
            latest: Mutex::new(Latest {
                token: token.clone(),
                refresh_error: None,
            }),
            clock,
        });
        tokio::spawn(refresh(
            Arc::downgrade(&tokens),
            region,
            source,
            policy,
            refresh_delay(&token, signed_at, policy),
        ));
        Ok(tokens)
    }

    /// The latest token, or an error once it has expired without a
    /// successful refresh. Never waits on the runtime: safe on librdkafka's
    /// threads and inside synchronous callbacks.
    pub fn current(&self) -> Result<MskToken> {
        let now_ms = (self.clock)().timestamp_millis();
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if now_ms < latest.token.expires_at_ms {
            return Ok(latest.token.clone());
        }
        Err(Error::MskTokenExpired {
            expired_at_ms: latest.token.expires_at_ms,
            refresh_error: latest
                .refresh_error
                .clone()
                .unwrap_or_else(|| "no refresh has run yet".to_owned()),
        })
    }

    fn store(&self, token: MskToken) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        *latest = Latest {
            token,
            refresh_error: None,
        };
    }

    fn record_failure(&self, error: &Error) -> i64 {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest.refresh_error = Some(error.to_string());
        latest.token.expires_at_ms
    }
}

/// The refresher: it holds only a `Weak`, so it ends when the tokens are dropped.
async fn refresh(
    tokens: Weak<MskIamTokens>,
    region: String,
    source: CredentialSource,
    policy: RefreshPolicy,
    first_delay: Duration,
) {
    let mut delay = first_delay;
    let mut retry = policy.first_retry;
    loop {
        tokio::time::sleep(delay).await;
        let Some(clock) = tokens.upgrade().map(|tokens| Arc::clone(&tokens.clock)) else {
            return;
        };
        let outcome = fetch_and_sign(&source, &region, &clock).await;
        let Some(tokens) = tokens.upgrade() else {
            return;
        };
        match outcome {
            Ok(token) => {
                delay = refresh_delay(&token, clock(), policy);
                retry = policy.first_retry;
                tokens.store(token);
            }
            Err(error) => {
                let expires_at_ms = tokens.record_failure(&error);
                let expired = clock().timestamp_millis() >= expires_at_ms;
                if expired {
                    tracing::error!(%error, expires_at_ms, retry_in_ms = retry.as_millis(), "MSK IAM token expired and its refresh failed");
                } else {
                    tracing::warn!(%error, expires_at_ms, retry_in_ms = retry.as_millis(), "MSK IAM token refresh failed; the current token is still valid");
                }
                delay = retry;
                retry = (retry * 2).min(policy.max_retry);
            }
        }
    }
}

/// How long after `now` to sign the next token: when `refresh_at` of the
/// token's life (from `now`, when it was signed) has passed.
fn refresh_delay(token: &MskToken, now: DateTime<Utc>, policy: RefreshPolicy) -> Duration {
    let life_ms = (token.expires_at_ms - now.timestamp_millis()).max(0);
    Duration::from_millis(u64::try_from(life_ms).unwrap_or(0)).mul_f64(policy.refresh_at)
}

async fn fetch_and_sign(
    source: &CredentialSource,
    region: &str,
    clock: &Clock,
) -> Result<MskToken> {
    let credentials = source()
        .await
        .map_err(|source| Error::MskCredentials { source })?;
    if credentials.key_id.is_empty() || credentials.secret_key.is_empty() {
        return Err(Error::MskEmptyCredentials);
    }
    let now = clock();
    let mut token = sign(&credentials, region, now);
    if credentials.token.is_some() {
        token.expires_at_ms = token
            .expires_at_ms
            .min(now.timestamp_millis() + TEMPORARY_CREDENTIALS_MIN_LIFE_MS);
    }
    Ok(token)
}

/// The standard chain, as `object_store` resolves it from `AWS_*` variables.
/// The S3 store it builds is never used: it is the public way to that chain.
fn credential_chain(region: &str) -> Result<AwsCredentialProvider> {
    let store = AmazonS3Builder::from_env()
        .with_region(region)
        .with_bucket_name("sqi-msk-iam-credentials-only")
        // A few quick retries: the refresher has its own backoff, and `start`
        // should say "no credentials" in seconds, not after object_store's
        // default three minutes of retrying instance metadata.
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
        })
        .build()
        .map_err(|source| Error::MskCredentials { source })?;
    Ok(Arc::clone(store.credentials()))
}

/// An AWS region name, which becomes part of the signed host name.
fn validate_region(region: &str) -> Result<()> {
    let valid = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::MskRegion {
            region: region.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;

    const LIFETIME_MS: i64 = TOKEN_LIFETIME_SECS * 1000;

    fn credentials(session_token: Option<&str>) -> AwsCredential {
        AwsCredential {
            key_id: "AKIDEXAMPLE".to_owned(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
            token: session_token.map(str::to_owned),
        }
    }

    /// Wall-clock time that moves with tokio's (paused) clock, from a whole
    /// second: tokens are signed to the second, so a fraction would move the
    /// refresh up to 0.8 s earlier than the schedule these tests check.
    fn tokio_clock() -> Clock {
        let wall = DateTime::<Utc>::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default();
        let start = tokio::time::Instant::now();
        Arc::new(move || wall + chrono::Duration::from_std(start.elapsed()).unwrap_or_default())
    }

    /// A credential source that answers call `n` (from 1) with `answer(n)`.
    fn source(
        calls: Arc<AtomicUsize>,
        answer: impl Fn(usize) -> Option<AwsCredential> + Send + Sync + 'static,
    ) -> CredentialSource {
        Arc::new(move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let answer = answer(n);
            Box::pin(async move {
                answer
                    .map(Arc::new)
                    .ok_or_else(|| object_store::Error::Generic {
                        store: "test",
                        source: format!("credential fetch {n} refused").into(),
                    })
            })
        })
    }

    fn signed_at(token: &MskToken) -> String {
        let url = URL_SAFE_NO_PAD.decode(&token.token).unwrap_or_default();
        let url = String::from_utf8_lossy(&url).into_owned();
        let date = url.split("X-Amz-Date=").nth(1).unwrap_or_default();
        date.split('&').next().unwrap_or_default().to_owned()
    }

    #[test]
    fn a_token_is_the_presigned_connect_url_without_padding() {
        let now = DateTime::<Utc>::from_timestamp(1_796_602_853, 0).expect("time");
        let token = sign(&credentials(None), "eu-central-1", now);
        let url = String::from_utf8(URL_SAFE_NO_PAD.decode(&token.token).expect("base64url"))
            .expect("utf-8");
        assert!(!token.token.contains('='));
        assert!(url.starts_with(
            "https://kafka.eu-central-1.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261207%2Feu-central-1%2Fkafka-cluster%2Faws4_request&X-Amz-Date=20261207T002053Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature="
        ), "{url}");
        assert_eq!(token.expires_at_ms, 1_796_602_853_000 + LIFETIME_MS);
        assert_eq!(token.principal, "AKIDEXAMPLE");
        assert!(!format!("{token:?}").contains(&token.token));
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_after_80_percent_of_the_token_life() {
        let calls = Arc::new(AtomicUsize::new(0));
        let clock = tokio_clock();
        let tokens = MskIamTokens::start_with(
            "us-east-1".to_owned(),
            source(Arc::clone(&calls), |_| Some(credentials(None))),
            RefreshPolicy::default(),
            Arc::clone(&clock),
        )
        .await
        .expect("started");
        let first = tokens.current().expect("token");
        assert_eq!(
            first.expires_at_ms,
            clock().timestamp() * 1000 + LIFETIME_MS
        );

        tokio::time::sleep(Duration::from_secs(719)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "refreshed before 80%");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "not refreshed at 80%");
        let second = tokens.current().expect("token");
        assert_ne!(signed_at(&first), signed_at(&second));
        assert!(second.expires_at_ms >= first.expires_at_ms + 720_000);

        tokio::time::sleep(Duration::from_secs(720)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn temporary_credentials_are_trusted_for_their_guaranteed_life_only() {
        let calls = Arc::new(AtomicUsize::new(0));
        let clock = tokio_clock();
        let tokens = MskIamTokens::start_with(
            "us-east-1".to_owned(),
            source(Arc::clone(&calls), |_| {
                Some(credentials(Some("session/token+=")))
            }),
            RefreshPolicy::default(),
            Arc::clone(&clock),
        )
        .await
        .expect("started");
        let token = tokens.current().expect("token");
        assert_eq!(
            token.expires_at_ms,
            clock().timestamp_millis() + TEMPORARY_CREDENTIALS_MIN_LIFE_MS
        );
        tokio::time::sleep(Duration::from_secs(239)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "not refreshed at 80% of 300 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_valid_token_and_retries_with_backoff() {
        let calls = Arc::new(AtomicUsize::new(0));
        let clock = tokio_clock();
        let tokens = MskIamTokens::start_with(
            "us-east-1".to_owned(),
            source(Arc::clone(&calls), |n| {
                (n == 1 || n >= 5).then(|| credentials(None))
            }),
            RefreshPolicy::default(),
            Arc::clone(&clock),
        )
        .await
        .expect("started");
        let first = tokens.current().expect("token");
        // The refresh at 720 s fails, then retries after 1, 2 and 4 s: 721, 723, 727.
        tokio::time::sleep(Duration::from_millis(720_500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(tokens.current().expect("still valid"), first);
        tokio::time::sleep(Duration::from_secs(1)).await; // 721.5
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_secs(2)).await; // 723.5
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        tokio::time::sleep(Duration::from_secs(3)).await; // 726.5
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "the fourth retry waits 4 s"
        );
        assert_eq!(tokens.current().expect("still valid"), first);
        tokio::time::sleep(Duration::from_secs(1)).await; // 727.5
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert_ne!(tokens.current().expect("refreshed"), first);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_is_an_error_naming_the_refresh_failure() {
        let calls = Arc::new(AtomicUsize::new(0));
        let tokens = MskIamTokens::start_with(
            "us-east-1".to_owned(),
            source(Arc::clone(&calls), |n| (n == 1).then(|| credentials(None))),
            RefreshPolicy::default(),
            tokio_clock(),
        )
        .await
        .expect("started");
        tokio::time::sleep(Duration::from_secs(899)).await;
        assert!(tokens.current().is_ok());
        tokio::time::sleep(Duration::from_secs(2)).await;
        match tokens.current() {
            Err(Error::MskTokenExpired { refresh_error, .. }) => {
                assert!(refresh_error.contains("refused"), "{refresh_error}");
            }
            other => panic!("expected an expired token, got {other:?}"),
        }
        // Backoff is capped: 720 + 1 + 2 + 4 + 8 + 16 + 30 + 30 + ... by 901 s.
        assert!(calls.load(Ordering::SeqCst) >= 10);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_tokens_stops_the_refresher() {
        let calls = Arc::new(AtomicUsize::new(0));
        let tokens = MskIamTokens::start_with(
            "us-east-1".to_owned(),
            source(Arc::clone(&calls), |_| Some(credentials(None))),
            RefreshPolicy::default(),
            tokio_clock(),
        )
        .await
        .expect("started");
        drop(tokens);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn start_fails_clearly_without_credentials() {
        let calls = Arc::new(AtomicUsize::new(0));
        let error = MskIamTokens::start_with(
            "us-east-1".to_owned(),
            source(calls, |_| None),
            RefreshPolicy::default(),
            Arc::new(Utc::now),
        )
        .await
        .expect_err("no credentials");
        let message = error.to_string();
        assert!(matches!(error, Error::MskCredentials { .. }));
        assert!(message.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{message}");
        assert!(message.contains("refused"), "{message}");

        let error = MskIamTokens::start_with(
            "us-east-1".to_owned(),
            source(Arc::new(AtomicUsize::new(0)), |_| {
                Some(AwsCredential {
                    key_id: String::new(),
                    ..credentials(None)
                })
            }),
            RefreshPolicy::default(),
            Arc::new(Utc::now),
        )
        .await
        .expect_err("empty key");
        assert!(matches!(error, Error::MskEmptyCredentials));
    }

    #[tokio::test]
    async fn start_rejects_a_region_that_is_not_a_host_label() {
        for region in ["", "US-EAST-1", "us-east-1.evil.example/", "eu west 1"] {
            let error = MskIamTokens::start(region.to_owned())
                .await
                .expect_err("bad region");
            assert!(
                matches!(error, Error::MskRegion { .. }),
                "{region}: {error}"
            );
        }
    }

    /// librdkafka calls `current` from its own threads; it must return at
    /// once while every runtime worker is busy and a refresh hangs.
    #[test]
    fn current_never_waits_for_a_busy_runtime_or_a_hung_refresh() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let calls = Arc::new(AtomicUsize::new(0));
        let hang_after_first: CredentialSource = {
            let calls = Arc::clone(&calls);
            Arc::new(move || {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Box::pin(async { Ok(Arc::new(credentials(None))) })
                } else {
                    Box::pin(std::future::pending())
                }
            })
        };
        let policy = RefreshPolicy {
            refresh_at: 0.0001, // the hung refresh starts after 90 ms
            ..RefreshPolicy::default()
        };
        let tokens = runtime
            .block_on(MskIamTokens::start_with(
                "us-east-1".to_owned(),
                hang_after_first,
                policy,
                Arc::new(Utc::now),
            ))
            .expect("started");
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the refresh is in flight");
        // Occupy the only worker thread.
        runtime.spawn(async { std::thread::sleep(Duration::from_secs(2)) });
        std::thread::sleep(Duration::from_millis(50));

        let started = Instant::now();
        let reader = std::thread::spawn(move || (0..10_000).all(|_| tokens.current().is_ok()));
        assert!(reader.join().expect("reader thread"));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "10 000 current() calls took {:?}",
            started.elapsed()
        );
        runtime.shutdown_background();
    }
}
