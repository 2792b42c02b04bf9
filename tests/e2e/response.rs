//! Response end to end: a brute force opens an incident, the shipped playbook blocks the
//! source in real nftables inside a network namespace the test makes (a packet from the
//! blocked address is dropped, another passes), the TTL lifts the block, and the audit
//! trail verifies until a record is tampered with. Approvals, plans, reports, dry runs and
//! the webhook backend go through the running server's API.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Server, blocking, get, http_get_text, post, post_events, ssh_failures, wait_for, wait_for_incident,
};
use crate::mock::{Answer, MockServer};

/// A network namespace with two extra addresses on its loopback; deleted on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create() -> Self {
        let name = format!("vigil-e2e-{}", std::process::id());
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
                panic!("`ip` (iproute2) is needed for this test and could not run: {e}; scripts/setup.sh installs it")
            });
            assert!(
                out.status.success(),
                "ip {}: {} (this test needs root and network namespaces; scripts/setup.sh installs iproute2 and nftables)",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["netns", "add", &name]);
        let ns = Self { name };
        run(&["-n", &ns.name, "link", "set", "lo", "up"]);
        run(&["-n", &ns.name, "addr", "add", "10.77.0.2/32", "dev", "lo"]);
        run(&["-n", &ns.name, "addr", "add", "10.77.0.3/32", "dev", "lo"]);
        let nft = Command::new("ip").args(["netns", "exec", &ns.name, "nft", "list", "ruleset"]).output();
        assert!(
            nft.as_ref().is_ok_and(|o| o.status.success()),
            "nft does not run in the namespace ({:?}); scripts/setup.sh installs nftables",
            nft.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        );
        ns
    }

    /// Whether a TCP SYN from `source` to 127.0.0.1 gets an answer (a refusal counts: the
    /// packet got through) within a second.
    fn passes(&self, source: &str) -> bool {
        let probe = "import socket,sys\ns=socket.socket()\ns.settimeout(1)\ns.bind((sys.argv[1],0))\ntry:\n    s.connect(('127.0.0.1',9))\nexcept ConnectionRefusedError:\n    pass\nexcept OSError:\n    sys.exit(3)\n";
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-c", probe, source])
            .output()
            .expect("python3 runs");
        match out.status.code() {
            Some(0) => true,
            Some(3) => false,
            other => panic!("probe failed ({other:?}): {}", String::from_utf8_lossy(&out.stderr)),
        }
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.name, "nft"]).args(args).output().expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A playbooks directory in `dir` holding `playbook` (TOML) as `NAME.toml`.
fn playbooks_dir(dir: &Path, name: &str, playbook: &str) -> std::path::PathBuf {
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).expect("mkdir");
    std::fs::write(playbooks.join(format!("{name}.toml")), playbook).expect("playbook");
    playbooks
}

/// Starts `playbook` on an incident as `alice`; the run's id.
fn start_run(server: &Server, incident: &str, playbook: &str) -> String {
    let (status, run) = post(
        server,
        &format!("/v1/incidents/{incident}/runs"),
        json!({ "playbook": playbook, "requested_by": "alice" }),
    );
    assert_eq!(status, 201, "{run}");
    run["id"].as_str().expect("run id").to_owned()
}

/// Waits (up to 10 s) for a run to reach `status`, and returns it.
fn wait_run(server: &Server, run_id: &str, status: &str) -> Value {
    wait_for(Duration::from_secs(10), &format!("the run to be {status}"), || {
        let r = get(server, &format!("/v1/runs/{run_id}"));
        (r["status"] == status).then_some(r)
    })
}

fn runs(server: &Server) -> Vec<Value> {
    get(server, "/v1/runs")["runs"].as_array().cloned().unwrap_or_default()
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"].as_array().and_then(|s| s.iter().find(|s| s["def"]["id"] == id)).expect("step")
}

fn vigil(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = crate::helpers::vigil_in(dir, args);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_brute_force_is_blocked_in_nftables_until_the_ttl_and_the_audit_trail_holds() {
    let ns = Namespace::create();
    assert!(ns.passes("10.77.0.2") && ns.passes("10.77.0.3"), "both addresses reach the host before any block");
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "[actions.block_ip]\ndefault_ttl = \"6s\"\n[actions.block_ip.nftables]\ncommand = [\"ip\", \"netns\", \"exec\", \"{}\", \"nft\"]\ntable = \"vigil_e2e\"\n[playbooks]\ncheck_every = \"200ms\"\n",
        ns.name
    );
    let mut server = Server::start(dir.path(), &extra);
    assert!(ns.nft(&["list", "chain", "inet", "vigil_e2e", "input"]).contains("ip saddr @blocklist drop"));

    post_events(&server, ssh_failures("10.77.0.2", 12));
    let run = wait_for(Duration::from_secs(30), "the playbook to block the address", || {
        runs(&server).into_iter().find(|r| step(r, "block")["status"] == "succeeded")
    });
    assert_eq!(run["playbook"], "block_source_ip");
    assert_eq!(run["requested_by"], "rule:ssh_brute_force");
    assert_eq!(step(&run, "block")["target"], "10.77.0.2");
    assert!(ns.nft(&["list", "set", "inet", "vigil_e2e", "blocklist"]).contains("10.77.0.2"));
    assert!(!ns.passes("10.77.0.2"), "a packet from the blocked address is dropped");
    assert!(ns.passes("10.77.0.3"), "another address passes");
    let listed = http_get_text(&server.url("/v1/blocklist")).expect("blocklist");
    assert_eq!(listed, "10.77.0.2\n");
    let json = get(&server, "/v1/blocklist?format=json");
    assert_eq!(json["blocked"][0]["ip"], "10.77.0.2");

    wait_for(Duration::from_secs(30), "the TTL to lift the block", || ns.passes("10.77.0.2").then_some(()));
    wait_for(Duration::from_secs(10), "Vigil to record the expiry", || {
        let audit = http_get_text(&server.url("/v1/audit")).unwrap_or_default();
        audit.lines().any(|l| l.contains("\"actor\":\"ttl\"") && l.contains("10.77.0.2")).then_some(())
    });
    assert_eq!(http_get_text(&server.url("/v1/blocklist")).expect("blocklist"), "", "the deny list lapsed too");
    let verified = get(&server, "/v1/audit/verify");
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(server.terminate(), "clean shutdown; log:\n{}", server.log());

    let (ok, out) = vigil(dir.path(), &["audit", "verify"]);
    assert!(ok && out.contains("audit trail intact"), "{out}");
    let (ok, report) = vigil(dir.path(), &["incidents", "report", run["incident_id"].as_str().expect("id")]);
    assert!(ok, "{report}");
    for part in ["# Incident report: SSH brute force", "Time to contain", "block_ip", "10.77.0.2", "ssh_login"] {
        assert!(report.contains(part), "{part} missing in the report:\n{report}");
    }

    // Tamper with one record: verification names it.
    {
        let store = vigil::store::Store::open(&vigil::store::StoreConfig {
            path: dir.path().join("data"),
            ..Default::default()
        })
        .expect("store");
        let table: vigil::store::Table<u64, vigil::actions::audit::AuditRecord> =
            vigil::store::Table::new(&store, vigil::store::Cf::State, b"audit/");
        let mut record = table.get(&2).expect("read").expect("record 2");
        record.target = Some("10.77.0.9".into());
        table.put(&2, &record).expect("write");
    }
    let (ok, out) = vigil(dir.path(), &["audit", "verify"]);
    assert!(!ok, "a tampered trail must fail verification: {out}");
    assert!(out.contains("record 2: content does not match its hash (edited)"), "{out}");
}

#[test]
fn approvals_plans_reports_and_the_webhook_backend_through_the_api() {
    let hook = MockServer::start(|_| Answer::json(200, json!({ "ok": true })));
    let dir = tempfile::tempdir().expect("tempdir");
    let playbooks = playbooks_dir(
        dir.path(),
        "gated",
        r#"
            id = "gated"
            completion = "auto_close"
            [[steps]]
            id = "approve"
            kind = "approval"
            sensitive = true
            [[steps]]
            id = "block"
            action = "block_ip"
            params = { ip = "{{ incident.entities.source_ip }}", ttl = "2h" }
        "#,
    );
    let extra = format!(
        "[playbooks]\ndir = {playbooks:?}\n[actions.block_ip]\nwebhook = {{ url = \"{}/block\", headers = {{ Authorization = \"Bearer HOOK-TOKEN-5150\" }}, signing_secret = \"SIGNING-KEY-2718\" }}\n",
        hook.url()
    );
    let server = Server::start(dir.path(), &extra);
    post_events(&server, ssh_failures("198.51.100.77", 12));
    let incident = wait_for_incident(&server, "ssh_brute_force");
    let id = incident["id"].as_str().expect("id").to_owned();
    assert!(runs(&server).is_empty(), "the rule's own playbook is not in this directory: nothing ran");

    let plan = get(&server, &format!("/v1/incidents/{id}/plan?playbook=gated"));
    assert_eq!(plan["steps"][0]["approval"], "responder or above; approver ≠ requester");
    assert_eq!(plan["steps"][1]["target"], "198.51.100.77");
    assert_eq!(plan["steps"][1]["inverse"], "unblock_ip");
    assert_eq!(plan["steps"][1]["ttl"], "2h");
    assert!(hook.requests().is_empty(), "planning calls nothing");

    let run_id = start_run(&server, &id, "gated");
    let waiting = wait_run(&server, &run_id, "waiting");
    assert_eq!(step(&waiting, "approve")["status"], "waiting");
    let decide = |who: &str, role: &str| {
        post(&server, &format!("/v1/runs/{run_id}/steps/approve/approve"), json!({ "approver": who, "role": role }))
    };
    let (status, body) = decide("alice", "admin");
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "self-approval of a sensitive step");
    assert_eq!(decide("bob", "viewer").0, 403, "a viewer cannot approve");
    let (status, body) = post(&server, "/v1/runs/not-a-uuid/cancel", json!({}));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_id")));
    assert_eq!(decide("bob", "responder").0, 200);
    let done = wait_run(&server, &run_id, "succeeded");
    assert_eq!(step(&done, "approve")["approval"]["by"], "bob");
    let calls = hook.requests_to("/block");
    assert_eq!(calls.len(), 1);
    let body: Value = serde_json::from_slice(&calls[0].body).expect("json");
    assert_eq!(
        (body["action"].as_str(), body["ip"].as_str(), body["ttl_seconds"].as_u64()),
        (Some("block_ip"), Some("198.51.100.77"), Some(7200))
    );
    assert_eq!(calls[0].header("idempotency-key"), Some(format!("{run_id}:block").as_str()));
    assert_eq!(calls[0].header("authorization"), Some("Bearer HOOK-TOKEN-5150"));
    assert!(calls[0].header("x-vigil-signature").is_some_and(|s| s.starts_with("t=") && s.contains(",v1=")));
    assert_eq!(http_get_text(&server.url("/v1/blocklist")).expect("blocklist"), "198.51.100.77\n");

    let closed = wait_for(Duration::from_secs(10), "auto-close to resolve the incident", || {
        let i = get(&server, &format!("/v1/incidents/{id}"));
        (i["status"] == "resolved").then_some(i)
    });
    let timeline: Vec<String> = closed["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["detail"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(timeline.iter().any(|d| d.contains("step approve approved by bob")), "{timeline:#?}");
    assert!(timeline.iter().any(|d| d.contains("blocked 198.51.100.77 for 2h")), "{timeline:#?}");

    let report = http_get_text(&server.url(&format!("/v1/incidents/{id}/report"))).expect("report");
    assert!(report.contains("| approve | approval |  | succeeded | approved by bob |"), "{report}");
    let (status, _) = post(&server, &format!("/v1/runs/{run_id}/cancel"), json!({ "actor": "carol" }));
    assert_eq!(status, 409, "an ended run cannot be cancelled");

    let log = server.log();
    let metrics = server.metrics();
    let api = http_get_text(&server.url("/v1/audit")).unwrap_or_default();
    for secret in ["HOOK-TOKEN-5150", "SIGNING-KEY-2718"] {
        assert!(!log.contains(secret) && !metrics.contains(secret) && !api.contains(secret), "{secret} leaked");
    }
    assert!(crate::helpers::metric(&metrics, &["vigil_actions_total", "block_ip", "ok"]) >= 1.0, "{metrics}");
}

#[test]
fn a_global_dry_run_plans_and_acts_on_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "[playbooks]\ndry_run = true\n");
    post_events(&server, ssh_failures("198.51.100.88", 12));
    let run = wait_for(Duration::from_secs(30), "a planned run", || runs(&server).into_iter().next());
    assert_eq!(run["status"], "planned");
    assert_eq!(run["plan"]["steps"][0]["target"], "198.51.100.88");
    assert_eq!(run["plan"]["steps"][0]["decision"]["allowed"], true);
    assert_eq!(http_get_text(&server.url("/v1/blocklist")).expect("blocklist"), "", "nothing was blocked");
    let audit = http_get_text(&server.url("/v1/audit")).expect("audit");
    assert!(!audit.contains("\"kind\":\"intent\""), "no action was even attempted: {audit}");
}

#[test]
fn a_playbook_notify_step_reaches_the_named_channel_through_the_router() {
    let hook = MockServer::start(|_| Answer::json(200, json!({ "ok": true })));
    let dir = tempfile::tempdir().expect("tempdir");
    let playbooks = playbooks_dir(
        dir.path(),
        "tell",
        r#"
            id = "tell"
            [triggers]
            rules = ["ssh_brute_force"]
            [[steps]]
            id = "page"
            action = "notify"
            params = { channel = "oncall", message = "brute force from {{ incident.entities.source_ip }}" }
            [[steps]]
            id = "nobody"
            action = "notify"
            params = { channel = "nope" }
            on_failure = "continue"
        "#,
    );
    // Both channels take only P0 by their routes: the P2 brute force reaches `oncall` only
    // because the playbook names it, and `quiet` never.
    let extra = format!(
        "[playbooks]\ndir = {playbooks:?}\n\
         [sinks.oncall]\ntype = \"slack\"\nwebhook_url = \"{url}/oncall/T1/B1/hooksecret\"\nroute = {{ records = [\"incident\"], min_priority = \"P0\" }}\n\
         [sinks.quiet]\ntype = \"slack\"\nwebhook_url = \"{url}/quiet/T1/B1/hooksecret\"\nroute = {{ records = [\"incident\"], min_priority = \"P0\" }}\n",
        url = hook.url()
    );
    let server = Server::start(dir.path(), &extra);
    post_events(&server, ssh_failures("198.51.100.99", 12));
    let run = wait_for(Duration::from_secs(30), "the notify run to end", || {
        runs(&server).into_iter().find(|r| r["status"] == "succeeded")
    });
    assert_eq!(step(&run, "page")["outcome"]["detail"], "notified oncall");
    assert!(
        step(&run, "nobody")["error"]
            .as_str()
            .is_some_and(|e| e.contains("no channel `nope` (channels: oncall, quiet)"))
    );
    let message =
        wait_for(Duration::from_secs(30), "the Slack message", || hook.requests_to("/oncall/").into_iter().next());
    let text = message.text();
    assert!(text.contains("needs attention") && text.contains("SSH brute force"), "{text}");
    let incident = get(&server, &format!("/v1/incidents/{}", run["incident_id"].as_str().expect("id")));
    let notified = incident["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .any(|e| e["kind"] == "notified" && e["detail"] == "notified oncall: brute force from 198.51.100.99");
    assert!(notified, "{incident:#}");
    assert!(hook.requests_to("/quiet/").is_empty(), "a channel the playbook did not name stays quiet");
}

#[test]
fn isolate_node_publishes_to_a_nats_subject_and_waits_for_the_agent() {
    use futures_util::StreamExt;
    use vigil::actions::Action;
    use vigil::actions::nats::NatsTarget;
    use vigil::actions::node::{NodeConfig, actions};

    let nats = crate::helpers::Nats::start(None);
    blocking(async {
        // An EDR agent: answers isolation requests, refuses to release `db-01`.
        let agent = async_nats::connect(&nats.url).await.expect("agent connects");
        let mut requests = agent.subscribe("edr.>").await.expect("subscribe");
        let responder = agent.clone();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                let body: Value = serde_json::from_slice(&msg.payload).expect("json");
                let id = msg.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.to_string());
                record.lock().expect("seen").push((msg.subject.to_string(), body.clone(), id));
                let answer = if msg.subject.as_str() == "edr.release.db-01" {
                    json!({ "error": "host is pinned by its owner" })
                } else {
                    json!({ "ok": true })
                };
                if let Some(reply) = msg.reply {
                    responder.publish(reply, answer.to_string().into()).await.expect("reply");
                }
            }
        });
        agent.flush().await.expect("flush");

        let target: NatsTarget = toml::from_str(&format!(
            "url = \"{}\"\nsubject = \"edr.isolate.{{{{ host }}}}\"\nrelease_subject = \"edr.release.{{{{ host }}}}\"\nrequest = true\ntimeout = \"2s\"",
            nats.url
        ))
        .expect("target");
        let config = NodeConfig { nats: Some(target), ..NodeConfig::default() };
        assert!(config.validate("n").is_empty(), "{:?}", config.validate("n"));
        let (isolate, release) = actions(&config).expect("actions");
        let params = |host: &str| json!({ "host": host, "reason": "incident" }).as_object().cloned().expect("object");
        let mut ctx = vigil::actions::ActionContext::new("run-1:isolate", params("db-01"));
        ctx.incident_id = Some("i-1".into());
        let done = isolate.execute(&ctx).await.expect("isolate");
        assert_eq!(done.detail, "isolated db-01 via nats");
        let err = release.execute(&ctx).await.expect_err("the agent refuses");
        assert!(
            err.to_string().contains("the agent on edr.release.db-01 refused: \"host is pinned by its owner\""),
            "{err}"
        );
        let seen = seen.lock().expect("seen").clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, "edr.isolate.db-01");
        assert_eq!((seen[0].1["action"].as_str(), seen[0].1["host"].as_str()), (Some("isolate_node"), Some("db-01")));
        assert_eq!(seen[0].1["incident_id"], "i-1");
        assert_eq!(seen[0].2.as_deref(), Some("run-1:isolate"), "the idempotency key is the message id");

        // Nobody listening on a request subject: a retryable failure, not a hang.
        let lonely: NatsTarget = toml::from_str(&format!(
            "url = \"{}\"\nsubject = \"nobody.{{{{ host }}}}\"\nrequest = true\ntimeout = \"1s\"",
            nats.url
        ))
        .expect("target");
        let (isolate, _) = actions(&NodeConfig { nats: Some(lonely), ..NodeConfig::default() }).expect("actions");
        let err = isolate.execute(&ctx).await.expect_err("no responder");
        assert!(err.is_retryable(), "{err}");
    });
}

#[test]
fn an_approval_nobody_gives_in_time_escalates_the_incident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let playbooks = playbooks_dir(
        dir.path(),
        "slow",
        r#"
            id = "slow"
            [triggers]
            rules = ["ssh_brute_force"]
            [[steps]]
            id = "approve"
            kind = "approval"
            timeout = "1s"
            [[steps]]
            id = "block"
            action = "block_ip"
            params = { ip = "{{ incident.entities.source_ip }}" }
        "#,
    );
    let extra = format!("[playbooks]\ndir = {playbooks:?}\ncheck_every = \"200ms\"\n");
    let server = Server::start(dir.path(), &extra);
    post_events(&server, ssh_failures("198.51.100.55", 12));
    let run = wait_for(Duration::from_secs(30), "the approval to time out", || {
        runs(&server).into_iter().find(|r| r["status"] == "failed")
    });
    assert_eq!(step(&run, "approve")["approval"]["decision"], "timed_out");
    assert_eq!(step(&run, "block")["status"], "cancelled", "nothing ran without the approval");
    let incident = wait_for(Duration::from_secs(10), "the escalation", || {
        let i = get(&server, &format!("/v1/incidents/{}", run["incident_id"].as_str().expect("id")));
        (i["escalation"] == 1).then_some(i)
    });
    let escalated = incident["timeline"].as_array().expect("timeline").iter().any(|e| {
        e["kind"] == "escalated"
            && e["detail"].as_str().is_some_and(|d| d.contains("step approve was not handled in time"))
    });
    assert!(escalated, "{incident:#}");
    assert_eq!(http_get_text(&server.url("/v1/blocklist")).expect("blocklist"), "");
}

#[test]
fn revoke_and_restore_credentials_call_the_identity_provider_and_a_rotation_is_not_undone() {
    use vigil::actions::credentials::{CredentialsConfig, actions};
    use vigil::actions::{Action, ActionContext, ActionError};

    // The identity provider: accepts alice, is down for flaky, does not know ghost.
    let idp = MockServer::start(|r| match r.path.split('/').nth(2) {
        Some("flaky") => Answer::json(503, json!({ "error": "maintenance" })),
        Some("ghost") => Answer::json(404, json!({ "error": "no such user" })),
        _ => Answer::json(200, json!({ "ok": true })),
    });
    let url = idp.url();
    let config: CredentialsConfig = toml::from_str(&format!(
        "url = \"{url}/users/{{{{ user }}}}/{{{{ mode }}}}\"\nrestore_url = \"{url}/users/{{{{ user }}}}/restore\"\n\
         restore_body = '{{\"user\": \"{{{{ user }}}}\", \"enable\": true}}'\n\
         headers = {{ Authorization = \"Bearer idp-token-5e5e\" }}\ntimeout = \"2s\"\n"
    ))
    .expect("config");
    assert!(config.validate("actions.revoke_credentials").is_empty());
    let (revoke, restore) = actions(&config).expect("actions");
    assert_eq!(revoke.spec().inverse.as_deref(), Some("restore_credentials"), "reversible with a restore_url");
    let ctx = |user: &str, mode: Option<&str>| {
        let mut params = json!({ "user": user, "reason": "incident" }).as_object().cloned().expect("object");
        if let Some(mode) = mode {
            params.insert("mode".into(), mode.into());
        }
        let mut ctx = ActionContext::new(format!("run-1:revoke:{user}"), params);
        ctx.incident_id = Some("i-7".into());
        ctx
    };
    blocking(async {
        // Disable (the default mode), then undo it.
        let done = revoke.execute(&ctx("alice", None)).await.expect("revoked");
        assert_eq!(done.detail, "credentials revoked for alice (disable)");
        let undone = revoke.rollback(&ctx("alice", None), &done).await.expect("restored");
        assert_eq!(undone.detail, "credentials restored for alice (disable)");
        // Sessions, through the other action directly.
        restore.execute(&ctx("alice", Some("sessions"))).await.expect("restore action");
        // A key rotation cannot be undone.
        let rotated = revoke.execute(&ctx("alice", Some("rotate_keys"))).await.expect("rotated");
        let refused = revoke.rollback(&ctx("alice", Some("rotate_keys")), &rotated).await;
        assert!(
            matches!(refused, Err(ActionError::NotReversible(ref id)) if id == "revoke_credentials"),
            "{refused:?}"
        );
        // Bad input and bad answers.
        let bad = revoke.execute(&ctx("alice", Some("everything"))).await.expect_err("unknown mode");
        assert!(
            matches!(bad, ActionError::InvalidParams(ref m) if m.contains("sessions, disable, rotate_keys")),
            "{bad}"
        );
        let down = revoke.execute(&ctx("flaky", None)).await.expect_err("503");
        assert!(down.is_retryable() && down.to_string().contains("503"), "{down}");
        let unknown = revoke.execute(&ctx("ghost", None)).await.expect_err("404");
        assert!(!unknown.is_retryable() && unknown.to_string().contains("404"), "{unknown}");
        for error in [&bad, &down, &unknown] {
            assert!(!error.to_string().contains("idp-token-5e5e"), "the token stays out of errors: {error}");
        }
    });

    let requests = idp.requests();
    let seen: Vec<(&str, &str)> = requests.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    assert_eq!(
        seen,
        [
            ("POST", "/users/alice/disable"),
            ("POST", "/users/alice/restore"),
            ("POST", "/users/alice/restore"),
            ("POST", "/users/alice/rotate_keys"),
            ("POST", "/users/flaky/disable"),
            ("POST", "/users/ghost/disable"),
        ],
        "the invalid mode made no call"
    );
    let body = |i: usize| serde_json::from_slice::<Value>(&requests[i].body).expect("JSON body");
    assert_eq!(body(0), json!({ "user": "alice", "mode": "disable", "incident_id": "i-7" }), "the default body");
    assert_eq!(body(1), json!({ "user": "alice", "enable": true }), "the restore body template");
    for r in &requests {
        assert_eq!(r.header("authorization"), Some("Bearer idp-token-5e5e"));
        assert!(r.header("idempotency-key").is_some_and(|k| k.starts_with("run-1:revoke:")), "{:?}", r.headers);
    }

    // Without a restore_url, a revocation is final.
    let config: CredentialsConfig =
        toml::from_str(&format!("url = \"{url}/users/{{{{ user }}}}/{{{{ mode }}}}\"\n")).expect("config");
    let (revoke, _) = actions(&config).expect("actions");
    assert_eq!(revoke.spec().inverse, None);
    blocking(async {
        let done = revoke.execute(&ctx("alice", None)).await.expect("revoked");
        assert!(matches!(revoke.rollback(&ctx("alice", None), &done).await, Err(ActionError::NotReversible(_))));
    });
}

#[test]
fn a_manual_step_waits_for_someone_to_complete_it_then_the_run_goes_on() {
    let hook = MockServer::start(|_| Answer::json(200, json!({ "ok": true })));
    let dir = tempfile::tempdir().expect("tempdir");
    let playbooks = playbooks_dir(
        dir.path(),
        "handoff",
        r#"
            id = "handoff"
            [[steps]]
            id = "call_owner"
            kind = "manual"
            assignee = "soc"
            instructions = "Phone the account owner."
            timeout = "1h"
            [[steps]]
            id = "block"
            action = "block_ip"
            params = { ip = "{{ incident.entities.source_ip }}", ttl = "1h" }
        "#,
    );
    let extra = format!(
        "[playbooks]\ndir = {playbooks:?}\n[actions.block_ip]\nwebhook = {{ url = \"{}/block\" }}\n",
        hook.url()
    );
    let server = Server::start(dir.path(), &extra);
    post_events(&server, ssh_failures("198.51.100.78", 12));
    let incident = wait_for_incident(&server, "ssh_brute_force");
    let id = incident["id"].as_str().expect("id").to_owned();
    let run_id = start_run(&server, &id, "handoff");
    let waiting = wait_run(&server, &run_id, "waiting");
    assert_eq!(step(&waiting, "call_owner")["status"], "waiting");
    assert!(hook.requests().is_empty(), "nothing after the manual step runs before it is done");
    let complete = |who: &str, role: &str| {
        post(
            &server,
            &format!("/v1/runs/{run_id}/steps/call_owner/complete"),
            json!({ "approver": who, "role": role, "note": "owner confirmed it was not them" }),
        )
    };
    assert_eq!(complete("carol", "viewer").0, 403, "a viewer cannot complete a step");
    let (status, body) = post(
        &server,
        &format!("/v1/runs/{run_id}/steps/call_owner/finish"),
        json!({ "approver": "carol", "role": "responder" }),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    assert_eq!(complete("carol", "responder").0, 200);
    let done = wait_run(&server, &run_id, "succeeded");
    assert_eq!(step(&done, "call_owner")["status"], "succeeded", "{done}");
    assert_eq!(step(&done, "block")["status"], "succeeded", "{done}");
    let calls = hook.requests_to("/block");
    assert_eq!(calls.len(), 1, "the step after the manual one ran once");
    let body: Value = serde_json::from_slice(&calls[0].body).expect("json");
    assert_eq!(body["ip"], "198.51.100.78");
    let (again, _) = complete("dave", "responder");
    assert_eq!(again, 409, "a completed step cannot be completed twice");
}
