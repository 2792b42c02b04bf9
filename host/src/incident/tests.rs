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
        family: None,
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
        author: None,
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
fn priority_is_raised_by_impact_never_by_repetition() {
    let policy = Policy::new(&PriorityConfig {
        critical_assets: vec!["DB01".into(), "10.0.5.0/24".into()],
        ..PriorityConfig::default()
    });
    let none = Entities::default();
    let classify = |p, c, e: &Entities, users| policy.classify(p, c, e, users).0;
    assert_eq!(classify(Priority::P3, None, &none, 0), Priority::P3);
    assert_eq!(classify(Priority::P3, Some(Category::DataLeak), &none, 0), Priority::P1);
    assert_eq!(classify(Priority::P3, Some(Category::ComplianceViolation), &none, 0), Priority::P1);
    assert_eq!(classify(Priority::P3, Some(Category::ServiceOutage), &none, 0), Priority::P3);
    assert_eq!(classify(Priority::P4, None, &none, 10_001), Priority::P0);
    let mut intel = Entities::default();
    intel.threat_ips.insert("203.0.113.9".into());
    assert_eq!(classify(Priority::P3, None, &intel, 0), Priority::P2);
    let mut host = Entities::default();
    host.hosts.insert("db01".into());
    let (raised, why) = policy.classify(Priority::P3, None, &host, 0);
    assert_eq!((raised, why), (Priority::P2, vec!["critical asset db01".to_owned()]));
    let mut address = Entities::default();
    address.ips.insert("10.0.5.7".into());
    assert_eq!(classify(Priority::P3, None, &address, 0), Priority::P2);
    address.ips = ["10.0.6.7".to_owned()].into();
    assert_eq!(classify(Priority::P3, None, &address, 0), Priority::P3);
    // A compromise of a privileged account is raised; a brute force against it is not.
    let mut root = Entities::default();
    root.users.insert("Root".into());
    assert_eq!(classify(Priority::P1, Some(Category::SecurityBreach), &root, 0), Priority::P0);
    assert_eq!(classify(Priority::P2, Some(Category::AuthenticationFailure), &root, 0), Priority::P2);

    // Fifty incidents of one rule in a day stay at the rule's priority; the rule is noisy.
    let mut book = IncidentBook::in_memory();
    let priorities: Vec<Priority> = (0..50)
        .map(|i| {
            book.apply(&alert("brute", &format!("10.0.0.{i}"), i * 60), Utc::now()).expect("apply").incident.priority
        })
        .collect();
    assert!(priorities.iter().all(|p| *p == Priority::P2), "{priorities:?}");
    assert_eq!(book.opened_recently(&RuleId::from("brute")), 50);
    assert!(priority::Noise::is_noisy(book.policy(), 50));
    assert!(!priority::Noise::is_noisy(book.policy(), 10));
    // A day later the count starts again.
    book.apply(&alert("brute", "10.9.9.9", 50 * 60 + 86_400 + 1), Utc::now()).expect("apply");
    assert_eq!(book.opened_recently(&RuleId::from("brute")), 1);

    let mut big = alert("leak", "db01", 0);
    big.affected_users = Some(25_000);
    assert_eq!(book.apply(&big, Utc::now()).expect("apply").incident.priority, Priority::P0);
}

#[test]
fn one_incident_per_attacker_across_a_family_naming_every_rule() {
    let mut book = IncidentBook::in_memory();
    let member = |rule: &str, priority: Priority, title: &str, secs: i64| {
        let mut a = alert(rule, "198.51.100.7", secs);
        (a.family, a.priority, a.title) = (Some("ssh_guessing".into()), priority, title.into());
        a
    };
    let opened = book.apply(&member("ssh_brute_force", Priority::P3, "SSH brute force", 0), Utc::now()).expect("a");
    let slow = book.apply(&member("ssh_slow_brute_force", Priority::P4, "Slow", 600), Utc::now()).expect("b");
    let mut success = member("brute_force_then_success", Priority::P1, "Brute force then success", 900);
    success.entities.users.insert("deploy".into());
    let success = book.apply(&success, Utc::now()).expect("c");
    assert_eq!(
        (opened.change, slow.change, success.change),
        (ChangeKind::Opened, ChangeKind::Updated, ChangeKind::Updated)
    );
    let incident = book.get(opened.incident.id).expect("get").expect("present");
    assert_eq!(
        incident.rules.iter().map(RuleId::as_str).collect::<Vec<_>>(),
        ["ssh_brute_force", "ssh_slow_brute_force", "brute_force_then_success"]
    );
    assert_eq!((incident.priority, incident.title.as_str()), (Priority::P1, "Brute force then success"));
    assert_eq!(incident.rule_id.as_str(), "ssh_brute_force", "the opening rule keeps its playbook");
    assert!(incident.entities.users.contains("deploy"));
    // The same attacker again joins; another attacker, or a rule outside the family, opens its own.
    let other = book.apply(&member("ssh_brute_force", Priority::P3, "SSH brute force", 5), Utc::now()).expect("d");
    assert_eq!(other.incident.id, opened.incident.id);
    let mut elsewhere = alert("ssh_brute_force", "203.0.113.50", 5);
    elsewhere.family = Some("ssh_guessing".into());
    assert_ne!(book.apply(&elsewhere, Utc::now()).expect("e").incident.id, opened.incident.id);
    assert_ne!(
        book.apply(&alert("port_scan", "198.51.100.7", 5), Utc::now()).expect("f").incident.id,
        opened.incident.id
    );
}

#[test]
fn entities_are_the_union_over_the_incident_capped_with_a_count() {
    let mut book = IncidentBook::in_memory();
    let mut id = None;
    for i in 0..(MAX_ENTITIES + 20) {
        let mut a = alert("spray", "192.0.2.136", i as i64);
        a.entities.users.insert(format!("user{i:03}"));
        a.entities.hosts.insert(format!("host{}", i % 7));
        id = Some(book.apply(&a, Utc::now()).expect("apply").incident.id);
    }
    let incident = book.get(id.expect("applied")).expect("get").expect("present");
    assert_eq!(incident.entities.hosts.len(), 7);
    assert_eq!(incident.entities.users.len(), MAX_ENTITIES);
    assert_eq!(incident.entities.omitted, 20);
    assert_eq!(incident.entities.ips.len(), 1);
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
