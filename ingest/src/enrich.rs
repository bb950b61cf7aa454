//! What the server adds to each event: the device class from the user agent
//! and the client IP, anonymised, honouring `X-Forwarded-For` only from
//! configured trusted proxies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use sqi_schemas::record::Device;

static UA_PARSER: LazyLock<woothee::parser::Parser> = LazyLock::new(woothee::parser::Parser::new);

/// Classifies a user agent with woothee's maintained dataset; tablets are told
/// apart from phones by the conventions browsers follow (`iPad`, Android without `Mobile`).
pub fn device_class(user_agent: Option<&str>) -> Device {
    let Some(ua) = user_agent.filter(|ua| !ua.trim().is_empty()) else {
        return Device::Other;
    };
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
