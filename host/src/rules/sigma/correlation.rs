//! Sigma correlation rules (specification 2.0 and 2.1) compiled to windowed rules:
//! `event_count` a threshold window, `value_count` a distinct window, `value_sum` a sum
//! window, `value_avg`/`value_median`/`value_percentile` a statistic window, `temporal`
//! an any-order window, `temporal_ordered` a sequence.

use super::*;

/// The rules a correlation names.
pub(super) fn correlation_refs(doc: &Value) -> Vec<String> {
    strings(&doc["correlation"], "rules")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Correlation {
    #[serde(rename = "type")]
    kind: String,
    rules: Vec<String>,
    #[serde(rename = "group-by", default)]
    group_by: Vec<String>,
    timespan: String,
    #[serde(default)]
    condition: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    aliases: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    generate: bool,
}

pub(super) fn correlation_rule(
    path: &Path,
    doc: &Value,
    text: &str,
    detections: &[Detection],
    built: &[(CompiledRule, Vec<String>, bool)],
) -> Result<(CompiledRule, bool), String> {
    let mut meta = meta(path, doc)?;
    let spec: Correlation =
        serde_json::from_value(doc["correlation"].clone()).map_err(|e| format!("correlation: {e}"))?;
    let generate = spec.generate || doc.get("generate").and_then(Value::as_bool).unwrap_or(false);
    let within = humantime::parse_duration(&spec.timespan).map_err(|e| format!("timespan `{}`: {e}", spec.timespan))?;
    if within == Duration::ZERO {
        return Err("timespan must be longer than 0s".into());
    }
    if spec.rules.is_empty() {
        return Err("correlation names no rules".into());
    }
    // Each named rule: a detection's node and fields, or an inner correlation.
    enum Named<'a> {
        Detection(&'a Detection),
        Correlation(&'a CompiledRule),
    }
    let mut named = Vec::new();
    for r in &spec.rules {
        if let Some(d) = detections.iter().find(|d| d.meta.id.as_str() == r || d.name.as_deref() == Some(r.as_str())) {
            named.push((r.clone(), Named::Detection(d)));
        } else if let Some((c, _, _)) = built.iter().find(|(c, _, _)| names_rule(c, r)) {
            named.push((r.clone(), Named::Correlation(c)));
        } else {
            return Err(format!("correlation names rule `{r}`, which is not loaded"));
        }
    }
    // The group-by fields, resolved in the first named detection's logsource (aliases
    // name a field per rule, and must land on the same path in each).
    // The group-by fields of each named rule, through its logsource and `aliases`.
    if spec.group_by.is_empty() {
        return Err("correlation needs group-by".into());
    }
    let mut per_rule: Vec<Vec<FieldPath>> = Vec::new();
    for (r, rule) in &named {
        let mut paths = Vec::new();
        for field in &spec.group_by {
            let name = spec.aliases.get(field).and_then(|per| per.get(r)).unwrap_or(field);
            let path = match rule {
                Named::Detection(d) => d.fields().resolve(name)?.first().cloned(),
                Named::Correlation(c) => match c.sigma.as_ref().and_then(|s| s.fields.clone()) {
                    Some(fields) => fields.resolve(name)?.first().cloned(),
                    None => None,
                },
            };
            paths.push(path.ok_or_else(|| format!("group-by `{field}` resolves to no field for `{r}`"))?);
        }
        per_rule.push(paths);
    }
    let group_by = per_rule[0].clone();
    // Aliases that land on different fields: each rule's matches are keyed by its own.
    let aliased: Vec<(u32, Vec<FieldPath>)> = if per_rule.iter().all(|p| *p == group_by) {
        Vec::new()
    } else {
        per_rule.into_iter().enumerate().map(|(bit, paths)| (1u32 << bit, paths)).collect()
    };
    let condition = spec.condition.unwrap_or_default();
    // The condition's lower bound: (value, strictly above it). An upper bound cannot
    // stream: only the window's end could tell it was kept.
    let bound = |condition: &BTreeMap<String, Value>| -> Result<(f64, bool), String> {
        let mut found = None;
        for (op, value) in condition {
            match (op.as_str(), value.as_f64().filter(|n| n.is_finite())) {
                ("field" | "percentile", _) => {}
                ("gte", Some(n)) => found = Some((n, false)),
                ("gt", Some(n)) => found = Some((n, true)),
                (op @ ("lt" | "lte" | "eq"), _) => {
                    return Err(format!(
                        "condition `{op}`: an upper bound needs the window to close before it can decide; only gt/gte stream"
                    ));
                }
                (op, _) => return Err(format!("condition `{op}: {value}` is not gt/gte with a number")),
            }
        }
        found.ok_or_else(|| "condition needs gt or gte".to_owned())
    };
    // A bound on a count: the smallest count that meets it (at least 1).
    let threshold = |condition: &BTreeMap<String, Value>| -> Result<u32, String> {
        let (n, strictly) = bound(condition)?;
        if n < 0.0 || n.fract() != 0.0 || n >= f64::from(u32::MAX) {
            return Err(format!("condition bound {n} is not a count"));
        }
        let n = n as u32;
        Ok(if strictly { n.saturating_add(1) } else { n.max(1) })
    };
    let mut matchers = Vec::new();
    let mut chained = Vec::new();
    for (bit, (r, rule)) in named.iter().enumerate() {
        match rule {
            Named::Detection(d) => matchers.push(sigma_matcher(r, d.node.clone())),
            Named::Correlation(c) => {
                matchers.push(sigma_matcher(r, Node::Const(false)));
                chained.push((c.meta.id.to_string(), 1u32 << bit));
            }
        }
    }
    if matchers.len() > 16 {
        return Err("a correlation of more than 16 rules".into());
    }
    let steps = || named.iter().map(|(r, _)| Step { when: r.clone(), count: 1 }).collect::<Vec<_>>();
    meta.window = Some(match spec.kind.as_str() {
        "event_count" => WindowSpec::Threshold { count: threshold(&condition)?, within },
        kind @ ("value_count" | "value_sum" | "value_avg" | "value_median" | "value_percentile") => {
            let field =
                condition.get("field").and_then(Value::as_str).ok_or(format!("{kind} needs condition.field"))?;
            let path = match &named[0].1 {
                Named::Detection(d) => d.fields().resolve(field)?.first().cloned(),
                Named::Correlation(_) => return Err(format!("{kind} over a correlation")),
            };
            let field = path.ok_or(format!("{kind} field resolves to nothing"))?;
            let statistic = match kind {
                "value_count" | "value_sum" => None,
                "value_avg" => Some(Statistic::Avg),
                "value_median" => Some(Statistic::Median),
                _ => {
                    let p = condition.get("percentile").and_then(Value::as_u64).filter(|p| (1..=100).contains(p));
                    let p = p.ok_or("value_percentile needs condition.percentile between 1 and 100")?;
                    Some(Statistic::Percentile(p as u8))
                }
            };
            match statistic {
                Some(statistic) => {
                    let (at_least, strictly) = bound(&condition)?;
                    WindowSpec::Statistic { field, statistic, at_least, strictly, within }
                }
                None if kind == "value_sum" => {
                    WindowSpec::Sum { field, at_least: u64::from(threshold(&condition)?), within }
                }
                None => WindowSpec::Distinct { field, count: threshold(&condition)?, within },
            }
        }
        "temporal" | "temporal_ordered" => {
            if !condition.is_empty() && threshold(&condition)? as usize != named.len() {
                return Err("temporal condition below the number of rules (some of them) is not supported yet".into());
            }
            if named.len() < 2 {
                return Err(format!("{} needs at least two rules", spec.kind));
            }
            if spec.kind == "temporal" {
                WindowSpec::AllOf { steps: steps(), within }
            } else {
                WindowSpec::Sequence { steps: steps(), within }
            }
        }
        other => {
            return Err(format!(
                "correlation type `{other}` is not event_count, value_count, value_sum, value_avg, value_median, value_percentile, temporal or temporal_ordered"
            ));
        }
    });
    meta.group_by = group_by;
    let rule = CompiledRule {
        meta,
        path: path.to_owned(),
        fingerprint: fingerprint(text),
        classes: Vec::new(),
        missing_plugins: Vec::new(),
        matchers,
        ast: rhai::AST::empty(),
        sigma: Some(SigmaRule {
            name: str_of(doc, "name").map(str::to_owned),
            logsource: "correlation".into(),
            chained,
            aliased,
            fields: named.iter().find_map(|(_, n)| match n {
                Named::Detection(d) => Some(d.fields()),
                Named::Correlation(c) => c.sigma.as_ref().and_then(|s| s.fields.clone()),
            }),
            ..SigmaRule::default()
        }),
    };
    Ok((rule, generate))
}
