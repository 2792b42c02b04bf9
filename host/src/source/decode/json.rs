//! JSON plumbing shared by the JSON decoders: splitting a body into records without
//! parsing it (NDJSON lines, the elements of a top-level array, or pretty-printed and
//! concatenated documents), the container documents that hold many records
//! (`{"Records": […]}`), and reading a producer's fields by dotted path whether its keys
//! are nested (`{"user": {"name": …}}`), dotted (`{"user.name": …}`) or both.

use serde_json::Value;

/// One record of a body: its 1-based line (NDJSON, documents) or position (array), and
/// its bytes.
pub type Record<'a> = (usize, &'a [u8]);

/// How a body's records are laid out.
#[derive(Debug)]
pub enum Frames<'a> {
    /// Records, each to decode on its own.
    Records(Vec<Record<'a>>),
    /// The body cannot be split (an array that is not closed…): the reason.
    Broken(String),
}

/// Splits a JSON body: a top-level array into its elements; otherwise one document per
/// line (NDJSON), unless the first record spans several lines (pretty-printed or
/// concatenated documents), which are then found by their brackets.
pub fn frame(body: &[u8]) -> Frames<'_> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => match split_array(body) {
            Ok(records) => Frames::Records(records),
            Err(reason) => Frames::Broken(reason),
        },
        Some(b'{') => {
            let lines = split_lines(body);
            // A first line that does not close what it opens starts a pretty-printed
            // document; if the body does not read as documents either, it is NDJSON with a
            // broken line, which then costs only itself.
            match lines.first() {
                Some((_, first)) if !balanced(first) => match split_documents(body) {
                    Ok(records) => Frames::Records(records),
                    Err(_) => Frames::Records(lines),
                },
                _ => Frames::Records(lines),
            }
        }
        _ => Frames::Records(split_lines(body)),
    }
}

/// Non-blank lines with their 1-based numbers; a trailing `\r` is dropped.
pub fn split_lines(body: &[u8]) -> Vec<Record<'_>> {
    let mut lines = Vec::with_capacity(memchr::memchr_iter(b'\n', body).count() + 1);
    let mut start = 0;
    for (number, end) in memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len())).enumerate() {
        let line = &body[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push((number + 1, line));
        }
        start = end + 1;
    }
    lines
}

/// A scanner over JSON text that tracks strings and nesting only.
#[derive(Default)]
struct Scan {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Scan {
    /// Feeds one byte; returns the depth change it made outside strings (+1, -1 or 0), or
    /// `None` for a closing bracket with nothing open.
    fn step(&mut self, b: u8) -> Option<i8> {
        if self.in_string {
            match b {
                _ if self.escaped => self.escaped = false,
                b'\\' => self.escaped = true,
                b'"' => self.in_string = false,
                _ => {}
            }
            return Some(0);
        }
        match b {
            b'"' => self.in_string = true,
            b'[' | b'{' => {
                self.depth += 1;
                return Some(1);
            }
            b']' | b'}' => {
                self.depth = self.depth.checked_sub(1)?;
                return Some(-1);
            }
            _ => {}
        }
        Some(0)
    }
}

/// Whether every bracket a line opens it also closes.
fn balanced(line: &[u8]) -> bool {
    let mut scan = Scan::default();
    line.iter().all(|&b| scan.step(b).is_some()) && scan.depth == 0 && !scan.in_string
}

/// Top-level documents one after another (pretty-printed, or concatenated), each with the
/// line it starts on.
fn split_documents(body: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = Vec::new();
    let mut scan = Scan::default();
    let mut line = 1;
    let mut start: Option<(usize, usize)> = None;
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' {
            line += 1;
        }
        if scan.depth == 0 && !scan.in_string && b.is_ascii_whitespace() {
            continue;
        }
        if scan.depth == 0 && start.is_none() {
            if b != b'{' {
                return Err(format!("line {line}: expected `{{` to start a JSON document, found `{}`", b as char));
            }
            start = Some((i, line));
        }
        match scan.step(b) {
            None => return Err(format!("line {line}: unbalanced `{}`", b as char)),
            Some(-1) if scan.depth == 0 => {
                let (from, first_line) = start.take().expect("a document was started");
                out.push((first_line, &body[from..=i]));
            }
            Some(_) => {}
        }
    }
    match start {
        Some((_, first_line)) => Err(format!("the JSON document starting on line {first_line} is not closed")),
        None => Ok(out),
    }
}

/// The elements of a top-level JSON array, with their 1-based positions.
pub fn split_array(body: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let start = body.iter().position(|&b| b == b'[').unwrap_or(0);
    let mut out = Vec::new();
    let mut scan = Scan::default();
    let mut element_start = start + 1;
    let mut end = None;
    for (i, &b) in body.iter().enumerate().skip(start) {
        match scan.step(b) {
            None => return Err(format!("unbalanced `{}` at byte {i}", b as char)),
            Some(-1) if scan.depth == 0 => {
                push_element(&mut out, &body[element_start..i]);
                end = Some(i);
                break;
            }
            Some(0) if b == b',' && scan.depth == 1 && !scan.in_string => {
                push_element(&mut out, &body[element_start..i]);
                element_start = i + 1;
            }
            Some(_) => {}
        }
    }
    let end = end.ok_or_else(|| "JSON array is not closed".to_owned())?;
    if body[end + 1..].iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(format!("unexpected data after the JSON array at byte {}", end + 1));
    }
    // An empty array yields one blank element: drop it.
    if out.len() == 1 && out[0].1.iter().all(u8::is_ascii_whitespace) {
        out.clear();
    }
    Ok(out)
}

fn push_element<'a>(out: &mut Vec<Record<'a>>, element: &'a [u8]) {
    out.push((out.len() + 1, element.trim_ascii()));
}

/// Whether a record is a container of records: an object whose first key is `Records`
/// (CloudTrail's S3 files) or `records` (Azure diagnostic exports). Containers are bounded
/// by the body limit rather than the record limit, since one holds a whole file.
pub fn is_container(record: &[u8]) -> bool {
    let rest = record.trim_ascii_start();
    let Some(rest) = rest.strip_prefix(b"{") else { return false };
    let rest = rest.trim_ascii_start();
    rest.starts_with(b"\"Records\"") || rest.starts_with(b"\"records\"")
}

/// The value at a dotted path. Each step tries the longest key first, so nested objects,
/// dotted keys (`"user.name"`) and mixes of both (`{"user": {"target.name": …}}`) all read.
pub fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let map = match v {
        Value::Object(map) => map,
        // Array elements by index: `targetResources.0.id`.
        Value::Array(items) => {
            let (head, rest) = path.split_once('.').map_or((path, None), |(h, r)| (h, Some(r)));
            let item = items.get(head.parse::<usize>().ok()?)?;
            return match rest {
                None => Some(item),
                Some(rest) => get(item, rest),
            };
        }
        _ => return None,
    };
    if map.len() <= LINEAR_KEYS {
        return get_linear(map, path);
    }
    if let Some(found) = map.get(path) {
        return Some(found);
    }
    // Split at each dot from the right: the longest prefix that is a key wins.
    let mut cut = path.len();
    while let Some(dot) = path[..cut].rfind('.') {
        if let Some(inner) = map.get(&path[..dot])
            && let Some(found) = get(inner, &path[dot + 1..])
        {
            return Some(found);
        }
        cut = dot;
    }
    None
}

/// Objects up to this many keys are searched by comparing keys rather than hashing the
/// path's prefixes: most objects of a record are small, and most paths asked are absent.
const LINEAR_KEYS: usize = 24;

/// [`get`] in a small object: one pass finds the whole path as a key (which wins) or the
/// keys that are a prefix of it ending at a dot, tried longest first.
fn get_linear<'a>(map: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut prefixes: [Option<(usize, &'a Value)>; 4] = [None; 4];
    let mut found = 0;
    let (path_bytes, first) = (path.as_bytes(), path.as_bytes().first());
    for (key, value) in map {
        // Most keys differ in their first byte: skip them before comparing the rest.
        if key.as_bytes().first() != first || key.len() > path_bytes.len() {
            continue;
        }
        let Some(rest) = path_bytes.strip_prefix(key.as_bytes()) else { continue };
        match rest.first() {
            None => return Some(value),
            Some(b'.') if found < prefixes.len() => {
                prefixes[found] = Some((key.len(), value));
                found += 1;
            }
            _ => {}
        }
    }
    let prefixes = &mut prefixes[..found];
    prefixes.sort_unstable_by_key(|p| std::cmp::Reverse(p.map_or(0, |(len, _)| len)));
    prefixes.iter().flatten().find_map(|(len, inner)| get(inner, &path[len + 1..]))
}

/// The text at a dotted path (strings, numbers and booleans; blank and `-` are absent).
pub fn text(v: &Value, path: &str) -> Option<String> {
    get(v, path).and_then(super::set::text)
}

/// The string at a dotted path, borrowed (blank and `-` are absent).
pub fn str<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty() && *s != "-")
}

/// The unsigned integer at a dotted path (a number or a string of digits).
pub fn uint(v: &Value, path: &str) -> Option<u64> {
    get(v, path).and_then(super::set::uint)
}

/// The boolean at a dotted path (`true`/`false`, or the strings `"true"`/`"false"`).
pub fn bool(v: &Value, path: &str) -> Option<bool> {
    match get(v, path)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn records(body: &str) -> Vec<(usize, String)> {
        match frame(body.as_bytes()) {
            Frames::Records(r) => r.into_iter().map(|(n, b)| (n, String::from_utf8_lossy(b).into_owned())).collect(),
            Frames::Broken(reason) => panic!("{reason}"),
        }
    }

    #[test]
    fn bodies_split_into_records() {
        assert_eq!(records("{\"a\":1}\n\n{\"b\":2}\r\n"), [(1, "{\"a\":1}".into()), (3, "{\"b\":2}".into())]);
        assert_eq!(
            records("[{\"a\":\"],\"}, {\"b\":[1,2]}]"),
            [(1, "{\"a\":\"],\"}".into()), (2, "{\"b\":[1,2]}".into())]
        );
        let pretty = "{\n  \"a\": {\n    \"b\": \"}\"\n  }\n}\n{\n \"c\": 1\n}{\"d\":2}";
        let docs = records(pretty);
        assert_eq!(docs.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 6, 8]);
        assert_eq!(docs[2].1, "{\"d\":2}");
        assert_eq!(records("{\"a\":\n{\"b\":1}").len(), 2, "a broken first line falls back to NDJSON");
        assert!(split_documents(b"{\n\"a\": 1\n").is_err_and(|r| r.contains("line 1")));
        assert!(matches!(frame(b"[{}"), Frames::Broken(_)));
    }

    #[test]
    fn dotted_nested_and_mixed_keys_read_alike() {
        let v = json!({ "user": { "name": "alice", "target.name": "bob" }, "source.ip": "10.0.0.1",
                         "event": { "category": ["authentication"] }, "a.b": { "c": 1 } });
        assert_eq!(str(&v, "user.name"), Some("alice"));
        assert_eq!(str(&v, "user.target.name"), Some("bob"));
        assert_eq!(str(&v, "source.ip"), Some("10.0.0.1"));
        assert_eq!(get(&v, "event.category"), Some(&json!(["authentication"])));
        assert_eq!(uint(&v, "a.b.c"), Some(1));
        assert_eq!(str(&v, "event.category.0"), Some("authentication"));
        assert_eq!(get(&v, "user.missing"), None);
    }

    #[test]
    fn containers_are_recognised_by_their_first_key() {
        assert!(is_container(b" { \"Records\" : [] }"));
        assert!(is_container(b"{\"records\":[{}]}"));
        assert!(!is_container(b"{\"eventName\":\"x\",\"Records\":[]}"));
    }
}
