//! Sigma values and their modifiers, compiled to native field tests.
//!
//! A detection item `Field|mod1|mod2: value(s)` becomes one [`FieldTest`]. String values
//! are read with Sigma's wildcards (`*`, `?`, escaped with `\`), then transformed by the
//! modifiers in the order written (`wide`, `base64offset`, `windash`, `expand`…), then
//! shaped (`contains`, `startswith`, `endswith`) and classified into the cheapest test
//! that keeps their meaning: equality, prefix, suffix, substring (one Aho-Corasick pass
//! when a field lists many), or a byte regex for the rest. Matching is ASCII
//! case-insensitive unless `cased` is given, as SQLite's `LIKE` is in the pySigma
//! backend we compare with.

use std::net::IpAddr;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use chrono::{DateTime, Datelike, Timelike, Utc};
use ipnet::IpNet;
use serde_json::Value;

use crate::event::{FieldPath, FieldValue, SecurityEvent};

/// Why a detection item cannot be compiled: the construct, as written.
pub type Refusal = String;

/// One token of a Sigma string value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    /// Literal bytes.
    Text(Vec<u8>),
    /// `*`
    Many,
    /// `?`
    One,
}

/// A value as tokens, with wildcards kept apart from text.
type Toks = Vec<Tok>;

/// Reads a Sigma string: `*` and `?` are wildcards, `\*` `\?` `\\` their literals, any
/// other backslash is itself.
fn tokens(text: &str) -> Toks {
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut chars = text.chars().peekable();
    let mut buf = [0u8; 4];
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*' | '?' | '\\')) => {
                let next = chars.next().unwrap_or('\\');
                lit.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
            }
            '*' | '?' => {
                if !lit.is_empty() {
                    out.push(Tok::Text(std::mem::take(&mut lit)));
                }
                out.push(if c == '*' { Tok::Many } else { Tok::One });
            }
            other => lit.extend_from_slice(other.encode_utf8(&mut buf).as_bytes()),
        }
    }
    if !lit.is_empty() {
        out.push(Tok::Text(lit));
    }
    out
}

fn has_wildcards(toks: &Toks) -> bool {
    toks.iter().any(|t| !matches!(t, Tok::Text(_)))
}

fn text_of(toks: &Toks) -> Vec<u8> {
    toks.iter().flat_map(|t| if let Tok::Text(b) = t { b.clone() } else { Vec::new() }).collect()
}

/// A string test, its pattern lowercased unless the test is cased.
#[derive(Clone, Debug)]
enum Pattern {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
    Contains(Vec<u8>),
    /// `*`: any value at all.
    Anything,
    /// Wildcards inside: a byte regex, and its longest literal run.
    Glob(regex::bytes::Regex, Vec<u8>),
}

fn ascii_find(hay: &[u8], needle: &[u8], cased: bool) -> bool {
    if needle.is_empty() {
        return true;
    }
    if needle.len() > hay.len() {
        return false;
    }
    if cased {
        return memchr::memmem::find(hay, needle).is_some();
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    memchr::memchr2_iter(lo, up, &hay[..=last_start]).any(|i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

fn eq(a: &[u8], b: &[u8], cased: bool) -> bool {
    if cased { a == b } else { a.eq_ignore_ascii_case(b) }
}

impl Pattern {
    fn of(toks: Toks, cased: bool) -> Result<Pattern, Refusal> {
        let fold = |b: Vec<u8>| if cased { b } else { b.to_ascii_lowercase() };
        Ok(match toks.as_slice() {
            [] => Pattern::Exact(Vec::new()),
            [Tok::Many] => Pattern::Anything,
            [Tok::Text(t)] => Pattern::Exact(fold(t.clone())),
            [Tok::Text(t), Tok::Many] => Pattern::Prefix(fold(t.clone())),
            [Tok::Many, Tok::Text(t)] => Pattern::Suffix(fold(t.clone())),
            [Tok::Many, Tok::Text(t), Tok::Many] => Pattern::Contains(fold(t.clone())),
            _ => {
                let mut re = String::from(if cased { "(?s-u)^" } else { "(?is-u)^" });
                for tok in &toks {
                    match tok {
                        Tok::Many => re.push_str(".*"),
                        Tok::One => re.push('.'),
                        Tok::Text(bytes) => {
                            for b in bytes {
                                if b.is_ascii_alphanumeric() {
                                    re.push(char::from(*b));
                                } else {
                                    re.push_str(&format!("\\x{b:02x}"));
                                }
                            }
                        }
                    }
                }
                re.push('$');
                let re = regex::bytes::RegexBuilder::new(&re)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("wildcard pattern too large: {e}"))?;
                let longest = toks
                    .iter()
                    .filter_map(|t| if let Tok::Text(b) = t { Some(fold(b.clone())) } else { None })
                    .max_by_key(Vec::len)
                    .unwrap_or_default();
                Pattern::Glob(re, longest)
            }
        })
    }

    fn matches(&self, value: &[u8], cased: bool) -> bool {
        match self {
            Self::Exact(p) => eq(value, p, cased),
            Self::Prefix(p) => value.len() >= p.len() && eq(&value[..p.len()], p, cased),
            Self::Suffix(p) => value.len() >= p.len() && eq(&value[value.len() - p.len()..], p, cased),
            Self::Contains(p) => ascii_find(value, p, cased),
            Self::Anything => true,
            Self::Glob(re, _) => re.is_match(value),
        }
    }
}

/// How the values of one item combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Any value matches (the default).
    Any,
    /// Every value must match (`|all`).
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimePart {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Eq,
    Contains,
    Prefix,
    Suffix,
}

/// What a field must hold.
#[derive(Debug)]
enum Test {
    /// `null`: the field is absent.
    Null,
    /// `|exists: true|false`.
    Exists(bool),
    /// String patterns; `ac` is one pass over every substring pattern of an `Any` list.
    Text { mode: Mode, cased: bool, patterns: Vec<Pattern>, ac: Option<(AhoCorasick, Vec<Vec<u8>>)> },
    /// `|re`.
    Regex { mode: Mode, res: Vec<regex::bytes::Regex> },
    /// `|cidr`.
    Cidr { mode: Mode, nets: Vec<IpNet> },
    /// `|gt`, `|gte`, `|lt`, `|lte`.
    Number { mode: Mode, op: Num, values: Vec<f64> },
    /// `|fieldref`: equal to (or containing, starting, ending with) another field.
    FieldRef { mode: Mode, shape: Shape, cased: bool, others: Vec<Arc<[FieldPath]>> },
    /// `|minute` … `|year`: a part of a timestamp.
    Time { part: TimePart, values: Vec<i64> },
}

/// One compiled detection item: the field (its candidate paths, the first present one is
/// read) and what it must hold.
#[derive(Debug)]
pub struct FieldTest {
    paths: Arc<[FieldPath]>,
    test: Test,
}

/// A field (its candidate paths) and substrings one of which its text must contain.
pub type Literals = (Arc<[FieldPath]>, Vec<Vec<u8>>);

/// One shared copy of each distinct list of candidate paths, so that every test of the
/// same field shares its [`Lookup`] entry.
pub fn intern(paths: Vec<FieldPath>) -> Arc<[FieldPath]> {
    type Interned = std::collections::HashMap<Vec<FieldPath>, Arc<[FieldPath]>>;
    static INTERNED: std::sync::LazyLock<std::sync::Mutex<Interned>> = std::sync::LazyLock::new(Default::default);
    let mut interned = INTERNED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    interned.entry(paths).or_insert_with_key(|paths| Arc::from(paths.as_slice())).clone()
}

/// An event as Sigma's tests read it: each list of candidate paths is looked up once,
/// however many rules and logsources ask for it (a Windows field costs two hashed map
/// lookups; thousands of rules ask for the same few fields).
#[derive(Debug)]
pub struct Lookup<'e> {
    /// The event.
    pub event: &'e SecurityEvent,
    seen: std::cell::RefCell<Vec<(*const FieldPath, Option<FieldValue<'e>>)>>,
    /// The elements of a list as events of their own, once a rule asked ([`Lookup::any_record`]).
    records: std::cell::OnceCell<(FieldPath, Vec<SecurityEvent>)>,
}

impl<'e> Lookup<'e> {
    /// Nothing looked up yet.
    pub fn new(event: &'e SecurityEvent) -> Self {
        Lookup { event, seen: Default::default(), records: Default::default() }
    }

    /// The value of the first of `paths` the event has.
    pub fn get(&self, paths: &Arc<[FieldPath]>) -> Option<FieldValue<'e>> {
        let key = paths.as_ptr();
        if let Some((_, value)) = self.seen.borrow().iter().find(|(k, _)| *k == key) {
            return value.clone();
        }
        let value = paths.iter().find_map(|p| p.get(self.event));
        self.seen.borrow_mut().push((key, value.clone()));
        value
    }

    /// Whether one element of the list at `path` satisfies `test`, each element read as an
    /// event of its own: its fields, and those of the objects it holds, under
    /// `attributes.record` (auditd's `{"type": "EXECVE", "fields": {"a0": …}}` gives
    /// `type` and `a0`), and all of them as one `key=value` line under
    /// `attributes.record_line`, where keyword searches look. The events are built once per
    /// event, for the first list asked about.
    pub fn any_record(&self, path: &FieldPath, test: impl Fn(&Lookup<'_>) -> bool) -> bool {
        let build = || match path.get(self.event) {
            Some(FieldValue::Json(Value::Array(items))) => items.iter().map(|i| record_event(self.event, i)).collect(),
            _ => Vec::new(),
        };
        let (cached, records) = self.records.get_or_init(|| (path.clone(), build()));
        if cached == path {
            records.iter().any(|r| test(&Lookup::new(r)))
        } else {
            build().iter().any(|r| test(&Lookup::new(r)))
        }
    }
}

/// One element of a list as an event (see [`Lookup::any_record`]).
fn record_event(event: &SecurityEvent, element: &Value) -> SecurityEvent {
    let mut fields = serde_json::Map::new();
    if let Value::Object(entries) = element {
        for (key, value) in entries {
            match value {
                Value::Object(inner) => {
                    for (k, v) in inner {
                        fields.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                other => {
                    fields.insert(key.clone(), other.clone());
                }
            }
        }
    }
    let mut line = String::new();
    for (key, value) in &fields {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(key);
        line.push('=');
        match value {
            Value::String(s) => line.push_str(s),
            other => line.push_str(&other.to_string()),
        }
    }
    let mut record = SecurityEvent::new(event.class, event.time);
    record.attributes.insert("record".into(), Value::Object(fields));
    record.attributes.insert("record_line".into(), Value::String(line));
    record
}

/// Resolves Sigma field names to event paths (the logsource's pipeline).
pub trait Fields {
    /// The candidate paths of `name`, first present wins.
    fn resolve(&self, name: &str) -> Result<Arc<[FieldPath]>, Refusal>;
    /// Values of an `|expand` placeholder (`%name%`).
    fn placeholder(&self, name: &str) -> Option<&[String]>;
}

/// One value of the item, as YAML gave it.
fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn utf16(toks: Toks, little: bool, bom: bool) -> Toks {
    let mut out: Toks = Vec::new();
    if bom {
        out.push(Tok::Text(if little { vec![0xff, 0xfe] } else { vec![0xfe, 0xff] }));
    }
    for tok in toks {
        match tok {
            Tok::Text(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let encoded = text
                    .encode_utf16()
                    .flat_map(|u| if little { u.to_le_bytes() } else { u.to_be_bytes() })
                    .collect::<Vec<u8>>();
                out.push(Tok::Text(encoded));
            }
            other => out.push(other),
        }
    }
    merge(out)
}

fn merge(toks: Toks) -> Toks {
    let mut out: Toks = Vec::new();
    for tok in toks {
        match (out.last_mut(), tok) {
            (Some(Tok::Text(prev)), Tok::Text(next)) => prev.extend(next),
            (_, tok) => out.push(tok),
        }
    }
    out
}

/// `base64offset`: the three encodings of a value at each byte offset, trimmed to the
/// characters that do not depend on its neighbours (pySigma's definition).
fn base64_offsets(bytes: &[u8]) -> Vec<Vec<u8>> {
    const START: [usize; 3] = [0, 2, 3];
    const END: [usize; 3] = [0, 3, 2];
    (0..3)
        .map(|i| {
            let mut padded = vec![b' '; i];
            padded.extend_from_slice(bytes);
            let encoded = base64::engine::general_purpose::STANDARD.encode(&padded).into_bytes();
            let end = encoded.len().saturating_sub(END[(bytes.len() + i) % 3]);
            encoded.get(START[i]..end).map(<[u8]>::to_vec).unwrap_or_default()
        })
        .collect()
}

/// `windash`: each `-` or `/` that starts a word (regex `\B[-/]\b`) as any of the dashes
/// Windows programs accept.
fn windash(toks: Toks) -> Result<Vec<Toks>, Refusal> {
    const DASHES: [&str; 5] = ["-", "/", "\u{2013}", "\u{2014}", "\u{2015}"];
    let mut variants: Vec<Toks> = vec![Vec::new()];
    for tok in toks {
        let Tok::Text(bytes) = tok else {
            variants.iter_mut().for_each(|v| v.push(tok.clone()));
            continue;
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let chars: Vec<char> = text.chars().collect();
        let word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || *c == '_');
        let mut pieces: Vec<Vec<String>> = vec![vec![String::new()]];
        for (i, c) in chars.iter().enumerate() {
            let before = if i == 0 { None } else { chars.get(i - 1) };
            if matches!(c, '-' | '/') && !word(before) && word(chars.get(i + 1)) {
                pieces.push(DASHES.iter().map(|d| (*d).to_owned()).collect());
                pieces.push(vec![String::new()]);
            } else if let Some(last) = pieces.last_mut() {
                last[0].push(*c);
            }
        }
        let mut expanded: Vec<String> = vec![String::new()];
        for options in pieces {
            expanded = expanded.iter().flat_map(|prefix| options.iter().map(move |o| format!("{prefix}{o}"))).collect();
            if expanded.len() > 1024 {
                return Err("windash: more than 1024 variants of one value".into());
            }
        }
        variants = variants
            .into_iter()
            .flat_map(|v| {
                expanded.iter().map(move |e| {
                    let mut v = v.clone();
                    v.push(Tok::Text(e.clone().into_bytes()));
                    merge(v)
                })
            })
            .collect();
    }
    Ok(variants)
}

fn expand(toks: Toks, fields: &dyn Fields) -> Result<Vec<Toks>, Refusal> {
    if !toks.iter().any(|t| matches!(t, Tok::Text(b) if b.contains(&b'%'))) {
        return Ok(vec![toks]);
    }
    if has_wildcards(&toks) {
        return Err("expand: placeholders mixed with wildcards".into());
    }
    let text = String::from_utf8_lossy(&text_of(&toks)).into_owned();
    let mut out = vec![String::new()];
    let mut rest = text.as_str();
    while let Some(start) = rest.find('%') {
        let Some(len) = rest[start + 1..].find('%') else { break };
        let name = &rest[start + 1..start + 1 + len];
        let values = fields
            .placeholder(name)
            .ok_or_else(|| format!("expand: placeholder `%{name}%` has no values (set [rules.sigma.placeholders])"))?;
        let head = &rest[..start];
        out = out.iter().flat_map(|p| values.iter().map(move |v| format!("{p}{head}{v}"))).collect();
        rest = &rest[start + len + 2..];
    }
    Ok(out.into_iter().map(|s| tokens(&format!("{s}{rest}"))).collect())
}

impl FieldTest {
    /// Compiles `field|modifiers: values` (the field already split from its modifiers).
    pub fn compile(field: &str, modifiers: &[&str], value: &Value, fields: &dyn Fields) -> Result<FieldTest, Refusal> {
        let paths = fields.resolve(field)?;
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        let test = compile_test(modifiers, &values, fields)?;
        Ok(FieldTest { paths, test })
    }

    /// A keyword search (a detection of bare values): any string of `paths` contains one.
    pub fn keywords(paths: Arc<[FieldPath]>, modifiers: &[&str], values: &[&Value]) -> Result<FieldTest, Refusal> {
        struct NoFields;
        impl Fields for NoFields {
            fn resolve(&self, _: &str) -> Result<Arc<[FieldPath]>, Refusal> {
                Err("fieldref in a keyword list".into())
            }
            fn placeholder(&self, _: &str) -> Option<&[String]> {
                None
            }
        }
        let mut mods: Vec<&str> = modifiers.to_vec();
        if !mods.iter().any(|m| matches!(*m, "contains" | "startswith" | "endswith" | "re")) {
            mods.push("contains");
        }
        Ok(FieldTest { paths, test: compile_test(&mods, values, &NoFields)? })
    }

    /// The values (lowercased) `path` must equal for the test to hold, when it is a
    /// case-insensitive equality on that path alone: what the dispatcher indexes.
    pub fn exact_values(&self, path: &FieldPath) -> Option<Vec<Vec<u8>>> {
        if self.paths.len() != 1 || &self.paths[0] != path {
            return None;
        }
        match &self.test {
            Test::Text { mode: Mode::Any, cased: false, patterns, ac: None } => {
                patterns.iter().map(|p| if let Pattern::Exact(b) = p { Some(b.clone()) } else { None }).collect()
            }
            _ => None,
        }
    }

    /// Substrings one of which the field's text must contain (ASCII case aside) for the
    /// test to hold, with the field: what the prefilter looks for. `None` when the test
    /// pins no literal (a regex, a number, `*`, an empty value).
    pub fn literals(&self) -> Option<Literals> {
        let Test::Text { mode, patterns, ac, .. } = &self.test else { return None };
        let literal = |p: &Pattern| match p {
            Pattern::Exact(b)
            | Pattern::Prefix(b)
            | Pattern::Suffix(b)
            | Pattern::Contains(b)
            | Pattern::Glob(_, b) => (!b.is_empty()).then(|| b.clone()),
            Pattern::Anything => None,
        };
        let mut all: Vec<Vec<u8>> = ac.iter().flat_map(|(_, subs)| subs.iter().cloned()).collect();
        match mode {
            Mode::Any => {
                for p in patterns {
                    all.push(literal(p)?);
                }
            }
            Mode::All => all = vec![patterns.iter().filter_map(literal).max_by_key(Vec::len)?],
        }
        (!all.is_empty() && all.iter().all(|l| !l.is_empty())).then(|| (self.paths.clone(), all))
    }

    /// Whether the event satisfies the test. Keyword tests (several paths) search them all.
    pub fn eval(&self, lookup: &Lookup<'_>, keyword: bool) -> bool {
        let event = lookup.event;
        if keyword {
            return self.paths.iter().any(|p| match p.get(event) {
                Some(FieldValue::Json(Value::Object(map))) => map.values().any(|v| match v {
                    Value::String(s) => self.test.eval_text(s.as_bytes(), event),
                    _ => false,
                }),
                Some(v) => self.eval_value(&v, event),
                None => false,
            });
        }
        let value = lookup.get(&self.paths);
        match (&self.test, value) {
            (Test::Null, v) => v.is_none(),
            (Test::Exists(want), v) => v.is_some() == *want,
            (_, None) => false,
            (_, Some(v)) => self.eval_value(&v, event),
        }
    }

    fn eval_value(&self, value: &FieldValue<'_>, event: &SecurityEvent) -> bool {
        match value {
            FieldValue::List(items) => items.iter().any(|i| self.test.eval_text(i.as_bytes(), event)),
            FieldValue::Json(Value::Array(items)) => items.iter().any(|i| match i {
                Value::String(s) => self.test.eval_text(s.as_bytes(), event),
                Value::Null => false,
                other => self.test.eval_text(other.to_string().as_bytes(), event),
            }),
            FieldValue::Time(t) if matches!(self.test, Test::Time { .. }) => self.test.eval_time(*t),
            other => self.test.eval_text(other.to_text().as_bytes(), event),
        }
    }
}

fn compile_test(modifiers: &[&str], values: &[&Value], fields: &dyn Fields) -> Result<Test, Refusal> {
    let mut mode = Mode::Any;
    let mut cased = false;
    let mut shape = Shape::Eq;
    let mut transforms: Vec<&str> = Vec::new();
    let mut regex_flags = String::new();
    let mut special: Option<&str> = None;
    for m in modifiers {
        match *m {
            "all" => mode = Mode::All,
            "cased" => cased = true,
            "contains" => shape = Shape::Contains,
            "startswith" => shape = Shape::Prefix,
            "endswith" => shape = Shape::Suffix,
            "base64" | "base64offset" | "utf16le" | "wide" | "utf16be" | "utf16" | "windash" | "expand" => {
                transforms.push(m)
            }
            "i" | "ignorecase" => regex_flags.push('i'),
            "m" | "multiline" => regex_flags.push('m'),
            "s" | "dotall" => regex_flags.push('s'),
            "re" | "cidr" | "exists" | "gt" | "gte" | "lt" | "lte" | "fieldref" | "minute" | "hour" | "day"
            | "week" | "month" | "year" => {
                if let Some(other) = special {
                    return Err(format!("modifiers `{other}` and `{m}` cannot be combined"));
                }
                special = Some(m);
            }
            other => return Err(format!("unknown value modifier `{other}`")),
        }
    }
    if !regex_flags.is_empty() && special != Some("re") {
        return Err(format!("regex flags `{regex_flags}` without `re`"));
    }
    if values.iter().any(|v| v.is_null()) {
        if values.len() == 1 && modifiers.is_empty() {
            return Ok(Test::Null);
        }
        return Err("null mixed with other values or modifiers".into());
    }
    let texts = || -> Result<Vec<String>, Refusal> {
        values.iter().map(|v| value_text(v).ok_or_else(|| format!("value {v} is not a string or number"))).collect()
    };
    match special {
        Some("exists") => {
            return match values {
                [Value::Bool(b)] => Ok(Test::Exists(*b)),
                _ => Err("exists takes true or false".into()),
            };
        }
        Some("re") => {
            let mut res = Vec::new();
            for text in texts()? {
                let flags = if regex_flags.is_empty() { String::new() } else { format!("(?{regex_flags})") };
                let re = regex::bytes::RegexBuilder::new(&format!("{flags}{text}"))
                    .size_limit(1 << 22)
                    .build()
                    .map_err(|e| format!("re `{text}`: {}", e.to_string().lines().last().unwrap_or("invalid")))?;
                res.push(re);
            }
            return Ok(Test::Regex { mode, res });
        }
        Some("cidr") => {
            let nets = texts()?
                .iter()
                .map(|t| {
                    t.parse::<IpNet>()
                        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("cidr `{t}` is not a network"))
                })
                .collect::<Result<_, _>>()?;
            return Ok(Test::Cidr { mode, nets });
        }
        Some(op @ ("gt" | "gte" | "lt" | "lte")) => {
            let op = match op {
                "gt" => Num::Gt,
                "gte" => Num::Ge,
                "lt" => Num::Lt,
                _ => Num::Le,
            };
            let values = texts()?
                .iter()
                .map(|t| t.parse::<f64>().map_err(|_| format!("{op:?} needs a number, not `{t}`")))
                .collect::<Result<_, _>>()?;
            return Ok(Test::Number { mode, op, values });
        }
        Some("fieldref") => {
            let others = texts()?.iter().map(|t| fields.resolve(t)).collect::<Result<_, _>>()?;
            return Ok(Test::FieldRef { mode, shape, cased, others });
        }
        Some(part @ ("minute" | "hour" | "day" | "week" | "month" | "year")) => {
            let part = match part {
                "minute" => TimePart::Minute,
                "hour" => TimePart::Hour,
                "day" => TimePart::Day,
                "week" => TimePart::Week,
                "month" => TimePart::Month,
                _ => TimePart::Year,
            };
            let values = texts()?
                .iter()
                .map(|t| t.parse::<i64>().map_err(|_| format!("{t} is not a number")))
                .collect::<Result<_, _>>()?;
            return Ok(Test::Time { part, values });
        }
        _ => {}
    }
    let mut all: Vec<Toks> = Vec::new();
    for text in texts()? {
        let mut variants = vec![tokens(&text)];
        for t in &transforms {
            let mut next = Vec::new();
            for toks in variants {
                match *t {
                    "base64" | "base64offset" if has_wildcards(&toks) => {
                        return Err(format!("{t} of a value with wildcards (`{text}`)"));
                    }
                    "base64" => next.push(vec![Tok::Text(
                        base64::engine::general_purpose::STANDARD.encode(text_of(&toks)).into_bytes(),
                    )]),
                    "base64offset" => {
                        next.extend(base64_offsets(&text_of(&toks)).into_iter().map(|b| vec![Tok::Text(b)]))
                    }
                    "utf16le" | "wide" => next.push(utf16(toks, true, false)),
                    "utf16be" => next.push(utf16(toks, false, false)),
                    "utf16" => next.push(utf16(toks, true, true)),
                    "windash" => next.extend(windash(toks)?),
                    _ => next.extend(expand(toks, fields)?),
                }
            }
            variants = next;
        }
        all.extend(variants);
    }
    // A `base64offset` list is the alternatives of one value: `all` applies across values.
    let alternatives_per_value = transforms.iter().any(|t| matches!(*t, "base64offset" | "windash" | "expand"));
    if mode == Mode::All && alternatives_per_value {
        return Err("all with base64offset, windash or expand (one value has several forms)".into());
    }
    let shaped = all.into_iter().map(|mut toks| {
        if matches!(shape, Shape::Contains | Shape::Suffix) && toks.first() != Some(&Tok::Many) {
            toks.insert(0, Tok::Many);
        }
        if matches!(shape, Shape::Contains | Shape::Prefix) && toks.last() != Some(&Tok::Many) {
            toks.push(Tok::Many);
        }
        toks
    });
    let patterns: Vec<Pattern> = shaped.map(|t| Pattern::of(t, cased)).collect::<Result<_, _>>()?;
    let substrings: Vec<&[u8]> =
        patterns.iter().filter_map(|p| if let Pattern::Contains(b) = p { Some(b.as_slice()) } else { None }).collect();
    let ac = if mode == Mode::Any && substrings.len() >= 4 {
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(!cased)
            .build(&substrings)
            .map_err(|e| format!("too many substrings: {e}"))?;
        Some((ac, substrings.iter().map(|s| s.to_vec()).collect()))
    } else {
        None
    };
    let patterns = if ac.is_some() {
        patterns.into_iter().filter(|p| !matches!(p, Pattern::Contains(_))).collect()
    } else {
        patterns
    };
    Ok(Test::Text { mode, cased, patterns, ac })
}

fn number_of(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?.trim();
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok().map(|n| n as f64);
    }
    text.parse::<f64>().ok()
}

fn all_or_any<T>(mode: Mode, items: &[T], f: impl Fn(&T) -> bool) -> bool {
    match mode {
        Mode::Any => items.iter().any(f),
        Mode::All => !items.is_empty() && items.iter().all(f),
    }
}

impl Test {
    fn eval_text(&self, text: &[u8], event: &SecurityEvent) -> bool {
        match self {
            Self::Null => false,
            Self::Exists(want) => *want,
            Self::Text { mode, cased, patterns, ac } => {
                if let Some((ac, _)) = ac
                    && ac.is_match(text)
                {
                    return true;
                }
                all_or_any(*mode, patterns, |p| p.matches(text, *cased))
            }
            Self::Regex { mode, res } => all_or_any(*mode, res, |re| re.is_match(text)),
            Self::Cidr { mode, nets } => match std::str::from_utf8(text).ok().and_then(|t| t.parse::<IpAddr>().ok()) {
                Some(ip) => all_or_any(*mode, nets, |n| n.contains(&ip)),
                None => false,
            },
            Self::Number { mode, op, values } => match number_of(text) {
                Some(n) => all_or_any(*mode, values, |v| match op {
                    Num::Gt => n > *v,
                    Num::Ge => n >= *v,
                    Num::Lt => n < *v,
                    Num::Le => n <= *v,
                }),
                None => false,
            },
            Self::FieldRef { mode, shape, cased, others } => all_or_any(*mode, others, |paths| {
                let Some(other) = paths.iter().find_map(|p| p.get(event)) else { return false };
                let other = other.to_text();
                let other = other.as_bytes();
                match shape {
                    Shape::Eq => eq(text, other, *cased),
                    Shape::Contains => ascii_find(text, other, *cased),
                    Shape::Prefix => text.len() >= other.len() && eq(&text[..other.len()], other, *cased),
                    Shape::Suffix => text.len() >= other.len() && eq(&text[text.len() - other.len()..], other, *cased),
                }
            }),
            Self::Time { .. } => std::str::from_utf8(text)
                .ok()
                .and_then(|t| {
                    DateTime::parse_from_rfc3339(t).map(|d| d.with_timezone(&Utc)).ok().or_else(|| {
                        chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").ok().map(|n| n.and_utc())
                    })
                })
                .is_some_and(|t| self.eval_time(t)),
        }
    }

    fn eval_time(&self, t: DateTime<Utc>) -> bool {
        let Self::Time { part, values } = self else { return false };
        let n = i64::from(match part {
            TimePart::Minute => t.minute(),
            TimePart::Hour => t.hour(),
            TimePart::Day => t.day(),
            TimePart::Week => t.iso_week().week(),
            TimePart::Month => t.month(),
            TimePart::Year => t.year().unsigned_abs(),
        });
        values.contains(&n)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// Sigma names as `attributes.w.<name>`; one placeholder, `%Admins%`.
    pub(in crate::rules::sigma) struct Flat;
    impl Fields for Flat {
        fn resolve(&self, name: &str) -> Result<Arc<[FieldPath]>, Refusal> {
            FieldPath::parse(&format!("attributes.w.{name}")).map(|p| Arc::from(vec![p])).map_err(|e| e.to_string())
        }
        fn placeholder(&self, name: &str) -> Option<&[String]> {
            static ADMINS: std::sync::LazyLock<Vec<String>> =
                std::sync::LazyLock::new(|| vec!["alice".into(), "bob".into()]);
            (name == "Admins").then_some(ADMINS.as_slice())
        }
    }

    fn event(fields: Value) -> SecurityEvent {
        let mut e = SecurityEvent::new(crate::event::EventClass::Process, Utc::now());
        e.attributes.insert("w".into(), fields);
        e
    }

    fn hit(item: &str, value: Value, fields: Value) -> bool {
        let mut parts = item.split('|');
        let field = parts.next().unwrap_or_default();
        let mods: Vec<&str> = parts.collect();
        FieldTest::compile(field, &mods, &value, &Flat).expect("compiles").eval(&Lookup::new(&event(fields)), false)
    }

    #[test]
    fn plain_values_are_case_insensitive_and_whole() {
        assert!(hit("Image", json!("C:\\Windows\\cmd.exe"), json!({"Image": "c:\\windows\\CMD.EXE"})));
        assert!(!hit("Image", json!("cmd.exe"), json!({"Image": "c:\\windows\\cmd.exe"})));
        assert!(hit("Image", json!("*\\cmd.exe"), json!({"Image": "c:\\windows\\cmd.exe"})));
        assert!(hit("Image|endswith", json!("\\CMD.exe"), json!({"Image": "c:\\windows\\cmd.exe"})));
        assert!(!hit("Image|endswith|cased", json!("\\CMD.exe"), json!({"Image": "c:\\windows\\cmd.exe"})));
        assert!(hit("EventID", json!(4688), json!({"EventID": 4688})));
        assert!(hit("EventID", json!([1, 4688]), json!({"EventID": "4688"})));
        assert!(hit("X", json!("a?c"), json!({"X": "abc"})));
        assert!(!hit("X", json!("a\\?c"), json!({"X": "abc"})));
        assert!(hit("X", json!("a\\?c"), json!({"X": "a?c"})));
        assert!(hit("X", json!("a\\\\*"), json!({"X": "a\\zzz"})));
        assert!(hit("X", json!("ab*cd*ef"), json!({"X": "ABxxCDyyEF"})));
        assert!(hit("X", json!(""), json!({"X": ""})));
        assert!(hit("X", Value::Null, json!({})));
        assert!(!hit("X", Value::Null, json!({"X": "a"})));
    }

    #[test]
    fn lists_any_and_all() {
        let many = json!(["alpha", "beta", "gamma", "delta", "eps"]);
        assert!(hit("C|contains", many.clone(), json!({"C": "x GAMMA y"})));
        assert!(!hit("C|contains", many, json!({"C": "x y"})));
        assert!(hit("C|contains|all", json!(["-enc", "hidden"]), json!({"C": "ps -Enc xx -w Hidden"})));
        assert!(!hit("C|contains|all", json!(["-enc", "hidden"]), json!({"C": "ps -Enc xx"})));
    }

    #[test]
    fn encodings() {
        // base64offset of "http://" in each alignment, as pySigma produces them.
        let encoded = base64_offsets(b"http://");
        assert_eq!(encoded, vec![b"aHR0cDovL".to_vec(), b"h0dHA6Ly".to_vec(), b"odHRwOi8v".to_vec()]);
        let b64 = base64::engine::general_purpose::STANDARD.encode("xx http://evil");
        assert!(hit("C|base64offset|contains", json!("http://"), json!({"C": b64})));
        assert!(hit("C|base64", json!("abc"), json!({"C": "YWJj"})));
        let wide = base64::engine::general_purpose::STANDARD
            .encode("  ping".encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>());
        assert!(hit("C|wide|base64offset|contains", json!("ping"), json!({"C": wide})));
        assert!(hit("C|windash|contains", json!(" -enc "), json!({"C": "powershell /enc abc"})));
        assert!(hit("C|windash|contains", json!(" -enc "), json!({"C": "powershell \u{2013}enc abc"})));
        assert!(!hit("C|windash|contains", json!("a-b"), json!({"C": "a/b"})));
    }

    #[test]
    fn special_modifiers() {
        assert!(hit("C|re", json!("^a.c$"), json!({"C": "abc"})));
        assert!(!hit("C|re", json!("^A.C$"), json!({"C": "abc"})));
        assert!(hit("C|re|i", json!("^A.C$"), json!({"C": "abc"})));
        assert!(hit("Ip|cidr", json!(["10.0.0.0/8", "192.168.0.0/16"]), json!({"Ip": "192.168.1.5"})));
        assert!(!hit("Ip|cidr", json!("10.0.0.0/8"), json!({"Ip": "11.0.0.1"})));
        assert!(hit("X|exists", json!(true), json!({"X": "1"})));
        assert!(hit("X|exists", json!(false), json!({})));
        assert!(hit("N|gt", json!(10), json!({"N": 11})));
        assert!(!hit("N|gte", json!(10), json!({"N": "9"})));
        assert!(hit("N|lte", json!(10), json!({"N": "0x0a"})));
        assert!(hit("A|fieldref", json!("B"), json!({"A": "Same", "B": "same"})));
        assert!(!hit("A|fieldref", json!("B"), json!({"A": "x", "B": "y"})));
        assert!(hit("A|fieldref|endswith", json!("B"), json!({"A": "c:\\x\\y.exe", "B": "y.exe"})));
        assert!(hit("T|hour", json!([22, 23]), json!({"T": "2024-01-01T23:10:00Z"})));
        assert!(hit("U|expand", json!("%Admins%"), json!({"U": "BOB"})));
    }

    #[test]
    fn refusals_name_the_construct() {
        let refuse = |item: &str, value: Value| {
            let mut parts = item.split('|');
            let field = parts.next().unwrap_or_default();
            let mods: Vec<&str> = parts.collect();
            FieldTest::compile(field, &mods, &value, &Flat).expect_err("refused")
        };
        assert!(refuse("C|frobnicate", json!("x")).contains("unknown value modifier `frobnicate`"));
        assert!(refuse("C|re", json!("(")).starts_with("re `(`"));
        assert!(refuse("C|cidr", json!("nope")).contains("not a network"));
        assert!(refuse("C|base64", json!("a*")).contains("wildcards"));
        assert!(refuse("U|expand", json!("%Nobody%")).contains("%Nobody%"));
        assert!(refuse("C|re|cidr", json!("x")).contains("cannot be combined"));
    }
}
