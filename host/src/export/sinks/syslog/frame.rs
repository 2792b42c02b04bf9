//! RFC 5424 messages and RFC 6587 octet-counted frames.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [meta sequenceId="N"][vigil@32473 kind="…" id="…" seq="N"] MSG`
//!
//! PRI is facility × 8 + a severity from the record's (critical 2, error 3, warning 4,
//! notice 5, informational 6); MSGID is `EVENT`, `ALERT` or `INCIDENT`; MSG is the record as
//! formatted (JSON, CEF or LEEF). `sequenceId` (RFC 5424 §7.3.1) counts 1–2147483647 from
//! the log's sequence number; the `vigil@32473` element carries the record's id so a
//! receiver can drop duplicates (32473 is the example enterprise number of RFC 5612).

use std::io::Write;

use crate::event::RecordKind;
use crate::export::Item;

/// The fixed fields of every message.
#[derive(Clone, Debug)]
pub struct Header {
    /// Facility code.
    pub facility: u8,
    /// HOSTNAME.
    pub hostname: String,
    /// APP-NAME.
    pub app_name: String,
    /// PROCID.
    pub procid: String,
}

/// Syslog severity for a 0–10 severity.
pub fn severity(severity_10: u8) -> u8 {
    match severity_10 {
        9.. => 2,
        7..=8 => 3,
        5..=6 => 4,
        3..=4 => 5,
        _ => 6,
    }
}

/// Appends `value` as an SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn param(out: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Appends the message for `item` to `out`.
pub fn message(out: &mut Vec<u8>, header: &Header, item: &Item) {
    let pri = u16::from(header.facility) * 8 + u16::from(severity(item.severity));
    let msgid = match item.kind {
        RecordKind::Event => "EVENT",
        RecordKind::Alert => "ALERT",
        RecordKind::Incident => "INCIDENT",
    };
    let time = item.time.format("%Y-%m-%dT%H:%M:%S%.6fZ");
    let sequence = (item.seq.saturating_sub(1) % 2_147_483_647) + 1;
    let _ = write!(
        out,
        "<{pri}>1 {time} {} {} {} {msgid} [meta sequenceId=\"{sequence}\"][vigil@32473 kind=\"{}\" id=\"",
        header.hostname,
        header.app_name,
        header.procid,
        item.kind.as_str()
    );
    param(out, &item.id);
    let _ = write!(out, "\" seq=\"{}\"] ", item.seq);
    out.extend_from_slice(&item.body);
}

/// Appends `message` as an octet-counted frame: `LEN SP MESSAGE`.
pub fn octet_counted(out: &mut Vec<u8>, message: &[u8]) {
    let _ = write!(out, "{} ", message.len());
    out.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn messages_follow_rfc_5424() {
        let header = Header { facility: 20, hostname: "vigil-1".into(), app_name: "vigil".into(), procid: "42".into() };
        let item = Item {
            seq: 7,
            kind: RecordKind::Alert,
            id: "a\"b]".into(),
            time: chrono::Utc.timestamp_millis_opt(1_700_000_000_123).single().expect("time"),
            host: None,
            severity: 7,
            body: b"CEF:0|Vigil|Vigil|0.1|r|t|7|src=1.2.3.4".to_vec(),
            json: false,
        };
        let mut out = Vec::new();
        message(&mut out, &header, &item);
        let text = String::from_utf8(out.clone()).expect("utf8");
        assert_eq!(
            text,
            "<163>1 2023-11-14T22:13:20.123000Z vigil-1 vigil 42 ALERT [meta sequenceId=\"7\"][vigil@32473 kind=\"alert\" id=\"a\\\"b\\]\" seq=\"7\"] CEF:0|Vigil|Vigil|0.1|r|t|7|src=1.2.3.4"
        );
        let parsed = syslog_loose::parse_message(&text, syslog_loose::Variant::RFC5424);
        assert_eq!(parsed.appname, Some("vigil"));
        assert_eq!(parsed.msgid, Some("ALERT"));
        assert_eq!(parsed.msg, "CEF:0|Vigil|Vigil|0.1|r|t|7|src=1.2.3.4");
        let mut framed = Vec::new();
        octet_counted(&mut framed, &out);
        assert!(framed.starts_with(format!("{} <163>", out.len()).as_bytes()));
    }
}
