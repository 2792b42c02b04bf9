//! Reading a JSON record once: the values at a decoder's mapped paths, and everything else
//! nested as it was, in one pass over the text.
//!
//! A decoder that keeps only the fields it does not map (ECS keeps them under
//! `attributes.ecs`) would otherwise parse the whole record into a tree, look each mapped
//! path up in it, and rebuild the rest. [`Paths::read`] does all three while the text is
//! parsed: each key's dotted path (`source.ip` whether the keys are nested, dotted or
//! both) is looked up in a hash table compiled once; a mapped path's value is taken whole
//! (an object too, like ECS `labels`), and only the rest is built into objects. Paths
//! through arrays (`queries.0.name`) are not followed: an array is one value.

use std::fmt;

use rustc_hash::FxHashMap;
use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The paths a decoder reads, compiled.
pub struct Paths {
    /// Each path, its slot, and whether its value also stays in the rest.
    index: FxHashMap<&'static str, (usize, bool)>,
    slots: usize,
}

/// One record read against [`Paths`].
pub struct Picked<'p> {
    paths: &'p Paths,
    values: Vec<Option<Value>>,
    /// The record's fields at no taken path, nested by their keys.
    pub rest: Map<String, Value>,
}

impl Paths {
    /// `taken` paths are removed from the rest; `kept` ones are read and also stay in it.
    /// Slots are numbered in order, taken paths first. The lists come from a decoder's
    /// static tables: a path given twice is a mistake in them (its second slot would never
    /// fill), so it panics, on the first use of the table.
    pub fn new(taken: &[&'static str], kept: &[&'static str]) -> Self {
        let mut index = FxHashMap::default();
        for (slot, (path, keep)) in taken.iter().map(|p| (*p, false)).chain(kept.iter().map(|p| (*p, true))).enumerate()
        {
            assert!(index.insert(path, (slot, keep)).is_none(), "the path `{path}` is given twice");
        }
        Self { index, slots: taken.len() + kept.len() }
    }

    /// Reads one JSON object from `deserializer` (JSON text, or a parsed [`Value`]).
    pub fn read<'de, D: Deserializer<'de>>(&self, deserializer: D) -> Result<Picked<'_>, D::Error> {
        let mut values = vec![None; self.slots];
        let mut prefix = String::with_capacity(64);
        let object =
            deserializer.deserialize_map(ObjectVisitor { paths: self, prefix: &mut prefix, values: &mut values })?;
        Ok(Picked { paths: self, values, rest: object.rest })
    }

    /// [`Paths::read`] over JSON text, which must hold one object and nothing after it.
    pub fn read_str(&self, text: &str) -> Result<Picked<'_>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let picked = self.read(&mut de)?;
        de.end()?;
        Ok(picked)
    }
}

impl Picked<'_> {
    /// The value at `path`, one of the paths given to [`Paths::new`].
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.paths.index.get(path).and_then(|&(slot, _)| self.at(slot))
    }

    /// The string at `path`, trimmed (blank and `-` are absent).
    pub fn str(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty() && *s != "-")
    }

    /// Takes the value at `path`.
    pub fn remove(&mut self, path: &str) -> Option<Value> {
        let slot = self.paths.index.get(path)?.0;
        self.take(slot)
    }

    /// The value at slot `slot` (the order given to [`Paths::new`]).
    pub fn at(&self, slot: usize) -> Option<&Value> {
        self.values.get(slot).and_then(Option::as_ref)
    }

    /// Takes the value at slot `slot`.
    pub fn take(&mut self, slot: usize) -> Option<Value> {
        self.values.get_mut(slot).and_then(Option::take)
    }
}

/// An object's unmapped content, and whether it had any entries at all (an empty object
/// is kept as one; an object whose every field was taken is not).
struct Object {
    rest: Map<String, Value>,
    had_entries: bool,
}

/// Reads an object: the paths to take, the dotted path of the object being read, and the
/// taken values so far.
struct ObjectVisitor<'a> {
    paths: &'a Paths,
    prefix: &'a mut String,
    values: &'a mut Vec<Option<Value>>,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
        let mut rest = Map::new();
        let mut had_entries = false;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            had_entries = true;
            let len = self.prefix.len();
            if len > 0 {
                self.prefix.push('.');
            }
            self.prefix.push_str(key.as_str());
            match self.paths.index.get(self.prefix.as_str()) {
                Some(&(slot, keep)) => {
                    let value: Value = map.next_value()?;
                    if keep {
                        nest(&mut rest, key.as_str(), value.clone());
                    }
                    // The first of two spellings of one path (nested and dotted) wins.
                    self.values[slot].get_or_insert(value);
                }
                None => {
                    let node = map.next_value_seed(NodeSeed(ObjectVisitor {
                        paths: self.paths,
                        prefix: &mut *self.prefix,
                        values: &mut *self.values,
                    }))?;
                    match node {
                        Node::Leaf(value) => nest(&mut rest, key.as_str(), value),
                        Node::Object(Object { rest: inner, had_entries }) => {
                            if !inner.is_empty() || !had_entries {
                                nest(&mut rest, key.as_str(), Value::Object(inner));
                            }
                        }
                    }
                }
            }
            self.prefix.truncate(len);
        }
        Ok(Object { rest, had_entries })
    }
}

/// Inserts `value` at a key that may itself be dotted (`agent.type`), into the objects
/// already there: `{"agent": {…}}` and `"agent.type"` in one record end up in one object.
fn nest(map: &mut Map<String, Value>, key: &str, value: Value) {
    let (head, tail) = match key.split_once('.') {
        Some((head, tail)) if !head.is_empty() && !tail.is_empty() => (head, Some(tail)),
        _ => (key, None),
    };
    let Some(slot) = map.get_mut(head) else {
        let value = match tail {
            None => value,
            Some(tail) => {
                let mut inner = Map::new();
                nest(&mut inner, tail, value);
                Value::Object(inner)
            }
        };
        map.insert(head.to_owned(), value);
        return;
    };
    if !slot.is_object() {
        // A leaf and an object at one path (`a: 1` and `a.b: 2`): keep both.
        let leaf = std::mem::replace(slot, Value::Object(Map::new()));
        if let Value::Object(m) = slot {
            m.insert("value".into(), leaf);
        }
    }
    let Value::Object(inner) = slot else { unreachable!("made an object above") };
    match (tail, value) {
        (Some(tail), value) => nest(inner, tail, value),
        (None, Value::Object(entries)) => {
            for (k, v) in entries {
                nest(inner, &k, v);
            }
        }
        (None, leaf) => {
            inner.insert("value".into(), leaf);
        }
    }
}

/// An object key, borrowed from the text when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v))
    }
}

/// A value at a path no decoder takes: an object is read on (its fields may be taken), any
/// other value is built as it is.
enum Node {
    Leaf(Value),
    Object(Object),
}

/// Reads a value at an untaken path, with the object reader's state.
struct NodeSeed<'a>(ObjectVisitor<'a>);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Node, A::Error> {
        self.0.visit_map(map).map(Node::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Node::Leaf(Value::Array(items)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Leaf(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Leaf(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Leaf(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Leaf(Number::from_f64(v).map_or(Value::Null, Value::Number)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Leaf(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Leaf(Value::String(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_pass_gives_the_taken_values_and_the_rest_as_it_was_nested() {
        let paths = Paths::new(&["source.ip", "user.target.name", "labels"], &["host.hostname"]);
        let text = r#"{"source": {"ip": "10.0.0.1", "geo": {"city": "Lyon"}}, "user": {"target.name": "bob"},
            "labels": {"env": "prod"}, "host.hostname": "web1", "agent.type": "filebeat",
            "agent": {"id": "a1"}, "empty": {}, "list": [1, {"a": 2}], "n": null, "f": 1.5,
            "esc\"aped": "x"}"#;
        for picked in [
            paths.read_str(text).expect("reads"),
            paths.read(serde_json::from_str::<Value>(text).expect("parses")).expect("reads a tree"),
        ] {
            assert_eq!(picked.at(0), Some(&json!("10.0.0.1")));
            assert_eq!(picked.at(1), Some(&json!("bob")));
            assert_eq!(picked.at(2), Some(&json!({ "env": "prod" })));
            assert_eq!(picked.at(3), Some(&json!("web1")));
            assert_eq!((picked.str("user.target.name"), picked.get("absent.path")), (Some("bob"), None));
            assert_eq!(
                Value::Object(picked.rest),
                json!({ "source": { "geo": { "city": "Lyon" } }, "host": { "hostname": "web1" },
                    "agent": { "type": "filebeat", "id": "a1" }, "empty": {}, "list": [1, { "a": 2 }],
                    "n": null, "f": 1.5, "esc\"aped": "x" }),
                "the user object, emptied by the taken path, is gone; the kept path stays"
            );
        }
    }

    #[test]
    #[should_panic(expected = "the path `a.b` is given twice")]
    fn a_path_given_twice_is_a_mistake_in_the_tables() {
        Paths::new(&["a.b"], &["a.b"]);
    }

    #[test]
    fn what_is_not_one_object_is_refused() {
        let paths = Paths::new(&["a"], &[]);
        assert!(paths.read_str("[1]").is_err_and(|e| e.to_string().contains("expected a JSON object")));
        assert!(paths.read_str(r#"{"a": 1} {"b": 2}"#).is_err_and(|e| e.to_string().contains("trailing")));
        assert!(paths.read_str(r#"{"a": "#).is_err());
    }
}
