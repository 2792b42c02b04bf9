//! Fixed sample records and the golden-file check shared by the transform tests.

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{Finding, FindingKind, Format, Input, Output, builtin};
use crate::event::{Priority, SecurityEvent};

fn event(json: &str) -> SecurityEvent {
    serde_json::from_str(json).expect("sample event")
}

/// Sample events: one per class the transforms map differently.
pub fn sample_events() -> Vec<(&'static str, SecurityEvent)> {
    let base = r#""id":"01900000-0000-7000-8000-000000000001","time":"2026-03-02T11:58:01.250Z","observed_time":"2026-03-02T11:58:02Z""#;
    vec![
        (
            "ssh_failure",
            event(&format!(
                r#"{{{base},"class":"authentication","action":"ssh_login","outcome":"failure","severity":"low",
            "message":"Failed password for invalid user admin from 203.0.113.7 port 52311 ssh2","provider":"sshd",
            "source":{{"ip":"203.0.113.7","port":52311}},"user":{{"name":"admin"}},"host":{{"name":"bastion01"}},
            "process":{{"name":"sshd","pid":20417}},"network":{{"transport":"tcp","protocol":"ssh"}},"tags":["ssh"],
            "labels":{{"env":"prod"}},"attributes":{{"ssh":{{"method":"password","invalid_user":true}}}}}}"#
            )),
        ),
        (
            "web_request",
            event(&format!(
                r#"{{{base},"class":"http","outcome":"failure","provider":"nginx",
            "source":{{"ip":"198.51.100.23","port":40000}},"destination":{{"domain":"shop.example.com","port":443}},
            "url":{{"full":"https://shop.example.com/login?next=%2Fadmin","domain":"shop.example.com","path":"/login","query":"next=%2Fadmin"}},
            "http":{{"method":"POST","status_code":401,"user_agent":"curl/8.5.0","request_bytes":42,"response_bytes":17}},"tenant":"acme"}}"#
            )),
        ),
        (
            "process_start",
            event(&format!(
                r#"{{{base},"class":"process","action":"process_started","severity":"high",
            "host":{{"name":"WS-0042","ip":"10.0.0.42","os":"Windows"}},"user":{{"name":"pgustavo","domain":"MORDOR"}},
            "process":{{"pid":4242,"name":"powershell.exe","executable":"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
            "command_line":"powershell.exe -nop -enc SQBFAFgA | \"quoted\" = x\nnext",
            "parent":{{"pid":4000,"name":"cmd.exe"}}}}}}"#
            )),
        ),
        (
            "file_delete",
            event(&format!(
                r#"{{{base},"class":"file","action":"deleted","outcome":"success",
            "host":{{"name":"fs01"}},"user":{{"name":"svc"}},"process":{{"name":"wiper.exe","pid":77}},
            "file":{{"path":"D:\\share\\report.docx","name":"report.docx","size":12345,"hash":{{"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}}}}}"#
            )),
        ),
        (
            "dns_query",
            event(&format!(
                r#"{{{base},"class":"dns","outcome":"success","source":{{"ip":"10.1.2.3"}},
            "attributes":{{"dns":{{"question":{{"name":"api.github.com","type":"A"}}}}}}}}"#
            )),
        ),
        (
            "network_flow",
            event(&format!(
                r#"{{{base},"class":"network","source":{{"ip":"10.4.4.4","port":50000,"bytes":400000000}},
            "destination":{{"ip":"198.51.100.200","port":443,"bytes":12000}},"network":{{"transport":"tcp","direction":"outbound","bytes":400012000}},
            "user":{{"name":"eve"}}}}"#
            )),
        ),
        (
            "account_created",
            event(&format!(
                r#"{{{base},"class":"account","action":"user_created","outcome":"success",
            "host":{{"name":"bastion01"}},"user":{{"name":"root","target":{{"name":"sysupdate","id":"0"}}}}}}"#
            )),
        ),
        (
            "api_call",
            event(&format!(
                r#"{{{base},"class":"api","action":"StopLogging","outcome":"success","provider":"aws.cloudtrail",
            "source":{{"ip":"203.0.113.10"}},"user":{{"name":"intruder"}},"cloud":{{"provider":"aws","region":"eu-west-1","account_id":"123456789012","service":"cloudtrail"}}}}"#
            )),
        ),
        ("other", event(&format!(r#"{{{base},"class":"other","message":"something else"}}"#))),
    ]
}

/// Sample findings: an alert and an incident change.
pub fn sample_findings() -> Vec<(&'static str, Finding)> {
    let time: DateTime<Utc> = "2026-03-02T11:58:31Z".parse().expect("time");
    let first: DateTime<Utc> = "2026-03-02T11:58:01Z".parse().expect("time");
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let alert = Finding {
        kind: FindingKind::Alert,
        id: "01900000-0000-7000-8000-00000000a1e7".into(),
        rule_id: "ssh_brute_force".into(),
        title: "SSH brute force from one address".into(),
        priority: Priority::P2,
        category: Some("authentication_failure".into()),
        time,
        first_time: first,
        count: 10,
        ips: set(&["203.0.113.7"]),
        users: set(&["admin", "root"]),
        hosts: set(&["bastion01"]),
        event_ids: vec!["01900000-0000-7000-8000-000000000001".into(), "01900000-0000-7000-8000-000000000002".into()],
        techniques: vec!["T1110.001".into()],
        tags: vec!["ssh".into()],
        dedup_key: "ssh_brute_force:203.0.113.7".into(),
        notify: vec![],
        raw: serde_json::json!({ "id": "01900000-0000-7000-8000-00000000a1e7", "rule_id": "ssh_brute_force" }),
    };
    let mut incident = alert.clone();
    incident.kind = FindingKind::Incident { change: "opened".into(), status: "detected".into() };
    incident.id = "01900000-0000-7000-8000-0000000001cd".into();
    incident.priority = Priority::P1;
    let mut resolved = incident.clone();
    resolved.kind = FindingKind::Incident { change: "changed".into(), status: "resolved".into() };
    vec![("alert", alert), ("incident_opened", incident), ("incident_resolved", resolved)]
}

/// Every sample, as transform inputs with their names.
pub fn with_inputs(mut f: impl FnMut(&str, Input<'_>)) {
    for (name, e) in sample_events() {
        f(name, Input::Event(&e));
    }
    for (name, finding) in sample_findings() {
        f(name, Input::Finding(&finding));
    }
}

/// Compares each sample's output with `tests/golden/transform/<format>/<name>`; with
/// `VIGIL_UPDATE_GOLDEN=1` the files are (re)written instead.
pub fn check_golden(format: Format) {
    let transform = builtin(&format);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/transform").join(format.as_str());
    let update = std::env::var("VIGIL_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    if update {
        std::fs::create_dir_all(&dir).expect("golden dir");
    }
    let mut failures = Vec::new();
    with_inputs(|name, input| {
        let text = match transform.apply(input).unwrap_or_else(|e| panic!("{name}: {e}")) {
            Output::Json(v) => serde_json::to_string_pretty(&v).expect("json") + "\n",
            Output::Text(t) => t + "\n",
        };
        let path = dir.join(format!("{name}.{}", if format.is_json() { "json" } else { "txt" }));
        if update {
            std::fs::write(&path, &text).expect("write golden");
        } else {
            match std::fs::read_to_string(&path) {
                Ok(expected) if expected == text => {}
                Ok(expected) => failures.push(format!("{}:\n--- expected\n{expected}--- got\n{text}", path.display())),
                Err(_) => {
                    failures.push(format!("{} is missing (run the tests with VIGIL_UPDATE_GOLDEN=1)", path.display()))
                }
            }
        }
    });
    assert!(failures.is_empty(), "golden mismatches:\n{}", failures.join("\n"));
}
