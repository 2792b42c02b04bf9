//! Settings of the `syslog` sink.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// RFC 5426: one message per datagram; no delivery guarantee.
    Udp,
    /// RFC 6587 octet counting over TCP.
    #[default]
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
}

/// TLS settings (`tls = { ... }`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogTlsConfig {
    /// PEM file of the CAs to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the receiver (mutual TLS).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// Name to verify the receiver's certificate against (the address's host by default).
    pub server_name: Option<String>,
}

/// Settings of a `syslog` sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyslogSinkConfig {
    /// `host:port` of the receiver.
    pub address: String,
    /// `udp`, `tcp` (default) or `tls`.
    #[serde(default)]
    pub protocol: Protocol,
    /// TLS settings, for `protocol = "tls"`.
    #[serde(default)]
    pub tls: SyslogTlsConfig,
    /// Facility name (`local4` by default; `auth`, `authpriv`, `security`, `local0`–`local7`…).
    #[serde(default = "default_facility")]
    pub facility: String,
    /// HOSTNAME field (this machine's name by default).
    #[serde(default)]
    pub hostname: Option<String>,
    /// APP-NAME field.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// Largest message; bigger records are dead-lettered, never truncated. Default 8 KiB for
    /// UDP (what receivers accept by default), 1 MiB otherwise.
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// Longest a connect or a write may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

fn default_facility() -> String {
    "local4".into()
}

fn default_app_name() -> String {
    "vigil".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Facility names and their codes (RFC 5424 §6.2.1).
const FACILITIES: [(&str, u8); 24] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("security", 13),
    ("console", 14),
    ("solaris-cron", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

impl SyslogSinkConfig {
    /// The facility's code.
    pub fn facility_code(&self) -> Option<u8> {
        FACILITIES.iter().find(|(name, _)| *name == self.facility).map(|(_, code)| *code)
    }

    /// The largest message.
    pub fn max_message(&self) -> usize {
        self.max_message_bytes.unwrap_or(if self.protocol == Protocol::Udp { 8192 } else { 1 << 20 })
    }

    /// The host part of the address.
    pub fn host(&self) -> &str {
        let host = self.address.rsplit_once(':').map_or(self.address.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if !self.address.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)) {
            errors.push((format!("{prefix}.address"), format!("`{}` is not host:port", self.address)));
        }
        if self.facility_code().is_none() {
            let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
            errors.push((
                format!("{prefix}.facility"),
                format!("unknown facility `{}`; one of {}", self.facility, names.join(", ")),
            ));
        }
        let printable =
            |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b));
        if !printable(&self.app_name, 48) {
            errors.push((format!("{prefix}.app_name"), "1 to 48 printable ASCII characters, no spaces".into()));
        }
        if self.hostname.as_deref().is_some_and(|h| !printable(h, 255)) {
            errors.push((format!("{prefix}.hostname"), "1 to 255 printable ASCII characters, no spaces".into()));
        }
        if self.max_message() < 480 {
            errors.push((format!("{prefix}.max_message_bytes"), "must be at least 480 (RFC 5426)".into()));
        }
        let tls = &self.tls;
        if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
            errors.push((format!("{prefix}.tls"), "client_cert_file and client_key_file go together".into()));
        }
        if self.protocol != Protocol::Tls
            && (tls.ca_file.is_some() || tls.client_cert_file.is_some() || tls.server_name.is_some())
        {
            errors.push((format!("{prefix}.tls"), "TLS settings need protocol = \"tls\"".into()));
        }
        errors
    }
}
