//! The demo's synthetic publishers and their traffic: who they are, how each
//! one's audience moves over the simulated weeks, and the widget requests a
//! live day turns into.
//!
//! Publishers trend differently, so that the SQI's 28-day window and its
//! history have something to show: some rise, some fall, some swing with
//! the week, most hold steady, and a few are new (their first day is inside
//! the window, so they are scored provisionally at first).

use chrono::{Datelike, NaiveDate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqi_batch::publishers::Publisher;

pub(super) const CATEGORIES: [(&str, u32); 6] = [
    ("news", 30),
    ("sports", 20),
    ("food", 17),
    ("tech", 14),
    ("lifestyle", 12),
    ("finance", 7),
];

pub(super) const CHANNELS: [&str; 12] = [
    "facebook",
    "twitter",
    "linkedin",
    "pinterest",
    "reddit",
    "whatsapp",
    "email",
    "telegram",
    "tumblr",
    "threads",
    "bluesky",
    "sms",
];

/// Pages each publisher's traffic lands on.
pub(super) const PAGES: u32 = 40;

const USER_AGENTS: [(&str, u32); 4] = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        58,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
        32,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
        6,
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        4,
    ),
];

/// The devices ingest derives from [`USER_AGENTS`], with the same weights:
/// the history written straight to the lake splits like the live traffic.
pub(super) const DEVICES: [(&str, u32); 4] =
    [("desktop", 58), ("mobile", 32), ("tablet", 6), ("bot", 4)];

/// How a publisher's audience moves from day to day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Trend {
    /// The same, give or take a day's noise.
    Steady,
    /// Growing by this fraction a day, in pageviews and share rate.
    Rising(f64),
    /// Shrinking by this fraction a day.
    Falling(f64),
    /// Busier at weekends by up to this fraction.
    Weekly(f64),
    /// No traffic before its first day (`days_before_live` days before the
    /// live day), when it was also created.
    New {
        /// Days before the live day its traffic starts.
        days_before_live: u32,
    },
}

/// One simulated publisher.
#[derive(Debug, Clone)]
pub(super) struct Model {
    pub(super) publisher: String,
    pageviews: f64,
    share_rate: f64,
    clickback_rate: f64,
    pub(super) trend: Trend,
}

/// One publisher's counts on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Counts {
    pub(super) pageviews: u32,
    pub(super) shares: u32,
    pub(super) clickbacks: u32,
}

impl Counts {
    pub(super) fn total(self) -> u64 {
        u64::from(self.pageviews) + u64::from(self.shares) + u64::from(self.clickbacks)
    }

    /// About `fraction` of each count.
    pub(super) fn scaled(self, fraction: f64) -> Self {
        let part = |n: u32| (f64::from(n) * fraction).round() as u32;
        Self {
            pageviews: part(self.pageviews),
            shares: part(self.shares),
            clickbacks: part(self.clickbacks),
        }
    }

    /// What is left of these counts after `part`.
    pub(super) fn minus(self, part: Self) -> Self {
        Self {
            pageviews: self.pageviews.saturating_sub(part.pageviews),
            shares: self.shares.saturating_sub(part.shares),
            clickbacks: self.clickbacks.saturating_sub(part.clickbacks),
        }
    }
}

pub(super) fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub(super) fn weighted<'a>(rng: &mut StdRng, items: &'a [(&'a str, u32)]) -> &'a str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for (item, weight) in items {
        if pick < *weight {
            return item;
        }
        pick -= weight;
    }
    items[0].0
}

/// `count` publishers, their dimension rows as of `live_day`, and their models.
pub(super) fn publishers(
    rng: &mut StdRng,
    count: u32,
    live_day: NaiveDate,
) -> (Vec<Publisher>, Vec<Model>) {
    let midnight = |day: NaiveDate| {
        day.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
    };
    let mut dimension = Vec::new();
    let mut models = Vec::new();
    for i in 0..count {
        let category = weighted(rng, &CATEGORIES);
        let publisher = format!("{category}-{i:05}");
        let trend = match rng.random_range(0..100) {
            0..25 => Trend::Rising(rng.random_range(0.015..0.035)),
            25..45 => Trend::Falling(rng.random_range(0.012..0.025)),
            45..65 => Trend::Weekly(rng.random_range(0.2..0.5)),
            65..71 => Trend::New {
                days_before_live: rng.random_range(3..20),
            },
            _ => Trend::Steady,
        };
        let created = match trend {
            Trend::New { days_before_live } => {
                live_day.checked_sub_days(chrono::Days::new(u64::from(days_before_live)))
            }
            _ => live_day.checked_sub_days(chrono::Days::new(120)),
        };
        dimension.push(Publisher {
            publisher: publisher.clone(),
            domain: Some(format!("{publisher}.example")),
            category: Some(category.to_owned()),
            created_at: created.and_then(midnight),
        });
        // Long-tailed audiences: most above the 1000-pageview eligibility
        // line over 28 days, some below.
        models.push(Model {
            publisher,
            pageviews: (2200.0 * (0.55 * normal(rng)).exp()).max(300.0),
            share_rate: 0.02 * (0.6 * normal(rng)).exp(),
            clickback_rate: 0.35 * (0.5 * normal(rng)).exp(),
            trend,
        });
    }
    (dimension, models)
}

impl Model {
    /// The counts on `day`, `days_before_live` days before the live day
    /// (negative: after it), scaled by `fraction` of the day (today, so
    /// far). Each day's noise comes from `seed`, the day and the publisher,
    /// so a day's counts do not depend on which other days were simulated.
    pub(super) fn counts(
        &self,
        seed: u64,
        day: NaiveDate,
        days_before_live: i64,
        fraction: f64,
    ) -> Counts {
        let mut rng = StdRng::seed_from_u64(
            seed ^ (u64::from(day.num_days_from_ce().unsigned_abs()) << 20)
                ^ fnv(self.publisher.as_bytes()),
        );
        let t = days_before_live as f64;
        let (volume, rate) = match self.trend {
            Trend::Steady => (1.0, 1.0),
            Trend::Rising(g) => ((1.0 + g).powf(-t), (1.0 + g / 2.0).powf(-t)),
            Trend::Falling(g) => ((1.0 - g).powf(-t), (1.0 - g / 2.0).powf(-t)),
            Trend::Weekly(amplitude) => {
                let weekend = matches!(day.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
                (
                    if weekend {
                        1.0 + amplitude
                    } else {
                        1.0 - amplitude / 3.0
                    },
                    1.0,
                )
            }
            Trend::New {
                days_before_live: first,
            } if days_before_live > i64::from(first) => {
                return Counts::default();
            }
            // A new publisher's audience builds over its first week.
            Trend::New {
                days_before_live: first,
            } => {
                let age = (i64::from(first) - days_before_live + 1) as f64;
                ((age / 7.0).min(1.0), 1.0)
            }
        };
        let noise = (0.12 * normal(&mut rng)).exp();
        let pageviews = (self.pageviews * volume * noise * fraction)
            .round()
            .max(0.0);
        let share_rate = self.share_rate * rate * (0.08 * normal(&mut rng)).exp();
        let shares = (pageviews * share_rate).round();
        let clickbacks = (shares * self.clickback_rate * (0.08 * normal(&mut rng)).exp()).round();
        Counts {
            pageviews: pageviews as u32,
            shares: shares as u32,
            clickbacks: clickbacks as u32,
        }
    }
}

/// FNV-1a: a stable hash of a publisher id, for per-publisher seeds.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The widget requests for `counts` (by publisher), each event at a random
/// time in `[from_ms, to_ms)`: batches of up to 200 events sharing a user agent.
pub(super) fn requests(
    rng: &mut StdRng,
    counts: &[(&str, Counts)],
    from_ms: i64,
    to_ms: i64,
) -> Vec<(&'static str, serde_json::Value)> {
    let mut bodies = Vec::new();
    for (publisher, day) in counts {
        let mut events = Vec::new();
        let mut push = |rng: &mut StdRng, kind: &str| {
            let ts = rng.random_range(from_ms..to_ms.max(from_ms + 1));
            let path = rng.random_range(0..PAGES);
            let mut event = json!({
                "publisher": publisher, "type": kind, "ts": ts,
                "url": page_url(publisher, path),
                "visitor": format!("v{}", rng.random_range(0..100_000)),
            });
            if kind != "pageview" {
                event["channel"] = json!(CHANNELS[rng.random_range(0..CHANNELS.len())]);
            }
            events.push(event);
        };
        (0..day.pageviews).for_each(|_| push(rng, "pageview"));
        (0..day.shares).for_each(|_| push(rng, "share"));
        (0..day.clickbacks).for_each(|_| push(rng, "clickback"));
        for chunk in events.chunks(200) {
            bodies.push((weighted(rng, &USER_AGENTS), json!({ "events": chunk })));
        }
    }
    bodies
}

/// The URL of page `path` of `publisher`, as the widget reports it.
pub(super) fn page_url(publisher: &str, path: u32) -> String {
    format!("https://{publisher}.example/articles/{path}")
}

// Test code only: an unwrap here fails the test with its cause.
#[cfg(test)]
mod tests {
    use super::*;

    fn model(trend: Trend) -> Model {
        Model {
            publisher: "news-00001".into(),
            pageviews: 3000.0,
            share_rate: 0.02,
            clickback_rate: 0.3,
            trend,
        }
    }

    fn day(offset: i64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 6)
            .unwrap()
            .checked_sub_signed(chrono::Duration::days(offset))
            .unwrap()
    }

    #[test]
    fn trends_move_the_way_they_say() {
        let sum = |m: &Model, from: i64, to: i64| -> u64 {
            (from..to)
                .map(|t| u64::from(m.counts(1, day(t), t, 1.0).pageviews))
                .sum()
        };
        let rising = model(Trend::Rising(0.03));
        assert!(sum(&rising, 0, 7) > 2 * sum(&rising, 28, 35));
        let falling = model(Trend::Falling(0.02));
        assert!(sum(&falling, 0, 7) * 3 < sum(&falling, 28, 35) * 2);
        let new = model(Trend::New {
            days_before_live: 5,
        });
        assert_eq!(sum(&new, 6, 35), 0);
        assert!(sum(&new, 0, 6) > 0);
        // A day's counts are the same whichever days are simulated with it.
        let steady = model(Trend::Steady);
        assert_eq!(
            steady.counts(9, day(3), 3, 1.0),
            steady.counts(9, day(3), 3, 1.0)
        );
        assert_ne!(
            steady.counts(9, day(3), 3, 1.0),
            steady.counts(9, day(4), 4, 1.0)
        );
    }
}
