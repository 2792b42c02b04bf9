//! Inbound webhooks: other tools post their own payloads to `POST /v1/webhooks/{name}`,
//! which are verified by HMAC and mapped to `SecurityEvent`s.
//!
//! ```toml
//! [api.webhooks.falco]
//! kind = "falco"                      # falco | alertmanager | github_secret_scanning
//! secret = "${FALCO_WEBHOOK_KEY}"
//! ```
//!
//! Signatures: `github` — `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`
//! (what GitHub sends); `vigil` — `X-Vigil-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>` with `t` within five minutes (replays are refused). The route needs no
//! token: the signature is the credential. A GitHub secret-scanning payload's `secret`
//! field (the leaked value itself) is dropped before anything is stored.

use std::collections::BTreeMap;

use super::ApiPath;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::{ApiError, ApiState};
use crate::telemetry::Secret;

/// What a webhook's payloads are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// Falco's JSON output (directly or through Falcosidekick's webhook output).
    Falco,
    /// Prometheus Alertmanager's webhook (version 4).
    Alertmanager,
    /// GitHub's `secret_scanning_alert` event.
    GithubSecretScanning,
}

/// How the sender signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    /// `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// `X-Vigil-Signature: t=<unix>,v1=<hex>` over `"<t>.<body>"`.
    Vigil,
}

/// One inbound webhook (`[api.webhooks.NAME]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The payload format.
    pub kind: WebhookKind,
    /// The shared HMAC key.
    pub secret: Secret,
    /// The signature scheme (default: `github` for GitHub, `vigil` otherwise).
    #[serde(default)]
    pub signature: Option<SignatureScheme>,
    /// Tenant stamped on the events.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// The inbound webhooks by name.
pub type WebhooksConfig = BTreeMap<String, WebhookConfig>;

/// Problems with the webhook settings.
pub trait Validate {
    /// Every problem, with its path.
    fn validate(&self) -> Vec<(String, String)>;
}

impl Validate for WebhooksConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (name, hook) in self {
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                errors.push((format!("api.webhooks.{name}"), "names may only use A-Z a-z 0-9 _ -".into()));
            }
            if hook.secret.expose().len() < 16 {
                errors.push((format!("api.webhooks.{name}.secret"), "must be at least 16 characters".into()));
            }
        }
        errors
    }
}

const MAX_SKEW_SECS: i64 = 300;

fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect()
}

/// Constant-time comparison of two byte strings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the request's signature; the error says what is wrong, never what was expected.
pub fn verify(
    scheme: SignatureScheme,
    secret: &Secret,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match scheme {
        SignatureScheme::Github => {
            let given = header("x-hub-signature-256").ok_or("missing X-Hub-Signature-256")?;
            let hex = given.strip_prefix("sha256=").ok_or("X-Hub-Signature-256 must start with sha256=")?;
            if same(hex.as_bytes(), &hmac_hex(secret.expose().as_bytes(), &[body])) {
                Ok(())
            } else {
                Err("signature does not match")
            }
        }
        SignatureScheme::Vigil => {
            let given = header("x-vigil-signature").ok_or("missing X-Vigil-Signature")?;
            let mut t = None;
            let mut v1 = None;
            for part in given.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", value)) => t = value.parse::<i64>().ok(),
                    Some(("v1", value)) => v1 = Some(value),
                    _ => {}
                }
            }
            let (t, v1) = (t.ok_or("X-Vigil-Signature has no t=")?, v1.ok_or("X-Vigil-Signature has no v1=")?);
            if (now - t).abs() > MAX_SKEW_SECS {
                return Err("signature timestamp is more than 5 minutes off (replay?)");
            }
            let expected = hmac_hex(secret.expose().as_bytes(), &[t.to_string().as_bytes(), b".", body]);
            if same(v1.as_bytes(), &expected) { Ok(()) } else { Err("signature does not match") }
        }
    }
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_owned).filter(|s| !s.is_empty())
}

fn falco_severity(priority: &str) -> &'static str {
    match priority.to_ascii_lowercase().as_str() {
        "emergency" | "alert" | "critical" => "critical",
        "error" => "high",
        "warning" => "medium",
        "notice" | "informational" | "info" => "low",
        _ => "info",
    }
}

fn slug(text: &str) -> String {
    let mut out: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    while out.contains("__") {
        out = out.replace("__", "_");
    }
    out.trim_matches('_').chars().take(120).collect()
}

fn insert(event: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value.filter(|v| !v.is_null()) {
        event.insert(key.into(), v);
    }
}

/// Maps a payload to `SecurityEvent` JSON objects (validated afterwards like any ingest).
pub fn map(kind: WebhookKind, payload: &Value, tenant: Option<&str>) -> Result<Vec<Value>, String> {
    let mut events = match kind {
        WebhookKind::Falco => vec![falco(payload)?],
        WebhookKind::Alertmanager => alertmanager(payload)?,
        WebhookKind::GithubSecretScanning => vec![github(payload)?],
    };
    if let Some(tenant) = tenant {
        for e in &mut events {
            e["tenant"] = json!(tenant);
        }
    }
    Ok(events)
}

fn falco(p: &Value) -> Result<Value, String> {
    let rule = text(p, "/rule").ok_or("a Falco event needs `rule`")?;
    let fields = p.get("output_fields").cloned().unwrap_or(json!({}));
    let field = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
    let mut e = Map::new();
    let class = if field("proc.name").is_some() || field("proc.cmdline").is_some() { "process" } else { "system" };
    e.insert("class".into(), json!(class));
    e.insert("action".into(), json!(slug(&rule)));
    e.insert("severity".into(), json!(falco_severity(&text(p, "/priority").unwrap_or_default())));
    e.insert("provider".into(), json!("falco"));
    insert(&mut e, "time", text(p, "/time").map(Value::String));
    insert(&mut e, "message", text(p, "/output").map(Value::String));
    insert(&mut e, "host", text(p, "/hostname").map(|h| json!({ "name": h })));
    insert(&mut e, "user", field("user.name").map(|u| json!({ "name": u })));
    if class == "process" {
        insert(&mut e, "process", Some(json!({ "name": field("proc.name"), "command_line": field("proc.cmdline") })));
    }
    insert(&mut e, "source", field("fd.sip").or(field("fd.cip")).map(|ip| json!({ "ip": ip })));
    let tags: Vec<String> = p
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if !tags.is_empty() {
        e.insert("tags".into(), json!(tags));
    }
    e.insert(
        "attributes".into(),
        json!({ "falco": { "rule": rule, "source": p.get("source"), "output_fields": fields } }),
    );
    Ok(Value::Object(clean(e)))
}

fn alertmanager(p: &Value) -> Result<Vec<Value>, String> {
    let alerts = p.get("alerts").and_then(Value::as_array).ok_or("an Alertmanager payload needs `alerts`")?;
    Ok(alerts
        .iter()
        .map(|a| {
            let label = |name: &str| text(a, &format!("/labels/{name}"));
            let severity = match label("severity").as_deref() {
                Some("critical" | "page") => "high",
                Some("error") => "medium",
                Some("warning") => "low",
                _ => "info",
            };
            let mut e = Map::new();
            e.insert("class".into(), json!("system"));
            e.insert("action".into(), json!(slug(&label("alertname").unwrap_or_else(|| "alert".into()))));
            e.insert("severity".into(), json!(severity));
            e.insert("provider".into(), json!("alertmanager"));
            let firing = text(a, "/status").as_deref() != Some("resolved");
            e.insert("outcome".into(), json!(if firing { "failure" } else { "success" }));
            insert(&mut e, "time", text(a, "/startsAt").filter(|_| firing).or(text(a, "/endsAt")).map(Value::String));
            insert(
                &mut e,
                "message",
                text(a, "/annotations/summary").or(text(a, "/annotations/description")).map(Value::String),
            );
            let instance = label("instance").map(|i| i.rsplit_once(':').map_or(i.clone(), |(h, _)| h.to_owned()));
            insert(&mut e, "host", instance.map(|h| json!({ "name": h })));
            e.insert(
                "attributes".into(),
                json!({ "alertmanager": {
                    "status": a.get("status"), "labels": a.get("labels"), "annotations": a.get("annotations"),
                    "fingerprint": a.get("fingerprint"), "receiver": p.get("receiver"),
                } }),
            );
            Value::Object(clean(e))
        })
        .collect())
}

fn github(p: &Value) -> Result<Value, String> {
    let alert = p.get("alert").ok_or("a secret scanning payload needs `alert`")?;
    let action = text(p, "/action").unwrap_or_else(|| "created".into());
    let kind = text(alert, "/secret_type_display_name").or(text(alert, "/secret_type")).unwrap_or_default();
    let repo = text(p, "/repository/full_name").unwrap_or_default();
    let mut alert = alert.clone();
    if let Some(obj) = alert.as_object_mut() {
        // The leaked value itself never enters Vigil.
        obj.remove("secret");
    }
    let mut e = Map::new();
    e.insert("class".into(), json!("finding"));
    e.insert("action".into(), json!(format!("secret_scanning_alert_{}", slug(&action))));
    e.insert("severity".into(), json!(if action == "created" || action == "reopened" { "high" } else { "low" }));
    e.insert("provider".into(), json!("github"));
    e.insert("message".into(), json!(format!("GitHub secret scanning: {kind} in {repo} ({action})")));
    insert(&mut e, "time", text(&alert, "/updated_at").or(text(&alert, "/created_at")).map(Value::String));
    insert(&mut e, "user", text(p, "/sender/login").map(|u| json!({ "name": u })));
    insert(&mut e, "url", text(&alert, "/html_url").map(|u| json!({ "full": u })));
    e.insert("tags".into(), json!(["secret_leak"]));
    e.insert("attributes".into(), json!({ "github": { "repository": repo, "alert": alert } }));
    Ok(Value::Object(clean(e)))
}

/// Drops nulls inside nested objects (the schema wants absent fields, not nulls).
fn clean(mut e: Map<String, Value>) -> Map<String, Value> {
    for v in e.values_mut() {
        if let Value::Object(inner) = v {
            inner.retain(|_, x| !x.is_null());
        }
    }
    e.retain(|_, v| !v.is_null() && !v.as_object().is_some_and(Map::is_empty));
    e
}

/// `POST /v1/webhooks/{name}`: verifies, maps and stores a tool's payload.
pub async fn receive(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let hook = state
        .webhooks
        .get(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no webhook `{name}`")))?;
    let scheme = hook.signature.unwrap_or(match hook.kind {
        WebhookKind::GithubSecretScanning => SignatureScheme::Github,
        _ => SignatureScheme::Vigil,
    });
    if let Err(why) = verify(scheme, &hook.secret, &headers, &body, chrono::Utc::now().timestamp()) {
        tracing::warn!(webhook = %name, reason = why, "Inbound webhook refused: bad signature.");
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", why));
    }
    if hook.kind == WebhookKind::GithubSecretScanning
        && headers.get("x-github-event").and_then(|v| v.to_str().ok()).is_some_and(|e| e == "ping")
    {
        return Ok((StatusCode::OK, axum::Json(json!({ "accepted": 0, "ping": true }))).into_response());
    }
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("body is not JSON: {e}")))?;
    let events = map(hook.kind, &payload, hook.tenant.as_deref())
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unmappable", e))?;
    let mut ndjson = Vec::new();
    for e in &events {
        serde_json::to_writer(&mut ndjson, e).map_err(|_| super::internal())?;
        ndjson.push(b'\n');
    }
    let report = state.ingestor.ingest_body(&format!("webhook/{name}"), &ndjson, false).await?;
    let status = if report.rejected.is_empty() { StatusCode::ACCEPTED } else { StatusCode::UNPROCESSABLE_ENTITY };
    Ok((status, axum::Json(report)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("0123456789abcdef-key")
    }

    #[test]
    fn signatures_are_checked_and_replays_refused() {
        let body = br#"{"x":1}"#;
        let mut headers = HeaderMap::new();
        let good = String::from_utf8(hmac_hex(secret().expose().as_bytes(), &[body])).expect("hex");
        headers.insert("x-hub-signature-256", format!("sha256={good}").parse().expect("header"));
        assert_eq!(verify(SignatureScheme::Github, &secret(), &headers, body, 0), Ok(()));
        assert_eq!(verify(SignatureScheme::Github, &secret(), &headers, b"{}", 0), Err("signature does not match"));
        let now = 1_800_000_000;
        let sig = crate::telemetry::signature(secret().expose().as_bytes(), now, body);
        let mut headers = HeaderMap::new();
        headers.insert("x-vigil-signature", sig.parse().expect("header"));
        assert_eq!(verify(SignatureScheme::Vigil, &secret(), &headers, body, now + 10), Ok(()));
        assert_eq!(
            verify(SignatureScheme::Vigil, &secret(), &headers, body, now + 600),
            Err("signature timestamp is more than 5 minutes off (replay?)")
        );
        assert_eq!(
            verify(SignatureScheme::Vigil, &secret(), &HeaderMap::new(), body, now),
            Err("missing X-Vigil-Signature")
        );
    }

    fn valid(events: &[Value]) {
        for e in events {
            let line = serde_json::to_vec(e).expect("json");
            crate::event::decode_event(&line, &crate::event::DecodeLimits::default(), chrono::Utc::now())
                .unwrap_or_else(|err| panic!("{err}: {e:#}"));
        }
    }

    #[test]
    fn falco_alertmanager_and_github_payloads_map_to_valid_events() {
        let falco = json!({
            "output": "10:20:05.408091526: Warning A shell was spawned in a container (user=root shell=bash)",
            "priority": "Warning", "rule": "Terminal shell in container", "time": "2026-11-22T10:20:05.408091526Z",
            "hostname": "node-7", "source": "syscall", "tags": ["container", "shell", "mitre_execution"],
            "output_fields": { "user.name": "root", "proc.name": "bash", "proc.cmdline": "bash -i", "container.id": "8f1" }
        });
        let events = map(WebhookKind::Falco, &falco, Some("acme")).expect("falco");
        assert_eq!(events[0]["action"], "terminal_shell_in_container");
        assert_eq!((events[0]["class"].as_str(), events[0]["severity"].as_str()), (Some("process"), Some("medium")));
        assert_eq!(events[0]["process"]["command_line"], "bash -i");
        assert_eq!(events[0]["tenant"], "acme");
        valid(&events);

        let am = json!({ "version": "4", "status": "firing", "receiver": "vigil", "alerts": [
            { "status": "firing", "labels": { "alertname": "NodeDown", "severity": "critical", "instance": "db-1:9100" },
              "annotations": { "summary": "db-1 is down" }, "startsAt": "2026-11-22T10:00:00Z", "fingerprint": "abc" },
            { "status": "resolved", "labels": { "alertname": "DiskFull" }, "annotations": {},
              "startsAt": "2026-11-22T09:00:00Z", "endsAt": "2026-11-22T09:30:00Z" } ] });
        let events = map(WebhookKind::Alertmanager, &am, None).expect("alertmanager");
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0]["action"].as_str(), events[0]["host"]["name"].as_str()),
            (Some("nodedown"), Some("db-1"))
        );
        assert_eq!(events[1]["outcome"], "success");
        valid(&events);

        let gh = json!({ "action": "created", "alert": { "number": 7, "secret_type": "aws_access_key_id",
            "secret_type_display_name": "AWS Access Key ID", "secret": "AKIAIOSFODNN7EXAMPLE",
            "html_url": "https://github.com/acme/app/security/secret-scanning/7", "created_at": "2026-11-22T10:00:00Z" },
            "repository": { "full_name": "acme/app" }, "sender": { "login": "octocat" } });
        let events = map(WebhookKind::GithubSecretScanning, &gh, None).expect("github");
        assert_eq!(events[0]["message"], "GitHub secret scanning: AWS Access Key ID in acme/app (created)");
        assert!(!events[0].to_string().contains("AKIAIOSFODNN7EXAMPLE"), "the leaked secret is dropped");
        valid(&events);
        assert!(map(WebhookKind::Falco, &json!({}), None).is_err());
    }
}
