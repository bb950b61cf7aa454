//! API keys: the key file (hashed secrets, each scoped to one publisher or to
//! marketers), its reload while serving, and the check every `/v1` request
//! passes (401 without a known key, 403 outside its scope).
//!
//! Owns: keys and scopes. Must not touch: rate limits and the cache
//! (`guard.rs`), or what a key's request reads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqi_schemas::event::is_valid_publisher;

use crate::error::{Error, Result};
use crate::{ReportError, ReportState};

/// What a key may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One publisher.
    Publisher(String),
    /// Every publisher and the leaderboard.
    Marketer,
}

/// One configured key; only its SHA-256 is known.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// A label for logs.
    pub name: String,
    /// What the key may read.
    pub scope: Scope,
    /// The key's identity: the hex SHA-256 of its secret, which two keys
    /// never share (names may repeat). Quotas and cache shares are per id.
    pub(crate) id: Arc<str>,
}

/// The configured keys, indexed by the hex SHA-256 of the raw key.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    by_hash: HashMap<String, ApiKey>,
    /// The file the keys were loaded from, re-read while the report runs so
    /// that a revoked key stops working without a restart.
    source: Option<PathBuf>,
    /// The SHA-256 of the file's bytes as parsed, so an unchanged file is not re-parsed.
    digest: Option<[u8; 32]>,
}

#[derive(Deserialize)]
struct KeyEntry {
    name: String,
    sha256: String,
    scope: String,
}

impl KeyRing {
    /// Parses the key file's JSON.
    pub fn parse(json: &str) -> Result<Self> {
        let entries: Vec<KeyEntry> =
            serde_json::from_str(json).map_err(|e| Error::Invalid(format!("API key file: {e}")))?;
        let mut by_hash = HashMap::new();
        for entry in entries {
            let hash = entry.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Invalid(format!(
                    "API key file: key `{}` needs a 64-hex-digit sha256",
                    entry.name
                )));
            }
            // Two entries for one secret would leave its scope to file order.
            if by_hash.contains_key(&hash) {
                return Err(Error::Invalid(format!(
                    "API key file: key `{}` repeats the sha256 of an earlier key",
                    entry.name
                )));
            }
            let scope = match entry.scope.split_once(':') {
                None if entry.scope == "marketer" => Scope::Marketer,
                Some(("publisher", id)) if is_valid_publisher(id) => {
                    Scope::Publisher(id.to_owned())
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "API key file: key `{}` has scope `{}`; use `marketer` or `publisher:<id>`",
                        entry.name, entry.scope
                    )));
                }
            };
            let _ = by_hash.insert(
                hash.clone(),
                ApiKey {
                    name: entry.name,
                    scope,
                    id: hash.into(),
                },
            );
        }
        Ok(Self {
            by_hash,
            source: None,
            digest: None,
        })
    }

    /// Loads the key file; the report re-reads it while it runs.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Invalid(format!("cannot read API key file {}: {e}", path.display()))
        })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::Invalid(format!("API key file {}: {e}", path.display())))?;
        let mut ring = Self::parse(text)?;
        ring.source = Some(path.to_owned());
        ring.digest = Some(Sha256::digest(&bytes).into());
        Ok(ring)
    }

    /// The key file re-read, when it was loaded from one and has changed
    /// since: `None` while it is unchanged. A file that cannot be read or
    /// parsed (say, half written) is an error, and the caller keeps its keys.
    fn reloaded(&self) -> Option<Result<Self>> {
        let path = self.source.as_deref()?;
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                return Some(Err(Error::Invalid(format!(
                    "cannot read API key file {}: {e}",
                    path.display()
                ))));
            }
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if self.digest == Some(digest) {
            return None;
        }
        Some(Self::load(path))
    }

    fn find(&self, raw_key: &str) -> Option<&ApiKey> {
        let hash = hex::encode(Sha256::digest(raw_key.as_bytes()));
        self.by_hash.get(&hash)
    }
}

/// The keys in force, swapped whole when the key file changes.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    ring: RwLock<Arc<KeyRing>>,
}

impl Keys {
    /// Keys serving `ring` until a reload replaces it.
    pub(crate) fn new(ring: KeyRing) -> Self {
        Self {
            ring: RwLock::new(Arc::new(ring)),
        }
    }

    pub(crate) fn current(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the key file if it changed; a broken file keeps the keys in force.
    fn refresh(&self) {
        let current = self.current();
        match current.reloaded() {
            None => {}
            Some(Ok(ring)) => {
                tracing::info!(
                    keys = ring.by_hash.len(),
                    "API key file changed; keys reloaded"
                );
                metrics::counter!(crate::metric::KEY_RELOADS, "result" => "ok").increment(1);
                match self.ring.write() {
                    Ok(mut slot) => *slot = Arc::new(ring),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
                }
            }
            Some(Err(error)) => {
                metrics::counter!(crate::metric::KEY_RELOADS, "result" => "error").increment(1);
                tracing::warn!(%error, "API key file changed but cannot be used; the keys in force stay");
            }
        }
    }

    /// Re-reads the key file every `every` while `keys` is in use.
    pub(crate) fn watch(keys: &Arc<Self>, every: std::time::Duration) {
        if keys.current().source.is_none() {
            return;
        }
        let weak = Arc::downgrade(keys);
        drop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(keys) = weak.upgrade() else {
                    return;
                };
                // A small file, read on the blocking pool so a slow disk stalls no request.
                let _ = tokio::task::spawn_blocking(move || keys.refresh()).await;
            }
        }));
    }
}

/// The key a request carries, or 401.
pub(crate) fn authenticate(
    state: &ReportState,
    headers: &HeaderMap,
) -> Result<ApiKey, ReportError> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(ReportError::Unauthorized)?;
    state
        .keys
        .current()
        .find(raw)
        .cloned()
        .ok_or(ReportError::Unauthorized)
}

/// 401 without a known key; 403 when the key does not cover `publisher`.
pub(crate) fn authorize(
    state: &ReportState,
    headers: &HeaderMap,
    publisher: &str,
) -> Result<(), ReportError> {
    let key = authenticate(state, headers)?;
    // The scope check looks only at the key, never at whether the publisher
    // exists, so a 403 is the same whatever publisher is asked for.
    match &key.scope {
        Scope::Marketer => Ok(()),
        Scope::Publisher(own) if own == publisher => Ok(()),
        Scope::Publisher(_) => Err(ReportError::Forbidden),
    }
}

// Test code only: an unwrap here fails the test with its cause.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_matched_by_hash_and_scoped() {
        let hash = hex::encode(Sha256::digest(b"secret-1"));
        let ring = KeyRing::parse(&format!(
            r#"[{{"name":"a","sha256":"{hash}","scope":"publisher:pub-1"}}]"#
        ))
        .unwrap();
        assert_eq!(
            ring.find("secret-1").map(|k| k.scope.clone()),
            Some(Scope::Publisher("pub-1".into()))
        );
        assert!(ring.find("secret-2").is_none());
        assert!(KeyRing::parse(r#"[{"name":"a","sha256":"abc","scope":"marketer"}]"#).is_err());
        assert!(
            KeyRing::parse(&format!(
                r#"[{{"name":"a","sha256":"{hash}","scope":"admin"}}]"#
            ))
            .is_err()
        );
    }
}
