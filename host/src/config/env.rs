//! The environment in the config: `${NAME}` and `${NAME:-default}` in every string value,
//! and `VIGIL_<SECTION>__<KEY>` variables that override single settings.
//!
//! Both work on the parsed TOML table, before any section is read, so every setting
//! (secrets, paths, addresses, sink URLs) takes them alike, and an error names the
//! setting's dotted path and the variable, never a value.

use super::ConfigError;

/// How a config looks a variable up (the process environment, or a map in tests).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Replaces `${NAME}` and `${NAME:-default}` (the default when `NAME` is unset or empty)
/// in `template`; `$${` writes a literal `${`. The error is the message for the setting.
pub fn expand(template: &str, lookup: Lookup<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or("unterminated `${` (write `$${` for a literal one)")?;
            let (name, default) = match tail[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&tail[..end], None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("`${{{name}}}` is not a variable name (letters, digits and `_`)"));
            }
            match (lookup(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (write `${{{name}:-default}}` for a default)"
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// [`expand`] in every string of `value`, reporting each failure at its dotted path.
pub fn expand_all(value: &mut toml::Value, path: &mut String, lookup: Lookup<'_>, errors: &mut Vec<ConfigError>) {
    match value {
        toml::Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(message) => errors.push(ConfigError::new(path.clone(), message)),
        },
        toml::Value::Table(table) => {
            for (key, child) in table.iter_mut() {
                within(path, key, |path| expand_all(child, path, lookup, errors));
            }
        }
        toml::Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                within(path, &i.to_string(), |path| expand_all(child, path, lookup, errors));
            }
        }
        _ => {}
    }
}

fn within(path: &mut String, key: &str, f: impl FnOnce(&mut String)) {
    let len = path.len();
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
    f(path);
    path.truncate(len);
}

/// The prefix of override variables; `__` separates the levels of the path after it.
const PREFIX: &str = "VIGIL_";

/// Applies every `VIGIL_<SECTION>__<KEY>[__<KEY>…]` variable of `vars` to `table`: the
/// setting `section.key…` takes the variable's value, as the type the file gives it
/// (a string stays a string, a number must parse as one) or, for a setting the file does
/// not have, as a TOML literal when it reads as a number or boolean and as text otherwise.
/// Keys match the file's case-insensitively, with `_` for `-` (`VIGIL_SINKS__MY_SIEM__URL`
/// sets `sinks.my-siem.url`). Variables with no `__` (`VIGIL_LOG`, `VIGIL_CONFIG`) are not
/// overrides.
pub fn apply_overrides(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
    sections: &[&str],
    errors: &mut Vec<ConfigError>,
) {
    let mut vars: Vec<(String, String)> =
        vars.into_iter().filter(|(name, _)| name.starts_with(PREFIX) && name.contains("__")).collect();
    vars.sort();
    for (name, raw) in vars {
        let keys: Vec<String> = name[PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            errors.push(ConfigError::new(&name, "an empty key between `__` separators"));
            continue;
        }
        if !sections.contains(&keys[0].as_str()) {
            errors.push(ConfigError::new(
                &name,
                format!("`{}` is not a config section; expected one of: {}", keys[0], sections.join(", ")),
            ));
            continue;
        }
        if keys.len() < 2 {
            errors.push(ConfigError::new(&name, "names a whole section; overrides set one setting"));
            continue;
        }
        if let Err(message) = set(table, &keys, &raw) {
            errors.push(ConfigError::new(&name, message));
        }
    }
}

/// Sets the setting at `keys` to `raw`, creating the tables on the way.
fn set(table: &mut toml::Table, keys: &[String], raw: &str) -> Result<(), String> {
    let (last, parents) = keys.split_last().expect("at least a section and a key");
    let mut at = table;
    let mut path = Vec::new();
    for key in parents {
        let key = existing_key(at, key);
        path.push(key.clone());
        at = match at.entry(key).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("`{}` is a value, not a table", path.join("."))),
        };
    }
    let key = existing_key(at, last);
    let value = match at.get(&key) {
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_owned()),
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| format!("`{key}` takes an integer"))?)
        }
        Some(toml::Value::Float(_)) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| format!("`{key}` takes a number"))?)
        }
        Some(toml::Value::Boolean(_)) => {
            toml::Value::Boolean(raw.trim().parse().map_err(|_| format!("`{key}` takes true or false"))?)
        }
        Some(toml::Value::Table(_) | toml::Value::Array(_)) => {
            return Err(format!("`{key}` is a table or list; overrides set scalars (write it in the file)"));
        }
        Some(toml::Value::Datetime(_)) | None => literal(raw),
    };
    at.insert(key, value);
    Ok(())
}

/// The key of `table` that `key` names (case-insensitive, `_` for `-`), or `key` itself.
fn existing_key(table: &toml::Table, key: &str) -> String {
    let same = |k: &str| k.len() == key.len() && k.bytes().zip(key.bytes()).all(|(a, b)| norm(a) == norm(b));
    table.keys().find(|k| same(k)).cloned().unwrap_or_else(|| key.to_owned())
}

fn norm(b: u8) -> u8 {
    if b == b'-' { b'_' } else { b.to_ascii_lowercase() }
}

/// A number, a boolean or a quoted TOML string as itself; anything else as text.
fn literal(raw: &str) -> toml::Value {
    let parsed = format!("v = {raw}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v"));
    match parsed {
        Some(
            v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) | toml::Value::String(_)),
        ) => v,
        _ => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("abc".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn references_expand_with_defaults_and_escapes() {
        assert_eq!(expand("Bearer ${TOKEN}!", &env).as_deref(), Ok("Bearer abc!"));
        assert_eq!(expand("$${TOKEN} $5", &env).as_deref(), Ok("${TOKEN} $5"));
        assert_eq!(expand("${NOPE:-127.0.0.1:8470}", &env).as_deref(), Ok("127.0.0.1:8470"));
        assert_eq!(expand("${TOKEN:-x}", &env).as_deref(), Ok("abc"));
        assert_eq!(expand("${EMPTY:-x}", &env).as_deref(), Ok("x"), "`:-` covers an empty variable");
        assert_eq!(expand("${EMPTY}", &env).as_deref(), Ok(""), "set but empty, without a default");
        assert!(expand("${NOPE}", &env).is_err_and(|e| e.contains("`NOPE` is not set")));
        assert!(expand("${TOKEN", &env).is_err_and(|e| e.contains("unterminated")));
        assert!(expand("${A B}", &env).is_err_and(|e| e.contains("not a variable name")));
    }

    #[test]
    fn every_string_expands_and_errors_name_the_setting() {
        let mut value = toml::Value::Table(
            r#"
            [store]
            path = "${NOPE:-/var/lib/vigil}"
            [sinks.siem]
            urls = ["https://a", "https://${HOST}"]
            token = "${TOKEN}"
            "#
            .parse()
            .expect("toml"),
        );
        let mut errors = Vec::new();
        expand_all(&mut value, &mut String::new(), &env, &mut errors);
        assert_eq!(value["store"]["path"].as_str(), Some("/var/lib/vigil"));
        assert_eq!(value["sinks"]["siem"]["token"].as_str(), Some("abc"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "sinks.siem.urls.1");
        assert!(errors[0].message.contains("`HOST`"), "{}", errors[0]);
    }

    #[test]
    fn overrides_set_scalars_by_the_type_the_file_gives_them() {
        let mut table: toml::Table = r#"
            [api]
            listen = "127.0.0.1:8470"
            [ingest]
            max_depth = 32
            [sinks.my-siem]
            type = "http"
            "#
        .parse()
        .expect("toml");
        let vars = [
            ("VIGIL_API__LISTEN", "0.0.0.0:9000"),
            ("VIGIL_INGEST__MAX_DEPTH", "16"),
            ("VIGIL_SINKS__MY_SIEM__URL", "https://siem.example"),
            ("VIGIL_STORE__SYNC", "always"),
            ("VIGIL_RULES__WATCH", "false"),
            ("VIGIL_LOG", "debug"),
        ];
        let mut errors = Vec::new();
        let sections = ["api", "ingest", "sinks", "store", "rules"];
        apply_overrides(&mut table, vars.map(|(k, v)| (k.into(), v.into())), &sections, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(table["api"]["listen"].as_str(), Some("0.0.0.0:9000"));
        assert_eq!(table["ingest"]["max_depth"].as_integer(), Some(16));
        assert_eq!(table["sinks"]["my-siem"]["url"].as_str(), Some("https://siem.example"));
        assert_eq!(table["store"]["sync"].as_str(), Some("always"));
        assert_eq!(table["rules"]["watch"].as_bool(), Some(false));
        assert!(!table.contains_key("log"));

        let bad = [("VIGIL_INGEST__MAX_DEPTH", "deep"), ("VIGIL_BOGUS__X", "1"), ("VIGIL_SINKS__MY_SIEM", "x")];
        apply_overrides(&mut table, bad.map(|(k, v)| (k.into(), v.into())), &sections, &mut errors);
        let named: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(named, ["VIGIL_BOGUS__X", "VIGIL_INGEST__MAX_DEPTH", "VIGIL_SINKS__MY_SIEM"], "{errors:?}");
        assert!(errors[1].message.contains("integer"), "{}", errors[1]);
    }
}
