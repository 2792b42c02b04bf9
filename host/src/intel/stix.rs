//! STIX 2.1: the objects a feed sends (indicators, relationships and the objects they
//! point at) and the subset of the patterning language a per-value matcher can answer.
//!
//! A pattern is matchable when it is a disjunction — `OR` between observation expressions
//! or inside one — of comparisons of a supported value with `=`, `IN` or `ISSUBSET`:
//! `ipv4-addr:value`, `ipv6-addr:value` (addresses and CIDRs), `domain-name:value`,
//! `url:value`, `email-addr:value` and `file:hashes.'MD5'|'SHA-1'|'SHA-256'`. Anything else
//! (`AND`, `FOLLOWEDBY`, qualifiers, other objects or operators) needs several values of one
//! or more events at once; such an indicator is skipped with the reason, never half-applied.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One value an indicator matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "kebab-case")]
pub enum Observable {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// An IPv4 or IPv6 network.
    Cidr(IpNet),
    /// A domain name (lower-cased, without a trailing dot); matches its subdomains too.
    Domain(String),
    /// A URL, exactly.
    Url(String),
    /// An email address (lower-cased).
    Email(String),
    /// A file hash, lower-case hex; MD5, SHA-1 and SHA-256 are told apart by length.
    Hash(String),
}

impl Observable {
    /// The STIX cyber-observable type the value belongs to.
    pub fn stix_type(&self) -> &'static str {
        match self {
            Self::Ip(IpAddr::V4(_)) => "ipv4-addr",
            Self::Ip(IpAddr::V6(_)) => "ipv6-addr",
            Self::Cidr(IpNet::V4(_)) => "ipv4-addr",
            Self::Cidr(IpNet::V6(_)) => "ipv6-addr",
            Self::Domain(_) => "domain-name",
            Self::Url(_) => "url",
            Self::Email(_) => "email-addr",
            Self::Hash(_) => "file",
        }
    }
}

/// Why a pattern cannot be matched value by value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("pattern {what}")]
pub struct PatternError {
    what: String,
}

impl PatternError {
    fn new(what: impl Into<String>) -> Self {
        Self { what: what.into() }
    }
}

/// The values a STIX pattern matches, when it is a disjunction of single-value comparisons.
pub fn observables(pattern: &str) -> Result<Vec<Observable>, PatternError> {
    let tokens = tokenize(pattern)?;
    let mut parser = Parser { tokens, at: 0, out: Vec::new() };
    parser.pattern()?;
    if parser.at != parser.tokens.len() {
        return Err(PatternError::new(format!(
            "has an unsupported part at token {} ({:?}): qualifiers are not supported",
            parser.at + 1,
            parser.tokens[parser.at]
        )));
    }
    let mut out = parser.out;
    out.sort();
    out.dedup();
    Ok(out)
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Open,
    Close,
    OpenParen,
    CloseParen,
    Comma,
    Word(String),
    Str(String),
    Op(String),
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, PatternError> {
    let mut tokens = Vec::new();
    let mut chars = pattern.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '[' => tokens.push(Token::Open),
            ']' => tokens.push(Token::Close),
            '(' => tokens.push(Token::OpenParen),
            ')' => tokens.push(Token::CloseParen),
            ',' => tokens.push(Token::Comma),
            '\'' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, e @ ('\'' | '\\'))) => s.push(e),
                            _ => return Err(PatternError::new(format!("has a bad escape in the string at {i}"))),
                        },
                        Some((_, '\'')) => break,
                        Some((_, c)) => s.push(c),
                        None => return Err(PatternError::new(format!("has an unterminated string at {i}"))),
                    }
                }
                tokens.push(Token::Str(s));
            }
            '=' | '!' | '<' | '>' => {
                let mut op = c.to_string();
                if let Some((_, '=')) = chars.peek() {
                    op.push('=');
                    chars.next();
                }
                tokens.push(Token::Op(op));
            }
            c if c.is_alphanumeric() || c == '_' || c == '-' => {
                let mut word = c.to_string();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '*') {
                        word.push(c);
                        chars.next();
                    } else if c == '\'' && word.ends_with('.') {
                        // `file:hashes.'SHA-256'`: a quoted path segment.
                        chars.next();
                        for (_, c) in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                            word.push(c);
                        }
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(PatternError::new(format!("has an unexpected character {other:?} at {i}"))),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    out: Vec<Observable>,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, want: &Token) -> Result<(), PatternError> {
        match self.next() {
            Some(t) if &t == want => Ok(()),
            other => Err(PatternError::new(format!("expected {want:?}, found {other:?}"))),
        }
    }

    fn keyword(&self) -> Option<&str> {
        match self.peek() {
            Some(Token::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    /// pattern := observation (OR observation)*
    fn pattern(&mut self) -> Result<(), PatternError> {
        self.observation()?;
        loop {
            match self.keyword() {
                Some("OR") => {
                    self.at += 1;
                    self.observation()?;
                }
                Some(k @ ("AND" | "FOLLOWEDBY")) => {
                    return Err(PatternError::new(format!(
                        "combines observations with {k}, which needs several events at once"
                    )));
                }
                _ => return Ok(()),
            }
        }
    }

    /// observation := '[' comparison (OR comparison)* ']' | '(' pattern ')'
    fn observation(&mut self) -> Result<(), PatternError> {
        match self.next() {
            Some(Token::Open) => {
                self.comparisons()?;
                self.expect(&Token::Close)
            }
            Some(Token::OpenParen) => {
                self.pattern()?;
                self.expect(&Token::CloseParen)
            }
            other => Err(PatternError::new(format!("expected '[' or '(', found {other:?}"))),
        }
    }

    fn comparisons(&mut self) -> Result<(), PatternError> {
        self.comparison()?;
        loop {
            match self.keyword() {
                Some("OR") => {
                    self.at += 1;
                    self.comparison()?;
                }
                Some("AND") => {
                    return Err(PatternError::new("joins comparisons with AND, which one value cannot satisfy"));
                }
                _ => return Ok(()),
            }
        }
    }

    fn comparison(&mut self) -> Result<(), PatternError> {
        if self.peek() == Some(&Token::OpenParen) {
            self.at += 1;
            self.comparisons()?;
            return self.expect(&Token::CloseParen);
        }
        let path = match self.next() {
            Some(Token::Word(w)) => w,
            other => return Err(PatternError::new(format!("expected an object path, found {other:?}"))),
        };
        let op = match self.next() {
            Some(Token::Op(op)) => op,
            Some(Token::Word(w)) if w == "NOT" => {
                return Err(PatternError::new("negates a comparison (NOT), which matches almost everything"));
            }
            Some(Token::Word(w)) => w,
            other => return Err(PatternError::new(format!("expected an operator after {path}, found {other:?}"))),
        };
        let values = match self.next() {
            Some(Token::Str(s)) => vec![s],
            Some(Token::OpenParen) => {
                let mut values = Vec::new();
                loop {
                    match self.next() {
                        Some(Token::Str(s)) => values.push(s),
                        other => return Err(PatternError::new(format!("expected a string in a set, found {other:?}"))),
                    }
                    match self.next() {
                        Some(Token::Comma) => {}
                        Some(Token::CloseParen) => break,
                        other => return Err(PatternError::new(format!("expected ',' or ')', found {other:?}"))),
                    }
                }
                values
            }
            other => return Err(PatternError::new(format!("compares {path} with {other:?}, not a string"))),
        };
        match op.as_str() {
            "=" if values.len() == 1 => {}
            "IN" => {}
            "ISSUBSET" if path.ends_with("-addr:value") && values.len() == 1 => {}
            other => {
                return Err(PatternError::new(format!("uses {other} on {path}, which is not a single-value match")));
            }
        }
        for value in values {
            self.out.push(observable(&path, &value)?);
        }
        Ok(())
    }
}

fn observable(path: &str, value: &str) -> Result<Observable, PatternError> {
    let bad = |why: &str| PatternError::new(format!("compares {path} with {value:?}, {why}"));
    Ok(match path {
        "ipv4-addr:value" | "ipv6-addr:value" => {
            let v4 = path.starts_with("ipv4");
            if let Ok(ip) = value.parse::<IpAddr>() {
                if ip.is_ipv4() != v4 {
                    return Err(bad("an address of the other family"));
                }
                Observable::Ip(ip)
            } else if let Ok(net) = value.parse::<IpNet>() {
                if matches!(net, IpNet::V4(_)) != v4 {
                    return Err(bad("a network of the other family"));
                }
                Observable::Cidr(net.trunc())
            } else {
                return Err(bad("not an address or a CIDR"));
            }
        }
        "domain-name:value" => {
            let d = normalize_domain(value);
            if d.is_empty() || d.contains(['/', ' ', '@']) {
                return Err(bad("not a domain name"));
            }
            Observable::Domain(d)
        }
        "url:value" => Observable::Url(value.to_owned()),
        "email-addr:value" => {
            if !value.contains('@') {
                return Err(bad("not an email address"));
            }
            Observable::Email(value.to_ascii_lowercase())
        }
        p if p.starts_with("file:hashes.") => {
            let algo = p["file:hashes.".len()..].trim_matches('\'').to_ascii_uppercase().replace('-', "");
            let len = match algo.as_str() {
                "MD5" => 32,
                "SHA1" => 40,
                "SHA256" => 64,
                _ => return Err(PatternError::new(format!("uses hash {algo}; MD5, SHA-1 and SHA-256 are supported"))),
            };
            if value.len() != len || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!("not {len} hex digits")));
            }
            Observable::Hash(value.to_ascii_lowercase())
        }
        other => return Err(PatternError::new(format!("uses {other}, which Vigil does not match"))),
    })
}

/// A domain as the matcher keys it: lower case, no trailing dot.
pub fn normalize_domain(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

/// A kill-chain phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillChainPhase {
    /// The chain (`mitre-attack`, `lockheed-martin-cyber-kill-chain`).
    pub kill_chain_name: String,
    /// The phase within it.
    pub phase_name: String,
}

/// The parts of a STIX object Vigil reads. Fields it does not use are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct StixObject {
    /// `indicator`, `relationship`, `malware`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// `<type>--<uuid>`.
    pub id: String,
    /// The version: objects are deduplicated by id and this time.
    #[serde(default)]
    pub modified: Option<DateTime<Utc>>,
    /// Creation time (the version of objects that have no `modified`).
    #[serde(default)]
    pub created: Option<DateTime<Utc>>,
    /// Withdrawn by its producer.
    #[serde(default)]
    pub revoked: bool,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The pattern (indicators).
    #[serde(default)]
    pub pattern: Option<String>,
    /// The pattern language (indicators); only `stix` is matched.
    #[serde(default)]
    pub pattern_type: Option<String>,
    /// Start of validity (indicators).
    #[serde(default)]
    pub valid_from: Option<DateTime<Utc>>,
    /// End of validity (indicators).
    #[serde(default)]
    pub valid_until: Option<DateTime<Utc>>,
    /// 0–100.
    #[serde(default)]
    pub confidence: Option<u8>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Indicator types (`malicious-activity`, …).
    #[serde(default)]
    pub indicator_types: Vec<String>,
    /// Kill-chain phases.
    #[serde(default)]
    pub kill_chain_phases: Vec<KillChainPhase>,
    /// Relationship type (relationships).
    #[serde(default)]
    pub relationship_type: Option<String>,
    /// Relationship source.
    #[serde(default)]
    pub source_ref: Option<String>,
    /// Relationship target.
    #[serde(default)]
    pub target_ref: Option<String>,
}

impl StixObject {
    /// The object's version: `modified`, else `created`.
    pub fn version(&self) -> Option<DateTime<Utc>> {
        self.modified.or(self.created)
    }
}

/// Reads the objects of a bundle or a TAXII envelope (`{"objects": [...]}`), keeping each
/// bad object's index and reason instead of failing the rest.
pub fn parse_objects(doc: &Value) -> (Vec<StixObject>, Vec<(usize, String)>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let Some(objects) = doc.get("objects").and_then(Value::as_array) else {
        if doc.is_object() {
            return (good, bad);
        }
        bad.push((0, "the document is not a JSON object".into()));
        return (good, bad);
    };
    for (i, object) in objects.iter().enumerate() {
        match serde_path_to_error::deserialize::<_, StixObject>(object) {
            Ok(o) => good.push(o),
            Err(e) => {
                let id = object.get("id").and_then(Value::as_str).unwrap_or("(no id)");
                bad.push((i, format!("object {i} ({id}): {} at {}", e.inner(), e.path())));
            }
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> Vec<Observable> {
        observables(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn single_value_patterns_are_read() {
        assert_eq!(
            ok("[ipv4-addr:value = '198.51.100.7']"),
            vec![Observable::Ip("198.51.100.7".parse().expect("valid"))]
        );
        assert_eq!(
            ok("[ipv4-addr:value ISSUBSET '203.0.113.0/24'] OR [url:value = 'http://evil.example.com/payload.bin']"),
            vec![
                Observable::Cidr("203.0.113.0/24".parse().expect("valid")),
                Observable::Url("http://evil.example.com/payload.bin".into())
            ]
        );
        assert_eq!(
            ok("[file:hashes.'SHA-256' = 'AEC070645FE53EE3B3763059376134F058CC337247C978ADD178B6CCDFB0019F']"),
            vec![Observable::Hash("aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f".into())]
        );
        assert_eq!(ok("[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']").len(), 1);
        assert_eq!(
            ok("[domain-name:value = 'Evil.Example.COM.' OR domain-name:value = 'b.example']"),
            vec![Observable::Domain("b.example".into()), Observable::Domain("evil.example.com".into())]
        );
        assert_eq!(ok("[ipv6-addr:value = '2001:db8::1']").len(), 1);
        assert_eq!(ok("[email-addr:value IN ('a@x.example', 'B@x.example')]").len(), 2);
        assert_eq!(ok("([ipv4-addr:value = '192.0.2.1'] OR ([ipv4-addr:value = '192.0.2.2']))").len(), 2);
        assert_eq!(
            ok("[ipv4-addr:value = '192.0.2.9/24']"),
            vec![Observable::Cidr("192.0.2.0/24".parse().expect("valid"))]
        );
        assert_eq!(
            ok(r"[url:value = 'http://x.example/it\'s']"),
            vec![Observable::Url("http://x.example/it's".into())]
        );
    }

    #[test]
    fn patterns_needing_more_than_one_value_are_refused_with_the_reason() {
        for (pattern, why) in [
            ("[ipv4-addr:value = '192.0.2.1' AND ipv4-addr:value = '192.0.2.2']", "AND"),
            ("[ipv4-addr:value = '192.0.2.1'] AND [domain-name:value = 'x.example']", "AND"),
            ("[ipv4-addr:value = '192.0.2.1'] FOLLOWEDBY [domain-name:value = 'x.example']", "FOLLOWEDBY"),
            ("[ipv4-addr:value = '192.0.2.1'] REPEATS 5 TIMES", "qualifiers"),
            ("[process:name = 'evil.exe']", "process:name"),
            ("[ipv4-addr:value != '192.0.2.1']", "!="),
            ("[ipv4-addr:value = 'not-an-ip']", "not an address"),
            ("[ipv4-addr:value = '2001:db8::1']", "other family"),
            ("[file:hashes.MD5 = 'abc']", "hex digits"),
            ("[file:hashes.'SHA-512' = 'abc']", "SHA512"),
            ("[domain-name:value MATCHES '.*']", "MATCHES"),
            ("[url:value = 'unterminated]", "unterminated"),
        ] {
            let err = observables(pattern).expect_err(pattern).to_string();
            assert!(err.contains(why), "{pattern}: {err}");
        }
    }

    #[test]
    fn a_bad_object_is_reported_and_the_rest_kept() {
        let doc = serde_json::json!({ "type": "bundle", "objects": [
            { "type": "indicator", "id": "indicator--1", "pattern": "[ipv4-addr:value = '192.0.2.1']",
              "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z", "modified": "2026-01-01T00:00:00Z" },
            { "type": "indicator", "id": "indicator--2", "valid_from": "yesterday" },
            { "type": "malware", "id": "malware--3", "name": "X", "created": "2026-01-01T00:00:00Z" },
        ]});
        let (good, bad) = parse_objects(&doc);
        assert_eq!(good.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["indicator--1", "malware--3"]);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].1.contains("indicator--2") && bad[0].1.contains("valid_from"), "{:?}", bad);
        assert_eq!(good[1].version(), good[1].created);
    }
}
