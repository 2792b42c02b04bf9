//! The Rhai sandbox rules run in: one [`Engine`] with hard limits and the event API.
//!
//! Limits: operations per evaluation, call depth, expression depth, string/array/map
//! sizes; `eval` is disabled, modules cannot be imported, `print`/`debug` go nowhere.
//! Rules see the event as `event`, with the same dotted names as everywhere else
//! (`event.source.ip`, `event.user.target.name`, `event.labels.env`); a field the event
//! does not carry reads as `()`, and the string helpers treat `()` as "no match".

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use regex::Regex;
use rhai::module_resolvers::DummyModuleResolver;
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::predicate::Lists;
use crate::event::{EventClass, Field, FieldPath, FieldValue, Outcome, SecurityEvent};

/// Limits of the rule sandbox (`[rules.limits]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxLimits {
    /// Rhai operations one evaluation of one rule may take.
    pub max_operations: u64,
    /// Deepest function call nesting.
    pub max_call_levels: usize,
    /// Longest string a rule may build.
    pub max_string_bytes: usize,
    /// Largest array or map a rule may build.
    pub max_collection_len: usize,
    /// Fuel all `plugin::invoke`s of one evaluation of one rule may spend together.
    pub max_plugin_fuel: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            max_operations: 50_000,
            max_call_levels: 16,
            max_string_bytes: 64 * 1024,
            max_collection_len: 10_000,
            max_plugin_fuel: 10_000_000,
        }
    }
}

/// The event as rules see it.
#[derive(Clone, Debug)]
pub struct EventRef(pub Arc<SecurityEvent>);

/// A nested object of the event (`event.source`, `event.user.target`): an index into
/// [`GROUPS`].
#[derive(Clone, Debug)]
struct Group {
    event: Arc<SecurityEvent>,
    group: usize,
}

/// What a property name resolves to in one group.
#[derive(Clone, Copy, Debug)]
enum Member {
    Leaf(Field),
    Group(usize),
}

/// The groups of the field table (`""` for the event itself, then `source`, `user`,
/// `user.target`, …), and for each property name, what it means in each group. Built once;
/// a property read is two array lookups, no hashing.
struct Members {
    groups: Vec<&'static str>,
    by_name: Vec<(&'static str, Vec<Option<Member>>)>,
}

static GROUPS: LazyLock<Members> = LazyLock::new(|| {
    let mut groups: Vec<&'static str> = vec![""];
    let mut pairs: Vec<(&'static str, &'static str, Member)> = Vec::new();
    for field in Field::ALL {
        let name = field.name();
        // `user.target.name`: ("", "user") and ("user", "target") are groups,
        // ("user.target", "name") the leaf.
        let prefix_of = |start: usize| if start == 0 { "" } else { &name[..start - 1] };
        let mut start = 0;
        for (dot, _) in name.match_indices('.') {
            let group = &name[..dot];
            let index = groups.iter().position(|g| *g == group).unwrap_or_else(|| {
                groups.push(group);
                groups.len() - 1
            });
            pairs.push((prefix_of(start), &name[start..dot], Member::Group(index)));
            start = dot + 1;
        }
        pairs.push((prefix_of(start), &name[start..], Member::Leaf(*field)));
    }
    let mut by_name: Vec<(&'static str, Vec<Option<Member>>)> = Vec::new();
    for (prefix, property, member) in pairs {
        let slot = groups.iter().position(|g| *g == prefix).unwrap_or(0);
        let row = match by_name.iter().position(|(n, _)| *n == property) {
            Some(i) => &mut by_name[i].1,
            None => {
                by_name.push((property, Vec::new()));
                &mut by_name.last_mut().expect("just pushed").1
            }
        };
        row.resize(groups.len().max(row.len()), None);
        row[slot] = Some(member);
    }
    Members { groups, by_name }
});

fn member(
    event: &Arc<SecurityEvent>,
    group: usize,
    name: &str,
    row: &[Option<Member>],
) -> Result<Dynamic, Box<EvalAltResult>> {
    match row.get(group).copied().flatten() {
        Some(Member::Leaf(field)) => Ok(value_to_dynamic(field.get(event))),
        Some(Member::Group(group)) => Ok(Dynamic::from(Group { event: event.clone(), group })),
        None => {
            let prefix = GROUPS.groups[group];
            let path = if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
            Err(format!("unknown event field `{path}`").into())
        }
    }
}

fn value_to_dynamic(value: Option<FieldValue<'_>>) -> Dynamic {
    match value {
        None => Dynamic::UNIT,
        Some(FieldValue::Str(s)) => s.into(),
        Some(FieldValue::Int(i)) => i.into(),
        Some(FieldValue::List(items)) => Dynamic::from_array(items.iter().map(|s| s.as_str().into()).collect()),
        Some(FieldValue::Json(v)) => json_to_dynamic(v),
        Some(other) => other.to_text().into_owned().into(),
    }
}

/// A JSON value as Rhai sees it: what `rhai::serde::to_dynamic` gives (integers beyond
/// `i64` become floats), built directly, several times faster: rules read `attributes`
/// on every evaluation.
fn json_to_dynamic(value: &serde_json::Value) -> Dynamic {
    use serde_json::Value;
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().map_or(Dynamic::UNIT, Dynamic::from_float),
        },
        Value::String(s) => s.as_str().into(),
        // (`from_map`, not `into`: that rebuilds the map value by value.)
        Value::Array(items) => Dynamic::from_array(items.iter().map(json_to_dynamic).collect()),
        Value::Object(map) => Dynamic::from_map(json_map(map)),
    }
}

fn json_map(map: &serde_json::Map<String, serde_json::Value>) -> Map {
    // Inserted one by one: `collect` would sort a buffer first, slower for small maps.
    let mut out = Map::new();
    for (k, v) in map {
        out.insert(k.as_str().into(), json_to_dynamic(v));
    }
    out
}

const MAX_CACHED_REGEXES: usize = 4096;

thread_local! {
    /// Compiled regexes, keyed by pattern; bounded. One per thread: a lookup takes no lock.
    static REGEXES: std::cell::RefCell<FxHashMap<String, Regex>> = std::cell::RefCell::default();
}

/// `regex_match`: the pattern is compiled once per thread and cached.
fn regex_match(text: &str, pattern: &str) -> Result<bool, Box<EvalAltResult>> {
    REGEXES.with_borrow_mut(|cache| {
        if let Some(re) = cache.get(pattern) {
            return Ok(re.is_match(text));
        }
        // The regex crate runs in linear time; the size limits stop pathological patterns
        // at compile time instead.
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .dfa_size_limit(1 << 20)
            .build()
            .map_err(|e| format!("invalid regex `{pattern}`: {e}"))?;
        let found = re.is_match(text);
        if cache.len() >= MAX_CACHED_REGEXES {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), re);
        Ok(found)
    })
}

fn in_cidr(ip: &str, cidr: &str) -> Result<bool, Box<EvalAltResult>> {
    let net: IpNet = cidr
        .parse()
        .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("invalid CIDR `{cidr}`"))?;
    Ok(ip.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)))
}

thread_local! {
    /// Operations counted by an engine built with `count_operations` (for `rules cost`).
    static OPERATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The fuel `plugin::invoke` may still spend in this evaluation, and the event's time.
    static PLUGIN_BUDGET: std::cell::Cell<(u64, i64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Sets the plugin fuel of the evaluation about to run on this thread, and the time
/// plugins see (the event's, so replays and backtests see what the live run saw).
pub(crate) fn arm_plugin_budget(fuel: u64, event_time_ms: i64) {
    PLUGIN_BUDGET.with(|b| b.set((fuel, event_time_ms)));
}

/// `plugin::invoke(name, value)` and `plugin::loaded(name)`: functions from WebAssembly
/// plugins, each call charged to the calling rule's plugin fuel budget (`call` is a
/// reserved word in Rhai, hence `invoke`). A failed call is
/// an evaluation error of the rule (counted, and a rule that keeps failing is disabled).
pub fn register_plugins(engine: &mut Engine, host: Option<crate::plugins::PluginHost>) {
    let mut module = rhai::Module::new();
    let caller = host.clone();
    module.set_native_fn("invoke", move |name: &str, value: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
        let input: serde_json::Value = rhai::serde::from_dynamic(&value)
            .map_err(|e| format!("plugin::invoke(\"{name}\"): the value is not JSON-like: {e}"))?;
        let (fuel, clock) = PLUGIN_BUDGET.with(std::cell::Cell::get);
        if fuel == 0 {
            return Err(format!("plugin::invoke(\"{name}\"): this evaluation's plugin fuel is spent").into());
        }
        let host =
            caller.as_ref().ok_or_else(|| format!("plugin::invoke(\"{name}\"): plugins are not enabled here"))?;
        let (output, stats) = host
            .call_limited(name, &input, Some(clock), Some(fuel))
            .map_err(|e| format!("plugin::invoke(\"{name}\"): {e}"))?;
        PLUGIN_BUDGET.with(|b| b.set((fuel.saturating_sub(stats.fuel), clock)));
        rhai::serde::to_dynamic(output).map_err(|e| format!("plugin::invoke(\"{name}\"): {e}").into())
    });
    module.set_native_fn("loaded", move |name: &str| Ok(host.as_ref().is_some_and(|h| h.get(name).is_some())));
    engine.register_static_module("plugin", module.into());
}

/// `ioc_match(value)`: the threat-intel indicator `value` (an address, domain, URL, email
/// or file hash) matches, valid at the event's time, as a map (`id`, `name`, `type`, `feed`,
/// `confidence`, `actors`, `campaigns`, `malware`, `labels`, `kill_chain_phases`); `()`
/// when none does, when `value` is `()` (a missing field), or when no intel is configured.
pub fn register_intel(engine: &mut Engine, intel: Option<crate::intel::Intel>) {
    engine.register_fn("ioc_match", move |value: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
        let Some(intel) = &intel else { return Ok(Dynamic::UNIT) };
        if value.is_unit() {
            return Ok(Dynamic::UNIT);
        }
        let (_, time_ms) = PLUGIN_BUDGET.with(std::cell::Cell::get);
        match intel.lookup(&value.to_string(), time_ms) {
            Some(found) => rhai::serde::to_dynamic(found).map_err(|e| format!("ioc_match: {e}").into()),
            None => Ok(Dynamic::UNIT),
        }
    });
}

/// Operations used by the last evaluation on this thread (engines built with
/// `count_operations` only).
pub fn last_operations() -> u64 {
    OPERATIONS.with(std::cell::Cell::get)
}

/// Resets the count before an evaluation (natively evaluated rules leave it at 0).
pub fn reset_operations() {
    OPERATIONS.with(|c| c.set(0));
}

/// Builds the sandboxed engine. `lists` backs `in_list`; `count_operations` records each
/// evaluation's operation count for [`last_operations`].
pub fn build_engine(limits: &SandboxLimits, lists: &Lists, count_operations: bool) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(limits.max_string_bytes)
        .set_max_array_size(limits.max_collection_len)
        .set_max_map_size(limits.max_collection_len)
        .set_max_variables(256)
        .set_max_functions(256)
        .set_module_resolver(DummyModuleResolver::new())
        .disable_symbol("eval")
        .on_print(|_| {})
        .on_debug(|_, _, _| {});
    if count_operations {
        engine.on_progress(|ops| {
            OPERATIONS.with(|c| c.set(ops));
            None
        });
    }
    register_event_api(&mut engine);
    register_helpers(&mut engine);
    let privileged: Arc<FxHashSet<String>> = Arc::new(
        lists.get("privileged_groups").map(|l| l.iter().map(|g| g.to_lowercase()).collect()).unwrap_or_default(),
    );
    let lists = Arc::new(lists.clone());
    engine.register_fn("in_list", move |value: Dynamic, name: &str| -> Result<bool, Box<EvalAltResult>> {
        let list =
            lists.get(name).ok_or_else(|| format!("unknown list `{name}` (define it in rules/lib/*.rhai LISTS)"))?;
        Ok(match value.read_lock::<ImmutableString>() {
            Some(text) => list.contains(text.as_str()),
            None => !value.is_unit() && list.contains(value.to_string().as_str()),
        })
    });
    // `is_privileged_group(name)`: a group (or any of a list of roles) in the
    // `privileged_groups` list of rules/lib, compared without case.
    engine.register_fn("is_privileged_group", move |value: Dynamic| -> bool {
        if let Some(text) = value.read_lock::<ImmutableString>() {
            return privileged.contains(&text.to_lowercase());
        }
        match value.into_array() {
            Ok(items) => items
                .iter()
                .any(|i| i.read_lock::<ImmutableString>().is_some_and(|t| privileged.contains(&t.to_lowercase()))),
            Err(_) => false,
        }
    });
    engine
}

fn register_event_api(engine: &mut Engine) {
    engine.register_type_with_name::<EventRef>("Event");
    engine.register_type_with_name::<Group>("EventGroup");
    for (name, row) in &GROUPS.by_name {
        let name: &'static str = name;
        let row: Arc<[Option<Member>]> = row.clone().into();
        if row.first().copied().flatten().is_some() {
            let top = row.clone();
            engine.register_get(name, move |e: &mut EventRef| member(&e.0, 0, name, &top));
        }
        if row.iter().skip(1).any(Option::is_some) {
            engine.register_get(name, move |g: &mut Group| member(&g.event, g.group, name, &row));
        }
    }
    // Returned as `Dynamic`: a `Map` return value is rebuilt entry by entry on the way out.
    engine.register_get("labels", |e: &mut EventRef| {
        let mut labels = Map::new();
        for (k, v) in &e.0.labels {
            labels.insert(k.as_str().into(), v.as_str().into());
        }
        Dynamic::from_map(labels)
    });
    engine.register_get("attributes", |e: &mut EventRef| Dynamic::from_map(json_map(&e.0.attributes)));
    let by_path = |e: &mut EventRef, path: &str| -> Result<Dynamic, Box<EvalAltResult>> {
        let path = FieldPath::parse(path).map_err(|err| err.to_string())?;
        Ok(value_to_dynamic(path.get(&e.0)))
    };
    engine.register_fn("get", move |e: &mut EventRef, path: &str| by_path(e, path));
    engine.register_indexer_get(move |e: &mut EventRef, path: &str| by_path(e, path));
}

fn register_helpers(engine: &mut Engine) {
    // `()` (a missing field) never matches.
    engine.register_fn("contains", |_: (), _: ImmutableString| false);
    engine.register_fn("starts_with", |_: (), _: ImmutableString| false);
    engine.register_fn("ends_with", |_: (), _: ImmutableString| false);
    engine.register_fn("lower", |s: ImmutableString| s.to_lowercase());
    engine.register_fn("lower", |_: ()| String::new());
    engine.register_fn(
        "regex_match",
        |s: ImmutableString, pattern: ImmutableString| -> Result<bool, Box<EvalAltResult>> {
            regex_match(&s, &pattern)
        },
    );
    engine.register_fn("regex_match", |_: (), _: ImmutableString| false);
    engine.register_fn("in_cidr", |ip: ImmutableString, cidr: ImmutableString| in_cidr(&ip, &cidr));
    engine.register_fn("in_cidr", |_: (), _: ImmutableString| false);
    engine.register_fn("exists", |v: Dynamic| !v.is_unit());
    engine.register_fn("is_public", |ip: ImmutableString| ip.parse::<IpAddr>().is_ok_and(crate::event::is_public));
    engine.register_fn("is_public", |_: ()| false);
    let attempt = |e: &EventRef, outcome: Outcome| {
        e.0.class == EventClass::Authentication
            && e.0.outcome == outcome
            && e.0.action.as_deref().is_some_and(|a| super::predicate::AUTH_ATTEMPTS.contains(&a))
    };
    engine.register_fn("is_auth_failure", move |e: &mut EventRef| attempt(e, Outcome::Failure));
    engine.register_fn("is_auth_success", move |e: &mut EventRef| attempt(e, Outcome::Success));
    engine.register_fn("iequals", |a: ImmutableString, b: ImmutableString| a.to_lowercase() == b.to_lowercase());
    engine.register_fn("iequals", |_: (), _: ImmutableString| false);
    engine.register_fn("icontains", |s: ImmutableString, x: ImmutableString| {
        s.to_lowercase().contains(&x.to_lowercase())
    });
    engine.register_fn("icontains", |_: (), _: ImmutableString| false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Endpoint, EventClass, Process, User};
    use chrono::Utc;
    use rhai::Scope;

    fn event() -> EventRef {
        let mut e = SecurityEvent::new(EventClass::Authentication, Utc::now());
        e.source =
            Some(Endpoint { ip: Some("203.0.113.7".parse().expect("ip")), port: Some(22), ..Default::default() });
        e.user = Some(Box::new(User { name: Some("root".into()), ..Default::default() }));
        e.process = Some(Box::new(Process { name: Some("sshd".into()), ..Default::default() }));
        e.labels.insert("env".into(), "prod".into());
        e.outcome = crate::event::Outcome::Failure;
        e.action = Some("ssh_login".into());
        e.attributes = serde_json::from_str(r#"{"k":{"n":5}}"#).expect("json");
        EventRef(Arc::new(e))
    }

    fn eval(expr: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        let mut lists = Lists::new();
        lists.insert("admins".into(), Arc::new(["root".to_owned()].into_iter().collect()));
        lists.insert("privileged_groups".into(), Arc::new(["Domain Admins".to_owned()].into_iter().collect()));
        let engine = build_engine(&SandboxLimits::default(), &lists, false);
        let mut scope = Scope::new();
        scope.push("event", event());
        engine.eval_with_scope::<Dynamic>(&mut scope, expr)
    }

    fn truth(expr: &str) -> bool {
        eval(expr).unwrap_or_else(|e| panic!("{expr}: {e}")).as_bool().unwrap_or_else(|t| panic!("{expr} gave {t}"))
    }

    #[test]
    fn event_fields_read_by_dotted_names() {
        assert!(truth(r#"event.class == "authentication""#));
        assert!(truth(r#"event.source.ip == "203.0.113.7" && event.source.port == 22"#));
        assert!(truth(r#"event.user.name == "root""#));
        assert!(truth(r#"event.labels.env == "prod""#));
        assert!(truth(r#"event.attributes.k.n == 5"#));
        assert!(truth(r#"event["source.ip"] == "203.0.113.7" && event.get("user.name") == "root""#));
    }

    #[test]
    fn missing_fields_are_unit_and_never_match() {
        assert!(truth(r#"event.destination.ip == ()"#));
        assert!(truth(r#"!(event.destination.ip == "1.2.3.4")"#));
        assert!(truth(r#"event.destination.ip != "1.2.3.4""#));
        assert!(truth(r#"!event.host.name.contains("x") && !exists(event.host.name) && exists(event.user.name)"#));
        assert!(truth(r#"!event.user.target.name.starts_with("adm")"#));
    }

    #[test]
    fn json_reads_as_serde_would_give_it() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"s":"x","i":-3,"big":18446744073709551615,"f":1.5,"b":true,"n":null,"a":[1,"y",{"k":[]}],"o":{"p":{}}}"#,
        )
        .expect("json");
        let direct = json_to_dynamic(&json);
        let via_serde = rhai::serde::to_dynamic(&json).expect("converts");
        assert_eq!(format!("{direct:?}"), format!("{via_serde:?}"));
        assert_eq!(direct.type_name(), via_serde.type_name());
    }

    #[test]
    fn helpers_work() {
        assert!(truth(r#"in_cidr(event.source.ip, "203.0.113.0/24") && !in_cidr(event.source.ip, "10.0.0.0/8")"#));
        assert!(truth(r#"regex_match(event.process.name, "^ss[h]d$") && lower("ROOT") == event.user.name"#));
        assert!(eval(r#"in_cidr(event.source.ip, "bogus")"#).is_err());
        assert!(eval(r#"regex_match("x", "(")"#).is_err());
        assert!(truth(r#"is_public(event.source.ip) && is_public(event.source.address) && !is_public("10.1.2.3")"#));
        assert!(truth(r#"!is_public("100.64.0.1") && !is_public("fe80::1") && !is_public(event.destination.ip)"#));
        assert!(truth(r#"is_auth_failure(event) && !is_auth_success(event)"#));
    }

    #[test]
    fn privileged_groups_come_from_the_list_without_case() {
        assert!(truth(r#"is_privileged_group("domain admins") && is_privileged_group(["Users", "DOMAIN ADMINS"])"#));
        assert!(truth(r#"!is_privileged_group("Users") && !is_privileged_group(()) && !is_privileged_group([])"#));
    }

    #[test]
    fn lists_and_case_folding() {
        assert!(truth(r#"in_list(event.user.name, "admins") && !in_list(event.host.name, "admins")"#));
        assert!(truth(r#"iequals(event.user.name, "ROOT") && icontains(event.process.name, "SSH")"#));
        assert!(eval(r#"in_list(event.user.name, "nope")"#).is_err());
    }

    #[test]
    fn unknown_fields_are_errors_naming_the_path() {
        let err = eval("event.source.ipp").expect_err("unknown");
        assert!(err.to_string().contains("'ipp'"), "{err}");
        let err = eval(r#"event.get("source.ipp")"#).expect_err("unknown");
        assert!(err.to_string().contains("did you mean `source.ip`"), "{err}");
    }

    #[test]
    fn hostile_scripts_are_bounded() {
        let e = eval("loop {}").expect_err("must stop");
        assert!(matches!(*e, EvalAltResult::ErrorTooManyOperations(..)), "{e}");
        let e = eval(r#"let s = "x"; loop { s += s; }"#).expect_err("must stop");
        assert!(matches!(*e, EvalAltResult::ErrorDataTooLarge(..)), "{e}");
        let e = eval("fn f(n) { f(n + 1) } f(0)").expect_err("must stop");
        assert!(matches!(*e, EvalAltResult::ErrorStackOverflow(..)), "{e}");
        // Refused as what they are, not by some other error on the way.
        let e = eval(r#"eval("1")"#).expect_err("eval is refused");
        assert!(
            matches!(&*e, EvalAltResult::ErrorParsing(rhai::ParseErrorType::BadInput(rhai::LexError::ImproperSymbol(s, why)), _)
                if s == "eval" && why.contains("disabled")),
            "{e:?}"
        );
        let e = eval(r#"import "x" as y; 1"#).expect_err("import is refused");
        assert!(matches!(&*e, EvalAltResult::ErrorModuleNotFound(m, _) if m == "x"), "{e:?}");
    }
}
