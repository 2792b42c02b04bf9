//! Detection quality on data the rules were not written for: the shipped rules judge
//! Panther's labelled real-world records (each test case says whether its rule must
//! fire) the way Panther's rules do, with every disagreement named and explained.

use std::collections::BTreeSet;

use serde_json::Value;
use vigil::incident::backtest::Replay;
use vigil::rules::{CompileOptions, RuleSet};
use vigil::source::decode::Format;

use crate::helpers::rules_dir;
use crate::inputs::{decode, shared};

fn shipped_rules() -> RuleSet {
    RuleSet::load_dir(&rules_dir(), &CompileOptions::default()).expect("the shipped pack compiles")
}

/// The rules that alert on one record, replayed alone.
fn verdict(rules: &RuleSet, format: Format, record: &Value) -> BTreeSet<String> {
    let decoded = decode(format, &serde_json::to_vec(record).expect("json"));
    let mut replay = Replay::new(rules.clone(), vigil::detect::DetectConfig::default());
    for event in decoded.events {
        replay.push(event);
    }
    replay.finish().alerts.into_iter().map(|a| a.rule_id.to_string()).collect()
}

/// One Panther rule file judged by one shipped rule.
struct Case {
    panther: &'static str,
    format: Format,
    rule: &'static str,
    /// Test cases (by name) where Vigil knowingly disagrees, and why.
    differs: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        panther: "aws_cloudtrail_rules/aws_console_login_without_mfa.yml",
        format: Format::Cloudtrail,
        rule: "cloud_console_login_without_mfa",
        differs: &[(
            "No MFA Login - New User",
            "Panther skips users created in the last days from state it keeps; a login without MFA is reported regardless",
        )],
    },
    Case {
        panther: "aws_cloudtrail_rules/aws_iam_user_key_created.yml",
        format: Format::Cloudtrail,
        rule: "access_key_created_for_another_user",
        differs: &[],
    },
    Case {
        panther: "aws_cloudtrail_rules/aws_cloudtrail_stopped.yml",
        format: Format::Cloudtrail,
        rule: "audit_logging_disabled",
        differs: &[],
    },
    Case {
        panther: "azure_activity_rules/azure_diagnostic_settings_deleted.yml",
        format: Format::Azure,
        rule: "audit_logging_disabled",
        differs: &[],
    },
    Case {
        panther: "kubernetes_rules/k8s_exec_into_pod.yml",
        format: Format::Auto,
        rule: "k8s_exec_into_pod",
        differs: &[(
            "AKS Exec Into Pod (realistic)",
            "AKS ships the audit event as a JSON string inside an Azure diagnostic record; the Azure decoder does not unwrap it",
        )],
    },
    Case {
        panther: "kubernetes_rules/k8s_clusterrolebinding_privileged.yml",
        format: Format::Auto,
        rule: "k8s_cluster_admin_binding",
        differs: &[(
            "AKS ClusterRoleBinding to system:masters",
            "AKS ships the audit event as a JSON string inside an Azure diagnostic record; the Azure decoder does not unwrap it",
        )],
    },
];

#[test]
fn shipped_rules_judge_panthers_labelled_records_as_panther_does() {
    let rules = shipped_rules();
    let mut disagreements = Vec::new();
    let mut judged = 0;
    for case in CASES {
        let path = shared(&format!("inputs/panther/{}", case.panther));
        let file: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).expect("read")).expect("yaml");
        let tests = file["Tests"].as_array().expect("Tests");
        assert!(!tests.is_empty(), "{}", case.panther);
        for test in tests {
            let name = test["Name"].as_str().expect("Name");
            let expected = test["ExpectedResult"].as_bool().expect("ExpectedResult");
            let known = case.differs.iter().find(|(n, _)| *n == name);
            let fired = verdict(&rules, case.format.clone(), &test["Log"]).contains(case.rule);
            judged += 1;
            match (fired == expected, known) {
                (true, None) => {}
                (false, Some(_)) => {}
                (true, Some((_, why))) => {
                    disagreements.push(format!("{} / {name}: now agrees; drop the note ({why})", case.panther))
                }
                (false, None) => disagreements
                    .push(format!("{} / {name}: Panther says {expected}, {} says {fired}", case.panther, case.rule)),
            }
        }
    }
    assert!(judged >= 36, "{judged} records judged");
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// sshd lines as OpenSSH and pam_unix write them on a public server (the message variants
/// of a real auth.log), for seven addresses: five attackers and two decoys.
fn sshd_log() -> String {
    let mut lines = Vec::new();
    let mut at = |t: u32, pid: u32, msg: String| {
        lines.push(format!("Dec 10 {:02}:{:02}:{:02} bastion01 sshd[{pid}]: {msg}", 6 + t / 3600, t / 60 % 60, t % 60));
    };
    // A: seven root passwords in 90 seconds, each with its pam_unix line.
    for i in 0..7 {
        at(i * 13, 24_200 + i, "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root".into());
        at(i * 13 + 2, 24_200 + i, format!("Failed password for root from 203.0.113.10 port {} ssh2", 40_000 + i));
    }
    // B: three invalid users in a minute, each tried once (CrowdSec counts six events).
    for (i, user) in ["webmaster", "oracle", "test user"].iter().enumerate() {
        let (t, pid) = (600 + i as u32 * 20, 24_300 + i as u32);
        at(t, pid, "reverse mapping checking getaddrinfo for ns.example.net [198.51.100.20] failed - POSSIBLE BREAK-IN ATTEMPT!".into());
        at(t, pid, format!("Invalid user {user} from 198.51.100.20"));
        at(t, pid, format!("input_userauth_request: invalid user {user} [preauth]"));
        at(t + 1, pid, "pam_unix(sshd:auth): check pass; user unknown".into());
        at(
            t + 1,
            pid,
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.20 "
                .into(),
        );
        at(t + 3, pid, format!("Failed password for invalid user {user} from 198.51.100.20 port {} ssh2", 38_926 + i));
        at(t + 3, pid, "Received disconnect from 198.51.100.20: 11: Bye Bye [preauth]".into());
    }
    // C: a guess every 50 seconds for twenty minutes: fast and slow rules both see it.
    for i in 0..24 {
        at(1200 + i * 50, 24_400 + i, format!("Failed password for admin from 198.51.100.30 port {} ssh2", 50_000 + i));
    }
    // D (decoy): a user mistyping four times, then getting in.
    for i in 0..4 {
        at(3000 + i * 20, 24_500, format!("Failed password for fztu from 192.0.2.40 port {} ssh2", 49_100 + i));
    }
    at(3100, 24_500, "Accepted password for fztu from 192.0.2.40 port 49116 ssh2".into());
    at(3100, 24_500, "pam_unix(sshd:session): session opened for user fztu by (uid=0)".into());
    // E: six failures, then the password is found.
    for i in 0..6 {
        at(3600 + i * 10, 24_600 + i, format!("Failed password for deploy from 203.0.113.50 port {} ssh2", 51_000 + i));
    }
    at(3680, 24_610, "Accepted password for deploy from 203.0.113.50 port 51100 ssh2".into());
    // F: the kernel of a dictionary attack folded by syslog: "message repeated".
    at(4000, 24_700, "Failed password for root from 203.0.113.60 port 45378 ssh2".into());
    at(4002, 24_700, "message repeated 5 times: [ Failed password for root from 203.0.113.60 port 45378 ssh2]".into());
    at(4004, 24_700, "Disconnecting: Too many authentication failures for root [preauth]".into());
    at(
        4004,
        24_700,
        "PAM 5 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.60  user=root".into(),
    );
    // G (decoy): a scanner that only connects.
    for i in 0..3 {
        at(4500 + i * 30, 24_800 + i, "Did not receive identification string from 192.0.2.70".into());
        at(4500 + i * 30, 24_800 + i, "Connection closed by 192.0.2.70 port 50110 [preauth]".into());
    }
    lines.sort_by(|a, b| a[..15].cmp(&b[..15]));
    lines.join("\n") + "\n"
}

#[test]
fn a_real_format_sshd_log_gives_one_incident_per_attacker() {
    let decoded = decode(Format::Syslog, sshd_log().as_bytes());
    assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
    let mut replay = Replay::new(shipped_rules(), vigil::detect::DetectConfig::default());
    for event in decoded.events {
        replay.push(event);
    }
    let report = replay.finish();
    let mut by_source = std::collections::BTreeMap::new();
    for incident in &report.incidents {
        let sources: Vec<&String> = incident.entities.source_ips.iter().collect();
        assert_eq!(sources.len(), 1, "one attacker per incident: {incident:?}");
        let rules: Vec<&str> = incident.rules.iter().map(|r| r.as_str()).collect();
        assert!(
            by_source.insert(sources[0].clone(), (rules, incident.priority)).is_none(),
            "two incidents for {}",
            sources[0]
        );
    }
    let rules = |ip: &str| {
        by_source.get(ip).map(|(r, _)| r.clone()).unwrap_or_else(|| panic!("no incident for {ip}: {by_source:?}"))
    };
    assert_eq!(
        by_source.keys().map(String::as_str).collect::<Vec<_>>(),
        ["198.51.100.20", "198.51.100.30", "203.0.113.10", "203.0.113.50", "203.0.113.60"]
    );
    assert_eq!(rules("203.0.113.10"), ["ssh_brute_force"]);
    assert_eq!(rules("198.51.100.20"), ["ssh_brute_force"]);
    assert_eq!(rules("198.51.100.30"), ["ssh_brute_force", "ssh_slow_brute_force"]);
    assert_eq!(rules("203.0.113.60"), ["ssh_brute_force"]);
    // The success raises the attacker's incident: impact, not repetition.
    assert_eq!(rules("203.0.113.50"), ["ssh_brute_force", "brute_force_then_success"]);
    assert_eq!(by_source["203.0.113.50"].1, vigil::event::Priority::P1);
    assert_eq!(by_source["203.0.113.10"].1, vigil::event::Priority::P2);
    // B's incident names every user it tried, not the last one.
    let b = report.incidents.iter().find(|i| i.entities.source_ips.contains("198.51.100.20")).expect("B");
    for user in ["webmaster", "oracle", "test user"] {
        assert!(b.entities.users.contains(user), "{user} missing from {:?}", b.entities.users);
    }
}

/// `vigil rules score --json` on a file: (recall, precision) and the whole report.
fn score_cli(args: &[&str]) -> (f64, f64, Value) {
    let out = std::process::Command::new(crate::helpers::vigil_bin())
        .args(["rules", "score", "--json", "--rules"])
        .arg(rules_dir())
        .args(args)
        .output()
        .expect("run vigil rules score");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&stdout).expect("a JSON score");
    (report["recall"].as_f64().expect("recall"), report["precision"].as_f64().expect("precision"), report)
}

/// The OTRF datasets against truth files written from their `otrf/meta` descriptions
/// (`tests/truth/otrf/`): every incident explains a behaviour, and the behaviours no
/// shipped rule covers are reported as missed.
#[test]
fn rules_score_on_the_otrf_datasets_against_their_descriptions() {
    let truth = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/truth/otrf");
    let cases: &[(&str, &str, &str, f64)] = &[
        (
            "covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges",
            "covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges_2020-08-05020926.json",
            "windows",
            1.0,
        ),
        ("ec2_proxy_s3_exfiltration", "ec2_proxy_s3_exfiltration_2020-09-14011940.json", "cloudtrail", 1.0),
        ("schtask_create", "schtask_create_2020-12-1907003032.json", "windows", 1.0),
        (
            "syslog_sysmon_log4shell_cve2021_44228_jndi_reference",
            "syslog_sysmon_log4shell_cve2021_44228_jndi_reference_2022-05-11181020.json",
            "auto",
            1.0,
        ),
        (
            "sysmon_log4shell_cve2021_44228_java_serialized_object",
            "sysmon_log4shell_cve2021_44228_java_serialized_object_2022-05-13045800.json",
            "windows",
            1.0,
        ),
        // The log clearing is found; the LSA secrets dump has no shipped rule.
        ("cmd_psexec_lsa_secrets_dump", "cmd_psexec_lsa_secrets_dump_2020-10-1903305471.json", "windows", 0.5),
        // Linux discovery and binary padding: no shipped rule covers them.
        ("sh_arp_cache", "sh_arp_cache_2020-11-10074812.log", "auditd", 0.0),
        ("sh_binary_padding_dd", "sh_binary_padding_dd_2020-11-10081941.log", "auditd", 0.0),
    ];
    for (dataset, file, format, recall) in cases {
        let input = shared(&format!("otrf/extracted/{dataset}/{file}"));
        let truth_file = truth.join(format!("{dataset}.truth.json"));
        let (got_recall, precision, report) = score_cli(&[
            "--input",
            input.to_str().expect("utf8"),
            "--format",
            format,
            "--truth",
            truth_file.to_str().expect("utf8"),
        ]);
        assert_eq!((got_recall, precision), (*recall, 1.0), "{dataset}: {report:#}");
    }
}

/// The labelled mixed-format scenario of `vigil demo --scenario`, for three seeds: every
/// attack found by a rule its label allows, no incident about a look-alike, and
/// `--min-recall`/`--min-precision` fail the command when a pack falls short.
#[test]
fn rules_score_on_the_labelled_scenario() {
    for seed in ["1", "2", "3"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(crate::helpers::vigil_bin())
            .args(["demo", "--seed", seed, "--scenario"])
            .arg(dir.path())
            .output()
            .expect("run demo --scenario");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (log, truth) = (dir.path().join("scenario.log"), dir.path().join("scenario.truth.json"));
        let args =
            ["--input", log.to_str().expect("utf8"), "--format", "auto", "--truth", truth.to_str().expect("utf8")];
        let (recall, precision, report) = score_cli(&args);
        assert_eq!((recall, precision), (1.0, 1.0), "seed {seed}: {report:#}");
        assert_eq!((report["expected"].as_u64(), report["duplicates"].as_u64()), (Some(12), Some(0)), "{report:#}");
        for rule in [
            "ssh_brute_force",
            "auth_brute_force",
            "password_spraying",
            "brute_force_then_success",
            "privileged_group_member_added",
            "audit_logging_disabled",
            "data_exfiltration",
            "port_scan",
            "web_path_scan",
            "cloud_console_login_without_mfa",
            "access_key_created_for_another_user",
            "k8s_exec_into_pod",
        ] {
            assert!(report["rules"][rule]["true_positives"].as_u64() >= Some(1), "seed {seed}: {rule}: {report:#}");
        }
        // A pack without the port scan rule misses one behaviour of twelve, and says so.
        let partial = tempfile::tempdir().expect("tempdir");
        copy_dir(&rules_dir(), partial.path());
        std::fs::remove_file(partial.path().join("port_scan.rhai")).expect("remove");
        let out = std::process::Command::new(crate::helpers::vigil_bin())
            .args(["rules", "score", "--min-recall", "1", "--rules"])
            .arg(partial.path())
            .args(args)
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{stdout}");
        assert!(stdout.contains("recall 0.917 (11/12") && stdout.contains("— port scan"), "{stdout}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// The EVTX record ids a rule alerts on, replaying one file alone.
fn alerting_records(rule: &str, path: &str) -> BTreeSet<u64> {
    let decoded = decode(Format::Windows, &std::fs::read(shared(path)).expect("read"));
    let ids: std::collections::HashMap<_, _> = decoded
        .events
        .iter()
        .map(|e| (e.id, e.attributes["windows"]["EventRecordID"].as_u64().expect("record id")))
        .collect();
    let mut replay = Replay::new(shipped_rules(), vigil::detect::DetectConfig::default());
    for event in decoded.events {
        replay.push(event);
    }
    replay
        .finish()
        .alerts
        .iter()
        .filter(|a| a.rule_id.as_str() == rule)
        .flat_map(|a| a.event_ids.clone())
        .map(|id| ids[&id])
        .collect()
}

/// Real Windows Security logs: of the new accounts' memberships (None, Users,
/// Administrators, Performance Log Users), only Administrators alerts.
#[test]
fn privileged_group_changes_in_real_security_logs() {
    let rule = "privileged_group_member_added";
    assert_eq!(alerting_records(rule, "inputs/windows-evtx/new-user-security.evtx"), BTreeSet::from([116]));
    assert_eq!(alerting_records(rule, "inputs/windows-evtx/security.evtx"), BTreeSet::from([58, 752, 821]));
}
