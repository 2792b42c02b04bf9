//! The indicator matcher: an immutable index of every stored indicator's values, built
//! off the hot path and swapped in whole.
//!
//! Exact values (addresses, URLs, emails, hashes) are hash-set lookups. IPv4 networks hang
//! off a table of the 65,536 `/16` blocks (256 KiB, cache-resident): an address whose block
//! no network touches — nearly all of them — costs one array read, and the others scan their
//! block's short list, longest prefix first. IPv6 networks are one hash map per prefix
//! length present, probed longest first. In front of the exact-address and domain tables
//! sits a small Bloom filter (one 64-bit word per key, about 10 bits per key, cache
//! resident), so the common case — a value no feed lists — never touches the large tables.
//! Domains match themselves and their subdomains: `cdn.evil.example` probes
//! `cdn.evil.example`, `evil.example` and `example`. Several indicators for one value form a
//! chain, most confident first; a match takes the first whose validity covers the event's
//! time, so a replay or backtest of old events sees the indicators valid back then.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use rustc_hash::FxHashMap;

use super::stix::Observable;
use crate::event::{Field, SecurityEvent, Threat};

const NONE: u32 = u32::MAX;

/// A Bloom filter with each key's three bits in one 64-bit word: one memory access per test.
#[derive(Debug, Default)]
struct Bloom {
    words: Vec<u64>,
}

fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn hash_str(s: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(s.as_bytes());
    mix(h.finish())
}

impl Bloom {
    fn with_keys(n: usize) -> Self {
        Self { words: vec![0; (n * 10 / 64).max(1).next_power_of_two()] }
    }

    fn slot(&self, h: u64) -> (usize, u64) {
        let bits = (1u64 << (h >> 58)) | (1u64 << ((h >> 52) & 63)) | (1u64 << ((h >> 46) & 63));
        ((h as usize) & (self.words.len() - 1), bits)
    }

    fn insert(&mut self, h: u64) {
        let (w, bits) = self.slot(h);
        self.words[w] |= bits;
    }

    /// False: certainly absent. True: maybe present.
    fn maybe(&self, h: u64) -> bool {
        if self.words.is_empty() {
            return true;
        }
        let (w, bits) = self.slot(h);
        self.words[w] & bits == bits
    }
}

/// What a feed says about an indicator beyond its values, shared by its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Threat actors and intrusion sets.
    pub actors: Vec<String>,
    /// Campaigns.
    pub campaigns: Vec<String>,
    /// Malware.
    pub malware: Vec<String>,
    /// Labels and indicator types.
    pub labels: Vec<String>,
    /// `chain:phase`.
    pub kill_chain_phases: Vec<String>,
}

/// One indicator as the matcher holds it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// STIX id.
    pub id: Box<str>,
    /// Name.
    pub name: Option<Box<str>>,
    /// Feed.
    pub feed: Arc<str>,
    /// 0–100.
    pub confidence: Option<u8>,
    /// Validity, milliseconds since the epoch: `[valid_from, valid_until)`.
    pub valid_from_ms: i64,
    /// End of validity (`i64::MAX` when open).
    pub valid_until_ms: i64,
    /// Related objects and labels.
    pub context: Arc<Context>,
}

/// An indicator to index, with its values.
#[derive(Clone, Debug)]
pub struct Indexed {
    /// The indicator.
    pub entry: Entry,
    /// Its values.
    pub observables: Vec<Observable>,
}

/// One match: the indicator and the kind of value.
#[derive(Clone, Copy, Debug)]
pub struct Hit<'a> {
    /// The indicator.
    pub entry: &'a Entry,
    /// Its STIX cyber-observable type (`ipv4-addr`, `domain-name`, …).
    pub kind: &'static str,
}

/// Counts of indexed values, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct MatcherStats {
    /// Indicators indexed.
    pub indicators: usize,
    /// Addresses.
    pub ips: usize,
    /// Networks.
    pub networks: usize,
    /// Domains.
    pub domains: usize,
    /// URLs.
    pub urls: usize,
    /// Email addresses.
    pub emails: usize,
    /// File hashes.
    pub hashes: usize,
}

/// The index. Cheap to share; rebuilt and swapped when indicators change.
#[derive(Debug, Default)]
pub struct Matcher {
    entries: Vec<Entry>,
    /// Chain links: `next[i]` is the next entry for the same value, or `NONE`.
    next: Vec<u32>,
    /// Exact IPv4 addresses.
    v4: FxHashMap<u32, u32>,
    v4_bloom: Bloom,
    domain_bloom: Bloom,
    /// Bit `n` set: some indicator domain has `n` labels (suffixes of other lengths are
    /// not looked up).
    domain_labels: u64,
    /// Per `/16` block: 0 when no network touches it, else 1 + an index into `v4_lists`.
    v4_blocks: Vec<u32>,
    /// The networks touching a block: (network, mask, chain head), longest prefix first.
    v4_lists: Vec<Vec<(u32, u32, u32)>>,
    v6: Vec<(u8, FxHashMap<u128, u32>)>,
    domains: FxHashMap<Box<str>, u32>,
    urls: FxHashMap<Box<str>, u32>,
    emails: FxHashMap<Box<str>, u32>,
    hashes: FxHashMap<Box<str>, u32>,
    stats: MatcherStats,
}

/// The fields enrichment looks at, with the kind of value each holds.
const FIELDS: [(Field, Kind); 10] = [
    (Field::SourceIp, Kind::Ip),
    (Field::DestinationIp, Kind::Ip),
    (Field::SourceDomain, Kind::Domain),
    (Field::DestinationDomain, Kind::Domain),
    (Field::UrlDomain, Kind::Domain),
    (Field::UrlFull, Kind::Url),
    (Field::UserEmail, Kind::Email),
    (Field::FileHashSha256, Kind::Hash),
    (Field::FileHashSha1, Kind::Hash),
    (Field::FileHashMd5, Kind::Hash),
];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Ip,
    Domain,
    Url,
    Email,
    Hash,
}

impl Matcher {
    /// Indexes `indicators`.
    pub fn build(indicators: Vec<Indexed>) -> Self {
        let mut m = Matcher::default();
        // Least confident first: each insert goes to the head of its value's chain, so the
        // chains end up most confident first.
        let mut indicators = indicators;
        indicators.sort_by_key(|i| i.entry.confidence);
        let mut v4: FxHashMap<u8, FxHashMap<u32, u32>> = FxHashMap::default();
        let mut v6: FxHashMap<u8, FxHashMap<u128, u32>> = FxHashMap::default();
        for Indexed { entry, observables } in indicators {
            let index = u32::try_from(m.entries.len()).unwrap_or(NONE - 1);
            if index == NONE - 1 {
                break;
            }
            m.entries.push(entry);
            m.next.push(NONE);
            m.stats.indicators += 1;
            for observable in observables {
                let slot = match observable {
                    Observable::Ip(IpAddr::V4(ip)) => {
                        m.stats.ips += 1;
                        m.v4.entry(u32::from(ip)).or_insert(NONE)
                    }
                    Observable::Ip(IpAddr::V6(ip)) => {
                        m.stats.ips += 1;
                        v6.entry(128).or_default().entry(u128::from(ip)).or_insert(NONE)
                    }
                    Observable::Cidr(IpNet::V4(net)) => {
                        m.stats.networks += 1;
                        v4.entry(net.prefix_len()).or_default().entry(u32::from(net.network())).or_insert(NONE)
                    }
                    Observable::Cidr(IpNet::V6(net)) => {
                        m.stats.networks += 1;
                        v6.entry(net.prefix_len()).or_default().entry(u128::from(net.network())).or_insert(NONE)
                    }
                    Observable::Domain(d) => {
                        m.stats.domains += 1;
                        m.domains.entry(d.into()).or_insert(NONE)
                    }
                    Observable::Url(u) => {
                        m.stats.urls += 1;
                        m.urls.entry(u.into()).or_insert(NONE)
                    }
                    Observable::Email(e) => {
                        m.stats.emails += 1;
                        m.emails.entry(e.into()).or_insert(NONE)
                    }
                    Observable::Hash(h) => {
                        m.stats.hashes += 1;
                        m.hashes.entry(h.into()).or_insert(NONE)
                    }
                };
                // One indicator may list a value twice (`IN` with repeats): chain it once.
                if *slot != index {
                    m.next[index as usize] = *slot;
                    *slot = index;
                }
            }
        }
        m.index_v4_networks(v4);
        m.v4_bloom = Bloom::with_keys(m.v4.len());
        for ip in m.v4.keys() {
            m.v4_bloom.insert(mix(u64::from(*ip)));
        }
        m.domain_bloom = Bloom::with_keys(m.domains.len());
        for domain in m.domains.keys() {
            m.domain_bloom.insert(hash_str(domain));
            m.domain_labels |= 1 << (domain.bytes().filter(|b| *b == b'.').count() + 1).min(63);
        }
        m.v6 = v6.into_iter().collect();
        m.v6.sort_by(|a, b| b.0.cmp(&a.0));
        m
    }

    /// Builds the `/16` block table from the networks by prefix length.
    fn index_v4_networks(&mut self, by_length: FxHashMap<u8, FxHashMap<u32, u32>>) {
        let mut lists: FxHashMap<u16, Vec<(u32, u32, u32, u8)>> = FxHashMap::default();
        for (len, networks) in by_length {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            for (network, head) in networks {
                let first = (network >> 16) as u16;
                let blocks = if len >= 16 { 1 } else { 1u32 << (16 - u32::from(len)) };
                for b in 0..blocks {
                    let block = first.wrapping_add(b as u16);
                    lists.entry(block).or_default().push((network, mask, head, len));
                }
            }
        }
        self.v4_blocks = vec![0; 1 << 16];
        for (block, mut list) in lists {
            list.sort_by(|a, b| b.3.cmp(&a.3));
            self.v4_lists.push(list.into_iter().map(|(n, m, h, _)| (n, m, h)).collect());
            self.v4_blocks[usize::from(block)] = u32::try_from(self.v4_lists.len()).unwrap_or(u32::MAX);
        }
    }

    /// What is indexed.
    pub fn stats(&self) -> MatcherStats {
        self.stats
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn first_valid(&self, mut at: u32, time_ms: i64) -> Option<&Entry> {
        while at != NONE {
            let entry = &self.entries[at as usize];
            if entry.valid_from_ms <= time_ms && time_ms < entry.valid_until_ms {
                return Some(entry);
            }
            at = self.next[at as usize];
        }
        None
    }

    /// The indicator for an address (exact, or the longest network containing it).
    pub fn ip(&self, ip: IpAddr, time_ms: i64) -> Option<&Entry> {
        match ip {
            IpAddr::V4(ip) => {
                let bits = u32::from(ip);
                if self.v4_bloom.maybe(mix(u64::from(bits)))
                    && let Some(entry) = self.v4.get(&bits).and_then(|&at| self.first_valid(at, time_ms))
                {
                    return Some(entry);
                }
                let slot = *self.v4_blocks.get(usize::from((bits >> 16) as u16))?;
                let list = self.v4_lists.get(slot.checked_sub(1)? as usize)?;
                list.iter().find_map(
                    |&(network, mask, head)| {
                        if bits & mask == network { self.first_valid(head, time_ms) } else { None }
                    },
                )
            }
            IpAddr::V6(ip) => {
                if let Some(v4) = ip.to_ipv4_mapped() {
                    return self.ip(IpAddr::V4(v4), time_ms);
                }
                let bits = u128::from(ip);
                self.v6.iter().find_map(|(len, map)| {
                    let mask = if *len == 0 { 0 } else { u128::MAX << (128 - u32::from(*len)) };
                    map.get(&(bits & mask)).and_then(|&at| self.first_valid(at, time_ms))
                })
            }
        }
    }

    /// The indicator for a domain or one of its parent domains.
    pub fn domain(&self, domain: &str, time_ms: i64) -> Option<&Entry> {
        if self.domains.is_empty() {
            return None;
        }
        let lowered;
        let mut d = domain.trim_end_matches('.');
        let (mut upper, mut dots) = (false, 0usize);
        for b in d.bytes() {
            upper |= b.is_ascii_uppercase();
            dots += usize::from(b == b'.');
        }
        if upper {
            lowered = d.to_ascii_lowercase();
            d = &lowered;
        }
        let mut labels = (dots + 1).min(63);
        loop {
            if self.domain_labels & (1 << labels) != 0
                && self.domain_bloom.maybe(hash_str(d))
                && let Some(entry) = self.domains.get(d).and_then(|&at| self.first_valid(at, time_ms))
            {
                return Some(entry);
            }
            match d.find('.') {
                Some(dot) => {
                    d = &d[dot + 1..];
                    labels -= 1;
                }
                None => return None,
            }
        }
    }

    fn exact<'a>(&'a self, map: &FxHashMap<Box<str>, u32>, value: &str, fold: bool, time_ms: i64) -> Option<&'a Entry> {
        if map.is_empty() {
            return None;
        }
        let at = if fold && value.bytes().any(|b| b.is_ascii_uppercase()) {
            map.get(value.to_ascii_lowercase().as_str())
        } else {
            map.get(value)
        };
        at.and_then(|&at| self.first_valid(at, time_ms))
    }

    /// The indicator for a URL (exactly).
    pub fn url(&self, url: &str, time_ms: i64) -> Option<&Entry> {
        self.exact(&self.urls, url, false, time_ms)
    }

    /// The indicator for an email address.
    pub fn email(&self, email: &str, time_ms: i64) -> Option<&Entry> {
        self.exact(&self.emails, email, true, time_ms)
    }

    /// The indicator for a file hash (MD5, SHA-1 or SHA-256, hex).
    pub fn hash(&self, hash: &str, time_ms: i64) -> Option<&Entry> {
        self.exact(&self.hashes, hash, true, time_ms)
    }

    /// The indicator for a value of unknown kind: an address, a URL (`scheme://`), an email
    /// address, a hash (32, 40 or 64 hex digits) or else a domain.
    pub fn any(&self, value: &str, time_ms: i64) -> Option<Hit<'_>> {
        if let Ok(ip) = value.parse::<IpAddr>() {
            let kind = if ip.is_ipv4() { "ipv4-addr" } else { "ipv6-addr" };
            return self.ip(ip, time_ms).map(|entry| Hit { entry, kind });
        }
        let (entry, kind) = if value.contains("://") {
            (self.url(value, time_ms), "url")
        } else if value.contains('@') {
            (self.email(value, time_ms), "email-addr")
        } else if matches!(value.len(), 32 | 40 | 64) && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            (self.hash(value, time_ms), "file")
        } else {
            (self.domain(value, time_ms), "domain-name")
        };
        entry.map(|entry| Hit { entry, kind })
    }

    /// The threat match for an event: every enriched field is looked up; the most
    /// confident indicator is reported and the number of matching fields counted.
    pub fn threat(&self, event: &SecurityEvent) -> Option<Threat> {
        if self.is_empty() {
            return None;
        }
        let time_ms = event.time.timestamp_millis();
        let mut best: Option<(Hit<'_>, Field, String)> = None;
        let mut matches = 0u32;
        // Events often carry one domain twice (destination.domain and url.domain).
        let mut last_domain: Option<(&str, Option<&Entry>)> = None;
        for (field, kind) in FIELDS {
            let Some(value) = field.get(event) else { continue };
            let hit = match (kind, &value) {
                (Kind::Ip, crate::event::FieldValue::Ip(ip)) => {
                    let kind = if ip.is_ipv4() { "ipv4-addr" } else { "ipv6-addr" };
                    self.ip(*ip, time_ms).map(|entry| Hit { entry, kind })
                }
                (Kind::Domain, crate::event::FieldValue::Str(text)) => {
                    let text: &str = text;
                    let entry = match last_domain {
                        Some((previous, entry)) if previous == text => entry,
                        _ => {
                            let entry = self.domain(text, time_ms);
                            last_domain = Some((text, entry));
                            entry
                        }
                    };
                    entry.map(|entry| Hit { entry, kind: "domain-name" })
                }
                (Kind::Url, v) => self.url(&v.to_text(), time_ms).map(|entry| Hit { entry, kind: "url" }),
                (Kind::Email, v) => self.email(&v.to_text(), time_ms).map(|entry| Hit { entry, kind: "email-addr" }),
                (Kind::Hash, v) => self.hash(&v.to_text(), time_ms).map(|entry| Hit { entry, kind: "file" }),
                _ => None,
            };
            let Some(hit) = hit else { continue };
            matches += 1;
            if best.as_ref().is_none_or(|(b, _, _)| hit.entry.confidence > b.entry.confidence) {
                best = Some((hit, field, value.to_text().into_owned()));
            }
        }
        let (hit, field, value) = best?;
        let e = hit.entry;
        Some(Threat {
            indicator_id: e.id.to_string(),
            indicator_name: e.name.as_deref().map(str::to_owned),
            indicator_type: hit.kind.to_owned(),
            feed: e.feed.to_string(),
            confidence: e.confidence,
            matched_field: field.name().to_owned(),
            matched_value: value,
            actors: e.context.actors.clone(),
            campaigns: e.context.campaigns.clone(),
            malware: e.context.malware.clone(),
            labels: e.context.labels.clone(),
            kill_chain_phases: e.context.kill_chain_phases.clone(),
            matches,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Endpoint, EventClass};

    fn entry(id: &str, confidence: Option<u8>, from: i64, until: i64) -> Entry {
        Entry {
            id: id.into(),
            name: None,
            feed: "test".into(),
            confidence,
            valid_from_ms: from,
            valid_until_ms: until,
            context: Arc::new(Context { actors: vec!["APT-T".into()], ..Context::default() }),
        }
    }

    fn indexed(id: &str, confidence: Option<u8>, observables: &[Observable]) -> Indexed {
        Indexed { entry: entry(id, confidence, 0, i64::MAX), observables: observables.to_vec() }
    }

    fn cidr(s: &str) -> Observable {
        Observable::Cidr(s.parse().expect("cidr"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn addresses_match_exactly_and_by_the_longest_network() {
        let m = Matcher::build(vec![
            indexed("indicator--wide", Some(10), &[cidr("10.0.0.0/8")]),
            indexed("indicator--narrow", Some(10), &[cidr("10.1.2.0/24")]),
            indexed("indicator--host", Some(10), &[Observable::Ip(ip("10.1.2.3"))]),
            indexed("indicator--v6", None, &[cidr("2001:db8::/32")]),
        ]);
        let id = |s: &str| m.ip(ip(s), 0).map(|e| e.id.to_string());
        assert_eq!(id("10.1.2.3").as_deref(), Some("indicator--host"));
        assert_eq!(id("10.1.2.4").as_deref(), Some("indicator--narrow"));
        assert_eq!(id("10.200.0.1").as_deref(), Some("indicator--wide"));
        assert_eq!(id("11.0.0.1"), None);
        assert_eq!(id("2001:db8:1::5").as_deref(), Some("indicator--v6"));
        assert_eq!(id("::ffff:10.9.9.9").as_deref(), Some("indicator--wide"));
        assert_eq!(id("2001:db9::1"), None);
        assert_eq!(m.stats().networks, 3);
    }

    #[test]
    fn domains_match_their_subdomains_and_nothing_else() {
        let m = Matcher::build(vec![indexed("indicator--d", None, &[Observable::Domain("evil.example.com".into())])]);
        assert!(m.domain("evil.example.com", 0).is_some());
        assert!(m.domain("CDN.Evil.Example.com.", 0).is_some());
        assert!(m.domain("notevil.example.com", 0).is_none());
        assert!(m.domain("example.com", 0).is_none());
        assert_eq!(m.any("a.evil.example.com", 0).map(|h| h.kind), Some("domain-name"));
    }

    #[test]
    fn the_most_confident_valid_indicator_wins() {
        let value = [Observable::Ip(ip("192.0.2.1"))];
        let m = Matcher::build(vec![
            Indexed { entry: entry("indicator--old", Some(90), 0, 1_000), observables: value.to_vec() },
            Indexed { entry: entry("indicator--low", Some(20), 0, i64::MAX), observables: value.to_vec() },
            Indexed { entry: entry("indicator--high", Some(80), 0, i64::MAX), observables: value.to_vec() },
            Indexed { entry: entry("indicator--future", Some(100), 5_000, i64::MAX), observables: value.to_vec() },
        ]);
        assert_eq!(m.ip(ip("192.0.2.1"), 500).map(|e| &*e.id), Some("indicator--old"));
        assert_eq!(m.ip(ip("192.0.2.1"), 2_000).map(|e| &*e.id), Some("indicator--high"));
        assert_eq!(m.ip(ip("192.0.2.1"), 6_000).map(|e| &*e.id), Some("indicator--future"));
    }

    #[test]
    fn an_event_is_enriched_from_every_field_it_has() {
        let m = Matcher::build(vec![
            indexed("indicator--ip", Some(40), &[Observable::Ip(ip("198.51.100.7"))]),
            indexed(
                "indicator--hash",
                Some(70),
                &[Observable::Hash("aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f".into())],
            ),
        ]);
        let mut event = SecurityEvent::new(EventClass::File, chrono::Utc::now());
        assert_eq!(m.threat(&event), None);
        event.destination = Some(Endpoint { ip: Some(ip("198.51.100.7")), ..Endpoint::default() });
        let t = m.threat(&event).expect("address matches");
        assert_eq!(
            (t.indicator_id.as_str(), t.matched_field.as_str(), t.matches),
            ("indicator--ip", "destination.ip", 1)
        );
        assert_eq!(t.actors, ["APT-T"]);
        event.file = Some(Box::new(crate::event::File {
            hash: Some(Box::new(crate::event::Hashes {
                sha256: Some("AEC070645FE53EE3B3763059376134F058CC337247C978ADD178B6CCDFB0019F".into()),
                ..Default::default()
            })),
            ..Default::default()
        }));
        let t = m.threat(&event).expect("both match");
        assert_eq!((t.indicator_id.as_str(), t.indicator_type.as_str(), t.matches), ("indicator--hash", "file", 2));
    }
}
