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

mod detection;
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

use value::Fields as _;
pub use value::Lookup;

use super::{CompiledRule, Matcher, Mitre, RuleError, RuleMeta, Statistic, Step, WindowSpec, predicate::Predicate};
use crate::event::{FieldPath, Priority, RuleId};

/// Sigma settings (`[rules.sigma]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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

/// Finds the Sigma detection rules an event must be evaluated by: their logsource's
/// `when` is checked once per logsource, not once per rule; logsources that pin the
/// Windows channel are only checked for events of that channel; and within a logsource,
/// a rule that needs a field to contain one of some substrings (almost every rule: an
/// `Image|endswith`, a `CommandLine|contains` list) is only evaluated when one pass of
/// an Aho-Corasick automaton over that field found one of them.
#[derive(Debug, Default)]
pub struct Dispatch {
    groups: Vec<Group>,
    /// Logsources by the (lowercased) channel their `when` requires.
    by_channel: rustc_hash::FxHashMap<Vec<u8>, Vec<usize>>,
    /// Logsources that do not pin a channel.
    always: Vec<usize>,
    channel: Option<FieldPath>,
}

thread_local! {
    /// Which keyed rules of a group the current event hit (reused across events).
    static HITS: std::cell::RefCell<Vec<bool>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The rules of one logsource.
#[derive(Debug)]
struct Group {
    entry: Arc<pipeline::Entry>,
    /// Rules without a substring they need: evaluated whenever the logsource matches.
    unkeyed: Vec<usize>,
    /// Per field: its automaton, and the slots (of `keyed`) each pattern stands for.
    fields: Vec<(Arc<[FieldPath]>, aho_corasick::AhoCorasick, Vec<Vec<u32>>)>,
    /// Slot → rule index.
    keyed: Vec<usize>,
}

impl Group {
    fn build(entry: Arc<pipeline::Entry>, members: &[(usize, Option<&Node>)]) -> Group {
        let mut unkeyed = Vec::new();
        let mut keyed = Vec::new();
        let mut fields: Vec<(Arc<[FieldPath]>, Vec<Vec<u8>>, Vec<Vec<u32>>)> = Vec::new();
        for (index, node) in members {
            let Some(requirement) = node.and_then(Node::requirement) else {
                unkeyed.push(*index);
                continue;
            };
            let slot = keyed.len() as u32;
            keyed.push(*index);
            for (paths, literal) in requirement {
                let field = match fields.iter().position(|(p, ..)| *p == paths) {
                    Some(f) => f,
                    None => {
                        fields.push((paths, Vec::new(), Vec::new()));
                        fields.len() - 1
                    }
                };
                let (_, patterns, slots) = &mut fields[field];
                let pattern = match patterns.iter().position(|p| *p == literal) {
                    Some(p) => p,
                    None => {
                        patterns.push(literal);
                        slots.push(Vec::new());
                        patterns.len() - 1
                    }
                };
                if slots[pattern].last() != Some(&slot) {
                    slots[pattern].push(slot);
                }
            }
        }
        let mut built = Vec::new();
        for (paths, patterns, slots) in fields {
            match aho_corasick::AhoCorasick::builder().ascii_case_insensitive(true).build(&patterns) {
                Ok(ac) => built.push((paths, ac, slots)),
                // Too large an automaton: its rules are evaluated every time instead.
                Err(_) => slots.iter().flatten().for_each(|s| unkeyed.push(keyed[*s as usize])),
            }
        }
        Group { entry, unkeyed, fields: built, keyed }
    }

    fn select(&self, event: &Lookup<'_>, out: &mut Vec<usize>) {
        out.extend_from_slice(&self.unkeyed);
        if self.keyed.is_empty() {
            return;
        }
        HITS.with_borrow_mut(|hit| self.select_keyed(event, hit, out));
    }

    /// The keyed rules one of whose substrings the event shows; `hit` is scratch space.
    fn select_keyed(&self, event: &Lookup<'_>, hit: &mut Vec<bool>, out: &mut Vec<usize>) {
        hit.clear();
        hit.resize(self.keyed.len(), false);
        for (paths, ac, slots) in &self.fields {
            let Some(value) = event.get(paths) else { continue };
            if let crate::event::FieldValue::Json(Value::Array(_) | Value::Object(_)) = value {
                slots.iter().flatten().for_each(|s| hit[*s as usize] = true);
                continue;
            }
            let text = value.to_text();
            for m in ac.find_overlapping_iter(text.as_bytes()) {
                for s in &slots[m.pattern().as_usize()] {
                    hit[*s as usize] = true;
                }
            }
        }
        out.extend(hit.iter().zip(&self.keyed).filter(|(h, _)| **h).map(|(_, index)| *index));
    }
}

impl Dispatch {
    /// The dispatch of the runnable detection rules among `rules`.
    pub fn build(rules: &[Arc<CompiledRule>]) -> Dispatch {
        let mut d = Dispatch { channel: FieldPath::parse("attributes.windows.Channel").ok(), ..Dispatch::default() };
        let mut members: Vec<(Arc<pipeline::Entry>, Vec<(usize, Option<&Node>)>)> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let Some(entry) = rule.sigma.as_ref().and_then(|s| s.logsource_entry.as_ref()) else { continue };
            if !rule.runs() {
                continue;
            }
            let node = match rule.matchers.first().and_then(|m| m.predicate.as_ref()) {
                Some(Predicate::Sigma(node)) => Some(node.as_ref()),
                _ => None,
            };
            match members.iter_mut().find(|(e, _)| Arc::ptr_eq(e, entry)) {
                Some((_, list)) => list.push((index, node)),
                None => members.push((entry.clone(), vec![(index, node)])),
            }
        }
        for (group, (entry, list)) in members.into_iter().enumerate() {
            match d.channel.as_ref().and_then(|c| entry.when.required(c)) {
                Some(channels) => {
                    for channel in channels {
                        d.by_channel.entry(channel).or_default().push(group);
                    }
                }
                None => d.always.push(group),
            }
            d.groups.push(Group::build(entry, &list));
        }
        d
    }

    /// Whether `rule` is found here (so the class index must not file it).
    pub fn handles(rule: &CompiledRule) -> bool {
        rule.sigma.as_ref().is_some_and(|s| s.logsource_entry.is_some())
    }

    /// Whether `event` is in the logsource of `rule` (for a rule evaluated alone).
    pub fn in_logsource(rule: &CompiledRule, event: &crate::event::SecurityEvent) -> bool {
        rule.sigma.as_ref().and_then(|s| s.logsource_entry.as_ref()).is_none_or(|e| e.when.eval(&Lookup::new(event)))
    }

    /// Appends the rules `event` must be evaluated by; returns whether `out` needs sorting.
    pub fn select(&self, event: &Lookup<'_>, out: &mut Vec<usize>) -> bool {
        if self.groups.is_empty() {
            return false;
        }
        let before = out.len();
        let visit = |group: usize, out: &mut Vec<usize>| {
            let g = &self.groups[group];
            if g.entry.when.eval(event) {
                g.select(event, out);
            }
        };
        if let Some(channel) = self.channel.as_ref().and_then(|c| c.get(event.event)) {
            let text = channel.to_text();
            // Channel names are short: lowercase them on the stack (a longer one is no key).
            let mut buf = [0u8; 128];
            if let Some(lowered) = buf.get_mut(..text.len()) {
                lowered.copy_from_slice(text.as_bytes());
                lowered.make_ascii_lowercase();
                for &group in self.by_channel.get(&*lowered).map(Vec::as_slice).unwrap_or_default() {
                    visit(group, out);
                }
            }
        }
        for &group in &self.always {
            visit(group, out);
        }
        out.len() > before
    }
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

fn correlation_refs(doc: &Value) -> Vec<String> {
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

fn correlation_rule(
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
    let threshold = |condition: &BTreeMap<String, Value>| -> Result<u32, String> {
        let mut at_least = None;
        for (op, value) in condition {
            let n = value.as_u64().and_then(|n| u32::try_from(n).ok());
            match (op.as_str(), n) {
                ("field", _) => {}
                ("gte", Some(n)) => at_least = Some(n.max(1)),
                ("gt", Some(n)) => at_least = Some(n.saturating_add(1)),
                (op @ ("lt" | "lte" | "eq"), _) => {
                    return Err(format!(
                        "condition `{op}`: an upper bound needs the window to close before it can decide; only gt/gte stream"
                    ));
                }
                (op, _) => return Err(format!("condition `{op}: {value}` is not gt/gte with a count")),
            }
        }
        at_least.ok_or_else(|| "condition needs gt or gte".to_owned())
    };
    // A statistic's bound: (value, strictly above it).
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

#[cfg(test)]
mod tests;
