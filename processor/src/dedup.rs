//! Deduplication by `event_id` within one partition, across ranges and restarts.
//!
//! The decision for each record must be a pure function of the partition's
//! records in offset order, so that whoever re-reads a range (after a crash, a
//! rebalance, or as a zombie) decides exactly as the first reader did. The rule:
//! an event is a repeat when its id was counted before in this partition with a
//! *receive* time no more than the horizon behind the partition's receive
//! watermark (the latest `received_at` read so far). A retry arrives minutes
//! after the first attempt whatever its event time, so measuring on receive
//! time covers every event the processor counts, however late; measuring on
//! event time forgot the ids of late events while they were still counted.
//! Entries older than the horizon can never match again, so forgetting them
//! changes nothing, and after a restart it is enough to reload the ids of the
//! ranges received within the horizon (see [`crate::range_log`]).
//!
//! The table is keyed by client-chosen ids, so it is hashed with a per-process
//! random key (std's SipHash `RandomState`): with an unkeyed hash anyone could
//! compute ids that all land in one bucket and make every lookup a scan.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

/// Remembered ids of one partition, as 128-bit fingerprints with their receive time.
#[derive(Debug, Default)]
pub struct Dedup {
    horizon_ms: i64,
    seen: HashMap<u128, i64, RandomState>,
}

impl Dedup {
    /// An empty set that forgets ids received `horizon_ms` before the receive watermark.
    pub fn new(horizon_ms: i64) -> Self {
        Self {
            horizon_ms,
            seen: HashMap::default(),
        }
    }

    /// Whether this is the first sighting of `event_id` within the horizon of
    /// the receive watermark `received_watermark`; if so it is remembered with
    /// its receive time `received_at`.
    pub fn first_sighting(
        &mut self,
        event_id: &str,
        received_at: i64,
        received_watermark: i64,
    ) -> bool {
        let floor = received_watermark.saturating_sub(self.horizon_ms);
        let entry = self.seen.entry(fingerprint(event_id)).or_insert(i64::MIN);
        if *entry >= floor {
            return false;
        }
        // Keeping the larger time makes the state independent of the order in
        // which a restart reloads one range's files (see the module docs).
        *entry = (*entry).max(received_at);
        true
    }

    /// Reloads an id counted earlier (recovery); the latest time wins.
    pub fn remember(&mut self, event_id: &str, received_at: i64) {
        let entry = self
            .seen
            .entry(fingerprint(event_id))
            .or_insert(received_at);
        *entry = (*entry).max(received_at);
    }

    /// Forgets ids that can no longer match at `received_watermark`.
    pub fn prune(&mut self, received_watermark: i64) {
        let floor = received_watermark.saturating_sub(self.horizon_ms);
        self.seen.retain(|_, received_at| *received_at >= floor);
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The id as 128 bits: a canonical (hyphenated, lower-case) UUID is its own
/// value, which ingest always writes and which needs no hashing; any other
/// spelling gets two independent 64-bit SipHash values. Either way a collision
/// needs about 2^64 ids, so ids are never confused in practice, at a fixed 16
/// bytes each. Spellings stay distinct ids, as they were when every id was hashed.
fn fingerprint(event_id: &str) -> u128 {
    if is_canonical_uuid(event_id)
        && let Ok(uuid) = uuid::Uuid::try_parse(event_id)
    {
        return uuid.as_u128();
    }
    let hash = |salt: u8| {
        let mut hasher =
            std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().build_hasher();
        hasher.write_u8(salt);
        hasher.write(event_id.as_bytes());
        hasher.finish()
    };
    (u128::from(hash(1)) << 64) | u128::from(hash(2))
}

fn is_canonical_uuid(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn canonical_ids_are_their_uuid_and_other_spellings_stay_distinct() {
        let id = "0b6f2a5c-5d43-4b8e-9e71-2c1f7c1a9d10";
        assert_eq!(fingerprint(id), 0x0b6f2a5c_5d43_4b8e_9e71_2c1f7c1a9d10);
        let upper = id.to_ascii_uppercase();
        let simple = id.replace('-', "");
        let spellings = [fingerprint(id), fingerprint(&upper), fingerprint(&simple)];
        assert!(!is_canonical_uuid(&upper) && !is_canonical_uuid(&simple));
        assert_ne!(spellings[0], spellings[1]);
        assert_ne!(spellings[1], spellings[2]);
        let mut dedup = Dedup::new(HOUR);
        assert!(dedup.first_sighting(id, 0, 0));
        assert!(dedup.first_sighting(&upper, 0, 0));
        assert!(!dedup.first_sighting(&upper, 0, 0));
    }

    #[test]
    fn repeats_within_the_horizon_are_refused() {
        let mut dedup = Dedup::new(HOUR / 2);
        assert!(dedup.first_sighting("a", 10 * HOUR, 10 * HOUR));
        assert!(!dedup.first_sighting("a", 10 * HOUR, 10 * HOUR + HOUR / 4));
        // Beyond the horizon the id counts again (it is a new event, not a retry).
        assert!(dedup.first_sighting("a", 11 * HOUR, 11 * HOUR));
        assert!(!dedup.first_sighting("a", 11 * HOUR, 11 * HOUR));
    }

    /// Item 0: a retry of an event far behind the event-time watermark. The
    /// horizon is measured on receive time, so an exact retry minutes after
    /// the first attempt is a repeat however old its event time is.
    #[test]
    fn a_retry_is_a_repeat_whatever_its_event_time() {
        let mut dedup = Dedup::new(HOUR / 2);
        let received = 100 * HOUR;
        // The first attempt of an event 90 minutes old, then newer events
        // move the watermarks on, then the retry, five minutes later.
        assert!(dedup.first_sighting("late", received, received));
        assert!(dedup.first_sighting("fresh", received + 60_000, received + 60_000));
        assert!(!dedup.first_sighting("late", received + 300_000, received + 300_000));
        dedup.prune(received + 300_000);
        assert!(!dedup.first_sighting("late", received + 400_000, received + 400_000));
    }

    /// Item 3: hash flooding. Ids are client-chosen and a canonical UUID is
    /// its own 128-bit key, so with FxHash (`((lo * K) + hi) * K`) anyone can
    /// compute ids that share one hash: `hi = C - lo * K`, and every insert
    /// then walks one probe chain. The table's own hash of those ids must
    /// spread them as it spreads any ids: no two of 20,000 share a 64-bit
    /// hash (odds about 1e-11 for a keyed hash; all of them do under FxHash).
    /// A count, not a timing: a loaded CI machine made the timed version flaky.
    #[test]
    fn colliding_ids_do_not_collide_in_the_table() {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        let n = 20_000u64;
        let mut dedup = Dedup::new(HOUR);
        let hashes: std::collections::HashSet<u64> = (1..=n)
            .map(|lo| {
                let hi = 0x1234_5678_9abc_def0u64.wrapping_sub(lo.wrapping_mul(K));
                let id = uuid::Uuid::from_u128((u128::from(hi) << 64) | u128::from(lo))
                    .hyphenated()
                    .to_string();
                assert!(dedup.first_sighting(&id, 0, 0));
                dedup.seen.hasher().hash_one(fingerprint(&id))
            })
            .collect();
        assert_eq!(hashes.len() as u64, n, "crafted ids share table hashes");
        assert_eq!(dedup.len() as u64, n);
    }

    #[test]
    fn pruning_and_reloading_do_not_change_decisions() {
        let ids: Vec<(String, i64)> = (0..200)
            .map(|i| (format!("id-{}", i % 37), i64::from(i) * HOUR / 20))
            .collect();
        let mut live = Dedup::new(HOUR / 2);
        let mut pruned = Dedup::new(HOUR / 2);
        let mut watermark = 0;
        let mut counted = Vec::new();
        for (i, (id, ts)) in ids.iter().enumerate() {
            watermark = watermark.max(*ts);
            let a = live.first_sighting(id, *ts, watermark);
            let b = pruned.first_sighting(id, *ts, watermark);
            assert_eq!(a, b, "record {i}");
            if a {
                counted.push((id.clone(), *ts));
            }
            pruned.prune(watermark);
            if i == 120 {
                // A restart: reload only what the range log would offer.
                let mut reloaded = Dedup::new(HOUR / 2);
                counted
                    .iter()
                    .filter(|(_, t)| *t >= watermark - HOUR / 2)
                    .for_each(|(id, t)| reloaded.remember(id, *t));
                pruned = reloaded;
            }
        }
        assert!(pruned.len() <= live.len());
    }
}
