//! The `email` sink: incident changes by SMTP, as plain text with an HTML alternative.
//!
//! STARTTLS is required by default (`tls = "starttls"`, port 587); `tls = "implicit"` is
//! SMTPS (port 465); `tls = "none"` only for a relay on loopback. The server's certificate
//! is checked against the system's roots, or `ca_file`. One message per state change of an
//! incident, like the chat channels; SMTP 4xx answers (and connection failures) are
//! retried, 5xx dead-lettered.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::incident;
use crate::export::{Item, SendReport, Sink, SinkError};
use crate::incident::IncidentChange;
use crate::telemetry::Secret;

/// How the connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// STARTTLS, required.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// Plain text (a relay on loopback only).
    None,
}

/// Settings of an `email` sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host name.
    pub host: String,
    /// Port; 587 for STARTTLS, 465 for implicit TLS, 25 otherwise.
    #[serde(default)]
    pub port: Option<u16>,
    /// Connection security.
    #[serde(default)]
    pub tls: SmtpTls,
    /// PEM file of CAs to trust for the server's certificate (besides the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SMTP user.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Sender, `Vigil <vigil@example.com>`.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject prefix.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// Link to an incident; `{id}` becomes the incident id.
    #[serde(default)]
    pub incident_url: Option<String>,
    /// 0: mailed when an incident opens; n: when nobody acknowledged it within n
    /// response times.
    #[serde(default)]
    pub escalation_level: u8,
    /// A template file for the plain-text part (see `MessageTemplate`).
    #[serde(default)]
    pub text_template: Option<PathBuf>,
    /// A template file for the HTML part.
    #[serde(default)]
    pub html_template: Option<PathBuf>,
    /// Digest mode: changes of these priorities are collected and mailed together once per
    /// interval instead of one message each.
    #[serde(default)]
    pub digest: Option<DigestConfig>,
    /// Longest an SMTP exchange may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// `digest = { ... }`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    /// How often the digest goes out (when it has anything).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// Priorities collected into the digest.
    pub priorities: Vec<crate::event::Priority>,
}

impl Default for DigestConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            priorities: vec![crate::event::Priority::P3, crate::event::Priority::P4],
        }
    }
}

/// Changes waiting for the next digest. Kept in the sink's state, which is committed with
/// its cursor: a crash loses none (and may send a digest twice).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Digest {
    started: Option<chrono::DateTime<chrono::Utc>>,
    entries: Vec<DigestEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DigestEntry {
    time: chrono::DateTime<chrono::Utc>,
    headline: String,
    incident: String,
    link: Option<String>,
}

fn default_prefix() -> String {
    "[Vigil]".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl EmailConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.host.is_empty() {
            errors.push((format!("{prefix}.host"), "must not be empty".into()));
        }
        if let Err(e) = self.from.parse::<Mailbox>() {
            errors.push((format!("{prefix}.from"), format!("not an address: {e}")));
        }
        if self.to.is_empty() {
            errors.push((format!("{prefix}.to"), "needs at least one recipient".into()));
        }
        for (i, to) in self.to.iter().enumerate() {
            if let Err(e) = to.parse::<Mailbox>() {
                errors.push((format!("{prefix}.to.{i}"), format!("not an address: {e}")));
            }
        }
        errors.extend(incident::validate_template(self.text_template.as_deref(), format!("{prefix}.text_template")));
        errors.extend(incident::validate_template(self.html_template.as_deref(), format!("{prefix}.html_template")));
        if self.username.is_some() != self.password.is_some() {
            errors.push((format!("{prefix}.password"), "username and password go together".into()));
        }
        errors
    }
}

/// Subject, plain text and HTML of the message for a change, or `None`.
pub fn render(change: &IncidentChange, config: &EmailConfig) -> Option<(String, String, String)> {
    let headline = super::slack::headline(change, config.escalation_level)?;
    let i = &change.incident;
    let join = |set: &std::collections::BTreeSet<String>| set.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
    let link = incident::link(config.incident_url.as_deref(), change);
    let facts = [
        ("Priority", i.priority.as_str().to_owned()),
        ("Status", i.status.as_str().to_owned()),
        ("Rule", i.rule_id.to_string()),
        ("Events / alerts", format!("{} / {}", i.event_count, i.alert_count)),
        ("IPs", join(&i.entities.ips)),
        ("Users", join(&i.entities.users)),
        ("Hosts", join(&i.entities.hosts)),
        ("ATT&CK", i.techniques.join(", ")),
        ("First seen", i.first_seen.to_rfc3339()),
        ("Incident", i.id.to_string()),
    ];
    let mut text = format!("{headline}\n\n");
    let mut html = format!("<h2>{}</h2>\n<table>\n", html_escape(&headline));
    for (name, value) in &facts {
        text.push_str(&format!("{name}: {value}\n"));
        html.push_str(&format!("<tr><th align=\"left\">{name}</th><td>{}</td></tr>\n", html_escape(value)));
    }
    html.push_str("</table>\n");
    if let Some(link) = &link {
        text.push_str(&format!("\n{link}\n"));
        html.push_str(&format!("<p><a href=\"{0}\">{0}</a></p>\n", html_escape(link)));
    }
    Some((format!("{} {headline}", config.subject_prefix), text, html))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The email sink.
pub struct EmailSink {
    config: EmailConfig,
    digest: std::sync::Mutex<Digest>,
    templates: [Option<incident::MessageTemplate>; 2],
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for EmailSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSink").field("host", &self.config.host).finish()
    }
}

impl EmailSink {
    /// A sink for validated `config`; fails if the CA file cannot be read.
    pub fn new(config: EmailConfig) -> Result<Self, SinkError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| SinkError::permanent(format!("{what}: {e}"));
        let mut tls = TlsParameters::builder(config.host.clone());
        if let Some(file) = &config.ca_file {
            let pem = std::fs::read(file).map_err(|e| bad(&format!("cannot read {}", file.display()), &e))?;
            tls = tls.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| bad("bad CA file", &e))?);
        }
        let tls = || tls.clone().build_rustls().map_err(|e| bad("TLS settings", &e));
        let (tls, port) = match config.tls {
            SmtpTls::Starttls => (Tls::Required(tls()?), 587),
            SmtpTls::Implicit => (Tls::Wrapper(tls()?), 465),
            SmtpTls::None => (Tls::None, 25),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
            .port(config.port.unwrap_or(port))
            .tls(tls)
            .timeout(Some(config.timeout));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let from = config.from.parse().map_err(|e| bad("from", &e))?;
        let to = config.to.iter().map(|t| t.parse()).collect::<Result<Vec<Mailbox>, _>>().map_err(|e| bad("to", &e))?;
        let load = |p: &Option<PathBuf>| {
            p.as_deref().map(incident::MessageTemplate::load).transpose().map_err(SinkError::permanent)
        };
        let templates = [load(&config.text_template)?, load(&config.html_template)?];
        Ok(Self { transport: builder.build(), from, to, config, digest: std::sync::Mutex::default(), templates })
    }

    async fn mail(&self, change: IncidentChange) -> Result<(), SinkError> {
        let Some((subject, mut text, mut html)) = render(&change, &self.config) else { return Ok(()) };
        if self.templates.iter().any(Option::is_some) {
            let level = self.config.escalation_level;
            let headline = super::slack::headline(&change, level).unwrap_or_default();
            let link = incident::link(self.config.incident_url.as_deref(), &change);
            for (template, part) in self.templates.iter().zip([&mut text, &mut html]) {
                if let Some(t) = template {
                    *part = t.render(&change, incident::step(&change, level), &headline, link.as_deref())?;
                }
            }
        }
        if let Some(digest) = &self.config.digest
            && digest.priorities.contains(&change.incident.priority)
        {
            let now = chrono::Utc::now();
            let i = &change.incident;
            let entities: Vec<&str> = i
                .entities
                .ips
                .iter()
                .chain(&i.entities.users)
                .chain(&i.entities.hosts)
                .take(4)
                .map(String::as_str)
                .collect();
            let mut headline = super::slack::headline(&change, self.config.escalation_level).unwrap_or_default();
            if !entities.is_empty() {
                headline = format!("{headline} ({})", entities.join(", "));
            }
            let link = incident::link(self.config.incident_url.as_deref(), &change);
            let mut d = self.digest.lock().unwrap_or_else(|p| p.into_inner());
            d.started.get_or_insert(now);
            d.entries.push(DigestEntry { time: now, headline, incident: change.incident.id.to_string(), link });
            return Ok(());
        }
        self.deliver(subject, text, html).await
    }

    async fn deliver(&self, subject: String, text: String, html: String) -> Result<(), SinkError> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| SinkError::permanent(format!("cannot build the message: {e}")))?;
        self.transport.send(message).await.map(drop).map_err(classify)
    }
}

impl EmailSink {
    /// Mails the digest when its interval has passed; on failure it stays for the next try.
    async fn flush_digest(&self) {
        let Some(config) = &self.config.digest else { return };
        let entries = {
            let d = self.digest.lock().unwrap_or_else(|p| p.into_inner());
            let due = d.started.is_some_and(|t| {
                chrono::Utc::now() - t >= chrono::Duration::from_std(config.interval).unwrap_or_default()
            });
            if !due || d.entries.is_empty() {
                return;
            }
            d.entries.clone()
        };
        let subject = format!("{} Digest: {} incident change(s)", self.config.subject_prefix, entries.len());
        let mut text = format!("{} incident change(s) since {}:\n\n", entries.len(), entries[0].time.to_rfc3339());
        let mut html = format!("<h2>{}</h2>\n<ul>\n", html_escape(&subject));
        for e in &entries {
            let link = e.link.as_deref().unwrap_or(&e.incident);
            text.push_str(&format!("- {} {} ({link})\n", e.time.format("%Y-%m-%d %H:%M"), e.headline));
            html.push_str(&format!(
                "<li>{} {} (<a href=\"{2}\">{2}</a>)</li>\n",
                e.time.format("%Y-%m-%d %H:%M"),
                html_escape(&e.headline),
                html_escape(link)
            ));
        }
        html.push_str("</ul>\n");
        match self.deliver(subject, text, html).await {
            Ok(()) => {
                let mut d = self.digest.lock().unwrap_or_else(|p| p.into_inner());
                let sent = entries.len().min(d.entries.len());
                d.entries.drain(..sent);
                d.started = d.entries.first().map(|e| e.time);
            }
            Err(e) => {
                tracing::warn!(error = %e, changes = entries.len(), "Email digest not sent; it is kept for the next try.")
            }
        }
    }
}

/// SMTP 5xx is permanent; 4xx, timeouts and connection failures are retried. The error
/// text never carries the password.
fn classify(e: lettre::transport::smtp::Error) -> SinkError {
    if e.is_permanent() {
        let status = e
            .status()
            .map(|c| u16::from(c.severity as u8) * 100 + u16::from(c.category as u8) * 10 + u16::from(c.detail as u8));
        SinkError::Permanent { reason: format!("SMTP refused: {e}"), status, excerpt: None }
    } else {
        SinkError::retryable(format!("SMTP: {e}"))
    }
}

impl Sink for EmailSink {
    async fn open(&mut self, state: &serde_json::Value) -> Result<(), SinkError> {
        if !state.is_null() {
            let digest: Digest = serde_json::from_value(state.clone()).unwrap_or_default();
            if !digest.entries.is_empty() {
                tracing::info!(changes = digest.entries.len(), "Email digest restored.");
            }
            *self.digest.get_mut().unwrap_or_else(|p| p.into_inner()) = digest;
        }
        Ok(())
    }

    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        let report = incident::send_in_order(batch, 4, |change| self.mail(change)).await;
        self.flush_digest().await;
        Ok(report)
    }

    fn state(&self) -> serde_json::Value {
        let digest = self.digest.lock().unwrap_or_else(|p| p.into_inner());
        if digest.entries.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::to_value(&*digest).unwrap_or_default()
        }
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        self.flush_digest().await;
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(SinkError::retryable("the SMTP server did not answer NOOP")),
            Err(e) => Err(classify(e)),
        }
    }

    fn incident_channel(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::sinks::incident::tests::change;
    use crate::incident::{ChangeKind, IncidentStatus};

    #[test]
    fn text_and_html_carry_the_incident() {
        let config: EmailConfig = toml::from_str("host = \"smtp.example\"\nfrom = \"Vigil <vigil@example.com>\"\nto = [\"soc@example.com\"]\nincident_url = \"https://vigil.example/i/{id}\"").expect("config");
        assert!(config.validate("sinks.mail").is_empty());
        let (subject, text, html) =
            render(&change(ChangeKind::Opened, None, IncidentStatus::Detected), &config).expect("message");
        assert_eq!(subject, "[Vigil] P1 incident opened: SSH brute force");
        assert!(text.contains("IPs: 203.0.113.7") && text.contains("https://vigil.example/i/"));
        assert!(html.contains("<td>203.0.113.7</td>"));
        assert!(render(&change(ChangeKind::Updated, None, IncidentStatus::Detected), &config).is_none());
        let bad: EmailConfig =
            toml::from_str("host = \"h\"\nfrom = \"not an address\"\nto = []\nusername = \"u\"").expect("config");
        let paths: Vec<String> = bad.validate("m").into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["m.from", "m.to", "m.password"]);
    }
}
