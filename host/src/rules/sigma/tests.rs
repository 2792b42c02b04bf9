//! Sigma loading: refusals, idle logsources, correlations.

use std::path::PathBuf;

use super::*;

fn compile_texts(files: &[(&str, &str)]) -> (Vec<CompiledRule>, Report) {
    let pipeline = Pipeline::load(None, &BTreeMap::new()).expect("built-in pipeline");
    let sources: Vec<(PathBuf, String)> = files.iter().map(|(p, t)| (PathBuf::from(p), (*t).to_owned())).collect();
    compile(&sources, &pipeline)
}

const FAILED: &str = "title: Failed logon\nid: failed\nname: failed_login\nlogsource:\n  product: windows\n  service: security\ndetection:\n  selection:\n    EventID: 4625\n  condition: selection\n";

#[test]
fn a_refusal_names_file_rule_and_construct_and_costs_no_other_rule() {
    let (rules, report) = compile_texts(&[
        (
            "a.yml",
            "title: Bad\nid: bad-1\nlogsource:\n  product: windows\n  service: security\ndetection:\n  sel:\n    CommandLine|frob: x\n  condition: sel\n",
        ),
        ("b.yml", FAILED),
        ("c.yml", "title: [unclosed\n"),
        (
            "d.yml",
            "title: Twin\nid: failed\nlogsource:\n  product: windows\ndetection:\n  s:\n    EventID: 1\n  condition: s\n",
        ),
    ]);
    assert_eq!(rules.len(), 1, "the good rule loads");
    let reasons: Vec<(String, Option<String>, String)> =
        report.refused.iter().map(|r| (r.path.display().to_string(), r.id.clone(), r.reason.clone())).collect();
    assert!(
        reasons.iter().any(|(p, id, why)| p == "a.yml"
            && id.as_deref() == Some("bad-1")
            && why.contains("selection `sel`: `CommandLine|frob`: unknown value modifier `frob`")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|(p, _, why)| p == "c.yml" && why.starts_with("YAML:")), "{reasons:?}");
    assert!(reasons.iter().any(|(p, _, why)| p == "d.yml" && why.contains("duplicate rule id")), "{reasons:?}");
}

#[test]
fn a_logsource_nothing_reads_is_idle_not_dropped() {
    let (rules, report) = compile_texts(&[(
        "m.yml",
        "title: Mac\nid: mac\nlogsource:\n  product: macos\n  category: process_creation\ndetection:\n  s:\n    Image|endswith: /osascript\n  condition: s\n",
    )]);
    assert_eq!(rules.len(), 1);
    assert!(!rules[0].runs(), "an idle rule does not run");
    assert_eq!(report.idle, vec![("mac".to_owned(), "product=macos category=process_creation".to_owned())]);
    assert_eq!(report.logsources["product=macos category=process_creation"], (1, 1));
}

#[test]
fn metadata_maps_level_tags_author() {
    let (rules, _) = compile_texts(&[(
        "r.yml",
        "title: T\nid: r1\nauthor: Jane Doe\nlevel: high\ntags:\n  - attack.execution\n  - attack.t1059.001\nreferences:\n  - https://example.org\nfalsepositives:\n  - admins\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  s:\n    Image|endswith: '\\x.exe'\n  condition: s\n",
    )]);
    let meta = &rules[0].meta;
    assert_eq!(meta.severity, Priority::P2);
    assert_eq!(meta.mitre.tactics, vec!["TA0002"]);
    assert_eq!(meta.mitre.techniques, vec!["T1059.001"]);
    assert_eq!(meta.author.as_deref(), Some("Jane Doe"));
    assert_eq!((meta.references.len(), meta.falsepositives.len()), (1, 1));
    assert!(meta.tags.contains(&"sigma".to_owned()));
}

#[test]
fn correlations_become_windows_and_silence_the_rules_they_count() {
    let count = "title: Many\nid: many\ncorrelation:\n  type: event_count\n  rules: [failed_login]\n  group-by: [TargetUserName]\n  timespan: 10m\n  condition:\n    gt: 9\n";
    let (rules, report) = compile_texts(&[("f.yml", FAILED), ("c.yml", count)]);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let many = rules.iter().find(|r| r.meta.id.as_str() == "many").expect("correlation");
    assert_eq!(many.meta.window, Some(WindowSpec::Threshold { count: 10, within: Duration::from_secs(600) }));
    assert_eq!(many.meta.group_by[0].to_string(), "attributes.windows.TargetUserName");
    let base = rules.iter().find(|r| r.meta.id.as_str() == "failed").expect("base");
    assert!(!base.meta.enabled, "without generate, the counted rule does not alert alone");

    let generate = count.replace("  condition:", "  generate: true\n  condition:");
    let (rules, _) = compile_texts(&[("f.yml", FAILED), ("c.yml", &generate)]);
    assert!(rules.iter().find(|r| r.meta.id.as_str() == "failed").is_some_and(|r| r.meta.enabled));

    let upper = count.replace("gt: 9", "lt: 3");
    let (_, report) = compile_texts(&[("f.yml", FAILED), ("c.yml", &upper)]);
    assert!(report.refused[0].reason.contains("upper bound"), "{:?}", report.refused);

    let missing = count.replace("[failed_login]", "[nowhere]");
    let (_, report) = compile_texts(&[("c.yml", &missing)]);
    assert!(report.refused[0].reason.contains("nowhere"), "{:?}", report.refused);

    let sum = count.replace("event_count", "value_sum").replace("    gt: 9", "    field: IpPort\n    gte: 5000");
    let (rules, report) = compile_texts(&[("f.yml", FAILED), ("c.yml", &sum)]);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let summed = rules.iter().find(|r| r.meta.id.as_str() == "many").expect("value_sum");
    assert!(matches!(&summed.meta.window, Some(WindowSpec::Sum { at_least: 5000, .. })), "{:?}", summed.meta.window);
    // Sigma 2.1's statistics: avg, median, percentile (which needs its rank).
    let average = sum.replace("value_sum", "value_avg").replace("gte: 5000", "gt: 2.5");
    let median = sum.replace("value_sum", "value_median");
    let percentile = sum.replace("value_sum", "value_percentile").replace("gte: 5000", "percentile: 95\n    gte: 5000");
    for (text, statistic, at_least, strictly) in [
        (&average, Statistic::Avg, 2.5, true),
        (&median, Statistic::Median, 5000.0, false),
        (&percentile, Statistic::Percentile(95), 5000.0, false),
    ] {
        let (rules, report) = compile_texts(&[("f.yml", FAILED), ("c.yml", text)]);
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        let rule = rules.iter().find(|r| r.meta.id.as_str() == "many").expect("statistic");
        assert!(
            matches!(&rule.meta.window, Some(WindowSpec::Statistic { statistic: s, at_least: a, strictly: st, .. })
                if *s == statistic && *a == at_least && *st == strictly),
            "{:?}",
            rule.meta.window
        );
    }
    let rankless = sum.replace("value_sum", "value_percentile");
    let (_, report) = compile_texts(&[("f.yml", FAILED), ("c.yml", &rankless)]);
    assert!(report.refused[0].reason.contains("condition.percentile"), "{:?}", report.refused);
    let unknown = count.replace("event_count", "value_mode");
    let (_, report) = compile_texts(&[("f.yml", FAILED), ("c.yml", &unknown)]);
    assert!(report.refused[0].reason.contains("`value_mode`"), "{:?}", report.refused);

    let distinct = "title: Spray\nid: spray\ncorrelation:\n  type: value_count\n  rules: [failed_login]\n  group-by: [IpAddress]\n  timespan: 1h\n  condition:\n    field: TargetUserName\n    gte: 20\n";
    let temporal = "title: All\nid: all\ncorrelation:\n  type: temporal\n  rules: [failed_login, spray]\n  group-by: [IpAddress]\n  timespan: 1h\n";
    let (rules, report) = compile_texts(&[("f.yml", FAILED), ("s.yml", distinct), ("t.yml", temporal)]);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let spray = rules.iter().find(|r| r.meta.id.as_str() == "spray").expect("spray");
    assert!(matches!(&spray.meta.window, Some(WindowSpec::Distinct { count: 20, .. })));
    assert!(spray.sigma.as_ref().is_some_and(|s| s.feeds_only), "a correlation another one counts only feeds it");
    let aliased = temporal.replace("[IpAddress]", "[ip]")
        + "  aliases:\n    ip:\n      failed_login: IpAddress\n      spray: WorkstationName\n";
    let (rules, report) = compile_texts(&[("f.yml", FAILED), ("s.yml", distinct), ("t.yml", &aliased)]);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let all = rules.iter().find(|r| r.meta.id.as_str() == "all").expect("temporal");
    assert_eq!(all.group_paths(0b01)[0].to_string(), "attributes.windows.IpAddress");
    assert_eq!(all.group_paths(0b10)[0].to_string(), "attributes.windows.WorkstationName");
    let (rules, _) = compile_texts(&[("f.yml", FAILED), ("s.yml", distinct), ("t.yml", temporal)]);
    let all = rules.iter().find(|r| r.meta.id.as_str() == "all").expect("temporal");
    assert!(matches!(&all.meta.window, Some(WindowSpec::AllOf { steps, .. }) if steps.len() == 2));
    assert_eq!(all.sigma.as_ref().map(|s| s.chained.clone()), Some(vec![("spray".to_owned(), 0b10)]));
}

#[test]
fn a_configured_sigma_directory_that_is_missing_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = crate::rules::CompileOptions {
        sigma: SigmaConfig { dirs: vec![dir.path().join("nowhere")], ..SigmaConfig::default() },
        ..Default::default()
    };
    let errors = crate::rules::RuleSet::load_dir(dir.path(), &options).expect_err("refused");
    assert!(errors[0].to_string().contains("[rules.sigma] dirs"), "{errors:?}");
    // Without the setting, a rule directory without `sigma/` loads.
    assert!(crate::rules::RuleSet::load_dir(dir.path(), &Default::default()).is_ok());
}
