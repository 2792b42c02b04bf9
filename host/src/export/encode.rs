//! From a log entry to an [`Item`]: decode the record, route it, redact it, transform it.

use std::sync::Arc;

use super::{Item, Route};
use crate::detect::{Alert, Entities};
use crate::event::{RecordKind, SecurityEvent};
use crate::incident::{ChangeKind, IncidentChange};
use crate::store::LogEntry;
use crate::transform::{Finding, FindingKind, Format, Input, Output, Redaction, Transform, builtin, severity_10};

/// A record decoded from the log.
#[derive(Clone, Debug)]
pub enum Decoded {
    /// A security event.
    Event(Arc<SecurityEvent>),
    /// An alert or incident change, as a finding.
    Finding(Arc<Finding>),
}

fn entity_sets(
    e: &Entities,
) -> (std::collections::BTreeSet<String>, std::collections::BTreeSet<String>, std::collections::BTreeSet<String>) {
    (e.ips.clone(), e.users.clone(), e.hosts.clone())
}

pub(super) fn category(c: Option<crate::rules::Category>) -> Option<String> {
    c.and_then(|c| serde_json::to_value(c).ok()).and_then(|v| v.as_str().map(str::to_owned))
}

/// The finding view of an alert.
pub fn alert_finding(alert: &Alert, raw: serde_json::Value) -> Finding {
    let (ips, users, hosts) = entity_sets(&alert.entities);
    Finding {
        kind: FindingKind::Alert,
        id: alert.id.to_string(),
        rule_id: alert.rule_id.to_string(),
        title: alert.title.clone(),
        priority: alert.priority,
        category: category(alert.category),
        time: alert.time,
        first_time: alert.first_time,
        count: alert.count,
        ips,
        users,
        hosts,
        event_ids: alert.event_ids.iter().map(ToString::to_string).collect(),
        techniques: alert.techniques.clone(),
        tags: alert.tags.clone(),
        dedup_key: format!("{}:{}", alert.rule_id, alert.dedup_key),
        notify: alert.notify.clone(),
        raw,
    }
}

/// The finding view of an incident change.
pub fn incident_finding(change: &IncidentChange, raw: serde_json::Value) -> Finding {
    let i = &change.incident;
    let (ips, users, hosts) = entity_sets(&i.entities);
    let change_name = match change.change {
        ChangeKind::Opened => "opened",
        ChangeKind::Updated => "updated",
        ChangeKind::Suppressed => "suppressed",
        ChangeKind::Changed => "changed",
        ChangeKind::Escalated => "escalated",
        ChangeKind::Notified => "notified",
    };
    Finding {
        kind: FindingKind::Incident { change: change_name.into(), status: i.status.as_str().into() },
        id: i.id.to_string(),
        rule_id: i.rule_id.to_string(),
        title: i.title.clone(),
        priority: i.priority,
        category: category(i.category),
        time: i.last_seen,
        first_time: i.first_seen,
        count: i.event_count,
        ips,
        users,
        hosts,
        event_ids: i.event_ids.iter().map(ToString::to_string).collect(),
        techniques: i.techniques.clone(),
        tags: i.tags.clone(),
        dedup_key: i.dedup_key.clone(),
        notify: i.notify.clone(),
        raw,
    }
}

/// Decodes a log record.
pub fn decode(kind: RecordKind, payload: &[u8]) -> Result<Decoded, String> {
    match kind {
        RecordKind::Event => serde_json::from_slice::<SecurityEvent>(payload)
            .map(|e| Decoded::Event(Arc::new(e)))
            .map_err(|e| e.to_string()),
        RecordKind::Alert => {
            let raw: serde_json::Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            let alert: Alert = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
            Ok(Decoded::Finding(Arc::new(alert_finding(&alert, raw))))
        }
        RecordKind::Incident => {
            let raw: serde_json::Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            let change: IncidentChange = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
            Ok(Decoded::Finding(Arc::new(incident_finding(&change, raw))))
        }
    }
}

/// What became of one log entry.
#[derive(Debug)]
pub enum Encoded {
    /// The route skipped it.
    Filtered,
    /// Ready to send.
    Item(Item),
    /// It cannot be sent (undecodable, or the format cannot express it): dead-letter it.
    Refused(String),
}

/// Decodes, routes, redacts and transforms entries for one sink.
pub struct Encoder {
    route: Route,
    redaction: Option<Redaction>,
    transform: Box<dyn Transform>,
    json: bool,
    /// The format is Vigil's JSON, which events are stored in.
    passthrough: bool,
}

/// A record's body: JSON bytes as stored, or a transform's output.
enum Body {
    Json(Vec<u8>),
    Output(Output),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("transform", &self.transform.name()).finish()
    }
}

impl Encoder {
    /// An encoder with the sink's route, redaction and format.
    pub fn new(route: Route, redaction: Option<Redaction>, format: &Format) -> Self {
        Self {
            route,
            redaction,
            transform: builtin(format),
            json: format.is_json(),
            passthrough: *format == Format::Json,
        }
    }

    /// The same encoder with `transform` (a plugin's) in place of the format's: its output
    /// is a line of text.
    pub fn with_transform(mut self, transform: Box<dyn Transform>) -> Self {
        self.transform = transform;
        self.json = false;
        self.passthrough = false;
        self
    }

    /// Whether records of `kind` may be taken at all.
    pub fn takes_kind(&self, kind: RecordKind) -> bool {
        self.route.takes_kind(kind)
    }

    /// Encodes one log entry.
    pub fn encode(&self, entry: &LogEntry) -> Encoded {
        let Some(kind) = RecordKind::from_tag(entry.kind) else { return Encoded::Filtered };
        if !self.route.takes_kind(kind) {
            return Encoded::Filtered;
        }
        let decoded = match decode(kind, &entry.payload) {
            Ok(d) => d,
            Err(e) => return Encoded::Refused(format!("stored record does not decode: {e}")),
        };
        if !self.route.accepts(&decoded) {
            return Encoded::Filtered;
        }
        // Vigil's JSON of an unredacted event is what the log stores: send those bytes
        // rather than serializing the event again.
        let stored = (self.passthrough && self.redaction.is_none()).then_some(&entry.payload[..]);
        self.item(entry.seq, kind, &decoded, stored)
    }

    /// Encodes an already decoded record (dead-letter replays).
    pub fn to_item(&self, seq: u64, kind: RecordKind, decoded: &Decoded) -> Encoded {
        self.item(seq, kind, decoded, None)
    }

    fn item(&self, seq: u64, kind: RecordKind, decoded: &Decoded, stored: Option<&[u8]>) -> Encoded {
        let (id, time, host, severity, output) = match decoded {
            Decoded::Event(e) => {
                let redacted;
                let event = match &self.redaction {
                    Some(r) => match r.event(e) {
                        Ok(ev) => {
                            redacted = ev;
                            &redacted
                        }
                        Err(err) => return Encoded::Refused(err.to_string()),
                    },
                    None => e.as_ref(),
                };
                let host = event.host.as_ref().and_then(|h| h.name.clone());
                (
                    event.id.to_string(),
                    event.time,
                    host,
                    severity_10(Input::Event(event)),
                    match stored {
                        Some(bytes) => Ok(Body::Json(bytes.to_vec())),
                        None => self.transform.apply(Input::Event(event)).map(Body::Output),
                    },
                )
            }
            Decoded::Finding(f) => {
                let redacted;
                let finding = match &self.redaction {
                    Some(r) => {
                        redacted = r.finding(f);
                        &redacted
                    }
                    None => f.as_ref(),
                };
                let id = match kind {
                    RecordKind::Incident => format!("{}-{seq}", finding.id),
                    _ => finding.id.clone(),
                };
                let host = finding.hosts.iter().next().cloned();
                (
                    id,
                    finding.time,
                    host,
                    severity_10(Input::Finding(finding)),
                    self.transform.apply(Input::Finding(finding)).map(Body::Output),
                )
            }
        };
        match output {
            Ok(Body::Json(body)) => Encoded::Item(Item { seq, kind, id, time, host, severity, json: true, body }),
            Ok(Body::Output(output)) => Encoded::Item(Item {
                seq,
                kind,
                id,
                time,
                host,
                severity,
                json: matches!(output, Output::Json(_)) && self.json,
                body: output.into_bytes(),
            }),
            Err(e) => Encoded::Refused(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::RouteConfig;
    use crate::transform::RedactionConfig;

    fn entry() -> LogEntry {
        let mut event = SecurityEvent::new(crate::event::EventClass::Authentication, chrono::Utc::now());
        event.message = Some("login by alice@example.com".into());
        LogEntry {
            seq: 7,
            kind: RecordKind::Event.tag(),
            time_ms: 0,
            payload: serde_json::to_vec(&event).expect("encode"),
        }
    }

    fn body(encoded: Encoded) -> serde_json::Value {
        let Encoded::Item(item) = encoded else { panic!("an item") };
        assert!(item.json);
        serde_json::from_slice(&item.body).expect("JSON body")
    }

    #[test]
    fn json_events_go_out_as_stored_unless_redacted() {
        let entry = entry();
        let route = || Route::new(RouteConfig::default()).expect("route");
        let plain = Encoder::new(route(), None, &Format::Json).encode(&entry);
        let Encoded::Item(item) = &plain else { panic!("an item") };
        assert_eq!(item.body, entry.payload, "the stored bytes, not a re-encoding");
        let redaction: RedactionConfig = toml::from_str("mask = [{ preset = \"email\" }]").expect("redaction");
        let redacted =
            Encoder::new(route(), Some(Redaction::new(redaction).expect("redaction")), &Format::Json).encode(&entry);
        assert_eq!(body(redacted)["message"], "login by [REDACTED]");
        assert_eq!(body(plain)["message"], "login by alice@example.com");
    }
}
