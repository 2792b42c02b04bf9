//! Priority: an incident starts at its rules' severity and is raised by evidence of
//! impact — the category, threat intelligence, a critical asset, a compromise of a
//! privileged account, the number of users affected — never by how often a rule fires. A rule that opens many incidents is
//! reported as noisy instead ([`Noise`]).

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::detect::Entities;
use crate::event::{Priority, RuleId};
use crate::rules::Category;

/// `[incidents.priority]`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PriorityConfig {
    /// Hosts (names, compared without case) and networks (`10.0.5.0/24`, or one address)
    /// whose incidents are raised one step.
    pub critical_assets: Vec<String>,
    /// Accounts whose compromise (an incident of category `security_breach` naming one)
    /// is raised one step; compared without case.
    pub privileged_accounts: Vec<String>,
    /// A rule that opens more than this many incidents within 24 h of event time is
    /// reported as noisy (`vigil_rule_noisy`, `vigil rules list`); 0 turns it off.
    pub noisy_after: usize,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        Self {
            critical_assets: Vec::new(),
            privileged_accounts: ["root", "administrator", "admin"].map(str::to_owned).to_vec(),
            noisy_after: 10,
        }
    }
}

impl PriorityConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        self.critical_assets
            .iter()
            .enumerate()
            .filter(|(_, a)| a.contains('/') && a.parse::<IpNet>().is_err())
            .map(|(i, a)| (format!("incidents.priority.critical_assets[{i}]"), format!("`{a}` is not a network")))
            .collect()
    }
}

/// The compiled [`PriorityConfig`] (by default, of the default settings).
#[derive(Clone, Debug)]
pub struct Policy {
    hosts: Vec<String>,
    accounts: Vec<String>,
    networks: Vec<IpNet>,
    noisy_after: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new(&PriorityConfig::default())
    }
}

impl Policy {
    /// The policy of `config` (entries that are neither a network nor an address are host
    /// names).
    pub fn new(config: &PriorityConfig) -> Self {
        let accounts = config.privileged_accounts.iter().map(|a| a.to_lowercase()).collect();
        let mut policy = Self { hosts: Vec::new(), accounts, networks: Vec::new(), noisy_after: config.noisy_after };
        for asset in &config.critical_assets {
            match (asset.parse::<IpNet>(), asset.parse::<std::net::IpAddr>()) {
                (Ok(net), _) => policy.networks.push(net),
                (_, Ok(ip)) => policy.networks.push(IpNet::from(ip)),
                _ => policy.hosts.push(asset.to_lowercase()),
            }
        }
        policy
    }

    /// The first critical asset among `entities`, if any.
    fn critical<'e>(&self, entities: &'e Entities) -> Option<&'e str> {
        let host = entities.hosts.iter().find(|h| self.hosts.contains(&h.to_lowercase()));
        let ip = || {
            entities
                .ips
                .iter()
                .find(|ip| ip.parse::<std::net::IpAddr>().is_ok_and(|ip| self.networks.iter().any(|n| n.contains(&ip))))
        };
        host.or_else(ip).map(String::as_str)
    }

    /// The priority of an incident whose rules say `rule_priority`, with the reasons it
    /// was raised (empty when it was not).
    pub fn classify(
        &self,
        rule_priority: Priority,
        category: Option<Category>,
        entities: &Entities,
        affected_users: u64,
    ) -> (Priority, Vec<String>) {
        let mut priority = rule_priority;
        let mut why = Vec::new();
        if let Some(category) = category.filter(|c| c.raises_to_p1())
            && priority > Priority::P1
        {
            priority = Priority::P1;
            why.push(format!("category {category:?}"));
        }
        if let Some(ip) = entities.threat_ips.iter().next() {
            priority = priority.escalate();
            why.push(format!("{ip} matched threat intelligence"));
        }
        if category == Some(Category::SecurityBreach)
            && let Some(account) = entities.users.iter().find(|u| self.accounts.contains(&u.to_lowercase()))
        {
            priority = priority.escalate();
            why.push(format!("privileged account {account} compromised"));
        }
        if let Some(asset) = self.critical(entities) {
            priority = priority.escalate();
            why.push(format!("critical asset {asset}"));
        }
        if affected_users > 10_000 {
            priority = Priority::P0;
            why.push(format!("{affected_users} users affected"));
        }
        (priority, why)
    }
}

/// Incidents each rule opened in the last 24 h of event time: a rule past
/// `noisy_after` is noisy.
#[derive(Debug, Default)]
pub struct Noise {
    opened: HashMap<RuleId, VecDeque<i64>>,
}

impl Noise {
    /// Records that `rule` opened an incident first seen at `at` (in any order).
    pub fn opened(&mut self, rule: &RuleId, at: DateTime<Utc>) {
        let now = at.timestamp_millis();
        let recent = self.opened.entry(rule.clone()).or_default();
        let at = recent.partition_point(|t| *t <= now);
        recent.insert(at, now);
        let newest = recent.back().copied().unwrap_or(now);
        while recent.front().is_some_and(|t| *t < newest - Duration::hours(24).num_milliseconds()) {
            recent.pop_front();
        }
    }

    /// Incidents `rule` opened in the 24 h before its latest.
    pub fn count(&self, rule: &RuleId) -> usize {
        self.opened.get(rule).map_or(0, VecDeque::len)
    }

    /// Whether `count` incidents in 24 h make a rule noisy under `policy`.
    pub fn is_noisy(policy: &Policy, count: usize) -> bool {
        policy.noisy_after > 0 && count > policy.noisy_after
    }
}
