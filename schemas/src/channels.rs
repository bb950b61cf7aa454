//! The social channel catalog: the slugs an event's `channel` may take.
//!
//! The catalog is data (`data/channels.csv`, compiled in) so that adding a channel
//! is a one-line change reviewed like any other. Each channel has one canonical,
//! lower-case slug and any number of aliases (`x` → `twitter`). Lookups are
//! case-insensitive; everything downstream sees only canonical slugs.

use std::collections::HashMap;
use std::sync::LazyLock;

const CATALOG_CSV: &str = include_str!("../data/channels.csv");

/// One social channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// The canonical slug, as stored in Kafka and the lake.
    pub slug: &'static str,
    /// A human-readable name.
    pub name: &'static str,
    /// Other spellings that resolve to this channel.
    pub aliases: Vec<&'static str>,
}

struct Catalog {
    channels: Vec<Channel>,
    by_name: HashMap<&'static str, usize>,
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| parse_catalog(CATALOG_CSV));

fn parse_catalog(csv: &'static str) -> Catalog {
    let mut channels = Vec::new();
    let mut by_name = HashMap::new();
    // The file is checked by unit tests (no duplicates, no collisions, well formed),
    // so a malformed line here can only come from an untested edit; it is skipped
    // rather than aborting a running service.
    for line in csv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut fields = line.splitn(3, ',');
        let (Some(slug), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        let aliases: Vec<&'static str> = fields
            .next()
            .unwrap_or("")
            .split('|')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        let index = channels.len();
        by_name.entry(slug).or_insert(index);
        for alias in &aliases {
            by_name.entry(*alias).or_insert(index);
        }
        channels.push(Channel {
            slug,
            name,
            aliases,
        });
    }
    Catalog { channels, by_name }
}

/// Resolves a slug or alias, case-insensitively, to its channel.
pub fn resolve(name: &str) -> Option<&'static Channel> {
    let catalog = &*CATALOG;
    let index = match catalog.by_name.get(name) {
        Some(index) => *index,
        None => *catalog.by_name.get(name.to_ascii_lowercase().as_str())?,
    };
    catalog.channels.get(index)
}

/// Every channel, in catalog order.
pub fn all() -> &'static [Channel] {
    &CATALOG.channels
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn catalog_has_at_least_120_channels() {
        assert!(all().len() >= 120, "only {} channels", all().len());
    }

    #[test]
    fn every_line_parses_and_nothing_collides() {
        let lines = CATALOG_CSV.lines().skip(1).filter(|l| !l.trim().is_empty());
        assert_eq!(lines.count(), all().len());
        let mut seen = HashSet::new();
        for channel in all() {
            assert_eq!(channel.slug, channel.slug.to_ascii_lowercase());
            assert!(
                channel
                    .slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "slug {} must be [a-z0-9]",
                channel.slug
            );
            assert!(seen.insert(channel.slug), "duplicate {}", channel.slug);
            for alias in &channel.aliases {
                assert!(seen.insert(alias), "alias {alias} collides");
            }
        }
    }

    #[test]
    fn aliases_and_case_resolve_to_the_canonical_slug() {
        assert_eq!(resolve("x").map(|c| c.slug), Some("twitter"));
        assert_eq!(resolve("FaceBook").map(|c| c.slug), Some("facebook"));
        assert_eq!(resolve("fb").map(|c| c.slug), Some("facebook"));
        assert_eq!(resolve("no-such-channel"), None);
    }
}
