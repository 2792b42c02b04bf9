//! Rule files: loading, compiling and evaluating detection rules written in Rhai.
//!
//! A rule file (`rules/*.rhai`) defines its metadata as a constant map `RULE` and its
//! condition as a function `condition(event)` returning a bool (sequence and absence rules
//! name their step functions instead); `rules/lib/*.rhai` holds shared lists and functions.
//! See `docs/rules.md` for the format.
//!
//! Rules are compiled once into immutable [`CompiledRule`]s. Conditions that are plain
//! expressions over event fields also compile to native [`Predicate`]s. The classes a
//! rule can match are declared or inferred, and the field values it needs are read from
//! those predicates, so an event is evaluated only by the rules of its class that its
//! values can satisfy ([`RuleSet::select`], built in `index`). State (windows) lives in
//! `detect`, never in a rule.
//!
//! Layer 4: uses `event`, `telemetry`.

mod index;
mod library;
mod meta;
mod predicate;
mod sandbox;
pub mod sigma;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Scope};
use serde::{Deserialize, Serialize};

pub use library::Library;
pub use meta::{Category, Example, Mitre, RuleMeta, Statistic, Step, WindowSpec};
pub use predicate::{Analysis, CmpOp, Lists, Literal, Predicate};
pub use sandbox::{EventRef, SandboxLimits, build_engine, last_operations, reset_operations};

use crate::event::{EventClass, Field, FieldPath, RuleId, SecurityEvent};

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
    /// What is wrong, with a hint where one helps.
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
    /// A condition returned something other than a bool.
    #[error("condition returned {0}, not a bool")]
    NotBool(String),
    /// Any other runtime error (unknown field, bad regex, size limit, stack overflow).
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

/// One function of a rule that matches events (`condition`, or a sequence step).
#[derive(Debug)]
pub struct Matcher {
    /// The function's name in the rule file.
    pub function: String,
    /// Its native form, when it compiled to one.
    pub predicate: Option<Predicate>,
    /// Otherwise, the native form of its leading conjuncts: false means no match.
    pub prefilter: Option<Predicate>,
    /// The predicate or prefilter with its class tests kept: what the index reads.
    guard: Option<Predicate>,
}

/// A rule compiled once at load: immutable, shareable across threads.
#[derive(Debug)]
pub struct CompiledRule {
    /// Metadata.
    pub meta: RuleMeta,
    /// The file it came from.
    pub path: PathBuf,
    /// Hash of its source and the library; equal fingerprints mean identical behaviour.
    pub fingerprint: u64,
    /// The classes it can match; empty means every class.
    pub classes: Vec<EventClass>,
    /// Plugins it needs that were not loaded when it was compiled: it does not run.
    pub missing_plugins: Vec<String>,
    /// What a Sigma rule adds (its logsource, whether it is idle); `None` for Rhai rules.
    pub sigma: Option<sigma::SigmaRule>,
    matchers: Vec<Matcher>,
    ast: AST,
}

impl CompiledRule {
    /// Its matching functions, in the order of [`RuleSet::evaluate`]'s bits.
    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }

    /// The bit of a matching function.
    pub fn matcher_index(&self, function: &str) -> Option<usize> {
        self.matchers.iter().position(|m| m.function == function)
    }

    /// Whether every matcher runs natively.
    pub fn is_native(&self) -> bool {
        self.matchers.iter().all(|m| m.predicate.is_some())
    }

    /// The fields that key the group of a match of matchers `mask`: `group_by`, or for a
    /// Sigma correlation with `aliases`, the fields of the rule that matched.
    pub fn group_paths(&self, mask: u32) -> &[FieldPath] {
        self.sigma
            .as_ref()
            .and_then(|s| s.aliased.iter().find(|(bit, _)| mask & bit != 0))
            .map_or(&self.meta.group_by, |(_, paths)| paths)
    }

    /// Whether the rule runs: enabled, with its plugins, and (Sigma) its logsource read.
    pub fn runs(&self) -> bool {
        self.meta.enabled && self.missing_plugins.is_empty() && self.sigma.as_ref().is_none_or(|s| s.idle.is_none())
    }
}

/// How a rule set is compiled.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Sandbox limits.
    pub limits: SandboxLimits,
    /// Evaluate compiled predicates natively (off: every condition runs in Rhai).
    pub native: bool,
    /// Record operation counts (for `vigil rules cost`).
    pub count_operations: bool,
    /// The plugin host behind `plugin::invoke` (without one, rules that call plugins fail to
    /// evaluate, and `plugin::loaded` is false).
    pub plugins: Option<crate::plugins::PluginHost>,
    /// The threat intel behind `ioc_match` (without it, `ioc_match` matches nothing).
    pub intel: Option<crate::intel::Intel>,
    /// Where Sigma rules are read besides `<dir>/sigma`, and their placeholders.
    pub sigma: sigma::SigmaConfig,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            limits: SandboxLimits::default(),
            native: true,
            count_operations: false,
            plugins: None,
            intel: None,
            sigma: sigma::SigmaConfig::default(),
        }
    }
}

/// The rules of one load, their index by class, and the engine that evaluates them. Cheap
/// to clone: every part is shared.
#[derive(Clone, Debug)]
pub struct RuleSet {
    rules: Arc<[Arc<CompiledRule>]>,
    engine: Arc<Engine>,
    by_class: Arc<Vec<index::ClassIndex>>,
    native: bool,
    plugin_fuel: u64,
    sigma: Arc<sigma::Report>,
    dispatch: Arc<sigma::Dispatch>,
}

/// Rules settings (`[rules]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Directory of `*.rhai` rule files (and `lib/*.rhai` library files).
    pub dir: PathBuf,
    /// Sandbox limits for every rule.
    pub limits: SandboxLimits,
    /// Run conditions that compile to native predicates natively (turn off to compare).
    pub native_predicates: bool,
    /// Reload the rules when files in `dir` change (checked every 2 s).
    pub watch: bool,
    /// Sigma rules (`<dir>/sigma` is always read).
    pub sigma: sigma::SigmaConfig,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("rules"),
            limits: SandboxLimits::default(),
            native_predicates: true,
            watch: true,
            sigma: sigma::SigmaConfig::default(),
        }
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

    /// The compile options these settings ask for.
    pub fn compile_options(&self) -> CompileOptions {
        CompileOptions {
            limits: self.limits.clone(),
            native: self.native_predicates,
            count_operations: false,
            plugins: None,
            intel: None,
            sigma: self.sigma.clone(),
        }
    }
}

/// Reads every `*.rhai` file of `dir` (sorted), as (path, text).
pub fn read_sources(dir: &Path) -> Result<Vec<(PathBuf, String)>, Vec<RuleError>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.ends_with("lib") => return Ok(Vec::new()),
        Err(e) => return Err(vec![RuleError::new(dir, format!("cannot read rule directory: {e}"))]),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "rhai"))
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
    if errors.is_empty() { Ok(sources) } else { Err(errors) }
}

impl RuleSet {
    /// An empty rule set.
    pub fn empty(limits: &SandboxLimits) -> Self {
        Self::build(
            Vec::new(),
            build_engine(limits, &Lists::new(), false),
            true,
            limits.max_plugin_fuel,
            Default::default(),
        )
    }

    /// Loads `dir/*.rhai` (rules), `dir/lib/*.rhai` (library) and the Sigma rules of
    /// `dir/sigma` and `options.sigma.dirs`. Reports every error of every Rhai file and
    /// Sigma pipeline; any of them rejects the whole set. A Sigma rule that does not
    /// compile is refused alone, with a warning, and listed in [`RuleSet::sigma_report`].
    pub fn load_dir(dir: &Path, options: &CompileOptions) -> Result<Self, Vec<RuleError>> {
        let rules = read_sources(dir);
        let library = read_sources(&dir.join("lib"));
        let sigma_dir = dir.join("sigma");
        let mut sigma_dirs: Vec<PathBuf> = vec![sigma_dir.clone()];
        sigma_dirs.extend(options.sigma.dirs.iter().cloned());
        // `<dir>/sigma` is optional; a configured Sigma directory must be there.
        let missing: Vec<RuleError> = options
            .sigma
            .dirs
            .iter()
            .filter(|d| !d.is_dir())
            .map(|d| RuleError::new(d, "the Sigma directory of [rules.sigma] dirs cannot be read"))
            .collect();
        let sigma = if missing.is_empty() {
            sigma::load(&sigma_dirs, &options.sigma, Some(&sigma_dir.join("pipelines")))
        } else {
            Err(missing)
        };
        match (rules, library, sigma) {
            (Ok(rules), Ok(library), Ok((sigma, report))) => {
                for refused in &report.refused {
                    tracing::warn!(
                        path = %refused.path.display(),
                        rule = refused.id.as_deref().unwrap_or("-"),
                        reason = %refused.reason,
                        "Sigma rule refused; the other rules load."
                    );
                }
                Self::compile_with(rules, library, sigma, report, options)
            }
            (rules, library, sigma) => {
                Err(rules.err().into_iter().chain(library.err()).chain(sigma.err()).flatten().collect())
            }
        }
    }

    /// Compiles rule and library sources (path, text). Reports every error.
    pub fn compile(
        sources: Vec<(PathBuf, String)>,
        library: Vec<(PathBuf, String)>,
        options: &CompileOptions,
    ) -> Result<Self, Vec<RuleError>> {
        Self::compile_with(sources, library, Vec::new(), sigma::Report::default(), options)
    }

    /// Compiles Rhai sources, and adds compiled Sigma rules after them.
    fn compile_with(
        sources: Vec<(PathBuf, String)>,
        library: Vec<(PathBuf, String)>,
        sigma: Vec<CompiledRule>,
        mut report: sigma::Report,
        options: &CompileOptions,
    ) -> Result<Self, Vec<RuleError>> {
        let mut base = build_engine(&options.limits, &Lists::new(), false);
        sandbox::register_plugins(&mut base, options.plugins.clone());
        sandbox::register_intel(&mut base, options.intel.clone());
        let library = library::compile(&base, &library)?;
        let mut engine = build_engine(&options.limits, &library.lists, options.count_operations);
        sandbox::register_plugins(&mut engine, options.plugins.clone());
        sandbox::register_intel(&mut engine, options.intel.clone());
        let mut errors = Vec::new();
        for (path, ast) in &library.files {
            match rhai::Module::eval_ast_as_new(Scope::new(), ast, &engine) {
                Ok(module) => {
                    engine.register_global_module(module.into());
                }
                Err(e) => errors.push(RuleError::at(path, e.position(), e.to_string())),
            }
        }
        let mut rules: Vec<Arc<CompiledRule>> = Vec::new();
        for (path, text) in sources {
            match compile_rule(&engine, &library, &path, &text) {
                Ok(mut rule) => {
                    let loaded = |name: &String| options.plugins.as_ref().is_some_and(|h| h.get(name).is_some());
                    rule.missing_plugins = rule.meta.plugins.iter().filter(|p| !loaded(p)).cloned().collect();
                    if !rule.missing_plugins.is_empty() {
                        tracing::warn!(
                            rule = %rule.meta.id,
                            missing = ?rule.missing_plugins,
                            "Rule needs plugins that are not loaded; it does not run until they are and the rules are reloaded."
                        );
                    }
                    if let Some(first) = rules.iter().find(|r| r.meta.id == rule.meta.id) {
                        errors.push(RuleError::new(
                            &path,
                            format!("duplicate rule id `{}` (also in {})", rule.meta.id, first.path.display()),
                        ));
                    } else {
                        rules.push(Arc::new(rule));
                    }
                }
                Err(e) => errors.extend(e),
            }
        }
        for rule in sigma {
            // A Sigma rule never costs the others: one whose id a Rhai rule has is refused.
            if let Some(first) = rules.iter().find(|r| r.meta.id == rule.meta.id) {
                tracing::warn!(rule = %rule.meta.id, path = %rule.path.display(), "Sigma rule refused: its id is taken.");
                report.compiled = report.compiled.saturating_sub(1);
                report.refused.push(sigma::Refused {
                    path: rule.path.clone(),
                    id: Some(rule.meta.id.to_string()),
                    reason: format!("duplicate rule id (also in {})", first.path.display()),
                });
            } else {
                rules.push(Arc::new(rule));
            }
        }
        if errors.is_empty() {
            Ok(Self::build(rules, engine, options.native, options.limits.max_plugin_fuel, Arc::new(report)))
        } else {
            Err(errors)
        }
    }

    fn build(
        rules: Vec<Arc<CompiledRule>>,
        engine: Engine,
        native: bool,
        plugin_fuel: u64,
        sigma: Arc<sigma::Report>,
    ) -> Self {
        let by_class = EventClass::ALL
            .iter()
            .map(|class| {
                let of_class = rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.runs() && !sigma::Dispatch::handles(r))
                    .filter(|(_, r)| r.classes.is_empty() || r.classes.contains(class))
                    .map(|(i, r)| (i, r.matchers.iter().map(|m| m.guard.as_ref()).collect()));
                index::ClassIndex::build(*class, of_class)
            })
            .collect();
        let dispatch = Arc::new(sigma::Dispatch::build(&rules));
        Self {
            rules: rules.into(),
            engine: Arc::new(engine),
            by_class: Arc::new(by_class),
            native,
            plugin_fuel,
            sigma,
            dispatch,
        }
    }

    /// A rule set of already compiled (Sigma) rules alone, with default limits.
    pub fn from_compiled(rules: Vec<CompiledRule>) -> Self {
        let limits = SandboxLimits::default();
        let engine = build_engine(&limits, &Lists::new(), false);
        Self::build(rules.into_iter().map(Arc::new).collect(), engine, true, limits.max_plugin_fuel, Default::default())
    }

    /// What the last load of Sigma rules compiled, refused and left idle.
    pub fn sigma_report(&self) -> &sigma::Report {
        &self.sigma
    }

    /// The rules, in load order (disabled ones included).
    pub fn rules(&self) -> &[Arc<CompiledRule>] {
        &self.rules
    }

    /// The enabled rules that can match an event of `class`, in load order.
    pub fn candidates(&self, class: EventClass) -> &[usize] {
        &self.class_index(class).all
    }

    /// The rules `event` must be evaluated by, in load order, into `out`: the candidates
    /// of its class less those that need a field value it does not have (see `index`).
    pub fn select(&self, event: &SecurityEvent, out: &mut Vec<usize>) {
        self.select_in(&sigma::Lookup::new(event), out);
    }

    /// [`RuleSet::select`], reading Sigma fields through `lookup`: the detector shares one
    /// lookup between selecting and evaluating an event's rules.
    pub fn select_in(&self, lookup: &sigma::Lookup<'_>, out: &mut Vec<usize>) {
        let event = lookup.event;
        self.class_index(event.class).select(event, out);
        if self.dispatch.select(lookup, out) {
            out.sort_unstable();
        }
    }

    /// How the index finds rule number `index`, over the classes it can match: the fields
    /// it is looked up by, and whether some class evaluates it on every event (`vigil rules
    /// list` shows this to authors).
    pub fn keyed_on(&self, index: usize) -> (Vec<Field>, bool) {
        let mut fields = Vec::new();
        let mut everywhere = false;
        for class in &*self.by_class {
            match class.keyed_on(index) {
                Some(Some(field)) if !fields.contains(&field) => fields.push(field),
                Some(None) => everywhere = true,
                _ => {}
            }
        }
        fields.sort();
        (fields, everywhere)
    }

    fn class_index(&self, class: EventClass) -> &index::ClassIndex {
        let slot = EventClass::ALL.iter().position(|c| *c == class).unwrap_or(0);
        &self.by_class[slot]
    }

    /// Evaluates rule number `index` on `event`: bit `i` of the result is set when matcher
    /// `i` matched.
    pub fn evaluate(&self, index: usize, event: &EventRef) -> Result<u32, EvalError> {
        self.evaluate_in(index, event, &sigma::Lookup::new(&event.0))
    }

    /// [`RuleSet::evaluate`], reading Sigma fields through `lookup` (of the same event).
    pub fn evaluate_in(&self, index: usize, event: &EventRef, lookup: &sigma::Lookup<'_>) -> Result<u32, EvalError> {
        let rule = &self.rules[index];
        let mut mask = 0;
        for (bit, matcher) in rule.matchers.iter().enumerate() {
            let native = if !self.native && rule.sigma.is_none() {
                None
            } else if let Some(Predicate::Sigma(node)) = &matcher.predicate {
                Some(node.eval(lookup))
            } else if let Some(predicate) = &matcher.predicate {
                predicate.eval(&event.0)
            } else {
                matcher.prefilter.as_ref().and_then(|p| p.eval(&event.0)).filter(|pass| !pass)
            };
            let hit = match native {
                Some(hit) => hit,
                None => self.call(rule, &matcher.function, event)?,
            };
            if hit {
                mask |= 1 << bit;
            }
        }
        Ok(mask)
    }

    /// [`RuleSet::evaluate`] for a rule asked about an event [`RuleSet::select`] did not
    /// choose (a hunt's filter, a tool): a Sigma detection also checks its logsource.
    pub fn evaluate_alone(&self, index: usize, event: &EventRef) -> Result<u32, EvalError> {
        if !sigma::Dispatch::in_logsource(&self.rules[index], &event.0) {
            return Ok(0);
        }
        self.evaluate(index, event)
    }

    fn call(&self, rule: &CompiledRule, function: &str, event: &EventRef) -> Result<bool, EvalError> {
        sandbox::arm_plugin_budget(self.plugin_fuel, event.0.time.timestamp_millis());
        let mut scope = Scope::new();
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(false);
        let result: Result<Dynamic, Box<EvalAltResult>> =
            self.engine.call_fn_with_options(options, &mut scope, &rule.ast, function, (event.clone(),));
        match result {
            Ok(value) => value.as_bool().map_err(|t| EvalError::NotBool(t.to_owned())),
            Err(e) => Err(match *e {
                EvalAltResult::ErrorTooManyOperations(_) => EvalError::Budget,
                other => EvalError::Runtime(other.to_string()),
            }),
        }
    }

    /// Evaluates a rule by id (tests and tools): whether its first matcher matched.
    pub fn evaluate_id(&self, id: &str, event: &SecurityEvent) -> Option<Result<bool, EvalError>> {
        let index = self.rules.iter().position(|r| r.meta.id.as_str() == id)?;
        Some(self.evaluate_alone(index, &EventRef(Arc::new(event.clone()))).map(|mask| mask & 1 == 1))
    }
}

fn compile_rule(engine: &Engine, library: &Library, path: &Path, text: &str) -> Result<CompiledRule, Vec<RuleError>> {
    let one = |e: RuleError| vec![e];
    let ast = engine.compile(text).map_err(|e| one(RuleError::at(path, e.1, e.0.to_string())))?;
    let mut scope = Scope::new();
    engine.run_ast_with_scope(&mut scope, &ast).map_err(|e| one(RuleError::at(path, e.position(), e.to_string())))?;
    let Some(meta) = scope.get_value::<rhai::Map>("RULE") else {
        return Err(one(RuleError::new(
            path,
            "the file must define `const RULE = #{ id: ..., title: ..., severity: ... };`",
        )));
    };
    let meta: RuleMeta = rhai::serde::from_dynamic(&Dynamic::from_map(meta)).map_err(|e| {
        one(RuleError::new(path, format!("in RULE: {}", e.to_string().trim_end_matches(" (line 0, position 0)"))))
    })?;
    let mut errors = validate_meta(path, &meta);
    let functions = match &meta.window {
        Some(WindowSpec::Sequence { steps, .. } | WindowSpec::AllOf { steps, .. }) => {
            let mut names: Vec<String> = Vec::new();
            for step in steps {
                if !names.contains(&step.when) {
                    names.push(step.when.clone());
                }
            }
            names
        }
        Some(WindowSpec::Absence { first, then, .. }) => vec![first.clone(), then.clone()],
        _ => vec!["condition".to_owned()],
    };
    for name in &functions {
        match ast.iter_functions().find(|f| f.name == name) {
            Some(f) if f.params.len() == 1 => {}
            Some(_) => {
                errors.push(RuleError::new(path, format!("`{name}` must take exactly one parameter: fn {name}(event)")))
            }
            None => errors.push(RuleError::new(
                path,
                format!("the file must define `fn {name}(event) {{ ... }}` returning a bool"),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for function in &functions {
        for (position, e) in predicate::unknown_fields(&ast, function) {
            errors.push(RuleError::at(path, position, e.to_string()));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut analyses = Vec::new();
    let mut inferred: Option<Vec<EventClass>> = Some(Vec::new());
    for function in functions {
        let mut analysis = predicate::analyse(&ast, &function, &library.lists);
        analysis.classes.sort();
        analysis.classes.dedup();
        match (&mut inferred, analysis.classes.is_empty()) {
            (Some(classes), false) => classes.extend(analysis.classes.iter().copied()),
            _ => inferred = None,
        }
        analyses.push((function, analysis));
    }
    let mut classes = if meta.classes.is_empty() { inferred.unwrap_or_default() } else { meta.classes.clone() };
    classes.sort();
    classes.dedup();
    let matchers = analyses
        .into_iter()
        .map(|(function, analysis)| {
            // The class index already ensures a class test that allows exactly the rule's
            // classes: the native form need not repeat it.
            let indexed = !classes.is_empty() && analysis.classes == classes;
            let strip = |p: Predicate| if indexed { p.without_class_tests() } else { p };
            let guard = analysis.predicate.clone().or_else(|| analysis.prefilter.clone());
            Matcher {
                function,
                predicate: analysis.predicate.map(strip),
                prefilter: analysis.prefilter.map(strip),
                guard,
            }
        })
        .collect();
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(text, library.fingerprint), &mut hasher);
    Ok(CompiledRule {
        meta,
        path: path.to_owned(),
        fingerprint: std::hash::Hasher::finish(&hasher),
        classes,
        missing_plugins: Vec::new(),
        sigma: None,
        matchers,
        ast,
    })
}

fn validate_meta(path: &Path, meta: &RuleMeta) -> Vec<RuleError> {
    let mut errors = Vec::new();
    let mut error = |m: String| errors.push(RuleError::new(path, m));
    if !RuleId::is_valid(meta.id.as_str()) {
        error(format!("rule id `{}` must be 1-128 characters of A-Z a-z 0-9 _ . -", meta.id));
    }
    if meta.title.trim().is_empty() {
        error("RULE.title must not be empty".into());
    }
    if let Some(window) = &meta.window {
        if meta.group_by.is_empty() {
            error("RULE.window needs RULE.group_by: the fields that key the window (e.g. [\"source.ip\"])".into());
        }
        if window.within().is_zero() {
            error("RULE.window.within must be longer than 0s".into());
        }
        match window {
            WindowSpec::Threshold { count, .. } | WindowSpec::Distinct { count, .. } if *count == 0 => {
                error("RULE.window.count must be at least 1".into());
            }
            WindowSpec::Sum { at_least: 0, .. } => error("RULE.window.at_least must be at least 1".into()),
            WindowSpec::Statistic { at_least, .. } if !at_least.is_finite() => {
                error("RULE.window.at_least must be a number".into());
            }
            WindowSpec::Statistic { statistic: meta::Statistic::Percentile(p), .. } if !(1..=100).contains(p) => {
                error("RULE.window.statistic: a percentile is between 1 and 100".into());
            }
            WindowSpec::Sequence { steps, .. } | WindowSpec::AllOf { steps, .. }
                if steps.len() < 2 || steps.len() > 16 =>
            {
                error("RULE.window.steps needs 2 to 16 steps".into());
            }
            WindowSpec::Sequence { steps, .. } if steps.iter().any(|s| s.count == 0 || s.count > 1000) => {
                error("every step's count must be between 1 and 1000".into());
            }
            _ => {}
        }
    }
    if let Some(family) = meta.family.as_deref().filter(|f| !RuleId::is_valid(f)) {
        error(format!("RULE.family `{family}` must be 1-128 characters of [A-Za-z0-9_.-]"));
    }
    if let Some(template) = &meta.dedup {
        for placeholder in placeholders(template) {
            if let Err(e) = FieldPath::parse(placeholder) {
                error(format!("RULE.dedup: {e}"));
            }
        }
    }
    errors
}

/// The `{{field}}` placeholders of a template.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else { break };
        out.push(rest[start + 2..start + end].trim());
        rest = &rest[start + end + 2..];
    }
    out
}

/// Renders a `{{field}}` template from an event; a missing field renders as empty.
pub fn render(template: &str, event: &SecurityEvent) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = rest[start + 2..start + end].trim();
        if let Some(value) = FieldPath::parse(name).ok().and_then(|p| p.get(event).map(|v| v.to_text().into_owned())) {
            out.push_str(&value);
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
