//! The email channel against a real SMTP server (aiosmtpd, from `scripts/setup.sh`) on
//! loopback that requires STARTTLS: one incident's opening, acknowledgement and resolution
//! arrive as three messages with a plain-text and an HTML part, parsed back with Python's
//! `email` package.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::{Peer, Server, blocking, free_port, python, rules_dir, wait_for};

fn smtp(dir: &Path, port: u16) -> Peer {
    let certs = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("certificate");
    std::fs::write(dir.join("cert.pem"), certs.cert.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), certs.signing_key.serialize_pem()).expect("key");
    let mut command = Command::new(python());
    command
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(dir.join("maildir"))
        .arg("--tlscert")
        .arg(dir.join("cert.pem"))
        .arg("--tlskey")
        .arg(dir.join("key.pem"));
    Peer::start(command, "aiosmtpd", port, &dir.join("smtp.log"))
}

/// Each message in the maildir as {subject, from, to, types, text, html}, oldest first.
fn messages(maildir: &Path) -> Vec<serde_json::Value> {
    let script = r#"
import email, email.policy, json, os, sys
new = os.path.join(sys.argv[1], "new")
out = []
for name in sorted(os.listdir(new), key=lambda n: os.path.getmtime(os.path.join(new, n))) if os.path.isdir(new) else []:
    m = email.message_from_binary_file(open(os.path.join(new, name), "rb"), policy=email.policy.default)
    parts = {p.get_content_type(): p.get_content() for p in m.walk() if not p.is_multipart()}
    out.append({"subject": m["subject"], "from": m["from"], "to": m["to"], "type": m.get_content_type(),
                "text": parts.get("text/plain", ""), "html": parts.get("text/html", "")})
print(json.dumps(out))
"#;
    let out = Command::new(python()).args(["-c", script]).arg(maildir).output().expect("parse the mail");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// A server running only the SSH brute-force rule, with `sinks` configured.
fn start(dir: &Path, sinks: &str) -> Server {
    let rules = dir.join("rules");
    std::fs::create_dir_all(rules.join("lib")).expect("rules dir");
    std::fs::copy(rules_dir().join("ssh_brute_force.rhai"), rules.join("ssh_brute_force.rhai")).expect("rule");
    std::fs::copy(rules_dir().join("lib/common.rhai"), rules.join("lib/common.rhai")).expect("lib");
    Server::start(dir, &format!("[rules]\ndir = {rules:?}\n{sinks}"))
}

#[test]
fn incident_lifecycle_by_email_over_starttls() {
    let smtp_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _smtp = smtp(smtp_dir.path(), port);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        &format!(
            "[sinks.mail]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\nca_file = {:?}\n\
             from = \"Vigil <vigil@example.com>\"\nto = [\"soc@example.com\", \"oncall@example.com\"]\nincident_url = \"https://vigil.example/incidents/{{id}}\"\n",
            smtp_dir.path().join("cert.pem")
        ),
    );
    let body = (0..30)
        .map(|i| {
            serde_json::json!({"id": format!("0190e100-0000-7000-8000-{i:012}"), "class": "authentication", "action": "ssh_login",
                "outcome": "failure", "source": {"ip": "203.0.113.66"}, "user": {"name": "root"}})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let client = reqwest::Client::new();
    blocking(async { client.post(server.url("/v1/events")).body(body).send().await.expect("ingest") });
    let maildir = smtp_dir.path().join("maildir");
    let opened = wait_for(Duration::from_secs(30), "the opening message", || messages(&maildir).into_iter().next());
    let id = opened["text"]
        .as_str()
        .expect("text")
        .lines()
        .find_map(|l| l.strip_prefix("Incident: "))
        .expect("incident id")
        .to_owned();
    for to in ["acknowledged", "resolved"] {
        let status = blocking(async {
            client
                .post(server.url(&format!("/v1/incidents/{id}/transition")))
                .json(&serde_json::json!({"to": to}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        assert_eq!(status.ok(), Some(200));
    }
    let mail = wait_for(Duration::from_secs(30), "three messages", || {
        let mail = messages(&maildir);
        (mail.len() >= 3).then_some(mail)
    });
    assert_eq!(mail.len(), 3);
    for (m, what) in mail.iter().zip(["opened", "acknowledged", "resolved"]) {
        assert_eq!(m["subject"], format!("[Vigil] P2 incident {what}: SSH brute force from one address"));
        assert_eq!(m["type"], "multipart/alternative");
        assert_eq!(m["from"], "Vigil <vigil@example.com>");
        assert_eq!(m["to"], "soc@example.com, oncall@example.com");
        assert!(m["text"].as_str().expect("text").contains("IPs: 203.0.113.66"), "{m}");
        assert!(m["html"].as_str().expect("html").contains(&format!("https://vigil.example/incidents/{id}")), "{m}");
    }
}

#[test]
fn low_priority_incidents_arrive_as_one_digest() {
    let smtp_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _smtp = smtp(smtp_dir.path(), port);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        &format!(
            "[sinks.digest]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\nca_file = {:?}\n\
             from = \"vigil@example.com\"\nto = [\"soc@example.com\"]\ndigest = {{ interval = \"1s\", priorities = [\"P2\"] }}\n\
             healthcheck_interval = \"300ms\"\n",
            smtp_dir.path().join("cert.pem")
        ),
    );
    // Two brute forces in one batch: two P2 incidents, collected into one digest.
    let body = (0..40)
        .map(|i| {
            serde_json::json!({"id": format!("0190e200-0000-7000-8000-{i:012}"), "class": "authentication", "action": "ssh_login",
                "outcome": "failure", "source": {"ip": if i % 2 == 0 { "198.51.100.21" } else { "198.51.100.22" }}})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    blocking(async { reqwest::Client::new().post(server.url("/v1/events")).body(body).send().await.expect("ingest") });
    let maildir = smtp_dir.path().join("maildir");
    let mail = wait_for(Duration::from_secs(30), "the digest", || {
        let mail = messages(&maildir);
        (!mail.is_empty()).then_some(mail)
    });
    assert_eq!(mail.len(), 1, "one digest, no message per incident: {mail:?}");
    assert_eq!(mail[0]["subject"], "[Vigil] Digest: 2 incident change(s)");
    let text = mail[0]["text"].as_str().expect("text");
    assert!(text.contains("198.51.100.21") && text.contains("198.51.100.22"), "{text}");
    assert_eq!(text.matches("P2 incident opened").count(), 2, "{text}");
}
