//! `plugin.toml`: what a plugin is, what it may touch and how much it may spend.
//!
//! Everything is denied unless granted here; the host checks the component's imports
//! against these grants when it loads the plugin, and the scopes (hosts, secret names, kv
//! quota) on every call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::actions::ParamKind;

/// The WIT package versions this host serves.
pub const API_VERSIONS: &[&str] = &["0.1.0"];

/// What a plugin is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A response action playbooks run (`execute`).
    Action,
    /// A transform sinks use (`transform`).
    Transform,
    /// A function rules call (`call`).
    Function,
    /// A decoder of an input format (`decode`): sources name it `plugin:NAME`.
    Decode,
}

impl Kind {
    /// The export the host calls.
    pub fn export(self) -> &'static str {
        match self {
            Self::Action => "execute",
            Self::Transform => "transform",
            Self::Function => "call",
            Self::Decode => "decode",
        }
    }

    /// As written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Transform => "transform",
            Self::Function => "function",
            Self::Decode => "decode",
        }
    }
}

/// Outbound HTTP grant.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Hosts (`tickets.example.com`, `tickets.example.com:8443`) the plugin may call.
    pub allow: Vec<String>,
    /// Allow addresses in loopback, private, link-local and cloud-metadata ranges (for a
    /// ticketing system on the internal network). Off: the SSRF guard refuses them.
    #[serde(default)]
    pub allow_private: bool,
    /// Largest response body.
    #[serde(default = "default_max_body")]
    #[schemars(with = "String")]
    pub max_body: ByteSize,
    /// Longest a request may take.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

fn default_max_body() -> ByteSize {
    ByteSize::mib(1)
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Key-value grant.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvGrant {
    /// Most bytes (keys and values) the plugin may keep.
    #[schemars(with = "String")]
    pub quota: ByteSize,
}

/// The host interfaces a plugin may import, with their scopes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// `log`.
    pub log: bool,
    /// `clock`.
    pub clock: bool,
    /// `metrics`.
    pub metrics: bool,
    /// `emit`: derived events into the pipeline.
    pub emit: bool,
    /// `kv`, with its quota.
    pub kv: Option<KvGrant>,
    /// `http`, with its hosts.
    pub http: Option<HttpGrant>,
    /// `secrets`: the names of the secrets it may read.
    pub secrets: Vec<String>,
}

impl Capabilities {
    /// Whether the WIT interface `name` (`log`, `http`, ...) is granted.
    pub fn grants(&self, interface: &str) -> bool {
        match interface {
            "types" | "config" => true,
            "log" => self.log,
            "clock" => self.clock,
            "metrics" => self.metrics,
            "emit" => self.emit,
            "kv" => self.kv.is_some(),
            "http" => self.http.is_some(),
            "secrets" => !self.secrets.is_empty(),
            _ => false,
        }
    }
}

/// What one call may spend.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Fuel (≈ WebAssembly instructions) per call.
    pub fuel: u64,
    /// Linear memory.
    #[schemars(with = "String")]
    pub memory: ByteSize,
    /// Wall-clock deadline per call.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub deadline: Duration,
    /// Calls at once; more wait up to the deadline (actions four times that), then fail
    /// as busy.
    pub max_concurrent: usize,
    /// Largest result a call may return.
    #[schemars(with = "String")]
    pub max_output: ByteSize,
    /// Reuse instances between calls (faster; state persists between calls). Off: a fresh
    /// instance per call, so nothing leaks from one incident to the next.
    pub pooled: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 100_000_000,
            memory: ByteSize::mib(64),
            deadline: Duration::from_secs(5),
            max_concurrent: 8,
            max_output: ByteSize::mib(1),
            pooled: false,
        }
    }
}

/// A parameter an action plugin takes (checked before it runs, like a native action's).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    /// Its type.
    pub kind: ParamKind,
    /// Whether a step must give it.
    #[serde(default)]
    pub required: bool,
    /// What it means.
    #[serde(default)]
    pub description: String,
}

/// A setting of the plugin, given in Vigil's config (`[plugins.config.<name>]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigDecl {
    /// Its type.
    pub kind: ParamKind,
    /// Whether Vigil's config must give it (when there is no default).
    #[serde(default)]
    pub required: bool,
    /// The value when Vigil's config gives none.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// What it means.
    #[serde(default)]
    pub description: String,
}

/// `plugin.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name: an action's id in playbooks, a function's name in rules, a
    /// transform's format name.
    pub name: String,
    /// Its own version.
    pub version: String,
    /// What it is.
    pub kind: Kind,
    /// The WIT package version it was built against.
    pub api_version: String,
    /// One line on what it does.
    #[serde(default)]
    pub description: String,
    /// The component, relative to the manifest (default `<name>.wasm`).
    #[serde(default)]
    pub component: Option<PathBuf>,
    /// What it may touch.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// What a call may spend.
    #[serde(default)]
    pub limits: Limits,
    /// An action's parameters.
    #[serde(default)]
    pub params: BTreeMap<String, ParamDecl>,
    /// The plugin's settings: their schema, checked against `[plugins.config.<name>]`.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigDecl>,
    /// An action's idempotence (a retry cannot do it twice).
    #[serde(default)]
    pub idempotent: bool,
    /// The id of the trusted key that signed the component.
    #[serde(default)]
    pub signed_by: Option<String>,
    /// Ed25519 signature (base64) over the component's SHA-256 digest.
    #[serde(default)]
    pub signature: Option<String>,
}

/// A manifest that cannot be used, with every reason.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {}", problems.join("; "))]
pub struct ManifestError {
    /// The manifest.
    pub path: PathBuf,
    /// What is wrong.
    pub problems: Vec<String>,
}

impl Manifest {
    /// Reads and checks `plugin.toml` at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let fail = |problem: String| ManifestError { path: path.to_owned(), problems: vec![problem] };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let manifest: Self = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let problems = manifest.problems();
        if problems.is_empty() { Ok(manifest) } else { Err(ManifestError { path: path.to_owned(), problems }) }
    }

    /// Everything wrong with the manifest's values.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name.is_empty() || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            problems.push(format!("name `{}`: must be A-Z a-z 0-9 _ - only", self.name));
        }
        if !API_VERSIONS.contains(&self.api_version.as_str()) {
            problems.push(format!(
                "api_version `{}` is not served by this host (it serves {})",
                self.api_version,
                API_VERSIONS.join(", ")
            ));
        }
        if self.limits.fuel == 0 || self.limits.max_concurrent == 0 || self.limits.deadline.is_zero() {
            problems.push("limits: fuel, max_concurrent and deadline must be above zero".into());
        }
        if let Some(http) = &self.capabilities.http
            && http.allow.is_empty()
        {
            problems.push("capabilities.http.allow: name at least one host".into());
        }
        if self.signature.is_some() != self.signed_by.is_some() {
            problems.push("signature and signed_by go together".into());
        }
        problems
    }

    /// The component's path, beside the manifest at `manifest_path`.
    pub fn component_path(&self, manifest_path: &Path) -> PathBuf {
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        dir.join(self.component.clone().unwrap_or_else(|| PathBuf::from(format!("{}.wasm", self.name))))
    }
}

/// The plugin's settings: `given` checked against the manifest's schema, defaults filled
/// in, each as JSON text. Every problem is reported.
pub fn resolve_config(
    manifest: &Manifest,
    given: Option<&BTreeMap<String, serde_json::Value>>,
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let empty = BTreeMap::new();
    let given = given.unwrap_or(&empty);
    let mut problems = Vec::new();
    let mut out = BTreeMap::new();
    for (key, decl) in &manifest.config {
        match given.get(key).or(decl.default.as_ref()) {
            Some(value) => match crate::actions::check_kind(decl.kind, value) {
                Ok(()) => {
                    out.insert(key.clone(), value.to_string());
                }
                Err(why) => problems.push(format!("config `{key}` {why}")),
            },
            None if decl.required => {
                problems.push(format!("config `{key}` is required ([plugins.config.{}])", manifest.name))
            }
            None => {}
        }
    }
    for key in given.keys().filter(|k| !manifest.config.contains_key(*k)) {
        let known: Vec<&str> = manifest.config.keys().map(String::as_str).collect();
        problems.push(format!("config `{key}` is not a setting of {} (known: {})", manifest.name, known.join(", ")));
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// Whether a component is signed by a trusted key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SignatureStatus {
    /// Not signed.
    Unsigned,
    /// Signed by this trusted key.
    Verified {
        /// The key's id.
        key: String,
    },
}

/// The component's SHA-256, hex.
pub fn digest(component: &[u8]) -> String {
    hex(&Sha256::digest(component))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the manifest's signature over the component against the trusted keys (id →
/// base64 Ed25519 public key). Unsigned is an answer, not an error; a signature that does
/// not verify, or names an unknown key, is an error.
pub fn verify_signature(
    manifest: &Manifest,
    component: &[u8],
    trusted: &BTreeMap<String, String>,
) -> Result<SignatureStatus, String> {
    let (Some(signature), Some(key_id)) = (&manifest.signature, &manifest.signed_by) else {
        return Ok(SignatureStatus::Unsigned);
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = trusted.get(key_id).ok_or_else(|| format!("signed by `{key_id}`, which is not a trusted key"))?;
    let key: [u8; 32] = b64
        .decode(key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| format!("trusted key `{key_id}` is not a base64 Ed25519 public key"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| format!("trusted key `{key_id}` is not a valid Ed25519 public key"))?;
    let signature: [u8; 64] = b64
        .decode(signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or("signature is not a base64 Ed25519 signature")?;
    key.verify_strict(&Sha256::digest(component), &ed25519_dalek::Signature::from_bytes(&signature)).map_err(|_| {
        format!("signature does not verify with key `{key_id}`: the component changed or was signed by another key")
    })?;
    Ok(SignatureStatus::Verified { key: key_id.clone() })
}

/// Signs a component: the base64 signature over its SHA-256 digest, by the Ed25519 key
/// whose 32-byte seed is `seed`.
pub fn sign(component: &[u8], seed: &[u8; 32]) -> String {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(seed);
    base64::engine::general_purpose::STANDARD.encode(key.sign(&Sha256::digest(component)).to_bytes())
}

/// The base64 public key of a seed.
pub fn public_key(seed: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(ed25519_dalek::SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        toml::from_str(text).expect("manifest parses")
    }

    const TICKET: &str = r#"
        name = "ticket"
        version = "1.0.0"
        kind = "action"
        api_version = "0.1.0"
        [capabilities]
        log = true
        secrets = ["TICKET_TOKEN"]
        http = { allow = ["tickets.example.com"] }
        [params.url]
        kind = "string"
        required = true
    "#;

    #[test]
    fn grants_and_defaults() {
        let m = manifest(TICKET);
        assert!(m.problems().is_empty(), "{:?}", m.problems());
        assert!(m.capabilities.grants("http") && m.capabilities.grants("secrets") && m.capabilities.grants("types"));
        assert!(!m.capabilities.grants("kv") && !m.capabilities.grants("emit") && !m.capabilities.grants("fs"));
        assert_eq!(m.limits.memory, ByteSize::mib(64));
        assert_eq!(m.capabilities.http.as_ref().map(|h| h.allow_private), Some(false));
        assert_eq!(m.component_path(Path::new("/p/ticket/plugin.toml")), PathBuf::from("/p/ticket/ticket.wasm"));
    }

    #[test]
    fn config_is_checked_against_the_schema_with_defaults() {
        let mut m = manifest(TICKET);
        m.config = toml::from_str(
            "url = { kind = \"string\", required = true }\nretries = { kind = \"integer\", default = 3 }",
        )
        .expect("schema");
        let given: BTreeMap<String, serde_json::Value> =
            BTreeMap::from([("url".into(), serde_json::json!("https://tickets.example.com/api"))]);
        let resolved = resolve_config(&m, Some(&given)).expect("valid");
        assert_eq!(resolved["url"], "\"https://tickets.example.com/api\"");
        assert_eq!(resolved["retries"], "3");
        let problems = resolve_config(&m, None).expect_err("url missing");
        assert_eq!(problems, vec!["config `url` is required ([plugins.config.ticket])".to_owned()]);
        let bad =
            BTreeMap::from([("retries".into(), serde_json::json!("many")), ("colour".into(), serde_json::json!(1))]);
        let problems = resolve_config(&m, Some(&bad)).expect_err("bad");
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn wrong_api_version_and_bad_names_are_reported_together() {
        let m = manifest(&TICKET.replace("0.1.0", "9.0.0").replace("\"ticket\"", "\"no way\""));
        let problems = m.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("api_version `9.0.0`")));
    }

    #[test]
    fn signatures_verify_only_with_the_trusted_key_and_the_same_bytes() {
        let seed = [7u8; 32];
        let component = b"\0asm component bytes";
        let mut m = manifest(TICKET);
        let trusted = BTreeMap::from([("ops".to_owned(), public_key(&seed))]);
        assert_eq!(verify_signature(&m, component, &trusted), Ok(SignatureStatus::Unsigned));
        m.signature = Some(sign(component, &seed));
        m.signed_by = Some("ops".into());
        assert_eq!(verify_signature(&m, component, &trusted), Ok(SignatureStatus::Verified { key: "ops".into() }));
        let tampered = b"\0asm component bytez";
        assert!(verify_signature(&m, tampered, &trusted).expect_err("tampered").contains("does not verify"));
        let other = BTreeMap::from([("ops".to_owned(), public_key(&[8u8; 32]))]);
        assert!(verify_signature(&m, component, &other).is_err());
        m.signed_by = Some("stranger".into());
        assert!(verify_signature(&m, component, &trusted).expect_err("unknown key").contains("not a trusted key"));
    }
}
