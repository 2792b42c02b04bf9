//! Rule files: loading, compiling and evaluating detection rules written in Rhai.
//!
//! A rule file (`rules/*.rhai`) defines its metadata as a constant map `RULE` and its
//! condition as a function `condition(event)` returning a bool:
//!
//! ```rhai
//! const RULE = #{
//!     id: "ssh_brute_force",
//!     title: "SSH brute force from one address",
//!     severity: "high",
//!     tags: ["attack.credential_access", "attack.t1110"],
//!     group_by: ["source.ip"],
//!     window: #{ type: "threshold", count: 10, within: "5m" },
//! };
//!
//! fn condition(event) {
//!     event.class == "authentication" && event.outcome == "failure" && event.action == "ssh_login"
//! }
//! ```
//!
//! Files are compiled once into immutable [`CompiledRule`]s; state (windows) lives in
//! `detect`, never in a rule.
//!
//! Layer 4: uses `event`, `telemetry`.

mod sandbox;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Scope};
use serde::{Deserialize, Serialize};

pub use sandbox::{EventRef, SandboxLimits, build_engine};

use crate::event::{FieldPath, RuleId, SecurityEvent, Severity};

/// An error in a rule file, located as precisely as the parser allows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), location(*line, *column))]
pub struct RuleError {
    /// The rule file.
    pub path: PathBuf,
    /// Line (1-based), when known.
    pub line: Option<usize>,
    /// Column (1-based), when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl RuleError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self { path: path.to_owned(), line: None, column: None, message: message.into() }
    }

    fn at(path: &Path, pos: rhai::Position, message: impl Into<String>) -> Self {
        Self { path: path.to_owned(), line: pos.line(), column: pos.position(), message: message.into() }
    }
}

/// Why evaluating a rule on an event failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The rule ran out of its operation budget.
    #[error("rule exceeded its operation budget")]
    Budget,
    /// The condition returned something other than a bool.
    #[error("condition returned {0}, not a bool")]
    NotBool(String),
    /// Any other runtime error (unknown field, bad regex, size limit).
    #[error("{0}")]
    Runtime(String),
}

impl EvalError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Budget => "budget",
            Self::NotBool(_) => "not_bool",
            Self::Runtime(_) => "runtime",
        }
    }
}

/// How matches of a rule are aggregated before an alert is raised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowSpec {
    /// At least `count` matching events with the same group key within `within`
    /// (event time).
    Threshold {
        /// Events needed.
        count: u32,
        /// Length of the sliding window (`5m`).
        #[serde(with = "humantime_serde")]
        within: Duration,
    },
}

/// Rule metadata as written in the `RULE` map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMeta {
    /// Unique id (`[A-Za-z0-9_.-]`, ≤128 chars).
    pub id: RuleId,
    /// One-line title; becomes the incident title.
    pub title: String,
    /// What the rule detects and why it matters.
    #[serde(default)]
    pub description: String,
    /// Severity of the alerts it raises.
    pub severity: Severity,
    /// Tags (ATT&CK ids, categories).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether the rule runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Fields whose values key windows and incidents (`["source.ip"]`).
    #[serde(default)]
    pub group_by: Vec<FieldPath>,
    /// Aggregation before alerting; none alerts on every matching event.
    #[serde(default)]
    pub window: Option<WindowSpec>,
}

fn yes() -> bool {
    true
}

/// A rule compiled once at load: immutable, shareable across threads.
#[derive(Debug)]
pub struct CompiledRule {
    /// Metadata.
    pub meta: RuleMeta,
    /// The file it came from.
    pub path: PathBuf,
    ast: AST,
}

/// The rules of one load, with the engine that evaluates them.
#[derive(Clone, Debug)]
pub struct RuleSet {
    rules: Vec<Arc<CompiledRule>>,
    engine: Arc<Engine>,
}

/// Rules settings (`[rules]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Directory of `*.rhai` rule files.
    pub dir: PathBuf,
    /// Sandbox limits for every rule.
    pub limits: SandboxLimits,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("rules"), limits: SandboxLimits::default() }
    }
}

impl RulesConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.limits.max_operations == 0 {
            errors.push(("rules.limits.max_operations".into(), "must be at least 1".into()));
        }
        if self.limits.max_call_levels == 0 {
            errors.push(("rules.limits.max_call_levels".into(), "must be at least 1".into()));
        }
        errors
    }
}

impl RuleSet {
    /// An empty rule set.
    pub fn empty(limits: &SandboxLimits) -> Self {
        Self { rules: Vec::new(), engine: Arc::new(build_engine(limits)) }
    }

    /// Loads and compiles every `*.rhai` file of `dir` (sorted by name). Reports every error
    /// of every file; any error rejects the whole set.
    pub fn load_dir(dir: &Path, limits: &SandboxLimits) -> Result<Self, Vec<RuleError>> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| vec![RuleError::new(dir, format!("cannot read rule directory: {e}"))])?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .collect();
        paths.sort();
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((path, text)),
                Err(e) => errors.push(RuleError::new(&path, format!("cannot read: {e}"))),
            }
        }
        match Self::compile(sources, limits) {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(errors),
            Err(mut more) => {
                errors.append(&mut more);
                Err(errors)
            }
        }
    }

    /// Compiles rule sources (path, text). Reports every error; any error rejects the set.
    pub fn compile(sources: Vec<(PathBuf, String)>, limits: &SandboxLimits) -> Result<Self, Vec<RuleError>> {
        let engine = build_engine(limits);
        let mut rules: Vec<Arc<CompiledRule>> = Vec::new();
        let mut errors = Vec::new();
        for (path, text) in sources {
            match compile_rule(&engine, &path, &text) {
                Ok(rule) => {
                    if let Some(first) = rules.iter().find(|r| r.meta.id == rule.meta.id) {
                        errors.push(RuleError::new(
                            &path,
                            format!("duplicate rule id `{}` (also in {})", rule.meta.id, first.path.display()),
                        ));
                    } else {
                        rules.push(Arc::new(rule));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(Self { rules, engine: Arc::new(engine) }) } else { Err(errors) }
    }

    /// The rules, in load order (disabled ones included).
    pub fn rules(&self) -> &[Arc<CompiledRule>] {
        &self.rules
    }

    /// Evaluates rule number `index` on `event`.
    pub fn evaluate(&self, index: usize, event: &EventRef) -> Result<bool, EvalError> {
        let rule = &self.rules[index];
        let mut scope = Scope::new();
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(false);
        let result: Result<Dynamic, Box<EvalAltResult>> =
            self.engine.call_fn_with_options(options, &mut scope, &rule.ast, "condition", (event.clone(),));
        match result {
            Ok(value) => value.as_bool().map_err(|t| EvalError::NotBool(t.to_owned())),
            Err(e) => Err(match *e {
                EvalAltResult::ErrorTooManyOperations(_) => EvalError::Budget,
                other => EvalError::Runtime(other.to_string()),
            }),
        }
    }

    /// Evaluates by rule id (for tests and tools).
    pub fn evaluate_id(&self, id: &str, event: &SecurityEvent) -> Option<Result<bool, EvalError>> {
        let index = self.rules.iter().position(|r| r.meta.id.as_str() == id)?;
        Some(self.evaluate(index, &EventRef(Arc::new(event.clone()))))
    }
}

fn compile_rule(engine: &Engine, path: &Path, text: &str) -> Result<CompiledRule, RuleError> {
    let ast = engine.compile(text).map_err(|e| RuleError::at(path, e.1, e.0.to_string()))?;
    let mut scope = Scope::new();
    engine.run_ast_with_scope(&mut scope, &ast).map_err(|e| RuleError::at(path, e.position(), e.to_string()))?;
    let Some(meta) = scope.get_value::<rhai::Map>("RULE") else {
        return Err(RuleError::new(
            path,
            "the file must define `const RULE = #{ id: ..., title: ..., severity: ... };`",
        ));
    };
    let meta: RuleMeta = rhai::serde::from_dynamic(&Dynamic::from_map(meta)).map_err(|e| {
        RuleError::new(path, format!("in RULE: {}", e.to_string().trim_end_matches(" (line 0, position 0)")))
    })?;
    if !RuleId::is_valid(meta.id.as_str()) {
        return Err(RuleError::new(
            path,
            format!("rule id `{}` must be 1-128 characters of A-Z a-z 0-9 _ . -", meta.id),
        ));
    }
    if meta.title.trim().is_empty() {
        return Err(RuleError::new(path, "RULE.title must not be empty"));
    }
    if let Some(WindowSpec::Threshold { count, within }) = &meta.window {
        if *count == 0 || within.is_zero() {
            return Err(RuleError::new(path, "RULE.window: count and within must be greater than zero"));
        }
        if meta.group_by.is_empty() {
            return Err(RuleError::new(path, "RULE.window needs RULE.group_by: the fields that key the window"));
        }
    }
    let condition = ast.iter_functions().find(|f| f.name == "condition");
    match condition {
        Some(f) if f.params.len() == 1 => {}
        Some(_) => {
            return Err(RuleError::new(path, "`condition` must take exactly one parameter: fn condition(event)"));
        }
        None => {
            return Err(RuleError::new(path, "the file must define `fn condition(event) { ... }` returning a bool"));
        }
    }
    Ok(CompiledRule { meta, path: path.to_owned(), ast })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventClass, Outcome};
    use chrono::Utc;

    const GOOD: &str = r#"
        const RULE = #{
            id: "ssh_brute_force",
            title: "SSH brute force",
            severity: "high",
            group_by: ["source.ip"],
            window: #{ type: "threshold", count: 3, within: "5m" },
        };
        fn condition(event) { event.class == "authentication" && event.outcome == "failure" }
    "#;

    fn compile(sources: &[(&str, &str)]) -> Result<RuleSet, Vec<RuleError>> {
        let sources = sources.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())).collect();
        RuleSet::compile(sources, &SandboxLimits::default())
    }

    #[test]
    fn compiles_metadata_and_condition() {
        let set = compile(&[("a.rhai", GOOD)]).expect("compiles");
        let rule = &set.rules()[0];
        assert_eq!(rule.meta.id.as_str(), "ssh_brute_force");
        assert_eq!(rule.meta.severity, Severity::High);
        assert_eq!(rule.meta.window, Some(WindowSpec::Threshold { count: 3, within: Duration::from_secs(300) }));
        let mut e = SecurityEvent::new(EventClass::Authentication, Utc::now());
        assert_eq!(set.evaluate_id("ssh_brute_force", &e), Some(Ok(false)));
        e.outcome = Outcome::Failure;
        assert_eq!(set.evaluate_id("ssh_brute_force", &e), Some(Ok(true)));
    }

    #[test]
    fn reports_every_error_with_location() {
        let errors = compile(&[
            ("syntax.rhai", "const RULE = #{ id: \"x\" ;\nfn condition(e) { true }"),
            ("nometa.rhai", "fn condition(e) { true }"),
            ("nocond.rhai", "const RULE = #{ id: \"y\", title: \"t\", severity: \"low\" };"),
            ("badfield.rhai", "const RULE = #{ id: \"z\", title: \"t\", severity: \"low\", group_by: [\"source.ipp\"] };\nfn condition(e) { true }"),
            ("badsev.rhai", "const RULE = #{ id: \"w\", title: \"t\", severity: \"urgent\" };\nfn condition(e) { true }"),
        ])
        .expect_err("all broken");
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert_eq!(errors[0].path, PathBuf::from("syntax.rhai"));
        assert!(errors[0].line.is_some(), "{}", errors[0]);
        assert!(errors[1].message.contains("const RULE"), "{}", errors[1]);
        assert!(errors[2].message.contains("fn condition"), "{}", errors[2]);
        assert!(errors[3].message.contains("did you mean `source.ip`"), "{}", errors[3]);
        assert!(errors[4].message.contains("urgent"), "{}", errors[4]);
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let errors = compile(&[("a.rhai", GOOD), ("b.rhai", GOOD)]).expect_err("duplicate");
        assert!(errors[0].message.contains("duplicate rule id"), "{}", errors[0]);
    }

    #[test]
    fn windows_need_group_fields() {
        let text = GOOD.replace(r#"group_by: ["source.ip"],"#, "");
        let errors = compile(&[("a.rhai", &text)]).expect_err("no group_by");
        assert!(errors[0].message.contains("group_by"), "{}", errors[0]);
    }

    #[test]
    fn evaluation_errors_are_typed() {
        let looping = GOOD.replace("fn condition(event) {", "fn condition(event) { loop {}");
        let set = compile(&[("a.rhai", &looping)]).expect("compiles");
        let e = SecurityEvent::new(EventClass::Other, Utc::now());
        assert_eq!(set.evaluate_id("ssh_brute_force", &e), Some(Err(EvalError::Budget)));
        let not_bool = GOOD.replace("event.class == \"authentication\" && event.outcome == \"failure\"", "42");
        let set = compile(&[("a.rhai", &not_bool)]).expect("compiles");
        assert!(matches!(set.evaluate_id("ssh_brute_force", &e), Some(Err(EvalError::NotBool(_)))));
    }
}
