//! What the server adds to each event: the device class from the user agent
//! and the client IP, anonymised, honouring `X-Forwarded-For` only from
//! configured trusted proxies.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{LazyLock, Mutex};

use sqi_schemas::record::Device;

static UA_PARSER: LazyLock<woothee::parser::Parser> = LazyLock::new(woothee::parser::Parser::new);

/// User agents remembered with their class. A few thousand distinct agents
/// carry nearly all browser traffic, and a parse costs about 7.5 µs against
/// well under 1 µs for a hit.
const DEVICE_CACHE_ENTRIES: usize = 8192;

/// Longer user agents are classified but not remembered: real ones are a few
/// hundred bytes, so this bounds the cache at about 8192 × 2 × 512 bytes.
const DEVICE_CACHE_MAX_KEY_BYTES: usize = 512;

static DEVICE_CACHE: LazyLock<DeviceCache> =
    LazyLock::new(|| DeviceCache::new(DEVICE_CACHE_ENTRIES));

/// The device class of a user agent (see [`classify`]), from a bounded cache.
pub fn device_class(user_agent: Option<&str>) -> Device {
    DEVICE_CACHE.device_class(user_agent)
}

/// Remembers the class of recently seen user agents, bounded in entries and
/// key bytes whatever clients send.
///
/// Each shard keeps two generations: lookups check the young one, then the
/// old one (moving a hit back to the young one), and a full young generation
/// becomes the old one, dropping the previous old one. An agent in use stays;
/// a flood of unique agents costs each request one parse, as with no cache,
/// and at most two generations of memory. The hasher is seeded per process,
/// so nobody can pick agents that collide.
#[derive(Debug)]
pub struct DeviceCache {
    shards: Vec<Mutex<Generations>>,
    per_generation: usize,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct Generations {
    young: HashMap<Box<str>, Device>,
    old: HashMap<Box<str>, Device>,
}

/// Shards, so that request threads rarely wait on one lock.
const DEVICE_CACHE_SHARDS: usize = 16;

impl DeviceCache {
    /// A cache of at most `entries` user agents (rounded up to one per shard
    /// and generation).
    pub fn new(entries: usize) -> Self {
        Self {
            shards: (0..DEVICE_CACHE_SHARDS).map(|_| Mutex::default()).collect(),
            per_generation: entries.div_ceil(2 * DEVICE_CACHE_SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    /// The class of `user_agent`, parsed once while it stays in use.
    pub fn device_class(&self, user_agent: Option<&str>) -> Device {
        let Some(ua) = user_agent.filter(|ua| !ua.trim().is_empty()) else {
            return Device::Other;
        };
        if ua.len() > DEVICE_CACHE_MAX_KEY_BYTES {
            return classify(ua);
        }
        let index = (self.hasher.hash_one(ua) as usize) % self.shards.len();
        // A poisoned shard only means a panic elsewhere mid-update; the maps
        // are still valid, so keep using them.
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(device) = shard.young.get(ua) {
            return *device;
        }
        let device = match shard.old.remove(ua) {
            Some(device) => device,
            None => classify(ua),
        };
        if shard.young.len() >= self.per_generation {
            shard.old = std::mem::take(&mut shard.young);
        }
        let _ = shard.young.insert(ua.into(), device);
        device
    }

    /// User agents held now (at most the `entries` given to [`Self::new`],
    /// rounded up).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                shard.young.len() + shard.old.len()
            })
            .sum()
    }

    /// Whether it holds no user agent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Classifies a user agent with woothee's maintained dataset; tablets are told
/// apart from phones by the conventions browsers follow (`iPad`, Android without `Mobile`).
pub fn classify(ua: &str) -> Device {
    if ua.trim().is_empty() {
        return Device::Other;
    }
    let Some(result) = UA_PARSER.parse(ua) else {
        return Device::Other;
    };
    match result.category {
        "crawler" => Device::Bot,
        "pc" => Device::Desktop,
        "smartphone" | "mobilephone" => {
            let is_tablet = ua.contains("iPad")
                || ua.contains("Tablet")
                || (ua.contains("Android") && !ua.contains("Mobile"));
            if is_tablet {
                Device::Tablet
            } else {
                Device::Mobile
            }
        }
        _ => Device::Other,
    }
}

/// Keeps the network part only: /24 for IPv4, /48 for IPv6.
pub fn anonymize(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Ipv4Addr::new(a, b, c, 0).to_string()
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return anonymize(IpAddr::V4(v4));
            }
            let s = v6.segments();
            Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
        }
    }
}

/// A network in CIDR form, e.g. `10.0.0.0/8` or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has a bad prefix length"))?
        };
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which
/// case the right-most `X-Forwarded-For` entry that is not itself trusted.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_map_to_device_classes() {
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        let ipad = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        let desktop = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert_eq!(device_class(Some(iphone)), Device::Mobile);
        assert_eq!(device_class(Some(ipad)), Device::Tablet);
        assert_eq!(device_class(Some(desktop)), Device::Desktop);
        assert_eq!(device_class(Some(googlebot)), Device::Bot);
        assert_eq!(device_class(None), Device::Other);
    }

    /// The corpus in `testdata/user_agents.txt`.
    fn corpus() -> Vec<&'static str> {
        include_str!("../testdata/user_agents.txt")
            .lines()
            .filter(|line| !line.starts_with('#'))
            .collect()
    }

    /// Issue 22 check 3: the cache answers what an uncached parse answers,
    /// for every agent of the corpus, on first sight, on hits, and after
    /// evictions (a cache of 4 for 50 agents evicts all the time).
    #[test]
    fn the_cache_answers_what_a_parse_answers() {
        let corpus = corpus();
        assert!(corpus.len() >= 40, "the corpus shrank");
        for cache in [DeviceCache::new(4), DeviceCache::new(DEVICE_CACHE_ENTRIES)] {
            // Three rounds in different orders, so that hits, misses and
            // evictions interleave differently.
            for step in [1, 7, 13] {
                for i in 0..corpus.len() {
                    let ua = corpus[(i * step) % corpus.len()];
                    assert_eq!(cache.device_class(Some(ua)), classify(ua), "{ua:?}");
                }
            }
            assert_eq!(cache.device_class(None), Device::Other);
        }
        // And each class is represented, so the corpus tests something.
        let classes: std::collections::BTreeSet<Device> =
            corpus.iter().map(|ua| classify(ua)).collect();
        assert_eq!(
            classes,
            [
                Device::Desktop,
                Device::Mobile,
                Device::Tablet,
                Device::Bot,
                Device::Other
            ]
            .into()
        );
    }

    /// Issue 22 check 3: a flood of unique agents (as a hostile client sends)
    /// never grows the cache past its bound, and agents longer than the key
    /// bound are not kept at all.
    #[test]
    fn the_cache_stays_bounded_under_unique_agents() {
        let cache = DeviceCache::new(64);
        for i in 0..20_000 {
            let ua = format!("Mozilla/5.0 (X11; Linux x86_64) Flood/{i}");
            let _ = cache.device_class(Some(&ua));
            assert!(cache.len() <= 64, "{} agents held after {i}", cache.len());
        }
        let fresh = DeviceCache::new(64);
        let long = format!("Mozilla/5.0 {}", "x".repeat(DEVICE_CACHE_MAX_KEY_BYTES));
        assert_eq!(fresh.device_class(Some(&long)), classify(&long));
        assert!(fresh.is_empty(), "an agent over the key bound was kept");
    }

    proptest::proptest! {
        /// Any string, cached or not, gets the class a parse gives it.
        #[test]
        fn any_agent_gets_the_parsed_class(agents in proptest::collection::vec(".{0,80}", 1..40)) {
            let cache = DeviceCache::new(8);
            for ua in agents.iter().chain(agents.iter()) {
                proptest::prop_assert_eq!(cache.device_class(Some(ua)), classify(ua));
            }
        }
    }

    #[test]
    fn ips_are_cut_to_24_and_48_bits() {
        assert_eq!(anonymize("203.0.113.77".parse().unwrap()), "203.0.113.0");
        assert_eq!(
            anonymize("2001:db8:abcd:12::1".parse().unwrap()),
            "2001:db8:abcd::"
        );
        assert_eq!(
            anonymize("::ffff:198.51.100.9".parse().unwrap()),
            "198.51.100.0"
        );
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        let header = Some("192.0.2.9, 10.9.9.9");
        assert_eq!(
            client_ip(proxy, header, &trusted),
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, header, &trusted), stranger);
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }
}
