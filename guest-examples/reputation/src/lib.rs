//! A rule function: the reputation of an IP address, `plugin::invoke("reputation", ip)`.
//!
//! Answers `#{ score: 0..100, listed: bool, cached: bool }`. Verdicts are computed from the
//! networks the plugin knows (a scanner list the plugin ships) and cached in the plugin's
//! kv store, so a hot address costs one kv read.

use serde_json::{Value, json};
use vigil_sdk::{Error, Function, kv, metrics};

/// Networks with a bad reputation: (prefix, prefix length, score).
const LISTED: &[([u8; 4], u8, u64)] = &[
    ([203, 0, 113, 0], 24, 90), // a documentation range the examples use for attackers
    ([198, 51, 100, 0], 25, 60),
    ([45, 155, 205, 0], 24, 95),
];

fn score(ip: [u8; 4]) -> Option<u64> {
    let addr = u32::from_be_bytes(ip);
    LISTED.iter().find_map(|(net, len, score)| {
        let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from(*len)) };
        (addr & mask == u32::from_be_bytes(*net) & mask).then_some(*score)
    })
}

fn parse(ip: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = ip.split('.');
    for byte in &mut out {
        *byte = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

struct Reputation;

impl Function for Reputation {
    fn call(input: Value) -> Result<Value, Error> {
        let ip = match &input {
            Value::String(s) => s.as_str(),
            other => other["ip"].as_str().ok_or_else(|| Error::InvalidInput("expects an IPv4 address".into()))?,
        };
        let key = format!("ip:{ip}");
        if let Some(cached) = kv::get(&key) {
            metrics::counter("cache_hits", 1);
            let score = u64::from(cached.first().copied().unwrap_or(0));
            return Ok(json!({ "score": score, "listed": score > 0, "cached": true }));
        }
        let addr = parse(ip).ok_or_else(|| Error::InvalidInput(format!("`{ip}` is not an IPv4 address")))?;
        let score = score(addr).unwrap_or(0);
        // A full cache only costs the next lookup its computation.
        let _ = kv::set(&key, &[u8::try_from(score).unwrap_or(u8::MAX)]);
        Ok(json!({ "score": score, "listed": score > 0, "cached": false }))
    }
}

vigil_sdk::register_plugin!(function: Reputation);
