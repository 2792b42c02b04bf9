//! Kernel firewall log lines (iptables/nftables `LOG`, UFW): `[UFW BLOCK] IN=eth0 OUT=
//! SRC=… DST=… PROTO=TCP SPT=… DPT=…` as network events, blocked when the prefix says so.

use super::kv;
use crate::event::{EventClass, Outcome, SecurityEvent};
use crate::source::decode::set;

/// Recognises one kernel message.
pub fn recognise(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    // `[ 1234.5678] ` uptime stamps come first on some systems.
    let body = match msg.strip_prefix('[') {
        Some(rest) if rest.split_once(']').is_some_and(|(t, _)| t.trim().parse::<f64>().is_ok()) => {
            rest.split_once(']').map_or("", |(_, r)| r).trim_start()
        }
        _ => msg.as_str(),
    };
    let (Some(src), Some(dst)) = (kv(body, "SRC"), kv(body, "DST")) else { return };
    if kv(body, "PROTO").is_none() {
        return;
    }
    let prefix = body.split("IN=").next().unwrap_or("").trim();
    let upper = prefix.to_ascii_uppercase();
    let blocked = ["BLOCK", "DROP", "REJECT", "DENY"].iter().any(|w| upper.contains(w));
    event.class = EventClass::Network;
    event.action = Some(if blocked { "connection_blocked" } else { "connection" }.into());
    event.outcome = if blocked {
        Outcome::Failure
    } else if upper.contains("ALLOW") || upper.contains("ACCEPT") {
        Outcome::Success
    } else {
        Outcome::Unknown
    };
    set::put_str(event, "source.ip", src);
    set::put_str(event, "destination.ip", dst);
    for (key, to) in
        [("SPT", "source.port"), ("DPT", "destination.port"), ("PROTO", "network.transport"), ("LEN", "network.bytes")]
    {
        if let Some(v) = kv(body, key) {
            set::put_str(event, to, v);
        }
    }
    let fields: serde_json::Map<String, serde_json::Value> = ["IN", "OUT", "MAC", "TTL", "ID", "WINDOW"]
        .iter()
        .filter_map(|k| Some(((*k).to_owned(), serde_json::Value::from(kv(body, k)?))))
        .collect();
    event.attributes.insert("netfilter".into(), serde_json::json!({ "prefix": prefix, "fields": fields }));
}
