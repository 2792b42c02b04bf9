//! Redaction before export: remove fields (`drop`), keep only some (`keep`), mask secrets
//! and personal data inside strings (`mask`, with presets), and replace identifiers by a
//! keyed hash (`hash`: HMAC-SHA256, so the same user maps to the same pseudonym without
//! the key revealing who). Deterministic; applied to events, and to the entities findings
//! carry (users, IPs, hosts) so a pseudonymised name does not leak through an alert.

use hmac::{Hmac, Mac};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use super::{Finding, TransformError};
use crate::event::{Field, FieldPath, SecurityEvent};
use crate::telemetry::Secret;

/// One masking rule: a pattern (or preset) and the fields it applies to.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskRule {
    /// A regular expression to replace; or use `preset`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `secrets` (cloud keys, private keys, tokens), `email`, or `credit_card`.
    #[serde(default)]
    pub preset: Option<String>,
    /// What matches become.
    #[serde(default = "redacted")]
    pub replacement: String,
    /// Fields to scan; default: `message`, `raw`, `process.command_line`,
    /// `process.parent.command_line`, `url.full`, `url.query`.
    #[serde(default)]
    pub fields: Vec<FieldPath>,
}

fn redacted() -> String {
    "[REDACTED]".into()
}

/// Redaction settings of a sink (`redact = { ... }`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Fields removed.
    #[serde(default)]
    pub drop: Vec<FieldPath>,
    /// When set, only these fields are kept (plus `schema_version`, `id`, `time`,
    /// `observed_time`, `class`).
    #[serde(default)]
    pub keep: Vec<FieldPath>,
    /// Masking rules.
    #[serde(default)]
    pub mask: Vec<MaskRule>,
    /// String fields replaced by a keyed hash (`pseudo:` + 32 hex digits).
    #[serde(default)]
    pub hash: Vec<FieldPath>,
    /// The key of those hashes (`${ENV}` or `{ file = "..." }`).
    #[serde(default)]
    pub hash_key: Option<Secret>,
}

const DEFAULT_MASK_FIELDS: [Field; 6] = [
    Field::Message,
    Field::Raw,
    Field::ProcessCommandLine,
    Field::ProcessParentCommandLine,
    Field::UrlFull,
    Field::UrlQuery,
];

fn preset(name: &str) -> Option<&'static str> {
    Some(match name {
        "secrets" => {
            r"(AKIA|ASIA)[0-9A-Z]{16}|-----BEGIN ([A-Z]+ )?PRIVATE KEY-----[\s\S]*?(-----END ([A-Z]+ )?PRIVATE KEY-----|$)|gh[pousr]_[A-Za-z0-9]{36}|xox[abprs]-[0-9A-Za-z-]{10,}|sk_live_[0-9a-zA-Z]{24}|(?i)(password|passwd|pwd|token|secret|api[_-]?key)=[^&\s]+"
        }
        "email" => r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
        "credit_card" => r"\b(?:\d[ -]?){13,16}\b",
        _ => return None,
    })
}

/// Fields whose values are not strings and so cannot hold a hash.
fn is_typed(path: &FieldPath) -> bool {
    matches!(
        path,
        FieldPath::Known(
            Field::Id
                | Field::Time
                | Field::ObservedTime
                | Field::Class
                | Field::Outcome
                | Field::Severity
                | Field::SchemaVersion
                | Field::SourceIp
                | Field::DestinationIp
                | Field::HostIp
                | Field::SourcePort
                | Field::DestinationPort
                | Field::SourceBytes
                | Field::DestinationBytes
                | Field::SourcePackets
                | Field::DestinationPackets
                | Field::NetworkBytes
                | Field::ProcessPid
                | Field::ProcessParentPid
                | Field::FileSize
                | Field::HttpStatusCode
                | Field::HttpRequestBytes
                | Field::HttpResponseBytes
                | Field::Tags
                | Field::UserRoles
                | Field::UserTargetRoles
        )
    )
}

impl RedactionConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (i, rule) in self.mask.iter().enumerate() {
            let path = format!("{prefix}.mask.{i}");
            match (&rule.pattern, &rule.preset) {
                (Some(p), None) => {
                    if let Err(e) = Regex::new(p) {
                        errors.push((format!("{path}.pattern"), e.to_string()));
                    }
                }
                (None, Some(name)) if preset(name).is_none() => {
                    errors.push((
                        format!("{path}.preset"),
                        format!("unknown preset `{name}`; expected secrets, email or credit_card"),
                    ));
                }
                (None, Some(_)) => {}
                _ => errors.push((path, "set exactly one of `pattern` and `preset`".into())),
            }
        }
        for (i, field) in self.hash.iter().enumerate() {
            if is_typed(field) {
                errors.push((
                    format!("{prefix}.hash.{i}"),
                    format!("`{field}` is not a string field and cannot hold a hash; drop it instead"),
                ));
            }
        }
        if !self.hash.is_empty() && self.hash_key.is_none() {
            errors.push((format!("{prefix}.hash_key"), "hashing needs a key".into()));
        }
        errors
    }

    /// Whether anything is configured.
    pub fn is_empty(&self) -> bool {
        self.drop.is_empty() && self.keep.is_empty() && self.mask.is_empty() && self.hash.is_empty()
    }
}

/// A compiled redaction.
#[derive(Debug)]
pub struct Redaction {
    config: RedactionConfig,
    masks: Vec<(Regex, String, Vec<FieldPath>)>,
}

impl Redaction {
    /// Compiles a validated config.
    pub fn new(config: RedactionConfig) -> Result<Self, TransformError> {
        let mut masks = Vec::new();
        for rule in &config.mask {
            let pattern = rule
                .pattern
                .clone()
                .or_else(|| rule.preset.as_deref().and_then(preset).map(str::to_owned))
                .unwrap_or_default();
            let re = Regex::new(&pattern).map_err(|e| TransformError { format: "redact", reason: e.to_string() })?;
            let fields = if rule.fields.is_empty() {
                DEFAULT_MASK_FIELDS.iter().map(|f| FieldPath::Known(*f)).collect()
            } else {
                rule.fields.clone()
            };
            masks.push((re, rule.replacement.clone(), fields));
        }
        Ok(Self { config, masks })
    }

    fn pseudonym(&self, value: &str) -> String {
        let key = self.config.hash_key.as_ref().map(Secret::expose).unwrap_or_default();
        // HMAC accepts keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("pseudo:{hex}")
    }

    /// The event with the redaction applied.
    pub fn event(&self, event: &SecurityEvent) -> Result<SecurityEvent, TransformError> {
        let error = |e: serde_json::Error| TransformError { format: "redact", reason: e.to_string() };
        let mut doc = serde_json::to_value(event).map_err(error)?;
        if !self.config.keep.is_empty() {
            let mut kept = serde_json::json!({});
            for mandatory in ["schema_version", "id", "time", "observed_time", "class"] {
                copy(&doc, &mut kept, &[mandatory]);
            }
            for path in &self.config.keep {
                copy(&doc, &mut kept, &segments(path));
            }
            doc = kept;
        }
        for path in &self.config.drop {
            remove(&mut doc, &segments(path));
        }
        for (re, replacement, fields) in &self.masks {
            for path in fields {
                if let Some(Value::String(s)) = lookup(&mut doc, &segments(path))
                    && re.is_match(s)
                {
                    *s = re.replace_all(s, replacement.as_str()).into_owned();
                }
            }
        }
        for path in &self.config.hash {
            if let Some(value) = lookup(&mut doc, &segments(path)) {
                let text = match &*value {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                *value = Value::String(self.pseudonym(&text));
            }
        }
        serde_json::from_value(doc).map_err(error)
    }

    /// The finding with its entities redacted the way the matching event fields are.
    pub fn finding(&self, finding: &Finding) -> Finding {
        let mut f = finding.clone();
        let named = |fields: &[FieldPath], wanted: &[Field]| {
            fields.iter().any(|p| wanted.iter().any(|w| *p == FieldPath::Known(*w)))
        };
        let users = [Field::UserName, Field::UserTargetName];
        let ips = [Field::SourceIp, Field::DestinationIp, Field::HostIp];
        let hosts = [Field::HostName];
        let keep_only = !self.config.keep.is_empty();
        if named(&self.config.drop, &users) || (keep_only && !named(&self.config.keep, &users)) {
            f.users.clear();
        }
        if named(&self.config.drop, &ips) || (keep_only && !named(&self.config.keep, &ips)) {
            f.ips.clear();
        }
        if named(&self.config.drop, &hosts) || (keep_only && !named(&self.config.keep, &hosts)) {
            f.hosts.clear();
        }
        if named(&self.config.hash, &users) {
            f.users = f.users.iter().map(|u| self.pseudonym(u)).collect();
        }
        if named(&self.config.hash, &hosts) {
            f.hosts = f.hosts.iter().map(|h| self.pseudonym(h)).collect();
        }
        if !self.config.drop.is_empty() || !self.config.hash.is_empty() || keep_only {
            // The stored record repeats the entities: keep only what is safe to pass on.
            f.raw = serde_json::json!({ "id": f.id, "rule_id": f.rule_id });
        }
        f
    }
}

fn segments(path: &FieldPath) -> Vec<String> {
    path.to_string().split('.').map(str::to_owned).collect()
}

fn lookup<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for seg in path {
        cur = cur.as_object_mut()?.get_mut(seg)?;
    }
    Some(cur)
}

fn remove(doc: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    if let Some(Value::Object(map)) = lookup(doc, parents) {
        map.remove(last);
    }
}

fn copy<S: AsRef<str>>(from: &Value, to: &mut Value, path: &[S]) {
    let mut src = from;
    for seg in path {
        match src.get(seg.as_ref()) {
            Some(v) => src = v,
            None => return,
        }
    }
    let mut dst = to;
    for (i, seg) in path.iter().enumerate() {
        let Value::Object(map) = dst else { return };
        if i + 1 == path.len() {
            map.insert(seg.as_ref().to_owned(), src.clone());
            return;
        }
        dst = map.entry(seg.as_ref().to_owned()).or_insert_with(|| serde_json::json!({}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::testing::{sample_events, sample_findings};

    fn config(text: &str) -> RedactionConfig {
        toml::from_str(text).expect("config")
    }

    fn sample(name: &str) -> SecurityEvent {
        sample_events().into_iter().find(|(n, _)| *n == name).expect("sample").1
    }

    #[test]
    fn drop_keep_mask_and_hash() {
        let r = Redaction::new(config(
            "drop = [\"source.port\", \"labels.env\"]\nhash = [\"user.name\"]\nhash_key = \"k1\"\n[[mask]]\npreset = \"secrets\"\n[[mask]]\npattern = \"admin\"\nreplacement = \"***\"\nfields = [\"message\"]",
        ))
        .expect("compiles");
        let mut e = sample("ssh_failure");
        e.message = Some("login admin with token=abc123&x=1 key AKIAIOSFODNN7EXAMPLE".into());
        let out = r.event(&e).expect("redacts");
        assert_eq!(out.source.as_ref().and_then(|s| s.port), None);
        assert_eq!(out.source.as_ref().and_then(|s| s.ip), e.source.as_ref().and_then(|s| s.ip));
        assert!(out.labels.is_empty());
        assert_eq!(out.message.as_deref(), Some("login *** with [REDACTED]&x=1 key [REDACTED]"));
        let pseudonym = out.user.as_ref().and_then(|u| u.name.clone()).expect("hashed");
        assert!(pseudonym.starts_with("pseudo:") && pseudonym.len() == 39, "{pseudonym}");
        // Deterministic for a key; different keys give different pseudonyms.
        assert_eq!(r.event(&e).expect("again").user.and_then(|u| u.name.clone()), Some(pseudonym.clone()));
        let other = Redaction::new(config("hash = [\"user.name\"]\nhash_key = \"k2\"")).expect("compiles");
        assert_ne!(other.event(&e).expect("redacts").user.and_then(|u| u.name.clone()), Some(pseudonym));
    }

    #[test]
    fn keep_lists_keep_only_what_they_name() {
        let r = Redaction::new(config("keep = [\"source.ip\", \"outcome\"]")).expect("compiles");
        let out = r.event(&sample("ssh_failure")).expect("redacts");
        assert!(out.user.is_none() && out.message.is_none() && out.attributes.is_empty());
        assert_eq!(out.source.as_ref().and_then(|s| s.ip).map(|ip| ip.to_string()).as_deref(), Some("203.0.113.7"));
        assert_eq!(out.class, crate::event::EventClass::Authentication);
    }

    #[test]
    fn findings_lose_the_entities_their_events_lose() {
        let r = Redaction::new(config("hash = [\"user.name\"]\nhash_key = \"k\"\ndrop = [\"source.ip\"]"))
            .expect("compiles");
        let (_, finding) = sample_findings().into_iter().next().expect("finding");
        let out = r.finding(&finding);
        assert!(out.ips.is_empty());
        assert!(out.users.iter().all(|u| u.starts_with("pseudo:")));
        assert!(!out.raw.to_string().contains("admin"));
    }

    #[test]
    fn validation_reports_every_problem() {
        let errors =
            config("hash = [\"source.ip\", \"user.name\"]\n[[mask]]\npreset = \"nope\"\n[[mask]]\npattern = \"(\"")
                .validate("sinks.s.redact");
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sinks.s.redact.mask.0.preset",
                "sinks.s.redact.mask.1.pattern",
                "sinks.s.redact.hash.0",
                "sinks.s.redact.hash_key"
            ]
        );
    }
}
