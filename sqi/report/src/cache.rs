//! The answer cache: answers by cache key, bounded in bytes and entries,
//! least recently used first out, and each key (whose question put an answer
//! there) has a share of it. When the cache is full, a key beyond its share
//! recycles its own answers, and a key within its share first evicts those
//! of keys beyond theirs. A key asking many distinct questions can use room
//! nobody else needs, never flush the others' answers; a key alone (one
//! dashboard key, a benchmark) can use it all.
//!
//! It only keeps and evicts. What an answer's cache key is (the URL, the
//! lake's state, the age epoch), who may read it and when it is stale are
//! the guard's (`guard.rs`); this module must not look at requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};

/// One cached answer.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) headers: HeaderMap,
    pub(super) etag: HeaderValue,
    pub(super) body: Bytes,
}

impl Cached {
    /// What the answer holds in memory, with its cache key, near enough to bound the cache.
    fn weight(&self, key: &str) -> usize {
        // The map's and the order's entries, the header map's table.
        const OVERHEAD: usize = 256;
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        OVERHEAD + 2 * key.len() + self.body.len() + self.etag.len() + headers
    }
}

/// An entry of the answer cache.
#[derive(Debug)]
struct Slot {
    answer: Cached,
    /// The key whose question put it there.
    owner: Arc<str>,
    /// When it was last used, in the cache's order.
    used: u64,
    weight: usize,
}

/// What one key's questions hold in the cache, oldest use first.
#[derive(Debug, Default)]
struct Share {
    bytes: usize,
    used: BTreeMap<u64, String>,
}

/// Answers by cache key, bounded in bytes and entries, least recently used
/// out first; each key's answers are bounded to a share of both.
#[derive(Debug, Default)]
pub(super) struct AnswerCache {
    slots: HashMap<String, Slot>,
    /// Cache keys by last use.
    used: BTreeMap<u64, String>,
    shares: HashMap<Arc<str>, Share>,
    bytes: usize,
    clock: u64,
    max_bytes: usize,
    max_entries: usize,
    share_bytes: usize,
    share_entries: usize,
}

impl AnswerCache {
    pub(super) fn new(max_bytes: usize, max_entries: usize, share_percent: u8) -> Self {
        let share = usize::from(share_percent.clamp(1, 100));
        Self {
            max_bytes,
            max_entries,
            share_bytes: max_bytes / 100 * share + max_bytes % 100 * share / 100,
            share_entries: (max_entries * share / 100).max(1),
            ..Self::default()
        }
    }

    /// The bytes its answers take, as [`Cached::weight`] counts them.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The answers it holds.
    pub(super) fn entries(&self) -> usize {
        self.slots.len()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub(super) fn get(&mut self, key: &str) -> Option<Cached> {
        let now = self.tick();
        let slot = self.slots.get_mut(key)?;
        let before = std::mem::replace(&mut slot.used, now);
        let answer = slot.answer.clone();
        let owner = slot.owner.clone();
        let _ = self.used.remove(&before);
        let _ = self.used.insert(now, key.to_owned());
        if let Some(share) = self.shares.get_mut(&owner) {
            let _ = share.used.remove(&before);
            let _ = share.used.insert(now, key.to_owned());
        }
        Some(answer)
    }

    fn remove(&mut self, key: &str) {
        let Some(slot) = self.slots.remove(key) else {
            return;
        };
        let _ = self.used.remove(&slot.used);
        self.bytes = self.bytes.saturating_sub(slot.weight);
        if let Some(share) = self.shares.get_mut(&slot.owner) {
            let _ = share.used.remove(&slot.used);
            share.bytes = share.bytes.saturating_sub(slot.weight);
            if share.used.is_empty() {
                let _ = self.shares.remove(&slot.owner);
            }
        }
    }

    /// Whether `share`, given `weight` more bytes and one more answer, is over a key's share.
    fn over_share(&self, share: &Share, weight: usize) -> bool {
        share.bytes + weight > self.share_bytes || share.used.len() + 1 > self.share_entries
    }

    /// The answer to drop to make room for one of `owner`'s: `owner`'s own
    /// least recently used while it is over its share; else the least
    /// recently used of a key over its share; else the least recently used.
    /// So a key beyond its share uses only room nobody else needs, and a key
    /// within its share loses nothing while another key is beyond its own.
    fn to_evict(&self, owner: &Arc<str>, weight: usize) -> Option<String> {
        let own = self
            .shares
            .get(owner)
            .filter(|share| self.over_share(share, weight))
            .and_then(|share| share.used.iter().next());
        let any_over = || {
            self.shares
                .values()
                .filter(|share| self.over_share(share, 0))
                .filter_map(|share| share.used.iter().next())
                .min_by_key(|(used, _)| **used)
        };
        own.or_else(any_over)
            .or_else(|| self.used.iter().next())
            .map(|(_, key)| key.clone())
    }

    /// Keeps `answer` for `key`, charged to `owner`, dropping answers as
    /// [`Self::to_evict`] picks them while the cache is over its bounds. An
    /// answer larger than a share is not kept.
    pub(super) fn put(&mut self, key: String, owner: Arc<str>, answer: Cached) {
        let weight = answer.weight(&key);
        if weight > self.share_bytes {
            return;
        }
        self.remove(&key);
        while self.bytes + weight > self.max_bytes || self.slots.len() + 1 > self.max_entries {
            let Some(victim) = self.to_evict(&owner, weight) else {
                break;
            };
            self.remove(&victim);
        }
        let used = self.tick();
        let _ = self.used.insert(used, key.clone());
        let share = self.shares.entry(owner.clone()).or_default();
        share.bytes += weight;
        let _ = share.used.insert(used, key.clone());
        self.bytes += weight;
        let _ = self.slots.insert(
            key,
            Slot {
                answer,
                owner,
                used,
                weight,
            },
        );
    }
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    fn answer(bytes: usize) -> Cached {
        Cached {
            headers: HeaderMap::new(),
            etag: HeaderValue::from_static("\"0\""),
            body: Bytes::from(vec![b'x'; bytes]),
        }
    }

    /// Item 8: the cache holds at most its bytes whatever the answers'
    /// sizes, and one key's questions recycle only its own share.
    #[test]
    fn the_answer_cache_is_bounded_in_bytes_and_by_key() {
        let max = 1 << 20;
        let mut cache = AnswerCache::new(max, 10_000, 10);
        for i in 0..1000 {
            let owner: Arc<str> = format!("key-{}", i % 20).into();
            cache.put(format!("/q{i}"), owner, answer(40_000));
            assert!(cache.bytes <= max, "{} bytes after {i}", cache.bytes);
        }
        let held: usize = cache.slots.values().map(|s| s.weight).sum();
        assert_eq!(held, cache.bytes);
        assert!(cache.slots.len() > 10, "{}", cache.slots.len());

        let mut cache = AnswerCache::new(max, 10_000, 10);
        cache.put("/victim".into(), "victim".into(), answer(1000));
        for i in 0..5000 {
            cache.put(format!("/flood{i}"), "attacker".into(), answer(100));
        }
        assert!(
            cache.get("/victim").is_some(),
            "the flood evicted another key's answer"
        );
        // Beyond its share the flood used only the room nobody else needed,
        // and gives it back to a key within its share.
        assert!(cache.bytes <= max);
        for i in 0..20 {
            cache.put(format!("/other{i}"), "other".into(), answer(1000));
        }
        assert!(cache.get("/victim").is_some() && cache.get("/other0").is_some());
        // A recent flood answer is there, an old one recycled.
        assert!(cache.get("/flood4999").is_some() && cache.get("/flood0").is_none());
        // Larger than a share: answered, never kept.
        cache.put("/huge".into(), "victim".into(), answer(max / 5));
        assert!(cache.get("/huge").is_none());
        // Entries are bounded too, and shared out alike; one key alone may
        // use the whole cache (nobody else needs the room), as a single
        // dashboard key or the benchmark does.
        let mut cache = AnswerCache::new(max, 100, 10);
        cache.put("/victim".into(), "victim".into(), answer(10));
        for i in 0..500 {
            cache.put(format!("/e{i}"), format!("k{}", i % 3).into(), answer(10));
        }
        assert_eq!(cache.slots.len(), 100);
        assert!(cache.get("/victim").is_some());
        let mut alone = AnswerCache::new(max, 100, 10);
        for i in 0..500 {
            alone.put(format!("/e{i}"), "bench".into(), answer(10));
        }
        assert_eq!(alone.slots.len(), 100, "one key alone is held to its share");
        assert!(alone.get("/e499").is_some() && alone.get("/e399").is_none());
    }
}
