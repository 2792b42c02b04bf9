//! [`Secret`]: a string that never shows itself in `Debug`, `Display` or serialized output.
//!
//! In a config file a secret is either a string (in which the config loader has already
//! replaced `${NAME}` by the environment variable, as in every string of the file) or
//! `{ file = "path" }`, read from a file with trailing newlines trimmed. Errors name the
//! file, never the value.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

/// A secret value (token, key, password). Redacted everywhere except [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Why a secret could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The secret file could not be read.
    #[error("cannot read secret file `{path}`: {reason}")]
    File {
        /// Path of the file.
        path: String,
        /// The I/O error.
        reason: String,
    },
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file, trimming trailing newlines.
    pub fn from_file(path: &str) -> Result<Self, SecretError> {
        std::fs::read_to_string(path)
            .map(|s| Self(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| SecretError::File { path: path.to_owned(), reason: e.kind().to_string() })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, deny_unknown_fields)]
        enum Form {
            Inline(String),
            File { file: String },
        }
        match Form::deserialize(deserializer)? {
            Form::Inline(value) => Ok(Self(value)),
            Form::File { file } => Self::from_file(&file),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A string (with `${ENV}` references, as every string of the config), or `{ file = \"path\" }`.",
            "anyOf": [{ "type": "string" }, { "type": "object", "properties": { "file": { "type": "string" } } }]
        })
    }
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<unix>.<body>")>`.
pub fn signature(secret: &[u8], unix: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_itself() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).expect("serialize").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn reads_files_and_names_missing_ones_without_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t\n").expect("write");
        let toml_text = format!("token = {{ file = {:?} }}", path.to_str().expect("utf8"));
        #[derive(Deserialize)]
        struct C {
            token: Secret,
        }
        let c: C = toml::from_str(&toml_text).expect("parse");
        assert_eq!(c.token.expose(), "s3cr3t");
        let err = Secret::from_file("/nonexistent/secret").expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/secret"));
    }
}
