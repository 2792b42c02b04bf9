//! Paging and chat channels follow an incident's life: one SSH brute force opens an
//! incident (more alerts join it), a responder acknowledges it, then resolves it. PagerDuty
//! gets trigger → acknowledge → resolve under one `dedup_key`, Opsgenie create → acknowledge
//! → close by one `alias`, Slack and Teams one message per state change — through a 429
//! storm on Slack with `Retry-After`, losing nothing. Routing keys and webhook URLs never
//! reach the log, `/metrics` or the API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::helpers::{Server, blocking, metric, rules_dir, wait_for};
use crate::mock::{Answer, MockServer};

const ROUTING_KEY: &str = "R0ut1ngK3yR0ut1ngK3yR0ut1ngK3y01";
const GENIE_KEY: &str = "genie-key-4b1d";
const SLACK_PATH: &str = "/slack/services/T0001/B0001/slacksecret9";
const TEAMS_PATH: &str = "/teams/workflows/abc/triggers/manual/paths/invoke?sig=teamssecret7";

fn failures(server: &Server, from: usize, n: usize) {
    let body = (from..from + n)
        .map(|i| {
            serde_json::json!({"id": format!("0190e000-0000-7000-8000-{i:012}"), "class": "authentication", "action": "ssh_login",
                "outcome": "failure", "source": {"ip": "203.0.113.50"}, "user": {"name": "root"}, "host": {"name": "bastion02"}})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let status = blocking(async {
        reqwest::Client::new().post(server.url("/v1/events")).body(body).send().await.map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202));
}

fn transition(server: &Server, id: &str, to: &str) {
    let status = blocking(async {
        reqwest::Client::new()
            .post(server.url(&format!("/v1/incidents/{id}/transition")))
            .json(&serde_json::json!({"to": to}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(200), "transition to {to}");
}

#[test]
fn one_incident_pages_once_and_follows_its_lifecycle_on_every_channel() {
    let slack_storm = Arc::new(AtomicUsize::new(3));
    let mock = MockServer::start({
        let storm = slack_storm.clone();
        move |r| {
            if r.path.starts_with("/v2/enqueue") {
                Answer::json(202, serde_json::json!({"status": "success", "message": "Event processed"}))
            } else if r.path.starts_with("/og/") {
                Answer::json(
                    202,
                    serde_json::json!({"result": "Request will be processed", "took": 0.01, "requestId": "x"}),
                )
            } else if r.path.starts_with("/slack/") && storm.load(Ordering::SeqCst) > 0 {
                storm.fetch_sub(1, Ordering::SeqCst);
                Answer { status: 429, headers: vec![("retry-after", "1".into())], body: "rate_limited".into() }
            } else if r.path.starts_with("/slack/") {
                Answer { status: 200, headers: Vec::new(), body: "ok".into() }
            } else {
                Answer { status: 202, headers: Vec::new(), body: String::new() }
            }
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(rules.join("lib")).expect("rules dir");
    std::fs::copy(rules_dir().join("ssh_brute_force.rhai"), rules.join("ssh_brute_force.rhai")).expect("rule");
    std::fs::copy(rules_dir().join("lib/common.rhai"), rules.join("lib/common.rhai")).expect("lib");
    // Slack's message comes from a user's template; a field that does not exist renders empty.
    let template = dir.path().join("slack.json");
    std::fs::write(
        &template,
        r#"{"text": {{ headline|tojson }}, "blocks": [{"type": "header", "text": {"type": "plain_text", "text": {{ headline|tojson }}}}], "custom": "{{ incident.nope.deeper }}|{{ incident.entities.ips[0] }}|{{ step }}"}"#,
    )
    .expect("template");
    let url = mock.url();
    let server = Server::start(
        dir.path(),
        &format!(
            "[rules]\ndir = {rules:?}\n\
             [incidents.escalation]\npriorities = [\"P2\"]\np2 = \"2s\"\ncheck_every = \"200ms\"\nmax_level = 1\n\
             [sinks.pd_escalation]\ntype = \"pagerduty\"\nrouting_key = \"{ROUTING_KEY}\"\nendpoint = \"{url}/esc\"\nescalation_level = 1\n\
             [sinks.pd]\ntype = \"pagerduty\"\nrouting_key = \"{ROUTING_KEY}\"\nendpoint = \"{url}\"\nincident_url = \"https://vigil.example/incidents/{{id}}\"\n\
             [sinks.og]\ntype = \"opsgenie\"\napi_key = \"{GENIE_KEY}\"\nendpoint = \"{url}/og\"\nteams = [\"soc\"]\n\
             [sinks.slack]\ntype = \"slack\"\nwebhook_url = \"{url}{SLACK_PATH}\"\ntemplate = {template:?}\n\
             [sinks.teams]\ntype = \"teams\"\nwebhook_url = \"{url}{TEAMS_PATH}\"\n"
        ),
    );
    failures(&server, 0, 30);
    let triggered = wait_for(Duration::from_secs(30), "the page", || {
        mock.requests_to("/v2/enqueue")
            .first()
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).expect("PD event"))
    });
    let id = triggered["dedup_key"].as_str().expect("dedup_key").to_owned();
    // More failures: further alerts join the open incident; nobody is paged again.
    failures(&server, 30, 30);
    wait_for(Duration::from_secs(30), "the second alert joined the incident", || {
        let incidents = blocking(async {
            reqwest::get(server.url("/v1/incidents")).await.ok()?.json::<serde_json::Value>().await.ok()
        })?;
        (incidents["incidents"][0]["alert_count"].as_u64()? >= 2).then_some(())
    });
    // Nobody acknowledged within the (shortened) P2 response time: the escalation channel
    // is paged for the same incident.
    let escalated = wait_for(Duration::from_secs(30), "the escalation page", || {
        mock.requests_to("/esc/v2/enqueue")
            .first()
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).expect("PD event"))
    });
    assert_eq!(
        (escalated["event_action"].as_str(), escalated["dedup_key"].as_str()),
        (Some("trigger"), Some(id.as_str()))
    );
    transition(&server, &id, "acknowledged");
    transition(&server, &id, "resolved");

    let pd = wait_for(Duration::from_secs(30), "PagerDuty's three events", || {
        let events: Vec<serde_json::Value> =
            mock.requests_to("/v2/enqueue").iter().map(|r| serde_json::from_slice(&r.body).expect("event")).collect();
        (events.len() >= 3).then_some(events)
    });
    let actions: Vec<&str> = pd.iter().map(|e| e["event_action"].as_str().expect("action")).collect();
    assert_eq!(actions, ["trigger", "acknowledge", "resolve"], "paged once, then followed");
    assert!(pd.iter().all(|e| e["dedup_key"] == id.as_str() && e["routing_key"] == ROUTING_KEY));
    assert_eq!(pd[0]["payload"]["severity"], "error", "P2 maps to error");
    assert!(pd[0]["payload"]["summary"].as_str().expect("summary").contains("203.0.113.50"));
    assert_eq!(pd[0]["links"][0]["href"], format!("https://vigil.example/incidents/{id}"));
    let esc = wait_for(Duration::from_secs(30), "the escalation channel follows", || {
        let events: Vec<serde_json::Value> =
            mock.requests_to("/esc/").iter().map(|r| serde_json::from_slice(&r.body).expect("event")).collect();
        (events.len() >= 3).then_some(events)
    });
    let actions: Vec<&str> = esc.iter().map(|e| e["event_action"].as_str().expect("action")).collect();
    assert_eq!(actions, ["trigger", "acknowledge", "resolve"]);

    let og = wait_for(Duration::from_secs(30), "Opsgenie's three requests", || {
        let requests = mock.requests_to("/og/");
        (requests.len() >= 3).then_some(requests)
    });
    let paths: Vec<&str> = og.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/og/v2/alerts".to_owned(),
            format!("/og/v2/alerts/{id}/acknowledge?identifierType=alias"),
            format!("/og/v2/alerts/{id}/close?identifierType=alias")
        ]
    );
    assert!(og.iter().all(|r| r.header("authorization") == Some(&format!("GenieKey {GENIE_KEY}"))));
    let created: serde_json::Value = serde_json::from_slice(&og[0].body).expect("alert");
    assert_eq!((created["alias"].as_str(), created["priority"].as_str()), (Some(id.as_str()), Some("P3")));

    // Slack: three answers of 429 first; each message still arrives once, in order, and
    // not before the Retry-After.
    let slack = wait_for(Duration::from_secs(60), "Slack's three messages", || {
        let requests = mock.requests_to("/slack/");
        (requests.len() >= 6).then_some(requests)
    });
    let texts: Vec<String> = slack
        .iter()
        .skip(3)
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).expect("message")["text"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(
        texts[0].contains("opened") && texts[1].contains("acknowledged") && texts[2].contains("resolved"),
        "{texts:?}"
    );
    let first: serde_json::Value = serde_json::from_slice(&slack[3].body).expect("message");
    assert_eq!(first["blocks"][0]["type"], "header");
    assert_eq!(first["custom"], "|203.0.113.50|trigger", "the template rendered, missing fields empty");

    let teams = wait_for(Duration::from_secs(30), "Teams' three cards", || {
        let requests = mock.requests_to("/teams/");
        (requests.len() >= 3).then_some(requests)
    });
    for (r, status) in teams.iter().zip(["opened", "acknowledged", "resolved"]) {
        let card: serde_json::Value = serde_json::from_slice(&r.body).expect("card");
        assert_eq!(card["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
        assert!(card["attachments"][0]["content"]["body"][0]["text"].as_str().expect("title").contains(status));
    }

    // Nothing more was sent, nothing lost or dead-lettered, and no secret leaked.
    assert_eq!(mock.requests_to("/v2/enqueue").len(), 3);
    let text = server.metrics();
    for sink in ["pd", "og", "slack", "teams"] {
        let label = format!("sink=\"{sink}\"");
        assert_eq!(metric(&text, &["sink_records_total{", &label, "outcome=\"dead_lettered\""]), 0.0, "{sink}");
        assert!(metric(&text, &["sink_records_total{", &label, "outcome=\"delivered\""]) >= 3.0, "{sink}");
    }
    let sinks =
        blocking(async { reqwest::get(server.url("/v1/sinks")).await.expect("sinks").text().await.expect("text") });
    for secret in [ROUTING_KEY, GENIE_KEY, "slacksecret9", "teamssecret7"] {
        assert!(!server.log().contains(secret), "{secret} in the log");
        assert!(!text.contains(secret), "{secret} in /metrics");
        assert!(!sinks.contains(secret), "{secret} in /v1/sinks");
    }
}

#[test]
fn the_opsgenie_heartbeat_is_pinged_at_every_health_check() {
    // Opsgenie's answer to a ping (Heartbeat API: POST /v2/heartbeats/{name}/ping).
    let mock = MockServer::start(|_| {
        Answer::json(202, serde_json::json!({ "result": "PONG - Heartbeat received", "took": 0.006, "requestId": "p" }))
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &format!(
            "[sinks.og]\ntype = \"opsgenie\"\napi_key = \"{GENIE_KEY}\"\nendpoint = \"{}/og\"\nheartbeat = \"vigil-prod\"\nhealthcheck_interval = \"200ms\"\n",
            mock.url()
        ),
    );
    let pings = wait_for(Duration::from_secs(30), "three heartbeat pings", || {
        let pings = mock.requests_to("/og/v2/heartbeats/");
        (pings.len() >= 3).then_some(pings)
    });
    for ping in &pings {
        assert_eq!((ping.method.as_str(), ping.path.as_str()), ("POST", "/og/v2/heartbeats/vigil-prod/ping"));
        assert_eq!(ping.header("authorization"), Some(format!("GenieKey {GENIE_KEY}").as_str()));
    }
    assert!(mock.requests_to("/og/v2/alerts").is_empty(), "a ping is not an alert");
    drop(server);

    // A heartbeat name that is a path is refused by the config check.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[sinks.og]\ntype = \"opsgenie\"\napi_key = \"k\"\nheartbeat = \"a/b\"\n").expect("write");
    let out = std::process::Command::new(crate::helpers::vigil_bin())
        .arg("--config")
        .arg(&bad)
        .args(["config", "check"])
        .output()
        .expect("config check");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sinks.og.heartbeat"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
