//! The indicator matcher: an immutable index of every stored indicator's values, built
//! off the hot path and swapped in whole.
//!
//! Exact values (addresses, URLs, emails, hashes) are hash-set lookups. IPv4 networks hang
//! off a table of the 65,536 `/16` blocks, each listing the networks touching it, longest
//! prefix first. IPv6 networks are one hash map per prefix length present, probed longest
//! first. Domains match themselves and their subdomains: `cdn.evil.example` probes
//! `cdn.evil.example`, `evil.example` and `example`. Several indicators for one value form a
//! chain, most confident first; a match takes the first whose validity covers the event's
//! time, so a replay or backtest of old events sees the indicators valid back then.
//!
//! Nearly every value an event carries is listed by no feed, so the large tables sit behind
//! small screens: Bloom filters (one 64-bit word per key, about 10 bits per key) over the
//! exact addresses, the domains and the other texts, and one bit per `/22` block that some
//! IPv4 network touches. Enrichment works on a batch ([`Matcher::threats`]): it gathers every
//! value, asking the CPU for each value's screen words and text as it goes; screens them all
//! in a loop whose reads do not wait on one another; and looks only the survivors up.

use std::borrow::Borrow;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use rustc_hash::FxHashMap;

use super::stix::Observable;
use crate::event::{Field, FieldValue, SecurityEvent, Threat};

const NONE: u32 = u32::MAX;

/// The IPv4 network screen's block size, as a prefix length: `/22` blocks, 512 KiB of bits.
const NET_BITS: u32 = 22;

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
        Self { words: vec![0; (n * 10 / 64).clamp(1, u32::MAX as usize)] }
    }

    /// The word (from the hash's low 32 bits, scaled to the length) and the key's three bits
    /// in it (from the top 18).
    fn slot(&self, h: u64) -> (usize, u64) {
        let bits = (1u64 << (h >> 58)) | (1u64 << ((h >> 52) & 63)) | (1u64 << ((h >> 46) & 63));
        ((((h & 0xffff_ffff) * self.words.len() as u64) >> 32) as usize, bits)
    }

    fn insert(&mut self, h: u64) {
        let (w, bits) = self.slot(h);
        self.words[w] |= bits;
    }

    /// The word holding a key's bits.
    fn word(&self, h: u64) -> Option<&u64> {
        self.words.get(self.slot(h).0)
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
    /// URLs, and emails and hashes lowercased.
    text_bloom: Bloom,
    /// Bit `n` set: some indicator domain has `n` labels (suffixes of other lengths are
    /// not looked up).
    domain_labels: u64,
    /// One bit per `/NET_BITS` block: set when some network touches it (screens addresses
    /// before `v4_blocks`).
    v4_nets: Vec<u64>,
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
        m.text_bloom = Bloom::with_keys(m.urls.len() + m.emails.len() + m.hashes.len());
        for text in m.urls.keys() {
            m.text_bloom.insert(hash_str(text));
        }
        for text in m.emails.keys().chain(m.hashes.keys()) {
            m.text_bloom.insert(hash_folded(text));
        }
        m.v6 = v6.into_iter().collect();
        m.v6.sort_by_key(|b| std::cmp::Reverse(b.0));
        m
    }

    /// Builds the `/16` block table from the networks by prefix length.
    fn index_v4_networks(&mut self, by_length: FxHashMap<u8, FxHashMap<u32, u32>>) {
        let mut lists: FxHashMap<u16, Vec<(u32, u32, u32, u8)>> = FxHashMap::default();
        self.v4_nets = vec![0; (1 << NET_BITS) / 64];
        for (len, networks) in by_length {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            for (network, head) in networks {
                let first = network >> (32 - NET_BITS);
                let count = if u32::from(len) >= NET_BITS { 1 } else { 1u32 << (NET_BITS - u32::from(len)) };
                for b in first..first + count {
                    self.v4_nets[(b >> 6) as usize] |= 1 << (b & 63);
                }
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
            list.sort_by_key(|a| std::cmp::Reverse(a.3));
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
                if !self.v4_net_may_match(bits) {
                    return None;
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

    /// Whether some network may contain the address (false: certainly none).
    fn v4_net_may_match(&self, bits: u32) -> bool {
        let block = bits >> (32 - NET_BITS);
        self.v4_nets.get((block >> 6) as usize).is_some_and(|word| word >> (block & 63) & 1 == 1)
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

    /// The threat match for an event: see [`threats`](Self::threats).
    pub fn threat(&self, event: &SecurityEvent) -> Option<Threat> {
        self.threats(std::slice::from_ref(event)).pop().map(|(_, threat)| threat)
    }

    /// The threat matches of a batch of events, as (index in `events`, match) in index
    /// order; most events match nothing and are not listed. Every enriched field is looked
    /// up; the most confident indicator is reported and the number of matching fields
    /// counted.
    ///
    /// A batch is looked up in three passes so that its table reads overlap instead of
    /// waiting on each other: the values are gathered; each is screened against the
    /// cache-sized filters in a tight loop whose reads do not depend on one another (all
    /// but a few values stop here); the survivors are looked up in the full tables.
    pub fn threats<E: Borrow<SecurityEvent>>(&self, events: &[E]) -> Vec<(usize, Threat)> {
        let mut out = Vec::new();
        if self.is_empty() {
            return out;
        }
        let mut probes: Vec<Probe<'_>> = Vec::with_capacity(events.len() * 2);
        let mut v4: Vec<(u32, u32)> = Vec::with_capacity(events.len() * 2);
        for (at, event) in events.iter().enumerate() {
            self.gather(u32::try_from(at).unwrap_or(u32::MAX), event.borrow(), &mut probes, &mut v4);
        }
        // Screening: two independent reads per IPv4 address (its Bloom word and its
        // network block's bit), so the CPU keeps many in flight.
        for &(probe, bits) in &v4 {
            let maybe = self.v4_bloom.maybe(mix(u64::from(bits))) | self.v4_net_may_match(bits);
            if let Some(p) = probes.get_mut(probe as usize) {
                p.maybe = maybe;
            }
        }
        // Texts (IPv6 addresses go straight to their tables). Domains repeat: an event often
        // carries one twice (destination.domain and url.domain), and a site's or a resolver's
        // events carry the same few; one equal to the last screened is not screened again.
        let mut last_domain: Option<(&str, bool)> = None;
        for p in &mut probes {
            let FieldValue::Str(text) = p.value else { continue };
            let maybe = match p.kind {
                Kind::Domain => match last_domain {
                    Some((last, maybe)) if last == text => maybe,
                    _ => {
                        let maybe = self.domain_may_match(text);
                        last_domain = Some((text, maybe));
                        maybe
                    }
                },
                Kind::Url => !self.urls.is_empty() && self.text_bloom.maybe(hash_str(text)),
                Kind::Email => !self.emails.is_empty() && self.text_bloom.maybe(hash_folded(text)),
                Kind::Hash => !self.hashes.is_empty() && self.text_bloom.maybe(hash_folded(text)),
                Kind::Ip => p.maybe,
            };
            p.maybe = maybe;
        }
        let mut best: Option<(u32, Hit<'_>, Field, &FieldValue<'_>)> = None;
        let mut matches = 0u32;
        for p in probes.iter().filter(|p| p.maybe) {
            let time_ms = events[p.event as usize].borrow().time.timestamp_millis();
            let Some(hit) = self.lookup(p.kind, &p.value, time_ms) else { continue };
            if best.is_some_and(|(at, ..)| at != p.event)
                && let Some((at, hit, field, value)) = best.take()
            {
                out.push((at as usize, report(hit, field, value, matches)));
                matches = 0;
            }
            matches += 1;
            if best.is_none_or(|(_, b, _, _)| hit.entry.confidence > b.entry.confidence) {
                best = Some((p.event, hit, p.field, &p.value));
            }
        }
        if let Some((at, hit, field, value)) = best {
            out.push((at as usize, report(hit, field, value, matches)));
        }
        out
    }

    /// Collects the values of `event` that enrichment looks up, addresses first: source and
    /// destination addresses and domains, the URL's domain and text, the user's email, the
    /// file's hashes. IPv4 addresses (and IPv4-mapped IPv6 ones) are also listed in `v4`.
    fn gather<'e>(&self, at: u32, event: &'e SecurityEvent, probes: &mut Vec<Probe<'e>>, v4: &mut Vec<(u32, u32)>) {
        let mut push = |field: Field, kind: Kind, value: FieldValue<'e>| self.push(at, field, kind, value, probes, v4);
        let text = |s: &'e Option<String>| s.as_deref().map(FieldValue::Str);
        let (source, destination) = (event.source.as_ref(), event.destination.as_ref());
        if let Some(ip) = source.and_then(|e| e.ip) {
            push(Field::SourceIp, Kind::Ip, FieldValue::Ip(ip));
        }
        if let Some(ip) = destination.and_then(|e| e.ip) {
            push(Field::DestinationIp, Kind::Ip, FieldValue::Ip(ip));
        }
        if let Some(d) = source.and_then(|e| text(&e.domain)) {
            push(Field::SourceDomain, Kind::Domain, d);
        }
        if let Some(d) = destination.and_then(|e| text(&e.domain)) {
            push(Field::DestinationDomain, Kind::Domain, d);
        }
        if let Some(url) = &event.url {
            if let Some(d) = text(&url.domain) {
                push(Field::UrlDomain, Kind::Domain, d);
            }
            if let Some(full) = text(&url.full) {
                push(Field::UrlFull, Kind::Url, full);
            }
        }
        if let Some(email) = event.user.as_ref().and_then(|u| text(&u.email)) {
            push(Field::UserEmail, Kind::Email, email);
        }
        if let Some(hashes) = event.file.as_ref().and_then(|f| f.hash.as_ref()) {
            for (field, hash) in [
                (Field::FileHashSha256, &hashes.sha256),
                (Field::FileHashSha1, &hashes.sha1),
                (Field::FileHashMd5, &hashes.md5),
            ] {
                if let Some(hash) = text(hash) {
                    push(field, Kind::Hash, hash);
                }
            }
        }
    }

    /// Lists one value to look up, and asks for what screening it will read.
    #[inline(always)]
    fn push<'e>(
        &self,
        at: u32,
        field: Field,
        kind: Kind,
        value: FieldValue<'e>,
        probes: &mut Vec<Probe<'e>>,
        v4: &mut Vec<(u32, u32)>,
    ) {
        if let FieldValue::Ip(ip) = value {
            let bits = match ip {
                IpAddr::V4(ip) => Some(u32::from(ip)),
                IpAddr::V6(ip) => ip.to_ipv4_mapped().map(u32::from),
            };
            if let Some(bits) = bits {
                v4.push((u32::try_from(probes.len()).unwrap_or(u32::MAX), bits));
                // Ask for the screening reads now: they arrive while the rest of the batch
                // is gathered.
                prefetch(self.v4_bloom.word(mix(u64::from(bits))));
                let block = bits >> (32 - NET_BITS);
                prefetch(self.v4_nets.get((block >> 6) as usize));
            }
        } else if let FieldValue::Str(text) = value {
            // The text is read when screened, and a batch of decoded events outgrows
            // the cache.
            prefetch(text.as_bytes().first());
        }
        probes.push(Probe { event: at, field, kind, value, maybe: true });
    }

    /// Whether a domain or one of its parents may be listed (false: certainly not).
    fn domain_may_match(&self, domain: &str) -> bool {
        if self.domains.is_empty() {
            return false;
        }
        let d = domain.trim_end_matches('.');
        // One pass: where each label starts, and whether the name needs folding.
        let mut starts = [0usize; 16];
        let (mut labels, mut upper) = (1usize, false);
        for (at, b) in d.bytes().enumerate() {
            upper |= b.is_ascii_uppercase();
            if b == b'.' {
                if let Some(start) = starts.get_mut(labels) {
                    *start = at + 1;
                }
                labels += 1;
            }
        }
        if upper || labels > starts.len() {
            return true;
        }
        // The suffix of `n` labels starts at label `labels - n`.
        let mut maybe = false;
        for n in 1..=labels.min(63) {
            if self.domain_labels & (1 << n) != 0 {
                maybe |= self.domain_bloom.maybe(hash_str(&d[starts[labels - n]..]));
            }
        }
        maybe
    }

    /// The full lookup of one value.
    fn lookup(&self, kind: Kind, value: &FieldValue<'_>, time_ms: i64) -> Option<Hit<'_>> {
        match (kind, value) {
            (Kind::Ip, FieldValue::Ip(ip)) => {
                let kind = if ip.is_ipv4() { "ipv4-addr" } else { "ipv6-addr" };
                self.ip(*ip, time_ms).map(|entry| Hit { entry, kind })
            }
            (Kind::Domain, FieldValue::Str(d)) => {
                self.domain(d, time_ms).map(|entry| Hit { entry, kind: "domain-name" })
            }
            (Kind::Url, v) => self.url(&v.to_text(), time_ms).map(|entry| Hit { entry, kind: "url" }),
            (Kind::Email, v) => self.email(&v.to_text(), time_ms).map(|entry| Hit { entry, kind: "email-addr" }),
            (Kind::Hash, v) => self.hash(&v.to_text(), time_ms).map(|entry| Hit { entry, kind: "file" }),
            _ => None,
        }
    }
}

/// One value of one event, to look up.
struct Probe<'e> {
    /// Index of the event in the batch.
    event: u32,
    field: Field,
    kind: Kind,
    value: FieldValue<'e>,
    /// Whether the screening let it through.
    maybe: bool,
}

/// The `threat` fields of an event's best match.
fn report(hit: Hit<'_>, field: Field, value: &FieldValue<'_>, matches: u32) -> Threat {
    let e = hit.entry;
    Threat {
        indicator_id: e.id.to_string(),
        indicator_name: e.name.as_deref().map(str::to_owned),
        indicator_type: hit.kind.to_owned(),
        feed: e.feed.to_string(),
        confidence: e.confidence,
        matched_field: field.name().to_owned(),
        matched_value: value.to_text().into_owned(),
        actors: e.context.actors.clone(),
        campaigns: e.context.campaigns.clone(),
        malware: e.context.malware.clone(),
        labels: e.context.labels.clone(),
        kill_chain_phases: e.context.kill_chain_phases.clone(),
        matches,
    }
}

/// Asks the CPU to bring `value`'s cache line in, without waiting for it.
#[allow(unsafe_code)]
fn prefetch<T>(value: Option<&T>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(value) = value {
        // SAFETY: a prefetch is a hint with no effect on memory or program state; the
        // pointer comes from a live reference. SSE is part of the x86_64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(value).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// [`hash_str`] of the ASCII-lowercased text, without allocating for short texts.
fn hash_folded(s: &str) -> u64 {
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return hash_str(s);
    }
    let mut buf = [0u8; 128];
    match buf.get_mut(..s.len()) {
        Some(folded) => {
            folded.copy_from_slice(s.as_bytes());
            folded.make_ascii_lowercase();
            let mut h = rustc_hash::FxHasher::default();
            std::hash::Hasher::write(&mut h, folded);
            mix(std::hash::Hasher::finish(&h))
        }
        None => hash_str(&s.to_ascii_lowercase()),
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

    /// What enrichment must report for one event, from the single-value lookups: every
    /// field looked up, the first most confident hit reported, the hits counted.
    fn reference(m: &Matcher, e: &SecurityEvent) -> Option<(String, &'static str, u32)> {
        let t = e.time.timestamp_millis();
        let text = |s: &Option<String>| s.clone();
        let fields: Vec<(Field, Option<Hit<'_>>)> = vec![
            (Field::SourceIp, e.source.as_ref().and_then(|s| s.ip).and_then(|ip| m.any(&ip.to_string(), t))),
            (Field::DestinationIp, e.destination.as_ref().and_then(|s| s.ip).and_then(|ip| m.any(&ip.to_string(), t))),
            (Field::SourceDomain, e.source.as_ref().and_then(|s| text(&s.domain)).and_then(|d| m.any(&d, t))),
            (Field::DestinationDomain, e.destination.as_ref().and_then(|s| text(&s.domain)).and_then(|d| m.any(&d, t))),
            (Field::UrlDomain, e.url.as_ref().and_then(|u| text(&u.domain)).and_then(|d| m.any(&d, t))),
            (Field::UrlFull, e.url.as_ref().and_then(|u| text(&u.full)).and_then(|d| m.any(&d, t))),
            (Field::UserEmail, e.user.as_ref().and_then(|u| text(&u.email)).and_then(|d| m.any(&d, t))),
        ];
        let mut best: Option<(Hit<'_>, Field)> = None;
        let mut matches = 0;
        for (field, hit) in fields {
            let Some(hit) = hit else { continue };
            matches += 1;
            if best.is_none_or(|(b, _)| hit.entry.confidence > b.entry.confidence) {
                best = Some((hit, field));
            }
        }
        best.map(|(hit, field)| (hit.entry.id.to_string(), field.name(), matches))
    }

    #[test]
    fn a_batch_is_enriched_as_each_of_its_events_alone() {
        let m = Matcher::build(vec![
            indexed("indicator--host", Some(60), &[Observable::Ip(ip("198.51.100.7"))]),
            indexed("indicator--net", Some(30), &[cidr("203.0.113.0/24")]),
            indexed("indicator--wide", Some(20), &[cidr("10.0.0.0/10")]),
            indexed("indicator--v6", Some(50), &[cidr("2001:db8::/48")]),
            indexed("indicator--domain", Some(70), &[Observable::Domain("evil.example".into())]),
            indexed("indicator--url", Some(80), &[Observable::Url("http://evil.example/x".into())]),
            indexed("indicator--email", Some(40), &[Observable::Email("ceo@evil.example".into())]),
        ]);
        let endpoint = |ip_text: Option<&str>, domain: Option<&str>| {
            Some(Endpoint { ip: ip_text.map(ip), domain: domain.map(str::to_owned), ..Endpoint::default() })
        };
        let now = chrono::Utc::now();
        let mut events = Vec::new();
        for i in 0..40u8 {
            let mut e = SecurityEvent::new(EventClass::Network, now);
            e.source = endpoint(Some(&format!("192.0.2.{i}")), None);
            match i % 8 {
                0 => e.destination = endpoint(Some("198.51.100.7"), Some("CDN.Evil.Example.")),
                1 => e.source = endpoint(Some(&format!("203.0.113.{i}")), Some("good.example")),
                2 => e.source = endpoint(Some(&format!("::ffff:10.{i}.0.1")), None),
                3 => e.destination = endpoint(Some("2001:db8:0:1::9"), None),
                4 => {
                    e.destination = endpoint(None, Some("a.evil.example"));
                    e.url = Some(Box::new(crate::event::Url {
                        domain: Some("a.evil.example".into()),
                        full: Some("http://evil.example/x".into()),
                        ..Default::default()
                    }));
                }
                5 => {
                    e.user = Some(Box::new(crate::event::User {
                        email: Some("CEO@Evil.Example".into()),
                        ..Default::default()
                    }))
                }
                // 6 and 7 match nothing; 7 follows 6 so two misses sit between hits.
                _ => {}
            }
            events.push(e);
        }
        let batch = m.threats(&events);
        let got: Vec<(usize, (String, &str, u32))> =
            batch.iter().map(|(at, t)| (*at, (t.indicator_id.clone(), t.matched_field.as_str(), t.matches))).collect();
        let want: Vec<(usize, (String, &str, u32))> =
            events.iter().enumerate().filter_map(|(at, e)| reference(&m, e).map(|r| (at, r))).collect();
        assert_eq!(got, want);
        assert_eq!(got.len(), 30, "six of every eight events match");
        assert_eq!(got[0].1, ("indicator--domain".to_owned(), "destination.domain", 2));
        assert_eq!(got.iter().find(|(at, _)| at % 8 == 4).map(|(_, r)| r.2), Some(3), "the domain counts twice");
        for (at, threat) in &batch {
            assert_eq!(m.threat(&events[*at]).as_ref(), Some(threat), "event {at} alone");
        }
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
