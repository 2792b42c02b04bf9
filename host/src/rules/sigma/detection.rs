//! A Sigma `detection`: named selections and the `condition` that joins them, compiled to
//! one tree of native field tests.
//!
//! Selections follow the specification: a map is the conjunction of its items, a list of
//! maps the disjunction of those, a list of bare values a keyword search. The condition
//! language is `and`, `or`, `not`, parentheses, and `1 of` / `all of` / `N of` over a
//! selection name, a `*` pattern of names, or `them` (every selection whose name does not
//! start with `_`). A list of conditions is their disjunction.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::value::{FieldTest, Fields, Lookup, Refusal};
use crate::event::FieldPath;

/// A field (its candidate paths) and a substring its text must contain.
pub type Needle = (Arc<[FieldPath]>, Vec<u8>);

/// A compiled condition.
#[derive(Clone, Debug)]
pub enum Node {
    /// A constant (an empty `all of`).
    Const(bool),
    /// All of them.
    And(Vec<Node>),
    /// Any of them.
    Or(Vec<Node>),
    /// Not it.
    Not(Box<Node>),
    /// One field test.
    Field(Arc<FieldTest>),
    /// A keyword search over the logsource's text fields.
    Keyword(Arc<FieldTest>),
    /// The condition over each element of a list the event holds (auditd's records): true
    /// when one element, read as an event of its own ([`Lookup::any_record`]), satisfies it.
    Each(FieldPath, Box<Node>),
}

impl Node {
    /// Whether `event` satisfies the condition.
    pub fn eval(&self, event: &Lookup<'_>) -> bool {
        match self {
            Self::Const(b) => *b,
            Self::And(items) => items.iter().all(|n| n.eval(event)),
            Self::Or(items) => items.iter().any(|n| n.eval(event)),
            Self::Not(inner) => !inner.eval(event),
            Self::Field(test) => test.eval(event, false),
            Self::Keyword(test) => test.eval(event, true),
            Self::Each(path, inner) => event.any_record(path, |record| inner.eval(record)),
        }
    }

    /// Field tests in the tree (for cost reports).
    pub fn size(&self) -> usize {
        match self {
            Self::Const(_) => 0,
            Self::And(items) | Self::Or(items) => items.iter().map(Node::size).sum(),
            Self::Not(inner) | Self::Each(_, inner) => inner.size(),
            Self::Field(_) | Self::Keyword(_) => 1,
        }
    }

    /// The values `path` must hold (lowercased) for the condition to be true, when the
    /// condition pins them: a conjunct equality, or one in every alternative.
    pub fn required(&self, path: &FieldPath) -> Option<Vec<Vec<u8>>> {
        match self {
            Self::Field(test) => test.exact_values(path),
            Self::And(items) => items.iter().find_map(|n| n.required(path)),
            Self::Or(items) => {
                let mut all = Vec::new();
                for item in items {
                    all.extend(item.required(path)?);
                }
                Some(all)
            }
            _ => None,
        }
    }

    /// (field, substring) pairs one of which an event must show (its field's text
    /// containing the substring) for the condition to be true; `None` when no such set is
    /// known. A conjunction takes its most selective part, a disjunction the union.
    pub fn requirement(&self) -> Option<Vec<Needle>> {
        match self {
            Self::Field(test) => {
                let (paths, literals) = test.literals()?;
                Some(literals.into_iter().map(|l| (paths.clone(), l)).collect())
            }
            Self::And(items) => items
                .iter()
                .filter_map(Node::requirement)
                .max_by_key(|r| (r.iter().map(|(_, l)| l.len()).min().unwrap_or(0).min(8), std::cmp::Reverse(r.len()))),
            Self::Or(items) => {
                let mut all = Vec::new();
                for item in items {
                    all.extend(item.requirement()?);
                }
                Some(all)
            }
            _ => None,
        }
    }

    fn and(mut items: Vec<Node>) -> Node {
        if items.len() == 1 { items.remove(0) } else { Node::And(items) }
    }

    fn or(mut items: Vec<Node>) -> Node {
        if items.len() == 1 { items.remove(0) } else { Node::Or(items) }
    }
}

/// Compiles a selection map: `field|mods: value` items, all of which must hold.
pub fn compile_map(
    map: &serde_json::Map<String, Value>,
    fields: &dyn Fields,
    keywords: &Arc<[FieldPath]>,
) -> Result<Node, Refusal> {
    let mut items = Vec::with_capacity(map.len());
    for (key, value) in map {
        let mut parts = key.split('|');
        let field = parts.next().unwrap_or_default();
        let modifiers: Vec<&str> = parts.collect();
        let located = |e: Refusal| format!("`{key}`: {e}");
        if field.is_empty() {
            let values: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            let test = FieldTest::keywords(keywords.clone(), &modifiers, &values).map_err(located)?;
            items.push(Node::Keyword(Arc::new(test)));
        } else {
            let test = FieldTest::compile(field, &modifiers, value, fields).map_err(located)?;
            items.push(Node::Field(Arc::new(test)));
        }
    }
    if items.is_empty() {
        return Err("an empty selection".into());
    }
    Ok(Node::and(items))
}

fn compile_selection(value: &Value, fields: &dyn Fields, keywords: &Arc<[FieldPath]>) -> Result<Node, Refusal> {
    match value {
        Value::Object(map) => compile_map(map, fields, keywords),
        Value::Array(items) if items.is_empty() => Err("an empty list".into()),
        Value::Array(items) => {
            let mut alternatives = Vec::new();
            let mut bare: Vec<&Value> = Vec::new();
            for item in items {
                match item {
                    Value::Object(map) => alternatives.push(compile_map(map, fields, keywords)?),
                    Value::Array(_) => return Err("a list nested in a list".into()),
                    scalar => bare.push(scalar),
                }
            }
            if !bare.is_empty() {
                alternatives.push(Node::Keyword(Arc::new(FieldTest::keywords(keywords.clone(), &[], &bare)?)));
            }
            Ok(Node::or(alternatives))
        }
        Value::Null => Err("a selection that is null".into()),
        scalar => Ok(Node::Keyword(Arc::new(FieldTest::keywords(keywords.clone(), &[], &[scalar])?))),
    }
}

/// Compiles a whole `detection` section.
pub fn compile(detection: &Value, fields: &dyn Fields, keywords: &Arc<[FieldPath]>) -> Result<Node, Refusal> {
    let Value::Object(map) = detection else { return Err("detection must be a map".into()) };
    let mut selections = BTreeMap::new();
    for (name, value) in map {
        match name.as_str() {
            "condition" => {}
            "timeframe" => return Err("`timeframe` (Sigma 1 aggregation): write a correlation rule".into()),
            _ => {
                let node =
                    compile_selection(value, fields, keywords).map_err(|e| format!("selection `{name}`: {e}"))?;
                selections.insert(name.clone(), node);
            }
        }
    }
    let conditions: Vec<&str> = match map.get("condition") {
        Some(Value::String(c)) => vec![c.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| c.as_str().ok_or_else(|| "condition list of non-strings".to_owned()))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("condition must be a string".into()),
        None => return Err("detection has no condition".into()),
    };
    let mut roots = Vec::new();
    for condition in conditions {
        if condition.contains('|') {
            return Err(format!(
                "condition `{condition}`: aggregations (`| count() …`, Sigma 1) are written as correlation rules"
            ));
        }
        let tokens = lex(condition);
        let mut parser = Parser { tokens: &tokens, at: 0, selections: &selections };
        let node = parser.or().map_err(|e| format!("condition `{condition}`: {e}"))?;
        if parser.at != tokens.len() {
            return Err(format!("condition `{condition}`: unexpected `{}`", tokens[parser.at]));
        }
        roots.push(node);
    }
    Ok(Node::or(roots))
}

fn lex(condition: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in condition.chars() {
        match c {
            '(' | ')' => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

struct Parser<'a> {
    tokens: &'a [String],
    at: usize,
    selections: &'a BTreeMap<String, Node>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn keyword(&self, word: &str) -> bool {
        self.peek().is_some_and(|t| t.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Node, Refusal> {
        let mut items = vec![self.and()?];
        while self.keyword("or") {
            self.at += 1;
            items.push(self.and()?);
        }
        Ok(Node::or(items))
    }

    fn and(&mut self) -> Result<Node, Refusal> {
        let mut items = vec![self.not()?];
        while self.keyword("and") {
            self.at += 1;
            items.push(self.not()?);
        }
        Ok(Node::and(items))
    }

    fn not(&mut self) -> Result<Node, Refusal> {
        if self.keyword("not") {
            self.at += 1;
            return Ok(Node::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Node, Refusal> {
        let Some(token) = self.peek().map(str::to_owned) else { return Err("ends too early".into()) };
        self.at += 1;
        if token == "(" {
            let inner = self.or()?;
            if self.peek() != Some(")") {
                return Err("a `(` is not closed".into());
            }
            self.at += 1;
            return Ok(inner);
        }
        if self.keyword("of") {
            self.at += 1;
            let Some(target) = self.peek().map(str::to_owned) else {
                return Err(format!("`{token} of` names nothing"));
            };
            self.at += 1;
            let names: Vec<&String> = if target.eq_ignore_ascii_case("them") {
                self.selections.keys().filter(|n| !n.starts_with('_')).collect()
            } else {
                self.selections.keys().filter(|n| glob(&target, n)).collect()
            };
            if names.is_empty() {
                return Err(format!("`{token} of {target}` matches no selection"));
            }
            let nodes: Vec<Node> = names.iter().map(|n| self.selections[*n].clone()).collect();
            return match token.to_ascii_lowercase().as_str() {
                "all" => Ok(Node::and(nodes)),
                "1" | "any" => Ok(Node::or(nodes)),
                n => match n.parse::<usize>() {
                    Ok(k) if k > 0 && k <= nodes.len() => Ok(at_least(k, &nodes)),
                    _ => Err(format!("`{token} of`: the count must be 1..{}", nodes.len())),
                },
            };
        }
        match token.as_str() {
            ")" => Err("an unexpected `)`".into()),
            t if ["and", "or", "not"].iter().any(|k| t.eq_ignore_ascii_case(k)) => {
                Err(format!("`{t}` without an operand"))
            }
            name => self.selections.get(name).cloned().ok_or_else(|| format!("no selection named `{name}`")),
        }
    }
}

/// At least `k` of `nodes`: the disjunction of every k-combination (k and n are small).
fn at_least(k: usize, nodes: &[Node]) -> Node {
    if k == 1 {
        return Node::or(nodes.to_vec());
    }
    if k == nodes.len() {
        return Node::and(nodes.to_vec());
    }
    let mut alternatives = Vec::new();
    for (i, first) in nodes.iter().enumerate().take(nodes.len() - k + 1) {
        alternatives.push(Node::And(vec![first.clone(), at_least(k - 1, &nodes[i + 1..])]));
    }
    Node::or(alternatives)
}

/// Sigma's name patterns: `*` any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else { return false };
            if tail.is_empty() {
                return true;
            }
            (0..=rest.len()).filter(|&i| rest.is_char_boundary(i)).any(|i| glob(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::value::tests::Flat;
    use super::*;
    use crate::event::SecurityEvent;
    use chrono::Utc;
    use serde_json::json;

    fn check(detection: Value, fields: Value) -> bool {
        let keywords: Arc<[FieldPath]> = Arc::from(vec![FieldPath::parse("attributes.w").expect("path")]);
        let node = compile(&detection, &Flat, &keywords).expect("compiles");
        let mut e = SecurityEvent::new(crate::event::EventClass::Process, Utc::now());
        e.attributes.insert("w".into(), fields);
        node.eval(&Lookup::new(&e))
    }

    #[test]
    fn each_reads_one_element_at_a_time() {
        // auditd's records: the selections of a rule hold for one record, not across them.
        let detection = json!({ "exec": { "type": "EXECVE", "a0": "dd" }, "keys": { "|all": ["dd", "if="] },
                                "condition": "exec and keys" });
        let keywords: Arc<[FieldPath]> = Arc::from(vec![FieldPath::parse("attributes.record_line").expect("path")]);
        let under = super::super::pipeline::tests::under("attributes.record");
        let node = Node::Each(
            FieldPath::parse("attributes.a.records").expect("path"),
            Box::new(compile(&detection, &under, &keywords).expect("compiles")),
        );
        let event = |records: Value| {
            let mut e = SecurityEvent::new(crate::event::EventClass::Process, Utc::now());
            e.attributes.insert("a".into(), json!({ "records": records }));
            e
        };
        let exec = json!({ "type": "EXECVE", "fields": { "argc": "2", "a0": "dd", "a1": "if=/dev/zero" } });
        let syscall = json!({ "type": "SYSCALL", "fields": { "comm": "dd" } });
        assert!(node.eval(&Lookup::new(&event(json!([syscall.clone(), exec])))));
        // `type` of one record, `a0` and `if=` of another: no match.
        let split = json!([{ "type": "EXECVE", "fields": { "a0": "ls" } }, { "type": "PATH", "fields": { "a0": "dd", "name": "if=" } }]);
        assert!(!node.eval(&Lookup::new(&event(split))));
        assert!(!node.eval(&Lookup::new(&event(json!([syscall])))));
        assert!(!node.eval(&Lookup::new(&event(json!("not a list")))));
    }

    #[test]
    fn conditions() {
        let d = json!({
            "selection_img": [{"Image|endswith": "\\cmd.exe"}, {"OriginalFileName": "Cmd.Exe"}],
            "selection_cli": {"CommandLine|contains": ["/c", "/k"]},
            "filter_main": {"ParentImage|endswith": "\\explorer.exe"},
            "condition": "all of selection_* and not 1 of filter_*"
        });
        assert!(check(
            d.clone(),
            json!({"Image": "C:\\cmd.exe", "CommandLine": "cmd /c x", "ParentImage": "C:\\w.exe"})
        ));
        assert!(!check(
            d.clone(),
            json!({"Image": "C:\\cmd.exe", "CommandLine": "cmd /c x", "ParentImage": "C:\\Explorer.exe"})
        ));
        assert!(!check(d, json!({"Image": "C:\\cmd.exe", "CommandLine": "cmd"})));
        let d = json!({"a": {"X": 1}, "b": {"Y": 2}, "c": {"Z": 3}, "condition": "2 of them"});
        assert!(check(d.clone(), json!({"X": 1, "Z": 3})));
        assert!(!check(d, json!({"X": 1})));
        let d = json!({"a": {"X": 1}, "b": {"Y": 2}, "condition": "a or (not b and not a)"});
        assert!(check(d.clone(), json!({})));
        assert!(!check(d, json!({"Y": 2})));
        let d = json!({"keywords": ["mimikatz", "sekurlsa"], "condition": "keywords"});
        assert!(check(d.clone(), json!({"CommandLine": "run SEKURLSA::logonpasswords"})));
        assert!(!check(d, json!({"CommandLine": "notepad"})));
    }

    #[test]
    fn refusals() {
        let keywords: Arc<[FieldPath]> = Arc::from(vec![]);
        let refuse = |d: Value| compile(&d, &Flat, &keywords).expect_err("refused");
        assert!(refuse(json!({"a": {"X": 1}, "condition": "a | count() > 5"})).contains("correlation"));
        assert!(refuse(json!({"a": {"X": 1}, "condition": "b"})).contains("no selection named `b`"));
        assert!(refuse(json!({"a": {"X": 1}, "condition": "(a"})).contains("not closed"));
        assert!(refuse(json!({"a": {"X": 1}, "condition": "1 of z*"})).contains("matches no selection"));
        assert!(refuse(json!({"a": {"X|nope": 1}, "condition": "a"})).contains("selection `a`: `X|nope`"));
        assert!(refuse(json!({"a": {"X": 1}})).contains("no condition"));
    }
}
