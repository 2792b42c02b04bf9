use std::collections::BTreeMap;

use super::*;

fn alert(rule: &str, key: &str, secs: i64) -> Alert {
    let time = DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time");
    let mut entities = Entities::default();
    entities.ips.insert(key.to_owned());
    Alert {
        id: AlertId::generate(),
        rule_id: RuleId::from(rule),
        title: "Brute force".into(),
        priority: Priority::P2,
        category: None,
        time,
        first_time: time,
        group: BTreeMap::from([("source.ip".to_owned(), key.to_owned())]),
        group_key: key.into(),
        dedup_key: key.into(),
        count: 3,
        event_ids: (0..3).map(|_| EventId::generate()).collect(),
        entities,
        affected_users: None,
        techniques: vec![],
        tags: vec![],
        suppress_ms: None,
        notify: vec![],
    }
}

#[test]
fn alerts_with_the_same_key_update_one_incident_across_restarts() {
    let (_dir, store) = crate::store::testing::temp_store();
    let mut book = IncidentBook::new(&store);
    let first = book.apply(&alert("brute", "1.1.1.1", 0), Utc::now()).expect("apply");
    let second = book.apply(&alert("brute", "1.1.1.1", 5), Utc::now()).expect("apply");
    let other = book.apply(&alert("brute", "2.2.2.2", 6), Utc::now()).expect("apply");
    assert_eq!(
        (first.change, second.change, other.change),
        (ChangeKind::Opened, ChangeKind::Updated, ChangeKind::Opened)
    );
    assert_eq!(first.incident.id, second.incident.id);
    assert_ne!(first.incident.id, other.incident.id);
    assert_eq!((second.incident.alert_count, second.incident.event_count), (2, 6));
    assert!(second.incident.timeline.is_empty(), "change records carry a summary");
    let stored = book.get(first.incident.id).expect("get").expect("present");
    assert_eq!(stored.timeline.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["opened", "alert"]);
    store.write(book.take_ops().expect("ops"), true).expect("write");
    let mut book = IncidentBook::new(&store);
    let third = book.apply(&alert("brute", "1.1.1.1", 9), Utc::now()).expect("apply");
    assert_eq!((third.change, third.incident.id), (ChangeKind::Updated, first.incident.id));
    store.write(book.take_ops().expect("ops"), true).expect("write");
    assert_eq!(list(&store, 10, None).expect("list").len(), 2);
    assert_eq!(get(&store, first.incident.id).expect("get").map(|i| i.alert_count), Some(3));
}

#[test]
fn lifecycle_transitions_are_recorded_and_invalid_ones_refused() {
    let mut book = IncidentBook::in_memory();
    let id = book.apply(&alert("brute", "1.1.1.1", 0), Utc::now()).expect("apply").incident.id;
    let change = book.transition(id, IncidentStatus::Acknowledged, "alice", Some("looking"), Utc::now()).expect("ack");
    assert_eq!(
        (change.previous_status, change.incident.status),
        (Some(IncidentStatus::Detected), IncidentStatus::Acknowledged)
    );
    let full = book.get(id).expect("get").expect("present");
    let last = full.timeline.last().expect("entry");
    assert_eq!((last.actor.as_deref(), last.detail.as_str()), (Some("alice"), "detected → acknowledged: looking"));
    assert!(matches!(
        book.transition(id, IncidentStatus::Detected, "alice", None, Utc::now()),
        Err(Error::Transition(_))
    ));
    let resolved = book.transition(id, IncidentStatus::Resolved, "alice", None, Utc::now()).expect("resolve");
    assert!(resolved.incident.resolved_at.is_some());
    let reopened =
        book.transition(id, IncidentStatus::Investigating, "bob", Some("it is back"), Utc::now()).expect("reopen");
    assert_eq!(reopened.incident.resolved_at, None);
    assert!(matches!(
        book.transition(IncidentId::generate(), IncidentStatus::Closed, "x", None, Utc::now()),
        Err(Error::NotFound(_))
    ));
    book.assign(id, Some("carol"), "bob", Utc::now()).expect("assign");
    let commented = book.comment(id, "blocked at the edge", "carol", Utc::now()).expect("comment");
    assert_eq!(commented.incident.assignee.as_deref(), Some("carol"));
}

#[test]
fn resolved_incidents_are_followed_by_new_ones_unless_suppressed() {
    let mut book = IncidentBook::in_memory();
    let first = book.apply(&alert("brute", "1.1.1.1", 0), Utc::now()).expect("apply").incident.id;
    book.transition(first, IncidentStatus::Resolved, "a", None, Utc::now()).expect("resolve");
    let again = book.apply(&alert("brute", "1.1.1.1", 60), Utc::now()).expect("apply");
    assert_eq!(again.change, ChangeKind::Opened, "no suppression: a resolved incident is not updated");
    assert_ne!(again.incident.id, first);

    let mut book = IncidentBook::in_memory();
    let mut suppressed = alert("brute", "9.9.9.9", 0);
    suppressed.suppress_ms = Some(3_600_000);
    let first = book.apply(&suppressed, Utc::now()).expect("apply").incident.id;
    book.transition(first, IncidentStatus::Resolved, "a", None, Utc::now()).expect("resolve");
    let mut repeat = alert("brute", "9.9.9.9", 1800);
    repeat.suppress_ms = Some(3_600_000);
    let change = book.apply(&repeat, Utc::now()).expect("apply");
    assert_eq!(
        (change.change, change.incident.id, change.incident.suppressed_count),
        (ChangeKind::Suppressed, first, 1)
    );
    assert_eq!(change.incident.status, IncidentStatus::Resolved, "suppression does not reopen");
    let mut later = alert("brute", "9.9.9.9", 3700);
    later.suppress_ms = Some(3_600_000);
    assert_eq!(
        book.apply(&later, Utc::now()).expect("apply").change,
        ChangeKind::Opened,
        "after the window: a new incident"
    );
}

#[test]
fn classification_escalates_by_context() {
    assert_eq!(classify(Priority::P3, None, 0, 0), Priority::P3);
    assert_eq!(classify(Priority::P3, Some(Category::DataLeak), 0, 0), Priority::P1);
    assert_eq!(classify(Priority::P3, Some(Category::ComplianceViolation), 0, 0), Priority::P1);
    assert_eq!(classify(Priority::P3, Some(Category::ServiceOutage), 0, 0), Priority::P3);
    assert_eq!(classify(Priority::P4, None, 10_001, 0), Priority::P0);
    assert_eq!(classify(Priority::P3, None, 0, 4), Priority::P2);
    assert_eq!(classify(Priority::P3, None, 0, 3), Priority::P3);

    // The fifth incident of one rule within 24 h is one step more urgent.
    let mut book = IncidentBook::in_memory();
    let priorities: Vec<Priority> = (0..5)
        .map(|i| {
            book.apply(&alert("brute", &format!("10.0.0.{i}"), i * 60), Utc::now()).expect("apply").incident.priority
        })
        .collect();
    assert_eq!(priorities, [Priority::P2, Priority::P2, Priority::P2, Priority::P2, Priority::P1]);

    let mut big = alert("leak", "db01", 0);
    big.affected_users = Some(25_000);
    assert_eq!(book.apply(&big, Utc::now()).expect("apply").incident.priority, Priority::P0);
}

#[test]
fn unacknowledged_incidents_escalate_once_per_response_time_on_a_simulated_clock() {
    use super::escalation::EscalationConfig;
    let config = EscalationConfig { priorities: vec![Priority::P2], ..EscalationConfig::default() };
    let mut book = IncidentBook::in_memory();
    let opened = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
    let at = |minutes: i64| opened + Duration::minutes(minutes);
    let id = book.apply(&alert("brute", "1.1.1.1", 0), opened).expect("apply").incident.id;
    let current = |book: &mut IncidentBook| book.get(id).expect("get").expect("present");
    // P2 answers within 4 hours.
    assert_eq!(config.due(&current(&mut book), at(239)), None);
    assert_eq!(config.due(&current(&mut book), at(240)), Some(1));
    let change = book.escalate(id, Some(1), "late", at(240)).expect("escalate");
    assert_eq!((change.change, change.incident.escalation), (ChangeKind::Escalated, 1));
    assert_eq!(config.due(&current(&mut book), at(300)), None, "once per level");
    assert_eq!(config.due(&current(&mut book), at(480)), Some(2));
    book.escalate(id, None, "late", at(480)).expect("escalate");
    assert_eq!(config.due(&current(&mut book), at(10_000)), None, "max_level reached");
    assert!(current(&mut book).timeline.iter().any(|e| e.kind == "escalated"));

    // Acknowledged in time: never escalates; P3 is not among the escalating priorities.
    let acked = book.apply(&alert("brute", "2.2.2.2", 0), opened).expect("apply").incident.id;
    book.transition(acked, IncidentStatus::Acknowledged, "alice", None, at(10)).expect("ack");
    assert_eq!(config.due(&book.get(acked).expect("get").expect("present"), at(10_000)), None);
    let mut low = current(&mut book);
    (low.priority, low.escalation, low.status) = (Priority::P3, 0, IncidentStatus::Detected);
    assert_eq!(config.due(&low, at(10_000)), None);
}
