//! Abuse control: a GCRA rate limit per `(publisher, client IP)`, from the
//! maintained `governor` crate, counted in events rather than requests so that
//! one large batch weighs what its events weigh.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The per-(publisher, IP) limiter; `None` inside means no limit.
#[derive(Clone)]
pub struct EventLimiter {
    limiter: Option<Arc<DefaultKeyedRateLimiter<(String, IpAddr)>>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for EventLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLimiter")
            .field("enabled", &self.limiter.is_some())
            .finish()
    }
}

impl EventLimiter {
    /// `per_second` events with bursts of `burst`; 0 per second disables the limit.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
        }
    }

    /// Takes `events` from the key's allowance, or says how long to wait.
    pub fn check(&self, publisher: &str, ip: IpAddr, events: u32) -> Result<(), Duration> {
        let (Some(limiter), Some(n)) = (&self.limiter, NonZeroU32::new(events)) else {
            return Ok(());
        };
        match limiter.check_key_n(&(publisher.to_owned(), ip), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // More events than the burst can ever hold: waiting a second is the honest answer.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    /// Forgets keys whose allowance is full again, so memory follows active clients only.
    pub fn housekeep(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_allowance_is_told_to_wait() {
        let limiter = EventLimiter::new(1, 5);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.check("pub-1", ip, 5).is_ok());
        let wait = limiter.check("pub-1", ip, 1).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        // Other publishers and other addresses have their own allowance.
        assert!(limiter.check("pub-2", ip, 5).is_ok());
        assert!(
            limiter
                .check("pub-1", "192.0.2.2".parse().unwrap(), 5)
                .is_ok()
        );
        assert!(EventLimiter::new(0, 0).check("pub-1", ip, 10_000).is_ok());
    }
}
