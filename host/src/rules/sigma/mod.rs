//! Sigma rules, compiled to the same [`CompiledRule`]s as Rhai rules and evaluated
//! natively: no Rhai on the hot path.
//!
//! Rules are read from `<rules dir>/sigma/` and the configured `[rules.sigma] dirs`,
//! recursively (`*.yml`, `*.yaml`, several YAML documents per file). A detection rule
//! becomes one matcher: its pipeline entry's `when` (which events its logsource stands
//! for) and its `detection`. A correlation rule (specification v2) becomes a windowed
//! rule over the rules it names: `event_count` a threshold window, `value_count` a
//! distinct window, `value_sum` a sum window, `value_avg`/`value_median`/
//! `value_percentile` a statistic window, `temporal` an any-order window,
//! `temporal_ordered` a sequence, all on event time with the detector's windows and
//! checkpoints. A correlation of
//! correlations is fed by the alerts of the inner one (see `detect`).
//!
//! A rule that cannot be compiled is refused with its file, id and the construct, and
//! the rest load; a rule whose logsource no pipeline entry provides is idle (compiled,
//! never run). [`Report`] lists both for `vigil sigma check` and `vigil rules list`.

mod correlation;
mod detection;
mod dispatch;
mod pipeline;
mod value;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use detection::Node;
pub use pipeline::{Logsource, Pipeline};

pub use dispatch::Dispatch;
pub use value::Lookup;

use correlation::{correlation_refs, correlation_rule};
use value::Fields as _;

use super::{CompiledRule, Matcher, Mitre, RuleError, RuleMeta, Statistic, Step, WindowSpec, predicate::Predicate};
use crate::event::{FieldPath, Priority, RuleId};

/// Sigma settings (`[rules.sigma]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SigmaConfig {
    /// Directories of Sigma rules besides `<rules dir>/sigma` (read recursively).
    pub dirs: Vec<PathBuf>,
    /// Values of `|expand` placeholders (`Admins_Workstations = ["WS1", "WS2"]`).
    pub placeholders: BTreeMap<String, Vec<String>>,
}

/// A rule Vigil would not compile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refused {
    /// The file.
    pub path: PathBuf,
    /// The rule's id (or name), when it has one.
    pub id: Option<String>,
    /// The construct and why.
    pub reason: String,
}

/// What a load of Sigma rules found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Rules compiled (detections and correlations), idle ones included.
    pub compiled: usize,
    /// Correlation rules among them.
    pub correlations: usize,
    /// Rules refused, with the reason.
    pub refused: Vec<Refused>,
    /// Compiled rules whose logsource no pipeline entry provides: (id, logsource).
    pub idle: Vec<(String, String)>,
    /// Compiled rules per value modifier they use.
    pub modifiers: BTreeMap<String, usize>,
    /// Compiled rules per logsource, and how many of them are idle.
    pub logsources: BTreeMap<String, (usize, usize)>,
}

impl Report {
    /// The share of rules that compiled, in percent.
    pub fn compiled_percent(&self) -> f64 {
        let total = self.compiled + self.refused.len();
        if total == 0 { 100.0 } else { 100.0 * self.compiled as f64 / total as f64 }
    }
}

/// A detection rule read from YAML, before it becomes a [`CompiledRule`].
struct Detection {
    meta: RuleMeta,
    path: PathBuf,
    name: Option<String>,
    /// Its logsource's `when` and its detection: what a correlation evaluates.
    node: Node,
    /// Its detection alone: what the rule evaluates once [`Dispatch`] found the event in
    /// its logsource.
    detection: Node,
    entry: Option<Arc<pipeline::Entry>>,
    logsource: Logsource,
    text: String,
}

impl Detection {
    /// Where its field names are read.
    fn fields(&self) -> Arc<pipeline::Entry> {
        self.entry.clone().unwrap_or_else(|| Arc::new(pipeline::Entry::generic()))
    }
}

/// Reads every Sigma file of `dirs` (recursively, sorted) and compiles it. Errors are
/// only those of the pipelines; rule problems are in the report.
pub fn load(
    dirs: &[PathBuf],
    config: &SigmaConfig,
    pipelines: Option<&Path>,
) -> Result<(Vec<CompiledRule>, Report), Vec<RuleError>> {
    let pipeline = Pipeline::load(pipelines, &config.placeholders).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| RuleError::new(&e.path, format!("Sigma pipeline: {}", e.message)))
            .collect::<Vec<_>>()
    })?;
    let mut files: Vec<PathBuf> = dirs.iter().flat_map(|d| yaml_files(d)).collect();
    files.sort();
    files.dedup();
    let mut sources = Vec::new();
    let mut report = Report::default();
    for path in files {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => report.refused.push(Refused { path, id: None, reason: format!("cannot read: {e}") }),
        }
    }
    let (rules, mut found) = compile(&sources, &pipeline);
    found.refused.extend(report.refused);
    Ok((rules, found))
}

/// The `*.yml` and `*.yaml` files under `dir`, at any depth (none when it cannot be read).
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "yml" || x == "yaml") {
                out.push(path);
            }
        }
    }
    out
}

/// Compiles Sigma sources (path, text) with `pipeline`.
pub fn compile(sources: &[(PathBuf, String)], pipeline: &Pipeline) -> (Vec<CompiledRule>, Report) {
    let mut report = Report { files: sources.len(), ..Report::default() };
    let mut detections: Vec<Detection> = Vec::new();
    let mut correlations: Vec<(PathBuf, Value, String)> = Vec::new();
    for (path, text) in sources {
        let documents: Vec<Value> = match serde_saphyr::from_multiple(text) {
            Ok(docs) => docs,
            Err(e) => {
                let reason = format!("YAML: {}", e.to_string().lines().next().unwrap_or("unreadable"));
                report.refused.push(Refused { path: path.clone(), id: None, reason });
                continue;
            }
        };
        for doc in documents {
            if doc.is_null() {
                continue;
            }
            let id = rule_id(&doc);
            let refuse = |reason: String| Refused { path: path.clone(), id: id.clone(), reason };
            if doc.get("correlation").is_some() {
                let text = serde_json::to_string(&doc).unwrap_or_default();
                correlations.push((path.clone(), doc, text));
            } else if doc.get("detection").is_some() {
                let taken = |id: &str| {
                    detections.iter().find(|d| d.meta.id.as_str() == id).map(|d| d.path.display().to_string())
                };
                match detection_rule(path, &doc, pipeline) {
                    Ok(rule) if taken(rule.meta.id.as_str()).is_some() => {
                        let first = taken(rule.meta.id.as_str()).unwrap_or_default();
                        report.refused.push(refuse(format!("duplicate rule id (also in {first})")));
                    }
                    Ok(rule) => {
                        count_modifiers(&doc, &mut report.modifiers);
                        detections.push(rule);
                    }
                    Err(reason) => report.refused.push(refuse(reason)),
                }
            } else if doc.get("filter").is_some() {
                report.refused.push(refuse("filter rules (meta filters) are not supported yet".into()));
            } else {
                report.refused.push(refuse("a document with neither `detection` nor `correlation`".into()));
            }
        }
    }
    // Correlations, in passes: one is compiled once every rule it names is.
    let mut referenced: HashMap<String, bool> = HashMap::new();
    let mut built: Vec<(CompiledRule, Vec<String>, bool)> = Vec::new();
    let mut pending = correlations;
    loop {
        let known = |r: &String, built: &[(CompiledRule, Vec<String>, bool)]| {
            detections.iter().any(|d| d.meta.id.as_str() == r || d.name.as_deref() == Some(r.as_str()))
                || built.iter().any(|(c, _, _)| names_rule(c, r))
        };
        let (ready, waiting): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(_, doc, _)| correlation_refs(doc).iter().all(|r| known(r, &built)));
        if ready.is_empty() {
            pending = waiting;
            break;
        }
        for (path, doc, text) in ready {
            let names = correlation_refs(&doc);
            match correlation_rule(&path, &doc, &text, &detections, &built) {
                Ok((rule, generate)) => {
                    for name in &names {
                        let suppressed = referenced.entry(name.clone()).or_insert(true);
                        *suppressed &= !generate;
                    }
                    built.push((rule, names, generate));
                }
                Err(reason) => report.refused.push(Refused { path: path.clone(), id: rule_id(&doc), reason }),
            }
        }
        pending = waiting;
    }
    for (path, doc, _) in pending {
        let missing: Vec<String> = correlation_refs(&doc)
            .into_iter()
            .filter(|r| !detections.iter().any(|d| d.meta.id.as_str() == r || d.name.as_deref() == Some(r.as_str())))
            .filter(|r| !built.iter().any(|(c, _, _)| names_rule(c, r)))
            .collect();
        report.refused.push(Refused {
            path,
            id: rule_id(&doc),
            reason: format!(
                "correlation names rules that are not loaded (or name each other in a circle): {}",
                missing.join(", ")
            ),
        });
    }
    let mut compiled: Vec<CompiledRule> = Vec::new();
    for d in detections {
        let suppressed = [Some(d.meta.id.to_string()), d.name.clone()]
            .iter()
            .flatten()
            .any(|r| referenced.get(r).copied().unwrap_or(false));
        let source = d.logsource.to_string();
        let slot = report.logsources.entry(source.clone()).or_default();
        slot.0 += 1;
        let idle = d.entry.is_none().then(|| format!("no pipeline entry for logsource {source}"));
        if idle.is_some() {
            slot.1 += 1;
            report.idle.push((d.meta.id.to_string(), source.clone()));
        }
        let mut meta = d.meta;
        if suppressed {
            meta.enabled = false;
        }
        let rule = CompiledRule {
            fingerprint: fingerprint(&d.text),
            path: d.path,
            classes: Vec::new(),
            missing_plugins: Vec::new(),
            matchers: vec![sigma_matcher("detection", d.detection)],
            ast: rhai::AST::empty(),
            sigma: Some(SigmaRule {
                name: d.name,
                logsource: source,
                idle,
                fields: d.entry.clone(),
                logsource_entry: d.entry,
                ..SigmaRule::default()
            }),
            meta,
        };
        compiled.push(rule);
    }
    report.correlations = built.len();
    for (mut rule, _, _) in built {
        let named = |r: &Option<String>| r.as_ref().is_some_and(|r| referenced.get(r).copied().unwrap_or(false));
        let id = Some(rule.meta.id.to_string());
        if let Some(sigma) = &mut rule.sigma
            && (named(&id) || named(&sigma.name))
        {
            sigma.feeds_only = true;
        }
        compiled.push(rule);
    }
    report.compiled = compiled.len();
    (compiled, report)
}

/// Whether `r` is the id or name of compiled rule `c`.
fn names_rule(c: &CompiledRule, r: &str) -> bool {
    c.meta.id.as_str() == r || c.sigma.as_ref().and_then(|s| s.name.as_deref()) == Some(r)
}

fn sigma_matcher(function: &str, node: Node) -> Matcher {
    let predicate = Predicate::Sigma(Arc::new(node));
    Matcher {
        function: function.to_owned(),
        predicate: Some(predicate.clone()),
        prefilter: None,
        guard: Some(predicate),
    }
}

fn fingerprint(text: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(text, &mut hasher);
    std::hash::Hasher::finish(&hasher)
}

/// What a Sigma rule adds to a [`CompiledRule`].
#[derive(Clone, Debug, Default)]
pub struct SigmaRule {
    /// The rule's `name` (how correlations may refer to it).
    pub name: Option<String>,
    /// Its logsource, as text.
    pub logsource: String,
    /// Why it does not run, when its logsource has no pipeline entry.
    pub idle: Option<String>,
    /// For a correlation of correlations: (inner rule id, matcher bit) fed by the inner
    /// rule's alerts.
    pub chained: Vec<(String, u32)>,
    /// A correlation another correlation counts, without `generate`: its alerts feed that
    /// one and are not raised.
    pub feeds_only: bool,
    /// Where a correlation's field names are read: its first detection's logsource.
    fields: Option<Arc<pipeline::Entry>>,
    /// A detection's logsource, whose `when` [`Dispatch`] checks before the rule runs.
    logsource_entry: Option<Arc<pipeline::Entry>>,
    /// A correlation whose `aliases` name different fields per rule: the group-by fields
    /// of the matches of each matcher bit.
    pub aliased: Vec<(u32, Vec<FieldPath>)>,
}

fn str_of<'v>(doc: &'v Value, key: &str) -> Option<&'v str> {
    doc.get(key).and_then(Value::as_str)
}

fn rule_id(doc: &Value) -> Option<String> {
    str_of(doc, "id").or_else(|| str_of(doc, "name")).map(str::to_owned)
}

fn strings(doc: &Value, key: &str) -> Vec<String> {
    match doc.get(key) {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

const TACTICS: &[(&str, &str)] = &[
    ("reconnaissance", "TA0043"),
    ("resource_development", "TA0042"),
    ("initial_access", "TA0001"),
    ("execution", "TA0002"),
    ("persistence", "TA0003"),
    ("privilege_escalation", "TA0004"),
    ("defense_evasion", "TA0005"),
    ("credential_access", "TA0006"),
    ("discovery", "TA0007"),
    ("lateral_movement", "TA0008"),
    ("collection", "TA0009"),
    ("exfiltration", "TA0010"),
    ("command_and_control", "TA0011"),
    ("impact", "TA0040"),
];

/// The metadata common to detection and correlation rules.
fn meta(path: &Path, doc: &Value) -> Result<RuleMeta, String> {
    let id =
        rule_id(doc).unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    if !RuleId::is_valid(&id) {
        return Err(format!("id `{id}` must be 1-128 characters of A-Z a-z 0-9 _ . -"));
    }
    let id = RuleId(id);
    let title = str_of(doc, "title").filter(|t| !t.trim().is_empty()).ok_or("the rule has no title")?.to_owned();
    let level = str_of(doc, "level").unwrap_or("medium");
    let severity = match level.to_ascii_lowercase().as_str() {
        "informational" | "info" => Priority::P4,
        other => Priority::parse(other)
            .ok_or_else(|| format!("level `{level}` is not informational, low, medium, high or critical"))?,
    };
    let tags = strings(doc, "tags");
    let mut mitre = Mitre::default();
    for tag in &tags {
        let Some(attack) = tag.strip_prefix("attack.") else { continue };
        if attack.len() > 1 && attack.starts_with(['t', 'T']) && attack[1..2].chars().all(|c| c.is_ascii_digit()) {
            mitre.techniques.push(attack.to_ascii_uppercase());
        } else if let Some((_, ta)) = TACTICS.iter().find(|(name, _)| attack.replace('-', "_") == *name) {
            mitre.tactics.push((*ta).to_owned());
        }
    }
    let mut all_tags = vec!["sigma".to_owned()];
    all_tags.extend(tags);
    Ok(RuleMeta {
        id,
        title,
        description: str_of(doc, "description").unwrap_or_default().trim().to_owned(),
        severity,
        category: None,
        mitre,
        tags: all_tags,
        enabled: !matches!(str_of(doc, "status"), Some("deprecated" | "unsupported")),
        owner: None,
        author: str_of(doc, "author").map(str::to_owned),
        references: strings(doc, "references"),
        falsepositives: strings(doc, "falsepositives"),
        playbook: None,
        notify: Vec::new(),
        auto_remediate: false,
        classes: Vec::new(),
        group_by: Vec::new(),
        window: None,
        dedup: None,
        family: None,
        suppress: None,
        examples: Vec::new(),
        plugins: Vec::new(),
    })
}

fn detection_rule(path: &Path, doc: &Value, pipeline: &Pipeline) -> Result<Detection, String> {
    let mut meta = meta(path, doc)?;
    let source = doc.get("logsource").cloned().unwrap_or(Value::Null);
    let key = |k: &str| source.get(k).and_then(Value::as_str).map(str::to_owned);
    let logsource = Logsource { product: key("product"), category: key("category"), service: key("service") };
    let entry = pipeline.find(&logsource);
    // An idle rule still compiles (so its errors are reported), against a plain lookup.
    let fallback = pipeline::Entry::generic();
    let fields: &pipeline::Entry = entry.as_deref().unwrap_or(&fallback);
    let detection = detection::compile(&doc["detection"], fields, &fields.keywords)?;
    let detection = match &fields.each {
        Some(list) => Node::Each(list.clone(), Box::new(detection)),
        None => detection,
    };
    let node = match &entry {
        Some(e) if !matches!(e.when, Node::Const(true)) => Node::And(vec![e.when.clone(), detection.clone()]),
        _ => detection.clone(),
    };
    // One incident per rule and host, unless the rule's author asks otherwise.
    meta.group_by = vec![FieldPath::parse("host.name").map_err(|e| e.to_string())?];
    Ok(Detection {
        meta,
        path: path.to_owned(),
        name: str_of(doc, "name").map(str::to_owned),
        node,
        detection,
        entry,
        logsource,
        text: serde_json::to_string(doc).unwrap_or_default(),
    })
}

fn count_modifiers(doc: &Value, counts: &mut BTreeMap<String, usize>) {
    let mut used = std::collections::BTreeSet::new();
    fn keys(value: &Value, used: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    for m in k.split('|').skip(1) {
                        used.insert(m.to_owned());
                    }
                    keys(v, used);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| keys(v, used)),
            _ => {}
        }
    }
    keys(&doc["detection"], &mut used);
    if used.is_empty() {
        used.insert("(none)".into());
    }
    for m in used {
        *counts.entry(m).or_default() += 1;
    }
}

#[cfg(test)]
mod tests;
