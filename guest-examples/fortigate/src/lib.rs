//! A decoder for a format Vigil does not read natively: Fortinet FortiGate's `key=value`
//! logs (`date=2026-03-02 time=11:58:01 devname="FGT60F" type="traffic" srcip=… action="deny"`),
//! as FortiOS sends them over syslog or writes them to disk. Traffic logs become network
//! events (blocked when the action denies), administrator and VPN logins authentication
//! events, anything else an `other` event; every pair stays in `attributes.fortigate`.
//! Install it as `plugins/fortigate/` (`kind = "decode"`) and name the format
//! `plugin:fortigate`.

use serde_json::{Map, Value, json};
use vigil_sdk::{Decoder, Error};

struct FortiGate;

/// `key=value` pairs; values bare or in double quotes (with `\"` inside).
fn pairs(text: &str) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or_else(|| Error::InvalidInput(format!("`{rest}` has no `=`")))?;
        let key = key.trim();
        if key.is_empty() || key.contains(' ') {
            return Err(Error::InvalidInput(format!("`{key}` is not a key")));
        }
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| Error::InvalidInput(format!("the value of `{key}` is not closed")))?;
            (value, &quoted[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        out.insert(key.to_owned(), Value::String(value));
        rest = next.trim_start();
    }
    Ok(out)
}

fn text<'a>(kv: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    kv.get(key).and_then(Value::as_str).filter(|v| !v.is_empty() && *v != "N/A")
}

fn number(kv: &Map<String, Value>, key: &str) -> Option<u64> {
    text(kv, key)?.parse().ok()
}

impl Decoder for FortiGate {
    fn decode(record: &[u8]) -> Result<Vec<Value>, Error> {
        let line = std::str::from_utf8(record).map_err(|e| Error::InvalidInput(format!("not UTF-8: {e}")))?;
        // A syslog header may come first: the pairs start at `date=`.
        let start = line.find("date=").ok_or_else(|| Error::InvalidInput("no `date=` in the record".into()))?;
        let kv = pairs(&line[start..])?;
        let (Some(date), Some(time)) = (text(&kv, "date"), text(&kv, "time")) else {
            return Err(Error::InvalidInput("a FortiGate log has `date=` and `time=`".into()));
        };
        // `tz="+0100"` when the device says; UTC otherwise.
        let zone = text(&kv, "tz").map_or_else(|| "Z".to_owned(), |z| format!("{}:{}", &z[..3.min(z.len())], &z[3.min(z.len())..]));
        let mut event = Map::new();
        event.insert("time".into(), json!(format!("{date}T{time}{zone}")));
        event.insert("provider".into(), json!("fortigate"));
        if let Some(host) = text(&kv, "devname") {
            event.insert("host".into(), json!({ "name": host }));
        }
        let endpoint = |ip: &str, port: &str| {
            let mut ep = Map::new();
            if let Some(ip) = text(&kv, ip) {
                ep.insert("ip".into(), json!(ip));
            }
            if let Some(port) = number(&kv, port) {
                ep.insert("port".into(), json!(port));
            }
            Value::Object(ep)
        };
        let action = text(&kv, "action").unwrap_or("");
        let kind = (text(&kv, "type").unwrap_or(""), text(&kv, "subtype").unwrap_or(""));
        let description = text(&kv, "logdesc").unwrap_or("").to_ascii_lowercase();
        if kind.0 == "traffic" {
            let blocked = matches!(action, "deny" | "block" | "blocked" | "drop" | "reject");
            event.insert("class".into(), json!("network"));
            event.insert("action".into(), json!(if blocked { "connection_blocked" } else { "connection" }));
            event.insert("outcome".into(), json!(if blocked { "failure" } else { "success" }));
            event.insert("source".into(), endpoint("srcip", "srcport"));
            event.insert("destination".into(), endpoint("dstip", "dstport"));
            let transport = match number(&kv, "proto") {
                Some(6) => "tcp",
                Some(17) => "udp",
                Some(1) => "icmp",
                _ => "",
            };
            let mut network = Map::new();
            if !transport.is_empty() {
                network.insert("transport".into(), json!(transport));
            }
            if let (Some(sent), Some(received)) = (number(&kv, "sentbyte"), number(&kv, "rcvdbyte")) {
                network.insert("bytes".into(), json!(sent + received));
            }
            if !network.is_empty() {
                event.insert("network".into(), Value::Object(network));
            }
        } else if description.contains("login") || action == "login" || action == "tunnel-up" && kind.1 == "vpn" {
            let failed = text(&kv, "status").is_some_and(|s| s == "failed" || s == "failure") || description.contains("fail");
            event.insert("class".into(), json!("authentication"));
            event.insert("action".into(), json!("logon"));
            event.insert("outcome".into(), json!(if failed { "failure" } else { "success" }));
            if let Some(user) = text(&kv, "user").or(text(&kv, "srcuser")) {
                event.insert("user".into(), json!({ "name": user }));
            }
            event.insert("source".into(), endpoint("srcip", "srcport"));
        } else {
            event.insert("class".into(), json!("other"));
            if !action.is_empty() {
                event.insert("action".into(), json!(action));
            }
        }
        if let Some(message) = text(&kv, "msg") {
            event.insert("message".into(), json!(message));
        }
        // Empty endpoints say nothing.
        event.retain(|_, v| !v.as_object().is_some_and(Map::is_empty));
        event.insert("attributes".into(), json!({ "fortigate": kv }));
        Ok(vec![Value::Object(event)])
    }
}

vigil_sdk::register_plugin!(decoder: FortiGate);
