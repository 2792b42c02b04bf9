//! Routes: which records a sink takes — by kind, class, severity or priority, tags, tenant,
//! or a Rhai condition over the event (compiled like a rule, natively where it can be).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::encode::Decoded;
use crate::event::{EventClass, Priority, RecordKind, Severity};
use crate::rules::{CompileOptions, EventRef, RuleSet};

/// Route settings (`route = { ... }`); every part that is set must match.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Record kinds taken: `event`, `alert`, `incident`.
    pub records: Vec<RecordKind>,
    /// Event classes taken (events only); empty: all.
    pub classes: Vec<EventClass>,
    /// Lowest event severity taken (events only).
    pub min_severity: Option<Severity>,
    /// Least urgent priority taken (alerts and incidents only), e.g. `P2` takes P0–P2.
    pub min_priority: Option<Priority>,
    /// Taken when the record has any of these tags; empty: all.
    pub tags: Vec<String>,
    /// Rule categories taken (alerts and incidents only); empty: all.
    pub categories: Vec<crate::rules::Category>,
    /// Tenants taken (events only); empty: all.
    pub tenants: Vec<String>,
    /// A Rhai condition over `event` (events only), like a rule's condition body.
    pub condition: Option<String>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            records: vec![RecordKind::Event, RecordKind::Alert, RecordKind::Incident],
            classes: Vec::new(),
            min_severity: None,
            min_priority: None,
            tags: Vec::new(),
            categories: Vec::new(),
            tenants: Vec::new(),
            condition: None,
        }
    }
}

impl RouteConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.records.is_empty() {
            errors.push((format!("{prefix}.records"), "must name at least one record kind".into()));
        }
        if let Some(condition) = &self.condition
            && let Err(e) = compile(condition)
        {
            errors.push((format!("{prefix}.condition"), e));
        }
        errors
    }
}

fn compile(condition: &str) -> Result<RuleSet, String> {
    let text = format!(
        "const RULE = #{{ id: \"route\", title: \"route\", severity: \"low\" }};\nfn condition(event) {{\n{condition}\n}}"
    );
    RuleSet::compile(vec![(PathBuf::from("route"), text)], Vec::new(), &CompileOptions::default())
        .map_err(|errors| errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; "))
}

/// A compiled route.
#[derive(Clone, Debug)]
pub struct Route {
    config: Arc<RouteConfig>,
    condition: Option<RuleSet>,
    /// A paging or chat channel's name: findings whose rule names channels in `notify` go
    /// to those channels only, whatever the routes say.
    channel: Option<String>,
}

impl Route {
    /// Compiles a validated route.
    pub fn new(config: RouteConfig) -> Result<Self, String> {
        let condition = config.condition.as_deref().map(compile).transpose()?;
        Ok(Self { config: Arc::new(config), condition, channel: None })
    }

    /// The route of the channel `name`, which a rule's `notify` list can name.
    pub fn channel(mut self, name: &str) -> Self {
        self.channel = Some(name.to_owned());
        self
    }

    /// Whether the sink takes records of `kind` at all (before decoding them).
    pub fn takes_kind(&self, kind: RecordKind) -> bool {
        self.config.records.contains(&kind)
    }

    /// Whether the sink takes this record.
    pub fn accepts(&self, record: &Decoded) -> bool {
        let c = &self.config;
        match record {
            Decoded::Event(e) => {
                (c.classes.is_empty() || c.classes.contains(&e.class))
                    && c.min_severity.is_none_or(|min| e.severity >= min)
                    && (c.tags.is_empty() || e.tags.iter().any(|t| c.tags.contains(t)))
                    && (c.tenants.is_empty() || e.tenant.as_ref().is_some_and(|t| c.tenants.contains(t)))
                    && self
                        .condition
                        .as_ref()
                        .is_none_or(|rules| rules.evaluate(0, &EventRef(e.clone())).is_ok_and(|mask| mask & 1 == 1))
            }
            Decoded::Finding(f) => match &self.channel {
                Some(name) if !f.notify.is_empty() => f.notify.contains(name),
                _ => {
                    c.min_priority.is_none_or(|least| f.priority <= least)
                        && (c.tags.is_empty() || f.tags.iter().any(|t| c.tags.contains(t)))
                        && (c.categories.is_empty()
                            || c.categories
                                .iter()
                                .any(|cat| f.category.as_deref() == super::encode::category(Some(*cat)).as_deref()))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::testing::{sample_events, sample_findings};

    fn route(text: &str) -> Route {
        let config: RouteConfig = toml::from_str(text).expect("config");
        assert!(config.validate("route").is_empty(), "{:?}", config.validate("route"));
        Route::new(config).expect("route")
    }

    fn event(name: &str) -> Decoded {
        Decoded::Event(Arc::new(sample_events().into_iter().find(|(n, _)| *n == name).expect("sample").1))
    }

    #[test]
    fn filters_by_class_severity_tags_tenant_and_condition() {
        assert!(route("classes = [\"authentication\"]").accepts(&event("ssh_failure")));
        assert!(!route("classes = [\"dns\"]").accepts(&event("ssh_failure")));
        assert!(route("min_severity = \"high\"").accepts(&event("process_start")));
        assert!(!route("min_severity = \"high\"").accepts(&event("ssh_failure")));
        assert!(route("tags = [\"ssh\", \"x\"]").accepts(&event("ssh_failure")));
        assert!(!route("tags = [\"x\"]").accepts(&event("ssh_failure")));
        assert!(route("tenants = [\"acme\"]").accepts(&event("web_request")));
        assert!(!route("tenants = [\"acme\"]").accepts(&event("ssh_failure")));
        let r = route("condition = 'event.source.ip == \"203.0.113.7\" && event.outcome == \"failure\"'");
        assert!(r.accepts(&event("ssh_failure")));
        assert!(!r.accepts(&event("web_request")));
    }

    #[test]
    fn findings_route_by_priority() {
        let (_, alert) = sample_findings().into_iter().next().expect("alert");
        let finding = Decoded::Finding(Arc::new(alert));
        assert!(route("min_priority = \"P2\"").accepts(&finding));
        assert!(!route("min_priority = \"P1\"").accepts(&finding));
        assert!(route("categories = [\"authentication_failure\"]").accepts(&finding));
        assert!(!route("categories = [\"data_leak\"]").accepts(&finding));
    }

    #[test]
    fn a_rules_notify_list_picks_the_channels() {
        let (_, mut alert) = sample_findings().into_iter().next().expect("alert");
        alert.notify = vec!["oncall".into()];
        let finding = Decoded::Finding(Arc::new(alert));
        assert!(
            route("min_priority = \"P0\"").channel("oncall").accepts(&finding),
            "named: taken whatever the route says"
        );
        assert!(!route("").channel("chat").accepts(&finding), "not named: not taken");
        assert!(route("").accepts(&finding), "sinks that are not channels are unaffected");
    }

    #[test]
    fn bad_conditions_are_config_errors() {
        let config: RouteConfig = toml::from_str("condition = 'event.class =='").expect("parses as TOML");
        assert_eq!(config.validate("sinks.s.route")[0].0, "sinks.s.route.condition");
    }
}
