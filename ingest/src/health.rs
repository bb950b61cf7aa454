//! Liveness and readiness of the producer, from librdkafka's own statistics.
//!
//! librdkafka calls back with statistics every second from its event loop, so
//! a callback that stops arriving means that loop has stalled (liveness), and
//! the broker states inside it say whether any broker is reachable (readiness).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::statistics::Statistics;
use sqi_kafka::Connection;

/// How often librdkafka reports statistics; the health deadlines are multiples of it.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Shared health state, written by the producer's callbacks and read by probes.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    last_stats_ms: AtomicU64,
    last_broker_up_ms: AtomicU64,
    broker_ever_up: AtomicBool,
    shutting_down: AtomicBool,
    unready_after: Duration,
    stall_after: Duration,
}

impl Health {
    /// New state: live until the first statistics are overdue, not ready until a broker is up.
    pub fn new(unready_after: Duration, stall_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last_stats_ms: AtomicU64::new(0),
            last_broker_up_ms: AtomicU64::new(0),
            broker_ever_up: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            unready_after,
            stall_after,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn since(&self, ms: &AtomicU64) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(ms.load(Ordering::Relaxed)))
    }

    /// Records one statistics callback.
    pub fn observe(&self, statistics: &Statistics) {
        let now = self.now_ms();
        self.last_stats_ms.store(now, Ordering::Relaxed);
        // Only learned brokers count: the bootstrap entry can be UP while no
        // partition leader is reachable.
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        if up {
            self.last_broker_up_ms.store(now, Ordering::Relaxed);
            self.broker_ever_up.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the producer's event loop is still reporting.
    pub fn is_live(&self) -> bool {
        self.since(&self.last_stats_ms) < self.stall_after
    }

    /// Whether a broker was reachable within the readiness window.
    pub fn broker_reachable(&self) -> bool {
        self.broker_ever_up.load(Ordering::Relaxed)
            && self.since(&self.last_broker_up_ms) < self.unready_after
    }

    /// Whether the broker is known to be unreachable: it was up and has been
    /// gone for the readiness window, or it never came up within that window.
    /// Requests then get 503 at once instead of waiting out the delivery timeout.
    pub fn broker_known_down(&self) -> bool {
        if self.broker_ever_up.load(Ordering::Relaxed) {
            self.since(&self.last_broker_up_ms) >= self.unready_after
        } else {
            self.started.elapsed() >= self.unready_after
        }
    }

    /// Whether the service should receive traffic.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst) && self.broker_reachable()
    }

    /// Readiness goes false for good.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// The producer's client context: feeds [`Health`]; logs, connection
/// failures and MSK IAM tokens are the [`Connection`]'s.
#[derive(Debug, Clone)]
pub struct HealthContext {
    /// The state this context updates.
    pub health: Arc<Health>,
    /// The process's connection to Kafka.
    pub connection: Connection,
}

impl ClientContext for HealthContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.connection.log(level, facility, message);
    }

    fn stats(&self, statistics: Statistics) {
        self.health.observe(&statistics);
        self.connection.observe(&statistics);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.connection.error(&error, reason);
    }

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.connection.oauth_token()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_from_the_event_loop_fails_liveness_and_a_lost_broker_fails_readiness() {
        let health = Health::new(Duration::from_millis(50), Duration::from_millis(50));
        assert!(
            health.is_live(),
            "live until the first statistics are overdue"
        );
        assert!(!health.is_ready(), "not ready before any broker was seen");
        assert!(
            !health.broker_known_down(),
            "a young process is not yet known down"
        );

        let mut statistics = Statistics::default();
        let broker = rdkafka::statistics::Broker {
            nodeid: 1,
            state: "UP".into(),
            ..Default::default()
        };
        let _ = statistics.brokers.insert("b1".into(), broker);
        health.observe(&statistics);
        assert!(health.is_live() && health.is_ready());

        std::thread::sleep(Duration::from_millis(80));
        assert!(
            !health.is_live(),
            "no statistics for longer than the stall window"
        );
        assert!(!health.is_ready() && health.broker_known_down());

        health.observe(&statistics);
        assert!(health.is_ready());
        health.begin_shutdown();
        assert!(!health.is_ready() && health.is_live());
    }
}
