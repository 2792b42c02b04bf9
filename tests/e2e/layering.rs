//! The module layering of DESIGN.md, enforced: a module of `host/src` may use only modules
//! of lower layers (or itself). Within layer 4, `detect` sits above `rules`; `config` sits
//! above `api` because it assembles the API's section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;

const LAYERS: &[(&str, u32)] = &[
    ("event", 0),
    ("telemetry", 0),
    ("store", 0),
    ("source", 10),
    ("intel", 10),
    ("transform", 20),
    ("actions", 20),
    ("plugins", 30),
    ("rules", 40),
    ("detect", 45),
    ("incident", 50),
    ("playbook", 60),
    ("export", 60),
    ("hunt", 70),
    ("forensics", 70),
    ("api", 80),
    ("config", 90),
    ("app", 100),
    ("cli", 110),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<module>` a file refers to, including `use crate::{a, b::c}` groups.
fn referenced_modules(text: &str) -> Vec<String> {
    let single = Regex::new(r"crate::([a-z_]+)").expect("regex");
    let group = Regex::new(r"crate::\{([^}]*)\}").expect("regex");
    let mut out: Vec<String> = single.captures_iter(text).map(|c| c[1].to_owned()).collect();
    for c in group.captures_iter(text) {
        for item in c[1].split(',') {
            let first = item.trim().split("::").next().unwrap_or("");
            if !first.is_empty() && first.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                out.push(first.to_owned());
            }
        }
    }
    out
}

#[test]
fn modules_only_use_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = BTreeMap::new();
    let mut modules_seen = 0;
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("component").as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let own = layer(&module).unwrap_or_else(|| {
            panic!("module `{module}` is not in the layer table; add it to DESIGN.md and this test")
        });
        modules_seen += 1;
        let text = std::fs::read_to_string(&file).expect("readable");
        for used in referenced_modules(&text) {
            if used == module || used == "self" {
                continue;
            }
            let Some(theirs) = layer(&used) else { continue };
            if theirs >= own {
                violations.entry(relative.display().to_string()).or_insert_with(Vec::new).push(used);
            }
        }
    }
    assert!(modules_seen > 10, "the test found too few source files ({modules_seen})");
    assert!(violations.is_empty(), "modules using their own or a higher layer: {violations:#?}");
}

#[test]
fn the_reference_scanner_sees_grouped_imports() {
    let text = "use crate::{event::X, store::{self, Y}};\nuse crate::api::Z;";
    assert_eq!(referenced_modules(text), vec!["api", "event", "store"]);
}
