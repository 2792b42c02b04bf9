//! `block_ip` / `unblock_ip`, enforced by up to three backends at once:
//!
//! - **deny list**: a list Vigil keeps in its store and serves at `GET /v1/blocklist` (text,
//!   one address per line, or JSON) for proxies and WAFs to pull; entries carry their
//!   expiry and lapse by themselves.
//! - **nftables**: an element with a timeout in a named set of Vigil's own table, so the
//!   kernel drops the address and lifts the block at the TTL even while Vigil is down.
//!   Vigil creates the table, the two sets (IPv4, IPv6) and a drop rule on the `input` and
//!   `forward` hooks at start; elements already in the sets survive a restart.
//! - **webhook**: `{"action": "block_ip", "ip": ..., "ttl_seconds": ...}` to any receiver.
//!
//! Blocking is idempotent; unblocking an address that is not blocked succeeds.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::webhook::{Webhook, WebhookConfig};
use super::{Action, ActionContext, ActionError, ActionSpec, Outcome, ParamKind, ParamSpec, TargetKind, required_str};
use crate::store::{Cf, Store, Table};

/// Settings of `block_ip` (`[actions.block_ip]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BlockConfig {
    /// Keep the deny list Vigil serves at `/v1/blocklist`.
    pub deny_list: bool,
    /// Enforce with nftables.
    pub nftables: Option<NftConfig>,
    /// Tell a webhook.
    pub webhook: Option<WebhookConfig>,
    /// How long a block lasts when the step gives no `ttl`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub default_ttl: Duration,
}

impl Default for BlockConfig {
    fn default() -> Self {
        Self { deny_list: true, nftables: None, webhook: None, default_ttl: Duration::from_secs(3600) }
    }
}

impl BlockConfig {
    /// Problems with the settings.
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if !self.deny_list && self.nftables.is_none() && self.webhook.is_none() {
            errors.push((path.into(), "no backend: enable deny_list, nftables or webhook".into()));
        }
        if self.default_ttl.is_zero() {
            errors.push((format!("{path}.default_ttl"), "must be longer than 0s".into()));
        }
        if let Some(nft) = &self.nftables {
            if nft.command.is_empty() {
                errors.push((format!("{path}.nftables.command"), "must name the nft program".into()));
            }
            for (name, value) in [("table", &nft.table), ("set", &nft.set), ("set6", &nft.set6)] {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    errors.push((format!("{path}.nftables.{name}"), "must be a name of A-Z a-z 0-9 _".into()));
                }
            }
        }
        if let Some(webhook) = &self.webhook {
            errors.extend(webhook.validate(&format!("{path}.webhook")));
        }
        errors
    }
}

/// The nftables backend (`[actions.block_ip.nftables]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NftConfig {
    /// The program and leading arguments (`["nft"]`; `["ip", "netns", "exec", "edge", "nft"]`
    /// to act in another network namespace).
    pub command: Vec<String>,
    /// The table (family `inet`).
    pub table: String,
    /// The set of blocked IPv4 addresses.
    pub set: String,
    /// The set of blocked IPv6 addresses.
    pub set6: String,
    /// Create the table, sets and drop rules at start (off: they are managed elsewhere).
    pub manage: bool,
}

impl Default for NftConfig {
    fn default() -> Self {
        Self {
            command: vec!["nft".into()],
            table: "vigil".into(),
            set: "blocklist".into(),
            set6: "blocklist6".into(),
            manage: true,
        }
    }
}

/// One address on the deny list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BlockEntry {
    /// The address.
    pub ip: String,
    /// Why (the incident, the reason parameter).
    pub reason: String,
    /// When it was added.
    pub added_at: DateTime<Utc>,
    /// When it lapses.
    pub expires_at: DateTime<Utc>,
}

fn deny_table(store: &Store) -> Table<String, BlockEntry> {
    Table::new(store, Cf::State, b"blocklist/")
}

/// The addresses on the deny list now (expired entries left out).
pub fn deny_list(store: &Store, now: DateTime<Utc>) -> crate::store::Result<Vec<BlockEntry>> {
    Ok(deny_table(store).scan(None, usize::MAX)?.into_iter().map(|(_, e)| e).filter(|e| e.expires_at > now).collect())
}

/// The backends, shared by `block_ip` and `unblock_ip`.
#[derive(Debug)]
pub struct Blocker {
    deny: Option<Table<String, BlockEntry>>,
    nft: Option<NftConfig>,
    webhook: Option<Webhook>,
    default_ttl: Duration,
}

impl Blocker {
    /// Builds the backends; with `nftables.manage`, creates the table, sets and rules now.
    pub fn new(config: &BlockConfig, store: &Store) -> Result<Self, String> {
        if let Some(nft) = &config.nftables
            && nft.manage
        {
            setup_nft(nft)?;
        }
        Ok(Self {
            deny: config.deny_list.then(|| deny_table(store)),
            nft: config.nftables.clone(),
            webhook: config.webhook.clone().map(Webhook::new).transpose()?,
            default_ttl: config.default_ttl,
        })
    }

    fn backends(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.deny.is_some() {
            out.push("deny_list");
        }
        if self.nft.is_some() {
            out.push("nftables");
        }
        if self.webhook.is_some() {
            out.push("webhook");
        }
        out
    }

    async fn block(&self, ctx: &ActionContext, ip: IpAddr) -> Result<Outcome, ActionError> {
        let ttl = ctx.ttl.unwrap_or(self.default_ttl).max(Duration::from_secs(1));
        let expires_at = ctx.now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
        let reason = super::param_str(&ctx.params, "reason")
            .map(str::to_owned)
            .or_else(|| ctx.incident_id.as_ref().map(|i| format!("incident {i}")))
            .unwrap_or_default();
        if let Some(table) = &self.deny {
            let entry = BlockEntry { ip: ip.to_string(), reason: reason.clone(), added_at: ctx.now, expires_at };
            let table = table.clone();
            tokio::task::spawn_blocking(move || table.put(&entry.ip.clone(), &entry))
                .await
                .map_err(|e| ActionError::Failed(e.to_string()))?
                .map_err(|e| ActionError::Retryable(format!("deny list: {e}")))?;
        }
        if let Some(nft) = &self.nft {
            let set = if ip.is_ipv4() { &nft.set } else { &nft.set6 };
            let element = format!("{{ {ip} timeout {}s }}", ttl.as_secs());
            run_nft(nft, &["add", "element", "inet", &nft.table, set, &element]).await?;
        }
        if let Some(webhook) = &self.webhook {
            let body = json!({
                "action": "block_ip", "ip": ip.to_string(), "ttl_seconds": ttl.as_secs(),
                "expires_at": expires_at, "reason": reason, "incident_id": ctx.incident_id,
            });
            webhook.post(&body, &ctx.idempotency_key).await?;
        }
        let backends = self.backends();
        Ok(Outcome {
            target: Some(ip.to_string()),
            detail: format!("blocked {ip} for {} via {}", humantime::format_duration(ttl), backends.join(", ")),
            data: json!({ "backends": backends }),
            expires_at: Some(expires_at),
        })
    }

    async fn unblock(&self, ctx: &ActionContext, ip: IpAddr) -> Result<Outcome, ActionError> {
        if let Some(table) = &self.deny {
            let (table, key) = (table.clone(), ip.to_string());
            tokio::task::spawn_blocking(move || table.delete(&key))
                .await
                .map_err(|e| ActionError::Failed(e.to_string()))?
                .map_err(|e| ActionError::Retryable(format!("deny list: {e}")))?;
        }
        if let Some(nft) = &self.nft {
            let set = if ip.is_ipv4() { &nft.set } else { &nft.set6 };
            let element = format!("{{ {ip} }}");
            match run_nft(nft, &["delete", "element", "inet", &nft.table, set, &element]).await {
                Ok(()) => {}
                // Already gone: the kernel's timeout lifted it first.
                Err(ActionError::Failed(e)) if e.contains("No such file") || e.contains("does not exist") => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(webhook) = &self.webhook {
            let body = json!({ "action": "unblock_ip", "ip": ip.to_string(), "incident_id": ctx.incident_id });
            webhook.post(&body, &ctx.idempotency_key).await?;
        }
        Ok(Outcome::new(ip.to_string(), format!("unblocked {ip} via {}", self.backends().join(", "))))
    }
}

fn setup_nft(nft: &NftConfig) -> Result<(), String> {
    let (t, s4, s6) = (&nft.table, &nft.set, &nft.set6);
    // Declaring existing objects is a no-op, so set elements survive; the chains are
    // flushed and their one rule each added again, so restarts do not pile up rules.
    let script = format!(
        "add table inet {t}\n\
         add set inet {t} {s4} {{ type ipv4_addr; flags timeout; }}\n\
         add set inet {t} {s6} {{ type ipv6_addr; flags timeout; }}\n\
         add chain inet {t} input {{ type filter hook input priority -10; policy accept; }}\n\
         add chain inet {t} forward {{ type filter hook forward priority -10; policy accept; }}\n\
         flush chain inet {t} input\n\
         flush chain inet {t} forward\n\
         add rule inet {t} input ip saddr @{s4} drop\n\
         add rule inet {t} input ip6 saddr @{s6} drop\n\
         add rule inet {t} forward ip saddr @{s4} drop\n\
         add rule inet {t} forward ip6 saddr @{s6} drop\n"
    );
    let mut child = std::process::Command::new(&nft.command[0])
        .args(&nft.command[1..])
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nftables: cannot run {}: {e}", nft.command[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(script.as_bytes()).map_err(|e| format!("nftables: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nftables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nftables: creating table {t} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

async fn run_nft(nft: &NftConfig, args: &[&str]) -> Result<(), ActionError> {
    let output = tokio::process::Command::new(&nft.command[0])
        .args(&nft.command[1..])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ActionError::Failed(format!("cannot run {}: {e}", nft.command[0])))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ActionError::Failed(format!(
            "nft {}: {}",
            args[..2].join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn ip_param(ctx: &ActionContext) -> Result<IpAddr, ActionError> {
    let text = required_str(&ctx.params, "ip")?;
    text.parse().map_err(|_| ActionError::InvalidParams(format!("`ip` must be an IP address (got \"{text}\")")))
}

/// `block_ip`: blocks an address until its TTL; reversed by `unblock_ip`.
#[derive(Debug)]
pub struct BlockIp {
    blocker: Arc<Blocker>,
    spec: ActionSpec,
}

impl BlockIp {
    /// The action over `blocker`'s backends.
    pub fn new(blocker: Arc<Blocker>) -> Self {
        let spec = ActionSpec {
            id: "block_ip".into(),
            description: "Block an IP address (deny list, nftables, webhook) until its TTL.".into(),
            params: vec![
                ParamSpec::new("ip", ParamKind::Ip, true, "the address to block"),
                ParamSpec::new("ttl", ParamKind::Duration, false, "how long (default: actions.block_ip.default_ttl)"),
                ParamSpec::new("reason", ParamKind::String, false, "recorded with the block"),
            ],
            target: Some(("ip".into(), TargetKind::Ip)),
            capabilities: vec!["net.firewall".into()],
            idempotent: true,
            sensitive: false,
            inverse: Some("unblock_ip".into()),
            default_ttl: Some(blocker.default_ttl),
        };
        Self { blocker, spec }
    }
}

impl Action for BlockIp {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move { self.blocker.block(ctx, ip_param(ctx)?).await })
    }

    fn rollback<'a>(&'a self, ctx: &'a ActionContext, _: &'a Outcome) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move { self.blocker.unblock(ctx, ip_param(ctx)?).await })
    }
}

/// `unblock_ip`: lifts a block from every backend.
#[derive(Debug)]
pub struct UnblockIp {
    blocker: Arc<Blocker>,
    spec: ActionSpec,
}

impl UnblockIp {
    /// The action over `blocker`'s backends.
    pub fn new(blocker: Arc<Blocker>) -> Self {
        let spec = ActionSpec {
            id: "unblock_ip".into(),
            description: "Lift a block from every backend.".into(),
            params: vec![ParamSpec::new("ip", ParamKind::Ip, true, "the address to unblock")],
            target: Some(("ip".into(), TargetKind::Ip)),
            capabilities: vec!["net.firewall".into()],
            idempotent: true,
            sensitive: false,
            inverse: None,
            default_ttl: None,
        };
        Self { blocker, spec }
    }
}

impl Action for UnblockIp {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move { self.blocker.unblock(ctx, ip_param(ctx)?).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    fn ctx(ip: &str, ttl: Option<Duration>) -> ActionContext {
        let mut ctx = ActionContext::new("k", json!({ "ip": ip }).as_object().cloned().expect("object"));
        ctx.ttl = ttl;
        ctx
    }

    #[tokio::test]
    async fn the_deny_list_holds_blocks_until_they_expire_or_are_lifted() {
        let (_dir, store) = temp_store();
        let blocker = Arc::new(Blocker::new(&BlockConfig::default(), &store).expect("blocker"));
        let (block, unblock) = (BlockIp::new(blocker.clone()), UnblockIp::new(blocker));
        let done = block.execute(&ctx("203.0.113.7", Some(Duration::from_secs(60)))).await.expect("block");
        assert_eq!(done.target.as_deref(), Some("203.0.113.7"));
        assert!(done.detail.contains("for 1m via deny_list"), "{}", done.detail);
        block.execute(&ctx("2001:db8::1", None)).await.expect("block v6");
        let now = Utc::now();
        let listed: Vec<String> = deny_list(&store, now).expect("list").into_iter().map(|e| e.ip).collect();
        assert_eq!(listed, ["2001:db8::1", "203.0.113.7"]);
        let later = now + chrono::Duration::minutes(2);
        let listed: Vec<String> = deny_list(&store, later).expect("list").into_iter().map(|e| e.ip).collect();
        assert_eq!(listed, ["2001:db8::1"], "the 1m block lapsed, the 1h default did not");
        unblock.execute(&ctx("2001:db8::1", None)).await.expect("unblock");
        unblock.execute(&ctx("2001:db8::1", None)).await.expect("unblocking twice is fine");
        assert!(deny_list(&store, now).expect("list").iter().all(|e| e.ip != "2001:db8::1"));
    }

    #[test]
    fn settings_without_a_backend_are_refused() {
        let config = BlockConfig { deny_list: false, ..BlockConfig::default() };
        assert_eq!(config.validate("b")[0].1, "no backend: enable deny_list, nftables or webhook");
        let nft = NftConfig { table: "bad name;".into(), ..NftConfig::default() };
        let config = BlockConfig { nftables: Some(nft), ..BlockConfig::default() };
        assert_eq!(config.validate("b")[0].0, "b.nftables.table");
    }
}
