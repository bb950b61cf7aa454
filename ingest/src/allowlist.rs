//! The optional publisher allowlist: from a file, or from the lake's
//! `publishers` table, refreshed in the background. In `observe` mode unknown
//! publishers, and pages off a publisher's registered domain, are counted; in
//! `enforce` mode their events are rejected.
//!
//! A publisher id is public (it is in every page's widget), so the domain
//! check is what ties an event to the publisher it names: a page URL must be
//! on the publisher's registered `domain` or a subdomain of it. It cannot
//! tell a real browser on the publisher's page from a script that sends the
//! same request; `SECURITY.md` says what covers that.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqi_schemas::lake::Lake;

/// What an allowlist does with an unknown publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AllowlistMode {
    /// No allowlist.
    Off,
    /// Accept, and count in `sqi_ingest_unknown_publisher_events_total`
    /// (unknown publishers) or `sqi_ingest_domain_mismatch_events_total`
    /// (pages off the publisher's registered domain).
    Observe,
    /// Reject the event with `unknown_publisher` or `domain_mismatch`.
    Enforce,
}

/// The known publishers, each with its registered domain if it has one.
pub type Publishers = HashMap<String, Option<String>>;

/// The set of known publishers, swapped whole on refresh.
#[derive(Debug, Clone)]
pub struct Allowlist {
    mode: AllowlistMode,
    known: Arc<RwLock<Arc<Publishers>>>,
}

/// The verdict on one publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Known, or no allowlist.
    Allowed,
    /// Unknown, but observe mode lets it through.
    Observed,
    /// Unknown, and enforce mode rejects it.
    Rejected,
    /// Known, but the page is not on its domain: observe mode lets it through.
    OffDomainObserved,
    /// Known, but the page is not on its domain, and enforce mode rejects it.
    OffDomainRejected,
}

impl Allowlist {
    /// An allowlist in `mode` with no publishers yet.
    pub fn new(mode: AllowlistMode) -> Self {
        Self {
            mode,
            known: Arc::new(RwLock::new(Arc::new(HashMap::new()))),
        }
    }

    /// Whether an allowlist is configured at all.
    pub fn is_enabled(&self) -> bool {
        self.mode != AllowlistMode::Off
    }

    /// Replaces the known publishers.
    pub fn replace(&self, publishers: Publishers) {
        if let Ok(mut known) = self.known.write() {
            *known = Arc::new(publishers);
        }
    }

    /// Judges one event by its publisher and page URL.
    pub fn check(&self, publisher: &str, url: &str) -> Verdict {
        if self.mode == AllowlistMode::Off {
            return Verdict::Allowed;
        }
        // A poisoned lock (a panic elsewhere) lets events through rather
        // than refusing every publisher.
        let Ok(known) = self.known.read().map(|k| Arc::clone(&k)) else {
            return Verdict::Allowed;
        };
        let enforce = self.mode == AllowlistMode::Enforce;
        match known.get(publisher) {
            None if enforce => Verdict::Rejected,
            None => Verdict::Observed,
            Some(Some(domain)) if !is_on_domain(url, domain) => {
                if enforce {
                    Verdict::OffDomainRejected
                } else {
                    Verdict::OffDomainObserved
                }
            }
            Some(_) => Verdict::Allowed,
        }
    }
}

/// A registered domain as compared: lower case, no trailing dot, no `www.`,
/// and no scheme or path if someone registered a URL.
fn normalize_domain(domain: &str) -> Option<String> {
    let domain = domain.trim().to_ascii_lowercase();
    let domain = domain
        .split_once("://")
        .map_or(domain.as_str(), |(_, rest)| rest);
    let domain = domain.split(['/', ':']).next().unwrap_or("");
    let domain = domain.trim_end_matches('.');
    let domain = domain.strip_prefix("www.").unwrap_or(domain);
    (!domain.is_empty()).then(|| domain.to_owned())
}

/// Whether `url`'s host is `domain` or a subdomain of it. The host is the
/// URL parser's (so `https://news.example@evil.com/` is on `evil.com`).
pub fn is_on_domain(url: &str, domain: &str) -> bool {
    let Some(host) = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_end_matches('.').to_owned()))
    else {
        return false;
    };
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Reads publishers from a text file: one id per line, or a CSV whose
/// `publisher` column (or first column) holds the ids and whose `domain`
/// column, if any, their registered domains; `#` starts a comment.
pub fn parse_file(text: &str) -> Publishers {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (mut column, mut domain_column) = (0, None);
    let mut set = Publishers::new();
    let mut add = |line: &str, column: usize, domain_column: Option<usize>| {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if let Some(id) = cells.get(column).filter(|id| !id.is_empty()) {
            let domain = domain_column
                .and_then(|c| cells.get(c))
                .and_then(|d| normalize_domain(d));
            let _ = set.insert((*id).to_owned(), domain);
        }
    };
    if let Some(first) = lines.next() {
        let headers: Vec<String> = first
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        match headers.iter().position(|h| h == "publisher") {
            Some(index) => {
                column = index;
                domain_column = headers.iter().position(|h| h == "domain");
            }
            None => add(first, 0, None),
        }
    }
    for line in lines {
        add(line, column, domain_column);
    }
    set
}

/// Reads the publishers, and their domains if the table has them, from the
/// lake's `publishers` table.
pub async fn load_from_lake(lake: &Lake) -> Result<Publishers, String> {
    let rows = sqi_schemas::lake::publishers::read(lake)
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let domain = row.domain.as_deref().and_then(normalize_domain);
            (row.publisher, domain)
        })
        .collect())
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ids(publishers: &Publishers) -> HashSet<&str> {
        publishers.keys().map(String::as_str).collect()
    }

    #[test]
    fn files_may_be_plain_lists_or_csv() {
        assert_eq!(
            ids(&parse_file("# known\npub-1\npub-2\n\n")),
            HashSet::from(["pub-1", "pub-2"])
        );
        let csv = parse_file("domain,publisher\nA.com,pub-a\nhttps://www.b.com/,pub-b\n,pub-c\n");
        assert_eq!(ids(&csv), HashSet::from(["pub-a", "pub-b", "pub-c"]));
        assert_eq!(csv["pub-a"].as_deref(), Some("a.com"));
        assert_eq!(csv["pub-b"].as_deref(), Some("b.com"));
        assert_eq!(csv["pub-c"], None);
    }

    #[test]
    fn modes_decide_what_happens_to_strangers() {
        let enforce = Allowlist::new(AllowlistMode::Enforce);
        enforce.replace(parse_file("pub-1\n"));
        assert_eq!(
            enforce.check("pub-1", "https://any.example/"),
            Verdict::Allowed
        );
        assert_eq!(
            enforce.check("pub-2", "https://any.example/"),
            Verdict::Rejected
        );
        let observe = Allowlist::new(AllowlistMode::Observe);
        assert_eq!(
            observe.check("pub-2", "https://any.example/"),
            Verdict::Observed
        );
        assert_eq!(
            Allowlist::new(AllowlistMode::Off).check("x", "https://any.example/"),
            Verdict::Allowed
        );
    }

    /// Item 11: a page off the publisher's registered domain is not its page.
    #[test]
    fn item11_pages_must_be_on_the_registered_domain_or_a_subdomain() {
        let enforce = Allowlist::new(AllowlistMode::Enforce);
        enforce.replace(parse_file("publisher,domain\nnews,news.example\n"));
        for url in [
            "https://news.example/",
            "http://www.news.example/a",
            "https://NEWS.EXAMPLE./x",
            "https://a.b.news.example:8443/",
        ] {
            assert_eq!(enforce.check("news", url), Verdict::Allowed, "{url}");
        }
        for url in [
            "https://evil.example/",
            "https://news.example.evil.com/",
            "https://evilnews.example/",
            "https://news.example@evil.com/",
            "https://evil.com/?u=https://news.example/",
            "https://[::1]/",
        ] {
            assert_eq!(
                enforce.check("news", url),
                Verdict::OffDomainRejected,
                "{url}"
            );
        }
        let observe = Allowlist::new(AllowlistMode::Observe);
        observe.replace(parse_file("publisher,domain\nnews,news.example\n"));
        assert_eq!(
            observe.check("news", "https://evil.example/"),
            Verdict::OffDomainObserved
        );
    }
}
