//! Syslog message (RFC 5424 or RFC 3164) → [`SecurityEvent`].
//!
//! Header fields map to `host.name`, `process.name`/`pid`, `provider`, `severity` and
//! `time`; facility, severity, msgid and structured data go to `attributes.syslog`. Known
//! message bodies (sshd, sudo, account changes) are then recognised by [`super::known`].
//! Per RFC 3164 §4.3.3, a message without a valid header is kept whole as the message of a
//! `user.notice` event, tagged `syslog_no_header`.

use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Utc};
use serde_json::{Map, Value, json};
use syslog_loose::{IncompleteDate, Message, ProcId, SyslogSeverity, Variant};

use super::known;
use crate::event::{EventClass, Host, Process, SecurityEvent, Severity};

/// Parses one syslog message received at `now`, as one event per message it holds: a
/// message rsyslog folded (`message repeated 3 times: [ … ]`) gives three. `keep_raw`
/// stores the original line.
pub fn parse_syslog_all(line: &str, now: DateTime<Utc>, keep_raw: bool) -> Vec<SecurityEvent> {
    recognise_all(parse_header(line, now, keep_raw))
}

/// Recognises the message of a header-parsed event: one event per message it holds.
pub fn recognise_all(mut event: SecurityEvent) -> Vec<SecurityEvent> {
    let repeated = event.message.as_deref().and_then(known::unfold_repeated).map(|(m, n)| (m.to_owned(), n));
    let count = match repeated {
        Some((inner, count)) => {
            event.message = Some(inner);
            event.labels.insert("syslog_repeated".into(), count.to_string());
            count
        }
        None => 1,
    };
    known::recognise(&mut event);
    let mut events = Vec::with_capacity(count);
    for _ in 1..count {
        let mut copy = event.clone();
        copy.id = crate::event::EventId::generate();
        events.push(copy);
    }
    events.push(event);
    events
}

/// Parses one syslog message received at `now` into one event (a folded repeat counts
/// once). `keep_raw` stores the original line.
pub fn parse_syslog(line: &str, now: DateTime<Utc>, keep_raw: bool) -> SecurityEvent {
    let mut event = parse_header(line, now, keep_raw);
    known::recognise(&mut event);
    event
}

/// The header fields of a syslog message, its body in `message`, nothing recognised yet.
pub fn parse_header(line: &str, now: DateTime<Utc>, keep_raw: bool) -> SecurityEvent {
    // RFC 3164 timestamps have no year: take the one that puts the time closest to now
    // without being more than a day in the future, and read them as UTC.
    let year = |(month, day, hour, min, sec): IncompleteDate| {
        let this_year = now.year();
        let candidate = Utc.with_ymd_and_hms(this_year, month, day, hour, min, sec).single();
        match candidate {
            Some(t) if t > now + chrono::Duration::days(1) => this_year - 1,
            _ => this_year,
        }
    };
    let utc = FixedOffset::east_opt(0);
    let mut event = SecurityEvent::new(EventClass::System, now);
    event.observed_time = now;
    match syslog_loose::parse_message_with_year_exact_tz(line, year, utc, Variant::Either) {
        // A PRI, or (as in files written by syslog daemons, which drop it) an app name.
        Ok(message) if message.facility.is_some() || message.appname.is_some() => {
            fill_from_header(&mut event, &message)
        }
        _ => {
            event.message = Some(line.trim().to_owned());
            event.tags.push("syslog_no_header".into());
            event.attributes.insert("syslog".into(), json!({"facility": "user", "severity": "notice"}));
            event.severity = Severity::Low;
        }
    }
    if keep_raw {
        event.raw = Some(line.to_owned());
    }
    event
}

fn fill_from_header(event: &mut SecurityEvent, m: &Message<&str>) {
    if let Some(ts) = m.timestamp {
        event.time = ts.with_timezone(&Utc);
    }
    let msg = m.msg.trim();
    event.message = (!msg.is_empty()).then(|| msg.to_owned());
    if let Some(host) = m.hostname.filter(|h| *h != "-") {
        event.host = Some(Box::new(Host { name: Some(host.to_owned()), ..Default::default() }));
    }
    // `krb5kdc[7001](info)`: a tag the parser did not split at its pid.
    let (app, tag_pid) = match m.appname.filter(|a| *a != "-") {
        Some(app) if app.contains('[') => {
            let (name, rest) = app.split_once('[').unwrap_or((app, ""));
            (Some(name), rest.split(']').next().and_then(|p| p.parse::<u32>().ok()))
        }
        app => (app, None),
    };
    if let Some(app) = app {
        event.provider = Some(app.to_owned());
    }
    let pid = match &m.procid {
        Some(ProcId::PID(pid)) => u32::try_from(*pid).ok(),
        Some(ProcId::Name(name)) => name.parse().ok(),
        None => tag_pid,
    };
    if app.is_some() || pid.is_some() {
        event.process = Some(Box::new(Process { name: app.map(str::to_owned), pid, ..Default::default() }));
    }
    event.severity = m.severity.map(severity).unwrap_or_default();
    let mut syslog = Map::new();
    if let Some(f) = m.facility {
        syslog.insert("facility".into(), Value::from(f.as_str()));
    }
    if let Some(s) = m.severity {
        syslog.insert("severity".into(), Value::from(s.as_str()));
    }
    if let Some(msgid) = m.msgid.filter(|id| *id != "-") {
        syslog.insert("msgid".into(), Value::from(msgid));
    }
    if !m.structured_data.is_empty() {
        let mut sd = Map::new();
        for element in &m.structured_data {
            let params: Map<String, Value> =
                element.params().map(|(k, v)| (k.to_string(), Value::from(v.to_string()))).collect();
            sd.insert(element.id.to_string(), Value::Object(params));
        }
        syslog.insert("structured_data".into(), Value::Object(sd));
    }
    event.attributes.insert("syslog".into(), Value::Object(syslog));
}

fn severity(s: SyslogSeverity) -> Severity {
    match s {
        SyslogSeverity::SEV_EMERG | SyslogSeverity::SEV_ALERT | SyslogSeverity::SEV_CRIT => Severity::Critical,
        SyslogSeverity::SEV_ERR => Severity::High,
        SyslogSeverity::SEV_WARNING => Severity::Medium,
        SyslogSeverity::SEV_NOTICE => Severity::Low,
        SyslogSeverity::SEV_INFO | SyslogSeverity::SEV_DEBUG => Severity::Info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FieldPath, Outcome};

    fn now() -> DateTime<Utc> {
        "2026-03-02T12:00:00Z".parse().expect("time")
    }

    fn get(e: &SecurityEvent, path: &str) -> Option<String> {
        FieldPath::parse(path).expect("path").get(e).map(|v| v.to_text().into_owned())
    }

    #[test]
    fn rfc5424_header_and_structured_data() {
        let line = r#"<165>1 2026-03-02T11:59:58.123Z web01 nginx 4242 ID47 [exampleSDID@32473 iut="3" eventSource="App"] request served"#;
        let e = parse_syslog(line, now(), true);
        assert_eq!(e.time.to_rfc3339(), "2026-03-02T11:59:58.123+00:00");
        assert_eq!(get(&e, "host.name").as_deref(), Some("web01"));
        assert_eq!(get(&e, "process.name").as_deref(), Some("nginx"));
        assert_eq!(get(&e, "process.pid").as_deref(), Some("4242"));
        assert_eq!(get(&e, "message").as_deref(), Some("request served"));
        assert_eq!(get(&e, "attributes.syslog.facility").as_deref(), Some("local4"));
        assert_eq!(get(&e, "attributes.syslog.msgid").as_deref(), Some("ID47"));
        assert_eq!(get(&e, "attributes.syslog.structured_data.exampleSDID@32473.iut").as_deref(), Some("3"));
        assert_eq!(e.severity, Severity::Low);
        assert_eq!(e.raw.as_deref(), Some(line));
    }

    #[test]
    fn rfc3164_sshd_failure_becomes_an_authentication_event() {
        let line = "<38>Mar  2 11:58:01 bastion01 sshd[20417]: Failed password for invalid user admin from 203.0.113.7 port 52311 ssh2";
        let e = parse_syslog(line, now(), false);
        assert_eq!(e.class, EventClass::Authentication);
        assert_eq!(e.outcome, Outcome::Failure);
        assert_eq!(e.time.to_rfc3339(), "2026-03-02T11:58:01+00:00");
        assert_eq!(get(&e, "user.name").as_deref(), Some("admin"));
        assert_eq!(get(&e, "source.ip").as_deref(), Some("203.0.113.7"));
        assert_eq!(get(&e, "source.port").as_deref(), Some("52311"));
        assert_eq!(get(&e, "host.name").as_deref(), Some("bastion01"));
        assert_eq!(get(&e, "process.pid").as_deref(), Some("20417"));
        assert_eq!(get(&e, "action").as_deref(), Some("ssh_login"));
        assert_eq!(e.raw, None);
    }

    #[test]
    fn a_year_old_timestamp_is_not_placed_in_the_future() {
        let e = parse_syslog("<38>Dec 31 23:00:00 h sshd[1]: x", now(), false);
        assert_eq!(e.time.to_rfc3339(), "2025-12-31T23:00:00+00:00");
    }

    #[test]
    fn auth_log_lines_without_pri_are_read() {
        let e = parse_syslog(
            "Mar  2 00:00:06 bastion01 sshd[20015]: Failed password for oracle from 18.139.47.51 port 50561 ssh2",
            now(),
            false,
        );
        assert_eq!((e.class, e.outcome), (EventClass::Authentication, Outcome::Failure));
        assert_eq!(get(&e, "source.ip").as_deref(), Some("18.139.47.51"));
        assert_eq!(get(&e, "host.name").as_deref(), Some("bastion01"));
        assert_eq!(e.time.to_rfc3339(), "2026-03-02T00:00:06+00:00");
    }

    #[test]
    fn headerless_lines_are_kept_whole() {
        let e = parse_syslog("just some text", now(), false);
        assert_eq!(e.message.as_deref(), Some("just some text"));
        assert!(e.tags.contains(&"syslog_no_header".to_owned()));
        assert_eq!(e.time, now());
    }
}
