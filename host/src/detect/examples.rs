//! Rule examples: every rule ships example event streams with the alerts they must raise;
//! [`run`] checks them all (`vigil rules test`, and the test suite) and [`cost`] measures
//! what evaluating each rule costs (`vigil rules cost`).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::{Alert, DetectConfig, DetectMetrics, Detector};
use crate::event::SecurityEvent;
use crate::rules::{EventRef, RuleSet, last_operations};

/// The outcome of one example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExampleResult {
    /// The rule.
    pub rule: String,
    /// The example's name (or its position).
    pub example: String,
    /// `None` when it passed, else what went wrong.
    pub failure: Option<String>,
    /// Why it did not run (a plugin the rule needs is not loaded).
    pub skipped: Option<String>,
}

/// Where example times start when an event gives none: events are one second apart.
fn base_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default() // 2026-01-01T00:00:00Z
}

/// Expands an example's events (`repeat`/`every` included) into events with times.
pub fn example_events(events: &[Value]) -> Result<Vec<SecurityEvent>, String> {
    let mut out = Vec::new();
    let mut clock = base_time();
    for (i, item) in events.iter().enumerate() {
        let (template, repeat, every) = match item.get("event") {
            Some(event) => {
                let repeat = item.get("repeat").and_then(Value::as_u64).unwrap_or(1);
                let every = match item.get("every").and_then(Value::as_str) {
                    Some(s) => humantime::parse_duration(s).map_err(|e| format!("event {}: every: {e}", i + 1))?,
                    None => std::time::Duration::from_secs(1),
                };
                (event, repeat, every)
            }
            None => (item, 1, std::time::Duration::from_secs(1)),
        };
        for _ in 0..repeat {
            let mut event: SecurityEvent =
                serde_json::from_value(template.clone()).map_err(|e| format!("event {}: {e}", i + 1))?;
            if event.time == crate::event::unset_time() {
                event.time = clock;
            }
            event.fill_times(event.time);
            clock = event.time + Duration::from_std(every).unwrap_or_default();
            out.push(event);
        }
    }
    Ok(out)
}

/// Runs every example of every rule of `rules`, each on a fresh detector.
pub fn run(rules: &RuleSet) -> Vec<ExampleResult> {
    let mut results = Vec::new();
    for rule in rules.rules() {
        for (n, example) in rule.meta.examples.iter().enumerate() {
            let name = if example.name.is_empty() { format!("example {}", n + 1) } else { example.name.clone() };
            let (failure, skipped) = if rule.missing_plugins.is_empty() {
                (check(rules, rule.meta.id.as_str(), example).err(), None)
            } else {
                (None, Some(format!("plugin(s) not loaded: {}", rule.missing_plugins.join(", "))))
            };
            results.push(ExampleResult { rule: rule.meta.id.to_string(), example: name, failure, skipped });
        }
    }
    results
}

fn check(rules: &RuleSet, rule: &str, example: &crate::rules::Example) -> Result<(), String> {
    let events = example_events(&example.events)?;
    let mut detector = Detector::new(rules.clone(), DetectConfig::default(), DetectMetrics::default());
    let mut alerts: Vec<Alert> = Vec::new();
    for event in events {
        detector.process(&Arc::new(event), &mut alerts);
    }
    let mine: Vec<&Alert> = alerts.iter().filter(|a| a.rule_id.as_str() == rule).collect();
    if mine.len() != example.alerts {
        let groups: Vec<&str> = mine.iter().map(|a| a.group_key.as_str()).collect();
        return Err(format!("expected {} alert(s), got {} {groups:?}", example.alerts, mine.len()));
    }
    if let Some(group) = &example.group
        && let Some(bad) = mine.iter().find(|a| &a.group_key != group)
    {
        return Err(format!("expected group `{group}`, got `{}`", bad.group_key));
    }
    Ok(())
}

/// What evaluating one rule costs on its examples' events.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleCost {
    /// The rule.
    pub rule: String,
    /// Whether every matcher runs natively.
    pub native: bool,
    /// Rhai operations per evaluation (mean over the events; 0 when native).
    pub operations: f64,
    /// Nanoseconds per evaluation (mean).
    pub nanos: f64,
    /// Events evaluated.
    pub events: usize,
}

/// Measures each rule on its own examples' events, or on `input` when given. `rules` must be
/// compiled with `count_operations` for the operation counts.
pub fn cost(rules: &RuleSet, input: Option<&[EventRef]>) -> Vec<RuleCost> {
    let mut out = Vec::new();
    for (index, rule) in rules.rules().iter().enumerate() {
        let events: Vec<EventRef> = match input {
            Some(events) => events.to_vec(),
            None => rule
                .meta
                .examples
                .iter()
                .filter_map(|e| example_events(&e.events).ok())
                .flatten()
                .map(|e| EventRef(Arc::new(e)))
                .collect(),
        };
        if events.is_empty() {
            continue;
        }
        let mut operations = 0u64;
        let started = Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            for event in &events {
                crate::rules::reset_operations();
                let _ = rules.evaluate_alone(index, event);
                operations += last_operations();
            }
        }
        let evaluations = (events.len() * rounds) as f64;
        out.push(RuleCost {
            rule: rule.meta.id.to_string(),
            native: rule.is_native(),
            operations: operations as f64 / evaluations,
            nanos: started.elapsed().as_nanos() as f64 / evaluations,
            events: events.len(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const RULE: &str = r#"
        const RULE = #{ id: "brute", title: "Brute force", severity: "high", group_by: ["source.ip"],
            window: #{ type: "threshold", count: 5, within: "1m" },
            examples: [
                #{ name: "five quick failures", alerts: 1, group: "203.0.113.7",
                   events: [#{ repeat: 5, every: "2s", event: #{ class: "authentication", outcome: "failure", source: #{ ip: "203.0.113.7" } } }] },
                #{ name: "too slow", alerts: 0,
                   events: [#{ repeat: 5, every: "30s", event: #{ class: "authentication", outcome: "failure", source: #{ ip: "203.0.113.7" } } }] },
                #{ name: "wrong on purpose", alerts: 2,
                   events: [#{ class: "authentication", outcome: "failure", source: #{ ip: "203.0.113.7" } }] },
            ] };
        fn condition(event) { event.class == "authentication" && event.outcome == "failure" }
    "#;

    #[test]
    fn examples_pass_and_fail_as_written() {
        let rules = RuleSet::compile(vec![(PathBuf::from("b.rhai"), RULE.into())], Vec::new(), &Default::default())
            .expect("compiles");
        let results = run(&rules);
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].failure, None, "{results:?}");
        assert_eq!(results[1].failure, None, "{results:?}");
        assert_eq!(results[2].failure.as_deref(), Some("expected 2 alert(s), got 0 []"));
    }

    #[test]
    fn every_shipped_rule_passes_its_examples() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        let rules = RuleSet::load_dir(&dir, &Default::default())
            .unwrap_or_else(|e| panic!("the shipped rules compile: {e:#?}"));
        assert!(rules.rules().len() >= 20, "the pack has {} rules", rules.rules().len());
        for rule in rules.rules() {
            let positive = rule.meta.examples.iter().any(|e| e.alerts > 0);
            let negative = rule.meta.examples.iter().any(|e| e.alerts == 0);
            assert!(positive && negative, "{} needs an example that alerts and one that does not", rule.meta.id);
        }
        let failures: Vec<String> = run(&rules)
            .into_iter()
            .filter_map(|r| r.failure.map(|f| format!("{} — {}: {f}", r.rule, r.example)))
            .collect();
        assert!(failures.is_empty(), "failing examples:\n{}", failures.join("\n"));
    }

    #[test]
    fn repeat_spaces_events_in_time() {
        let events = example_events(&[
            serde_json::json!({ "repeat": 3, "every": "10s", "event": { "class": "dns" } }),
            serde_json::json!({ "class": "dns" }),
        ])
        .expect("valid");
        let times: Vec<i64> = events.iter().map(|e| e.time.timestamp() - base_time().timestamp()).collect();
        assert_eq!(times, [0, 10, 20, 30]);
    }

    #[test]
    fn cost_reports_operations_for_rhai_rules_and_none_for_native() {
        let options = crate::rules::CompileOptions { count_operations: true, ..Default::default() };
        let rhai_rule =
            RULE.replace("fn condition(event) {", "fn condition(event) { let x = 1;").replace("\"brute\"", "\"slow\"");
        let rules = RuleSet::compile(
            vec![(PathBuf::from("b.rhai"), RULE.into()), (PathBuf::from("s.rhai"), rhai_rule)],
            Vec::new(),
            &options,
        )
        .expect("compiles");
        let costs = cost(&rules, None);
        assert_eq!(costs.len(), 2);
        assert!(costs[0].native && costs[0].operations == 0.0, "{costs:?}");
        assert!(!costs[1].native && costs[1].operations > 0.0, "{costs:?}");
    }
}
