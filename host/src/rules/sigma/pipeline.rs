//! Sigma logsources and field names, mapped to Vigil's events by pipelines: the built-in
//! `pipeline.toml` and the user's `<rules dir>/sigma/pipelines/*.toml` (read first, so
//! their entries win). See `pipeline.toml` for the format and `docs/sigma.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::detection::{self, Node};
use super::value::{self, Fields, Refusal};
use crate::event::FieldPath;

const BUILT_IN: &str = include_str!("pipeline.toml");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    #[serde(default)]
    placeholders: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    logsource: Vec<EntrySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    product: Option<String>,
    category: Option<String>,
    service: Option<String>,
    #[serde(default)]
    when: Vec<Map<String, Value>>,
    under: String,
    #[serde(default)]
    fields: BTreeMap<String, Vec<String>>,
    keywords: Option<Vec<String>>,
    /// A list the detection is evaluated over element by element.
    each: Option<String>,
}

/// A rule's `logsource` (the keys that select a pipeline entry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Logsource {
    /// `product`.
    pub product: Option<String>,
    /// `category`.
    pub category: Option<String>,
    /// `service`.
    pub service: Option<String>,
}

impl std::fmt::Display for Logsource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [("product", &self.product), ("category", &self.category), ("service", &self.service)]
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        if parts.is_empty() { f.write_str("(none)") } else { f.write_str(&parts.join(" ")) }
    }
}

/// One compiled pipeline entry: the events of a logsource and where its fields are.
#[derive(Debug)]
pub struct Entry {
    /// The logsource it stands for.
    pub logsource: Logsource,
    /// The events it covers.
    pub when: Node,
    under: Vec<String>,
    fields: HashMap<String, Arc<[FieldPath]>>,
    /// Where keyword searches look.
    pub keywords: Arc<[FieldPath]>,
    /// A list of the event whose elements a rule's detection is evaluated on, one by one
    /// ([`super::Lookup::any_record`]): auditd's records.
    pub each: Option<FieldPath>,
    placeholders: Arc<BTreeMap<String, Vec<String>>>,
}

impl Entry {
    /// Field names read as `attributes.<name>`: how an idle rule is compiled.
    pub fn generic() -> Entry {
        Entry {
            logsource: Logsource::default(),
            when: Node::Const(true),
            under: Vec::new(),
            fields: HashMap::new(),
            keywords: Arc::from(Vec::new()),
            each: None,
            placeholders: Arc::new(BTreeMap::new()),
        }
    }
}

impl Fields for Entry {
    fn resolve(&self, name: &str) -> Result<Arc<[FieldPath]>, Refusal> {
        if let Some(paths) = self.fields.get(name) {
            return Ok(paths.clone());
        }
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return Err(format!("field name `{name}` is not a name"));
        }
        let mut whole = self.under.clone();
        whole.push(name.to_owned());
        let mut paths = vec![FieldPath::Attribute(whole)];
        if name.contains('.') {
            let mut nested = self.under.clone();
            nested.extend(name.split('.').map(str::to_owned));
            paths.push(FieldPath::Attribute(nested));
        }
        Ok(value::intern(paths))
    }

    fn placeholder(&self, name: &str) -> Option<&[String]> {
        self.placeholders.get(name).map(Vec::as_slice)
    }
}

/// Vigil paths, as the pipeline's `when` selections name them.
struct VigilPaths;

impl Fields for VigilPaths {
    fn resolve(&self, name: &str) -> Result<Arc<[FieldPath]>, Refusal> {
        FieldPath::parse(name).map(|p| value::intern(vec![p])).map_err(|e| e.to_string())
    }

    fn placeholder(&self, _: &str) -> Option<&[String]> {
        None
    }
}

/// Every logsource Vigil reads.
#[derive(Debug)]
pub struct Pipeline {
    entries: Vec<Arc<Entry>>,
}

/// A broken pipeline file: which and why.
#[derive(Debug)]
pub struct PipelineError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl Pipeline {
    /// The built-in pipeline after the files of `dir` (`*.toml`, sorted), with the extra
    /// `placeholders` of the configuration.
    pub fn load(
        dir: Option<&Path>,
        placeholders: &BTreeMap<String, Vec<String>>,
    ) -> Result<Pipeline, Vec<PipelineError>> {
        let mut files: Vec<(PathBuf, String)> = Vec::new();
        if let Some(dir) = dir {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut paths: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                        .collect();
                    paths.sort();
                    for path in paths {
                        match std::fs::read_to_string(&path) {
                            Ok(text) => files.push((path, text)),
                            Err(e) => {
                                return Err(vec![PipelineError { path, message: format!("cannot read: {e}") }]);
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(vec![PipelineError { path: dir.to_owned(), message: format!("cannot read: {e}") }]);
                }
            }
        }
        files.push((PathBuf::from("(built-in pipeline)"), BUILT_IN.to_owned()));
        let mut errors = Vec::new();
        let mut parsed = Vec::new();
        let mut all_placeholders = BTreeMap::new();
        for (path, text) in files {
            match toml::from_str::<PipelineFile>(&text) {
                Ok(file) => {
                    for (k, v) in file.placeholders {
                        all_placeholders.entry(k).or_insert(v);
                    }
                    parsed.push((path, file.logsource));
                }
                Err(e) => errors.push(PipelineError { path, message: e.to_string() }),
            }
        }
        for (k, v) in placeholders {
            all_placeholders.insert(k.clone(), v.clone());
        }
        let placeholders = Arc::new(all_placeholders);
        let mut entries = Vec::new();
        for (path, specs) in parsed {
            for (i, spec) in specs.into_iter().enumerate() {
                match compile_entry(spec, &placeholders) {
                    Ok(entry) => entries.push(Arc::new(entry)),
                    Err(message) => errors.push(PipelineError {
                        path: path.clone(),
                        message: format!("logsource #{}: {message}", i + 1),
                    }),
                }
            }
        }
        if errors.is_empty() { Ok(Pipeline { entries }) } else { Err(errors) }
    }

    /// The entry for a rule's logsource: the first whose keys are exactly the rule's.
    pub fn find(&self, logsource: &Logsource) -> Option<Arc<Entry>> {
        let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        self.entries
            .iter()
            .find(|e| {
                same(&e.logsource.product, &logsource.product)
                    && same(&e.logsource.category, &logsource.category)
                    && same(&e.logsource.service, &logsource.service)
            })
            .cloned()
    }
}

fn paths(names: &[String]) -> Result<Arc<[FieldPath]>, Refusal> {
    if names.is_empty() {
        return Err("a field with no paths".into());
    }
    names
        .iter()
        .map(|n| FieldPath::parse(n).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map(value::intern)
}

fn compile_entry(spec: EntrySpec, placeholders: &Arc<BTreeMap<String, Vec<String>>>) -> Result<Entry, Refusal> {
    let under = match FieldPath::parse(&spec.under) {
        Ok(FieldPath::Attribute(segments)) => segments,
        _ if spec.under == "attributes" => Vec::new(),
        _ => return Err(format!("under = `{}` must be `attributes` or a path in it", spec.under)),
    };
    let mut alternatives = Vec::new();
    let none: Arc<[FieldPath]> = Arc::from(Vec::new());
    for selection in &spec.when {
        alternatives.push(detection::compile_map(selection, &VigilPaths, &none).map_err(|e| format!("when: {e}"))?);
    }
    let when = match alternatives.len() {
        0 => Node::Const(true),
        1 => alternatives.remove(0),
        _ => Node::Or(alternatives),
    };
    let mut fields = HashMap::new();
    for (name, names) in &spec.fields {
        fields.insert(name.clone(), paths(names).map_err(|e| format!("fields.{name}: {e}"))?);
    }
    let keywords = match &spec.keywords {
        Some(names) => paths(names).map_err(|e| format!("keywords: {e}"))?,
        None => {
            let mut k = Vec::new();
            if !under.is_empty() {
                k.push(FieldPath::Attribute(under.clone()));
            }
            k.push(FieldPath::parse("message").map_err(|e| e.to_string())?);
            Arc::from(k)
        }
    };
    let each = spec.each.as_deref().map(FieldPath::parse).transpose().map_err(|e| format!("each: {e}"))?;
    Ok(Entry {
        logsource: Logsource { product: spec.product, category: spec.category, service: spec.service },
        when,
        under,
        fields,
        keywords,
        each,
        placeholders: placeholders.clone(),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Field names read under `path` (an `attributes` path), nothing else.
    pub(in crate::rules::sigma) fn under(path: &str) -> Entry {
        let Ok(FieldPath::Attribute(segments)) = FieldPath::parse(path) else { panic!("{path} is no attributes path") };
        Entry { under: segments, ..Entry::generic() }
    }

    #[test]
    fn the_built_in_pipeline_compiles_and_finds_logsources() {
        let pipeline = Pipeline::load(None, &BTreeMap::new()).expect("built-in pipeline compiles");
        let source = |p: &str, c: Option<&str>, s: Option<&str>| Logsource {
            product: Some(p.into()),
            category: c.map(Into::into),
            service: s.map(Into::into),
        };
        let creation = pipeline.find(&source("windows", Some("process_creation"), None)).expect("process_creation");
        assert_eq!(creation.resolve("Image").expect("image").len(), 2);
        assert_eq!(
            creation.resolve("CommandLine").expect("cmd").first().map(ToString::to_string).as_deref(),
            Some("attributes.windows.CommandLine")
        );
        assert!(pipeline.find(&source("windows", None, Some("Security"))).is_some(), "keys compare case-insensitively");
        assert!(pipeline.find(&source("windows", None, Some("no-such-channel"))).is_none());
        let trail = pipeline.find(&source("aws", None, Some("cloudtrail"))).expect("cloudtrail");
        let nested = trail.resolve("requestParameters.userName").expect("nested");
        assert_eq!(nested.len(), 2, "a dotted name is one key, then a path");
    }

    #[test]
    fn user_pipelines_come_first_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("site.toml"),
            "[placeholders]\nAdmins = [\"alice\"]\n[[logsource]]\nproduct = \"windows\"\nservice = \"security\"\nunder = \"attributes.winlog\"\n",
        )
        .expect("write");
        let pipeline = Pipeline::load(Some(dir.path()), &BTreeMap::new()).expect("loads");
        let security = pipeline
            .find(&Logsource { product: Some("windows".into()), category: None, service: Some("security".into()) })
            .expect("security");
        assert_eq!(security.resolve("X").expect("x")[0].to_string(), "attributes.winlog.X");
        assert_eq!(security.placeholder("Admins"), Some(&["alice".to_owned()][..]));
        std::fs::write(dir.path().join("broken.toml"), "[[logsource]]\nunder = \"source.ip\"\n").expect("write");
        let errors = Pipeline::load(Some(dir.path()), &BTreeMap::new()).expect_err("refused");
        assert!(errors[0].path.ends_with("broken.toml") && errors[0].message.contains("under"), "{errors:?}");
    }
}
