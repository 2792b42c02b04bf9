//! The safety policy, enforced at the action layer whatever a rule or playbook asks:
//!
//! - **protected assets**: addresses (CIDRs), accounts, hosts and paths that are never
//!   contained (loopback by default);
//! - **blast radius**: at most `max_targets_per_incident` distinct targets per incident, and
//!   at most `max_per_hour` executions of each action (overridable per action);
//! - **rate limits**: a token bucket per action and target;
//! - **repeat offenders**: each earlier containment of the same target within
//!   `repeat_offenders.window` multiplies the TTL by `factor`, up to `max_ttl`.
//!
//! A dry run asks the same questions without counting anything ([`SafetyPolicy::decide`]
//! with `commit = false`). Rollbacks and TTL expiries are never refused: undoing is safe.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, TargetKind};
use crate::store::{self, Cf, Store, Table};

/// Assets that are never contained (`[actions.policy.protected]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProtectedAssets {
    /// Address ranges.
    #[schemars(with = "Vec<String>")]
    pub cidrs: Vec<IpNet>,
    /// Account names (case-insensitive).
    pub accounts: Vec<String>,
    /// Host names (case-insensitive).
    pub hosts: Vec<String>,
    /// Paths (and everything under them).
    pub paths: Vec<PathBuf>,
}

impl Default for ProtectedAssets {
    fn default() -> Self {
        let loopback = ["127.0.0.0/8", "::1/128"].iter().filter_map(|c| c.parse().ok()).collect();
        Self { cidrs: loopback, accounts: Vec::new(), hosts: Vec::new(), paths: Vec::new() }
    }
}

/// Token bucket per action and target.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Sustained executions per minute.
    pub per_minute: u32,
    /// Executions allowed at once.
    pub burst: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self { per_minute: 30, burst: 10 }
    }
}

/// Escalating durations (`[actions.policy.repeat_offenders]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RepeatConfig {
    /// How far back earlier containments count.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub window: Duration,
    /// TTL multiplier per earlier containment.
    pub factor: f64,
    /// The longest TTL escalation may reach.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_ttl: Duration,
}

impl Default for RepeatConfig {
    fn default() -> Self {
        Self { window: Duration::from_secs(7 * 86_400), factor: 2.0, max_ttl: Duration::from_secs(30 * 86_400) }
    }
}

/// The safety policy (`[actions.policy]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Never contained.
    pub protected: ProtectedAssets,
    /// Most distinct targets one incident's actions may touch.
    pub max_targets_per_incident: usize,
    /// Most executions of one action per hour.
    pub max_per_hour: u32,
    /// Per-action overrides of `max_per_hour`.
    pub per_action_hour: BTreeMap<String, u32>,
    /// Token bucket per action and target.
    pub rate: RateConfig,
    /// Escalating TTLs.
    pub repeat_offenders: RepeatConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            protected: ProtectedAssets::default(),
            max_targets_per_incident: 10,
            max_per_hour: 100,
            per_action_hour: BTreeMap::new(),
            rate: RateConfig::default(),
            repeat_offenders: RepeatConfig::default(),
        }
    }
}

impl PolicyConfig {
    /// Problems with the settings.
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.max_targets_per_incident == 0 {
            errors.push((format!("{path}.max_targets_per_incident"), "must be at least 1".into()));
        }
        if self.rate.per_minute == 0 || self.rate.burst == 0 {
            errors.push((format!("{path}.rate"), "per_minute and burst must be at least 1".into()));
        }
        if !(self.repeat_offenders.factor >= 1.0 && self.repeat_offenders.factor.is_finite()) {
            errors.push((format!("{path}.repeat_offenders.factor"), "must be a number ≥ 1".into()));
        }
        errors
    }
}

/// What the policy said about one execution.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decision {
    /// Whether it may run.
    pub allowed: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// The checks made, for the audit trail and the plan.
    pub checks: Vec<String>,
    /// The TTL after repeat-offender escalation.
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}

/// The policy with its counters.
#[derive(Debug)]
pub struct SafetyPolicy {
    config: PolicyConfig,
    rate: DefaultKeyedRateLimiter<(String, String)>,
    incidents: Table<String, Vec<String>>,
    hourly: Table<String, Vec<i64>>,
    offenses: Table<String, Vec<i64>>,
    lock: Mutex<()>,
}

impl SafetyPolicy {
    /// The policy of `config`, with counters in `store`.
    pub fn new(config: PolicyConfig, store: &Store) -> Self {
        let per_minute = NonZeroU32::new(config.rate.per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            rate: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            incidents: Table::new(store, Cf::State, b"policy/incident/"),
            hourly: Table::new(store, Cf::State, b"policy/hour/"),
            offenses: Table::new(store, Cf::State, b"policy/offense/"),
            config,
            lock: Mutex::new(()),
        }
    }

    fn protected(&self, kind: TargetKind, target: &str) -> Option<String> {
        let p = &self.config.protected;
        match kind {
            TargetKind::Ip => {
                let ip: IpAddr = target.parse().ok()?;
                p.cidrs.iter().find(|net| net.contains(&ip)).map(|net| format!("{target} is in protected range {net}"))
            }
            TargetKind::Account => {
                p.accounts.iter().find(|a| a.eq_ignore_ascii_case(target)).map(|a| format!("account {a} is protected"))
            }
            TargetKind::Host => {
                p.hosts.iter().find(|h| h.eq_ignore_ascii_case(target)).map(|h| format!("host {h} is protected"))
            }
            TargetKind::Path => p
                .paths
                .iter()
                .find(|root| std::path::Path::new(target).starts_with(root))
                .map(|root| format!("{target} is under protected path {}", root.display())),
            TargetKind::Other => None,
        }
    }

    /// Decides whether `spec` may run on `target` for `incident`; with `commit`, counts the
    /// execution (budgets, rate, offenses). `ttl` is the requested duration.
    pub fn decide(
        &self,
        spec: &ActionSpec,
        target: Option<&str>,
        incident: Option<&str>,
        ttl: Option<Duration>,
        now: DateTime<Utc>,
        commit: bool,
    ) -> store::Result<Decision> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut d = Decision { allowed: true, refusal: None, checks: Vec::new(), ttl };
        let refuse = |mut d: Decision, why: String| {
            d.allowed = false;
            d.refusal = Some(why);
            Ok(d)
        };
        let now_ms = now.timestamp_millis();
        if let (Some(target), Some((_, kind))) = (target, &spec.target) {
            if let Some(why) = self.protected(*kind, target) {
                return refuse(d, format!("protected asset: {why}"));
            }
            d.checks.push(format!("{target} is not a protected asset"));
        }
        let mut targets = match (incident, target) {
            (Some(id), Some(_)) => self.incidents.get(&id.to_owned())?.unwrap_or_default(),
            _ => Vec::new(),
        };
        if let (Some(_), Some(target)) = (incident, target) {
            let max = self.config.max_targets_per_incident;
            if !targets.iter().any(|t| t == target) {
                if targets.len() >= max {
                    return refuse(
                        d,
                        format!(
                            "blast radius: the incident's actions already touched {} targets (max {max})",
                            targets.len()
                        ),
                    );
                }
                targets.push(target.to_owned());
            }
            d.checks.push(format!("target {} of at most {max} for the incident", targets.len()));
        }
        let hour_limit = self.config.per_action_hour.get(&spec.id).copied().unwrap_or(self.config.max_per_hour);
        let mut hour = self.hourly.get(&spec.id)?.unwrap_or_default();
        hour.retain(|t| *t > now_ms - 3_600_000);
        if hour.len() as u64 >= u64::from(hour_limit) {
            return refuse(
                d,
                format!("budget: {} {} executions in the last hour (max {hour_limit})", hour.len(), spec.id),
            );
        }
        d.checks.push(format!("{} of {hour_limit} {} executions this hour", hour.len() + 1, spec.id));
        let offense_key = target.map(|t| format!("{}/{t}", spec.id));
        let mut offenses = match &offense_key {
            Some(key) => self.offenses.get(key)?.unwrap_or_default(),
            None => Vec::new(),
        };
        let window_ms = i64::try_from(self.config.repeat_offenders.window.as_millis()).unwrap_or(i64::MAX);
        offenses.retain(|t| *t > now_ms.saturating_sub(window_ms));
        if let (Some(base), false) = (ttl, offenses.is_empty()) {
            let factor = self.config.repeat_offenders.factor.powi(i32::try_from(offenses.len()).unwrap_or(i32::MAX));
            let escalated = base.mul_f64(factor.min(1e6)).min(self.config.repeat_offenders.max_ttl).max(base);
            d.checks.push(format!(
                "repeat offender: {} earlier {} within {} → ttl {}",
                offenses.len(),
                spec.id,
                humantime::format_duration(self.config.repeat_offenders.window),
                humantime::format_duration(escalated)
            ));
            d.ttl = Some(escalated);
        }
        if !commit {
            d.checks.push("rate limit per action and target: checked when it runs".into());
            return Ok(d);
        }
        let key = (spec.id.clone(), target.unwrap_or_default().to_owned());
        if self.rate.check_key(&key).is_err() {
            return refuse(
                d,
                format!(
                    "rate limit: {} on {} exceeds {}/min (burst {})",
                    spec.id, key.1, self.config.rate.per_minute, self.config.rate.burst
                ),
            );
        }
        hour.push(now_ms);
        let mut ops = vec![self.hourly.put_op(&spec.id, &hour)?];
        if let (Some(id), Some(_)) = (incident, target) {
            ops.push(self.incidents.put_op(&id.to_owned(), &targets)?);
        }
        if let Some(key) = &offense_key {
            offenses.push(now_ms);
            ops.push(self.offenses.put_op(key, &offenses)?);
        }
        self.incidents_store().write(ops, true)?;
        Ok(d)
    }

    fn incidents_store(&self) -> &Store {
        self.incidents.store()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    fn spec() -> ActionSpec {
        ActionSpec {
            id: "block_ip".into(),
            description: String::new(),
            params: Vec::new(),
            target: Some(("ip".into(), TargetKind::Ip)),
            capabilities: Vec::new(),
            idempotent: true,
            sensitive: false,
            inverse: Some("unblock_ip".into()),
            default_ttl: Some(Duration::from_secs(3600)),
        }
    }

    fn policy(config: PolicyConfig) -> (tempfile::TempDir, SafetyPolicy) {
        let (dir, store) = temp_store();
        (dir, SafetyPolicy::new(config, &store))
    }

    #[test]
    fn protected_assets_are_refused() {
        let mut config = PolicyConfig::default();
        config.protected.cidrs.push("10.0.0.0/8".parse().expect("cidr"));
        let (_dir, p) = policy(config);
        let now = Utc::now();
        let d = p.decide(&spec(), Some("10.1.2.3"), Some("i1"), None, now, true).expect("decide");
        assert!(!d.allowed);
        assert_eq!(d.refusal.as_deref(), Some("protected asset: 10.1.2.3 is in protected range 10.0.0.0/8"));
        assert!(!p.decide(&spec(), Some("127.0.0.1"), None, None, now, true).expect("decide").allowed);
        assert!(p.decide(&spec(), Some("203.0.113.9"), Some("i1"), None, now, true).expect("decide").allowed);
    }

    #[test]
    fn the_blast_radius_of_an_incident_is_bounded() {
        let (_dir, p) = policy(PolicyConfig { max_targets_per_incident: 2, ..PolicyConfig::default() });
        let now = Utc::now();
        for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.1"] {
            assert!(p.decide(&spec(), Some(ip), Some("i1"), None, now, true).expect("decide").allowed, "{ip}");
        }
        let d = p.decide(&spec(), Some("203.0.113.3"), Some("i1"), None, now, true).expect("decide");
        assert_eq!(
            d.refusal.as_deref(),
            Some("blast radius: the incident's actions already touched 2 targets (max 2)")
        );
        assert!(p.decide(&spec(), Some("203.0.113.3"), Some("i2"), None, now, true).expect("decide").allowed);
    }

    #[test]
    fn hourly_budgets_and_rate_limits_refuse_excess() {
        let mut config = PolicyConfig::default();
        config.per_action_hour.insert("block_ip".into(), 3);
        let (_dir, p) = policy(config);
        let now = Utc::now();
        for i in 0..3 {
            assert!(p.decide(&spec(), Some(&format!("198.51.100.{i}")), None, None, now, true).expect("d").allowed);
        }
        let d = p.decide(&spec(), Some("198.51.100.9"), None, None, now, true).expect("decide");
        assert_eq!(d.refusal.as_deref(), Some("budget: 3 block_ip executions in the last hour (max 3)"));
        let later = now + chrono::Duration::minutes(61);
        assert!(p.decide(&spec(), Some("198.51.100.9"), None, None, later, true).expect("d").allowed);

        let (_dir, p) =
            policy(PolicyConfig { rate: RateConfig { per_minute: 1, burst: 2 }, ..PolicyConfig::default() });
        let results: Vec<bool> = (0..3)
            .map(|_| p.decide(&spec(), Some("198.51.100.1"), None, None, now, true).expect("d").allowed)
            .collect();
        assert_eq!(results, [true, true, false]);
    }

    #[test]
    fn repeat_offenders_get_longer_blocks_and_dry_runs_count_nothing() {
        let (_dir, p) = policy(PolicyConfig::default());
        let now = Utc::now();
        let hour = Some(Duration::from_secs(3600));
        let ttls: Vec<Option<Duration>> =
            (0..3).map(|_| p.decide(&spec(), Some("192.0.2.1"), None, hour, now, true).expect("d").ttl).collect();
        let hours: Vec<u64> = ttls.into_iter().map(|t| t.expect("ttl").as_secs() / 3600).collect();
        assert_eq!(hours, [1, 2, 4]);
        let dry = p.decide(&spec(), Some("192.0.2.1"), None, hour, now, false).expect("dry");
        let again = p.decide(&spec(), Some("192.0.2.1"), None, hour, now, false).expect("dry");
        assert_eq!(dry.ttl, again.ttl, "a dry run does not count as an offense");
        assert_eq!(dry.ttl.map(|t| t.as_secs() / 3600), Some(8));
    }
}
