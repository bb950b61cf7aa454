//! Abuse control: GCRA rate limits counted in events rather than requests (so
//! that one large batch weighs what its events weigh), keyed by what a client
//! cannot choose freely.
//!
//! A client picks its publisher ids and, on IPv6, any of the 2^64 addresses
//! of its /64, so neither may make a fresh allowance. Two limits apply to
//! every request: one per client *network* (an IPv4 address, an IPv6 /64)
//! over all publishers, and a smaller one per (network, publisher), so that
//! one network cannot spend its whole allowance on one publisher. Neither is
//! per publisher alone: a flood under a publisher's id from one network
//! never throttles that publisher's real visitors elsewhere.
//!
//! The limiter's memory is bounded: it holds at most `max_keys` buckets. A
//! key is a keyed hash (per-process random seed), so its size is fixed and
//! colliding keys cannot be computed. A bucket whose allowance is full again
//! holds no information and is dropped by [`EventLimiter::housekeep`], or
//! sooner when the table is full. When the table is full of live buckets,
//! every new key shares one overflow bucket per limit: a client that
//! manufactures keys ends up rate-limited together with the others doing
//! the same, never unlimited.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often, at most, a full table is swept for idle buckets before a new
/// key goes to the overflow bucket (a sweep is linear in the table's size).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One limit: `per_second` events with bursts of `burst`, as a GCRA.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// Nanoseconds per event.
    interval: u64,
    /// How far ahead of now a bucket's theoretical arrival time may run.
    tolerance: u64,
}

impl Gcra {
    /// `None` when `per_second` is 0 (no limit).
    fn new(per_second: u32, burst: u32) -> Option<Self> {
        if per_second == 0 {
            return None;
        }
        let interval = 1_000_000_000 / u64::from(per_second);
        let burst = u64::from(burst.max(per_second));
        Some(Self {
            interval,
            tolerance: interval.saturating_mul(burst),
        })
    }

    /// The bucket's next theoretical arrival time if `events` are taken at
    /// `now`, or how long to wait.
    fn take(self, tat: u64, now: u64, events: u32) -> Result<u64, Duration> {
        let cost = self.interval.saturating_mul(u64::from(events));
        if cost > self.tolerance {
            // More events than the burst can ever hold: waiting a second is the honest answer.
            return Err(Duration::from_secs(1));
        }
        let next = tat.max(now).saturating_add(cost);
        let ahead = next - now;
        if ahead > self.tolerance {
            Err(Duration::from_nanos(ahead - self.tolerance))
        } else {
            Ok(next)
        }
    }
}

/// Which limit a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Network,
    Publisher,
}

/// The buckets: key hash → theoretical arrival time (ns since `origin`).
#[derive(Debug)]
struct Table {
    buckets: HashMap<u64, u64>,
    /// Where keys that found the table full of live buckets are counted.
    overflow: [u64; 2],
    last_sweep: u64,
}

#[derive(Debug)]
struct Limits {
    network: Option<Gcra>,
    publisher: Option<Gcra>,
    max_keys: usize,
    seed: std::collections::hash_map::RandomState,
    origin: Instant,
    table: Mutex<Table>,
}

/// The rate limiter; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventLimiter {
    limits: Option<Arc<Limits>>,
}

/// The limiter's settings.
#[derive(Debug, Clone, Copy)]
pub struct LimiterConfig {
    /// Events per second per (network, publisher); 0 turns rate limiting
    /// off altogether (what `--rate-limit-per-second 0` has always meant).
    pub per_second: u32,
    /// Burst per (network, publisher), in events.
    pub burst: u32,
    /// Events per second per client network over all publishers; 0 turns it off.
    pub network_per_second: u32,
    /// Burst per client network, in events.
    pub network_burst: u32,
    /// Buckets held at most.
    pub max_keys: usize,
}

/// The client's network: an IPv4 address (or an IPv4-mapped IPv6 one), or
/// the /64 of an IPv6 address, the smallest block a home or phone gets.
pub fn client_network(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) << 64,
        },
    }
}

impl EventLimiter {
    /// A limiter with these settings; with `per_second` 0 it lets everything through.
    pub fn new(config: LimiterConfig) -> Self {
        let network = Gcra::new(config.network_per_second, config.network_burst);
        let publisher = Gcra::new(config.per_second, config.burst);
        let limits = publisher.is_some().then(|| {
            Arc::new(Limits {
                network,
                publisher,
                max_keys: config.max_keys.max(1),
                seed: std::collections::hash_map::RandomState::new(),
                origin: Instant::now(),
                table: Mutex::new(Table {
                    buckets: HashMap::new(),
                    overflow: [0; 2],
                    last_sweep: 0,
                }),
            })
        });
        Self { limits }
    }

    /// Takes one request's events from its client network's allowance and
    /// from each of its publishers' (within that network), or says how long
    /// to wait. `per_publisher` lists each publisher with its event count.
    pub fn check(&self, ip: IpAddr, per_publisher: &[(&str, u32)]) -> Result<(), Duration> {
        let Some(limits) = &self.limits else {
            return Ok(());
        };
        limits.check(client_network(ip), per_publisher, limits.now())
    }

    /// Drops buckets whose allowance is full again, so memory follows active clients only.
    pub fn housekeep(&self) {
        if let Some(limits) = &self.limits {
            let now = limits.now();
            if let Ok(mut table) = limits.table.lock() {
                table.sweep(now);
                table.buckets.shrink_to_fit();
            }
        }
    }

    /// Buckets held now (the `sqi_ingest_rate_limit_keys` gauge).
    pub fn key_count(&self) -> usize {
        self.limits.as_ref().map_or(0, |limits| {
            limits.table.lock().map_or(0, |table| table.buckets.len())
        })
    }
}

impl Table {
    fn sweep(&mut self, now: u64) {
        self.buckets.retain(|_, tat| *tat > now);
        self.last_sweep = now;
    }
}

impl Limits {
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn key(&self, kind: Kind, network: u128, publisher: &str) -> u64 {
        self.seed.hash_one((kind, network, publisher))
    }

    fn check(
        &self,
        network: u128,
        per_publisher: &[(&str, u32)],
        now: u64,
    ) -> Result<(), Duration> {
        let Ok(mut table) = self.table.lock() else {
            // A poisoned lock means a panic elsewhere; failing open keeps
            // ingest answering, and the panic is already in the logs.
            return Ok(());
        };
        // Every bucket is judged before any is charged, so a refused request
        // costs the client nothing.
        let total = per_publisher
            .iter()
            .fold(0u32, |sum, (_, n)| sum.saturating_add(*n));
        let mut charges = Charges::default();
        if let Some(gcra) = self.network {
            let key = self.key(Kind::Network, network, "");
            charges.judge(
                &mut table,
                (Kind::Network, key, gcra),
                now,
                total,
                self.max_keys,
            )?;
        }
        if let Some(gcra) = self.publisher {
            for (publisher, events) in per_publisher {
                let key = self.key(Kind::Publisher, network, publisher);
                charges.judge(
                    &mut table,
                    (Kind::Publisher, key, gcra),
                    now,
                    *events,
                    self.max_keys,
                )?;
            }
        }
        for (slot, kind, next) in charges.0 {
            table.charge(slot, kind, next);
        }
        Ok(())
    }
}

/// One request's judged but not yet charged buckets.
#[derive(Default)]
struct Charges(Vec<(Option<u64>, Kind, u64)>);

impl Charges {
    fn judge(
        &mut self,
        table: &mut Table,
        (kind, key, gcra): (Kind, u64, Gcra),
        now: u64,
        events: u32,
        max_keys: usize,
    ) -> Result<(), Duration> {
        let new_keys = self
            .0
            .iter()
            .filter(|(slot, _, _)| slot.is_some_and(|k| !table.buckets.contains_key(&k)))
            .count();
        let slot = table.slot(key, now, max_keys.saturating_sub(new_keys));
        // A bucket judged earlier in this request (the overflow bucket can be)
        // is judged on from its pending time.
        let tat = self
            .0
            .iter()
            .rev()
            .find(|(s, k, _)| *s == slot && *k == kind)
            .map_or_else(|| table.tat(slot, kind), |(_, _, next)| *next);
        let next = gcra.take(tat, now, events)?;
        self.0.push((slot, kind, next));
        Ok(())
    }
}

impl Table {
    /// The key itself if it has or can get a bucket, `None` for the overflow bucket.
    fn slot(&mut self, key: u64, now: u64, max_keys: usize) -> Option<u64> {
        if self.buckets.contains_key(&key) || self.buckets.len() < max_keys {
            return Some(key);
        }
        if now.saturating_sub(self.last_sweep) >= SWEEP_EVERY.as_nanos() as u64 {
            self.sweep(now);
            if self.buckets.len() < max_keys {
                return Some(key);
            }
        }
        None
    }

    fn tat(&self, slot: Option<u64>, kind: Kind) -> u64 {
        match slot {
            Some(key) => self.buckets.get(&key).copied().unwrap_or(0),
            None => self.overflow[kind as usize],
        }
    }

    fn charge(&mut self, slot: Option<u64>, kind: Kind, next: u64) {
        match slot {
            Some(key) => {
                let _ = self.buckets.insert(key, next);
            }
            None => self.overflow[kind as usize] = next,
        }
    }
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        per_second: u32,
        burst: u32,
        network_per_second: u32,
        network_burst: u32,
    ) -> LimiterConfig {
        LimiterConfig {
            per_second,
            burst,
            network_per_second,
            network_burst,
            max_keys: 1000,
        }
    }

    #[test]
    fn a_client_over_its_allowance_is_told_to_wait() {
        let limiter = EventLimiter::new(config(1, 5, 0, 0));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.check(ip, &[("pub-1", 5)]).is_ok());
        let wait = limiter.check(ip, &[("pub-1", 1)]).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        // Other publishers and other networks have their own allowance.
        assert!(limiter.check(ip, &[("pub-2", 5)]).is_ok());
        assert!(
            limiter
                .check("192.0.2.2".parse().unwrap(), &[("pub-1", 5)])
                .is_ok()
        );
        assert!(
            EventLimiter::new(config(0, 0, 1, 1))
                .check(ip, &[("pub-1", 10_000)])
                .is_ok()
        );
        // A batch larger than any burst can never pass.
        assert_eq!(
            limiter.check("192.0.2.3".parse().unwrap(), &[("pub-1", 6)]),
            Err(Duration::from_secs(1))
        );
    }

    /// Item 10: rotating publisher names, or addresses inside one IPv6 /64,
    /// draws on one network allowance.
    #[test]
    fn item10_rotating_publishers_or_addresses_within_a_64_shares_one_allowance() {
        let limiter = EventLimiter::new(config(100, 100, 1, 10));
        let refused = (0..100u16)
            .filter(|i| {
                let ip = IpAddr::from([0x2001, 0xdb8, 1, 2, *i, i.wrapping_mul(7), 0, 1]);
                limiter.check(ip, &[(&format!("pub-{i}"), 1)]).is_err()
            })
            .count();
        assert_eq!(refused, 90);
        // The next /64 and an IPv4 client are unaffected.
        assert!(
            limiter
                .check("2001:db8:1:3::1".parse().unwrap(), &[("pub-1", 1)])
                .is_ok()
        );
        assert!(
            limiter
                .check("198.51.100.1".parse().unwrap(), &[("pub-1", 1)])
                .is_ok()
        );
        // IPv4-mapped addresses are their IPv4 address.
        assert_eq!(
            client_network("::ffff:198.51.100.1".parse().unwrap()),
            client_network("198.51.100.1".parse().unwrap())
        );
    }

    #[test]
    fn a_refused_request_costs_nothing() {
        let limiter = EventLimiter::new(config(1, 5, 1, 8));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.check(ip, &[("pub-1", 5)]).is_ok());
        // pub-2 fits its own bucket but not the network's: nothing is charged.
        assert!(limiter.check(ip, &[("pub-2", 4)]).is_err());
        assert!(limiter.check(ip, &[("pub-2", 3)]).is_ok());
    }

    /// Item 10: manufacturing keys cannot grow the limiter past its bound,
    /// and keys that find it full share one conservative allowance.
    #[test]
    fn item10_the_table_never_holds_more_than_its_bound() {
        let limiter = EventLimiter::new(LimiterConfig {
            per_second: 1,
            burst: 5,
            network_per_second: 1,
            network_burst: 10,
            max_keys: 100,
        });
        let mut refused = 0;
        for i in 0..10_000u32 {
            let ip = IpAddr::from([0x2001, 0xdb8, (i >> 16) as u16, i as u16, 0, 0, 0, 1]);
            if limiter.check(ip, &[(&format!("pub-{i}"), 1)]).is_err() {
                refused += 1;
            }
            assert!(limiter.key_count() <= 100, "{} keys", limiter.key_count());
        }
        // 50 networks fit (a network and a publisher bucket each); the rest
        // share the overflow buckets, whose burst is soon spent.
        assert!(refused > 9_900, "{refused}");
        limiter.housekeep();
        assert!(limiter.key_count() <= 100);
    }

    proptest::proptest! {
        /// Whatever the order of requests, a key never gets more than its
        /// burst plus its rate times the elapsed time.
        #[test]
        fn gcra_never_allows_more_than_burst_plus_rate(
            steps in proptest::collection::vec((0u64..300_000_000, 1u32..4), 1..200)
        ) {
            let gcra = Gcra::new(10, 20).unwrap();
            let (mut tat, mut now, mut taken) = (0u64, 0u64, 0u64);
            for (advance, events) in steps {
                now += advance;
                if let Ok(next) = gcra.take(tat, now, events) {
                    tat = next;
                    taken += u64::from(events);
                }
                proptest::prop_assert!(taken <= 20 + now * 10 / 1_000_000_000 + 1);
            }
        }
    }
}
