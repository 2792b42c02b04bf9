//! The JSON the `evtx` crate renders for a record (`{"Event": {"System": …,
//! "EventData": …}}`), read straight into the flat map of Windows names in one pass:
//! no tree of the whole record is built, only the values the flat map keeps.
//!
//! It gives the map [`super::flatten_json`] gives for the same text (a test holds the
//! two to that over every sample record); it exists because building the tree and then
//! taking it apart was most of the cost of reading an EVTX file.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::event::DecodeError;

/// The flat map of one record's evtx JSON text.
pub fn flatten(text: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    // About as many fields as a Security or Sysmon event has.
    let mut flat = Map::with_capacity(32);
    let mut de = serde_json::Deserializer::from_slice(text);
    de.deserialize_map(Root(&mut flat))
        .and_then(|()| de.end())
        .map_err(|e| DecodeError::unreadable("evtx", e.to_string()))?;
    Ok(flat)
}

/// A map key, borrowed from the text when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The visit methods of every value but a map: the value is built and handed to
/// `$take` (`|visitor, value| result`).
macro_rules! not_a_map {
    ($expecting:literal, $take:expr) => {
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str($expecting)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($take(self, Value::Null))
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok($take(self, Value::Bool(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok($take(self, Value::from(v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok($take(self, Value::from(v)))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok($take(self, Value::from(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok($take(self, Value::String(v.to_owned())))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Value>()? {
                items.push(item);
            }
            Ok($take(self, Value::Array(items)))
        }
    };
}

/// Visits the entries of a map; any other value is ignored.
macro_rules! map_only {
    ($expecting:literal) => {
        not_a_map!($expecting, |_, _| ());
    };
}

/// `{"Event": …}`.
struct Root<'m>(&'m mut Map<String, Value>);

impl<'de> Visitor<'de> for Root<'_> {
    type Value = ();
    map_only!("an evtx record");
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            if key == "Event" {
                map.next_value_seed(Seed(Event(&mut *self.0)))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A visitor used as a seed, read with `deserialize_any`.
struct Seed<V>(V);

impl<'de, V: Visitor<'de, Value = ()>> DeserializeSeed<'de> for Seed<V> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self.0)
    }
}

/// The `Event` element: `System`, then `EventData` or `UserData`.
struct Event<'m>(&'m mut Map<String, Value>);

impl<'de> Visitor<'de> for Event<'_> {
    type Value = ();
    map_only!("an Event element");
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "System" => map.next_value_seed(Seed(System(&mut *self.0)))?,
                "EventData" | "UserData" => map.next_value_seed(Data(&mut *self.0))?,
                _ => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        Ok(())
    }
}

/// The `System` element's children kept by their text.
const SYSTEM_TEXT: &[&str] =
    &["EventID", "Version", "Level", "Task", "Opcode", "Keywords", "EventRecordID", "Channel", "Computer"];

/// The `System` element's children kept by their attributes: element, (attribute, flat name).
const SYSTEM_ATTRIBUTES: &[(&str, &[(&str, &str)])] = &[
    ("Provider", &[("Name", "Provider_Name"), ("Guid", "Provider_Guid"), ("EventSourceName", "EventSourceName")]),
    ("TimeCreated", &[("SystemTime", "TimeCreated")]),
    ("Execution", &[("ProcessID", "ProcessID"), ("ThreadID", "ThreadID")]),
    ("Security", &[("UserID", "UserID")]),
    ("Correlation", &[("ActivityID", "ActivityID")]),
];

struct System<'m>(&'m mut Map<String, Value>);

impl<'de> Visitor<'de> for System<'_> {
    type Value = ();
    map_only!("a System element");
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            if let Some(name) = SYSTEM_TEXT.iter().find(|k| **k == key) {
                let value = map.next_value_seed(Text)?;
                put(self.0, name, value);
            } else if let Some((_, wanted)) = SYSTEM_ATTRIBUTES.iter().find(|(k, _)| *k == key) {
                map.next_value_seed(Seed(Element { flat: &mut *self.0, wanted }))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Inserts a value that is not null.
fn put(flat: &mut Map<String, Value>, name: &str, value: Option<Value>) {
    if let Some(value) = value.filter(|v| !v.is_null()) {
        flat.insert(name.to_owned(), value);
    }
}

/// An element's text: the value itself, or its `#text` when it has attributes.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Option<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Option<Value>;
    not_a_map!("an element's text", |_, v| Some(v));
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        let mut text = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == "#text" {
                text = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(text)
    }
}

/// An element whose wanted attributes (`#attributes`) are kept.
struct Element<'m> {
    flat: &'m mut Map<String, Value>,
    wanted: &'static [(&'static str, &'static str)],
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = ();
    map_only!("an element");
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            if key == "#attributes" {
                map.next_value_seed(Seed(Attributes { flat: &mut *self.flat, wanted: self.wanted }))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct Attributes<'m> {
    flat: &'m mut Map<String, Value>,
    wanted: &'static [(&'static str, &'static str)],
}

impl<'de> Visitor<'de> for Attributes<'_> {
    type Value = ();
    map_only!("attributes");
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            if let Some((_, name)) = self.wanted.iter().find(|(k, _)| *k == key) {
                let value = map.next_value::<Value>()?;
                put(self.flat, name, Some(value));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// `EventData` or `UserData`, as [`super::event_data`] reads them: each named field by
/// its name, a wrapper element's fields unwrapped, anything else as `Data`.
struct Data<'m>(&'m mut Map<String, Value>);

impl<'de> DeserializeSeed<'de> for Data<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Data<'_> {
    type Value = ();
    // Not a map: the whole value as `Data` (nothing for a null).
    not_a_map!("event data", |data: Data<'_>, v: Value| {
        if !v.is_null() {
            data.0.insert("Data".into(), v);
        }
    });
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            if key == "#attributes" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            super::data_field(key.into_owned(), map.next_value()?, self.0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use evtx::{EvtxParser, ParserSettings};

    /// Every EVTX file of the real samples (`inputs/windows-evtx`, SigmaHQ's regression data).
    fn samples() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
        let mut files = Vec::new();
        let mut stack = vec![root.join("inputs/windows-evtx"), root.join("sigma/regression_data")];
        while let Some(dir) = stack.pop() {
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("the real samples in {}: {e}", dir.display()));
            for path in entries.flatten().map(|e| e.path()) {
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "evtx") {
                    files.push(path);
                }
            }
        }
        files
    }

    #[test]
    fn gives_the_map_the_tree_gives_for_every_sample_record() {
        let (mut records, mut files) = (0, 0);
        for file in samples() {
            files += 1;
            let Ok(parser) = EvtxParser::from_path(&file) else { continue };
            let mut parser = parser.with_configuration(ParserSettings::new().num_threads(1).indent(false));
            for record in parser.records_json().flatten() {
                let tree = super::super::flatten_json(serde_json::from_str(&record.data).expect("json")).expect("tree");
                let streamed = super::flatten(record.data.as_bytes()).expect("stream");
                assert_eq!(streamed, tree, "record {} of {}", record.event_record_id, file.display());
                records += 1;
            }
        }
        assert!(files > 100 && records > 5000, "{files} files, {records} records");
    }

    #[test]
    fn reads_user_data_attributes_and_odd_shapes_as_the_tree_does() {
        for text in [
            r##"{"Event":{"#attributes":{"xmlns":"x"},"System":{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Eventlog","Guid":null}},"EventID":{"#attributes":{"Qualifiers":0},"#text":1102},"Channel":"Security"},"UserData":{"LogFileCleared":{"#attributes":{"xmlns":"y"},"SubjectUserName":"bob"}}}}"##,
            r##"{"Event":{"System":{"EventID":7},"EventData":null}}"##,
            r##"{"Event":{"System":{"EventID":7},"EventData":"free text"}}"##,
            r##"{"Event":{"System":{"EventID":7},"EventData":{"Data":["a","b"],"Binary":"00"}}}"##,
            r##"{"Event":{"System":{"EventID":7,"Security":{"#attributes":{"UserID":"S-1-5-18"}}},"EventData":{"Name":{"#text":"v"}}}}"##,
        ] {
            let tree = super::super::flatten_json(serde_json::from_str(text).expect("json")).expect("tree");
            assert_eq!(super::flatten(text.as_bytes()).expect("stream"), tree, "{text}");
        }
        let error = super::flatten(br#"{"Event":{"System":{"EventID":7"#).expect_err("cut text");
        assert!(error.to_string().contains("EOF"), "{error}");
    }
}
