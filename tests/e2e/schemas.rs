//! What the ECS and OCSF sinks write is valid against the standards themselves: the demo
//! stream (events, alerts, incident changes) goes through file sinks in each format, and
//! the output is checked by `tests/peers/validate_ocsf.py` (OCSF's published JSON Schemas
//! per class) and `validate_ecs.py` (ECS field definitions and allowed values).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::helpers::{python, rules_dir, vigil_bin};

fn validate(script: &str, args: &[&Path], input: &[u8]) -> String {
    let mut child = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the validator");
    child.stdin.take().expect("stdin").write_all(input).expect("feed the validator");
    let out = child.wait_with_output().expect("validator output");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script} found problems:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    report
}

/// Runs the demo with one file sink per format; returns the output directory.
fn demo_output(dir: &Path) -> PathBuf {
    let config = format!(
        "[store]\npath = \"data\"\n[rules]\ndir = {:?}\n\
         [sinks.ocsf]\ntype = \"file\"\npath = \"out/ocsf.jsonl\"\nformat = \"ocsf\"\n\
         [sinks.ecs]\ntype = \"file\"\npath = \"out/ecs.jsonl\"\nformat = \"ecs\"\n",
        rules_dir()
    );
    std::fs::write(dir.join("vigil.toml"), config).expect("config");
    let out = Command::new(vigil_bin())
        .args(["--config", "vigil.toml", "demo", "--events", "1500", "--seed", "11"])
        .current_dir(dir)
        .output()
        .expect("run the demo");
    assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
    dir.join("out")
}

#[test]
fn ocsf_and_ecs_output_validates_against_the_standards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = demo_output(dir.path());
    let ocsf = std::fs::read(out.join("ocsf.jsonl")).expect("OCSF output");
    let lines: Vec<serde_json::Value> = ocsf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("JSON"))
        .collect();
    assert!(lines.len() > 1500, "events, alerts and incident changes were written");
    for class in [3002, 2004] {
        assert!(lines.iter().any(|l| l["class_uid"] == class), "class {class} present");
    }
    let report = validate("validate_ocsf.py", &[Path::new("1.5.0")], &ocsf);
    assert!(report.contains(", 0 problem(s)"), "{report}");

    let ecs_flat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ecs/ecs_flat.yml");
    // The shared data is part of the test's input: missing, the test fails rather than
    // passing on half of what it checks.
    assert!(ecs_flat.exists(), "ECS field definitions not found at ../shared/data/ecs/ecs_flat.yml");
    let ecs = std::fs::read(out.join("ecs.jsonl")).expect("ECS output");
    let report = validate("validate_ecs.py", &[&ecs_flat], &ecs);
    assert!(report.contains(", 0 problem(s)"), "{report}");
}
