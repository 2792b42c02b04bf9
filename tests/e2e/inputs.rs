//! The input decoders on real third-party data (`../shared/data/`): EVTX files (damaged
//! ones included), SigmaHQ's evtx_dump JSON, go-libaudit's auditd cases against its own
//! coalesced output, Suricata EVE, Zeek JSON and TSV, Panther's sanitised CloudTrail,
//! Azure, Okta, GCP, GitHub and Kubernetes records, and the OTRF datasets. Each test names
//! records and the fields they must give, not just counts. A missing sample fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vigil::event::{EventClass, FieldPath, Outcome, SecurityEvent};
use vigil::source::Rejection;
use vigil::source::decode::{Decoded, Format, Options, decode_body};

/// A file of the shared data; the test fails when it is missing.
pub fn shared(path: &str) -> PathBuf {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data").join(path);
    assert!(full.exists(), "the real sample {} is missing (../shared/data/{path})", full.display());
    full
}

/// A file's bytes, inflated when gzip.
fn bytes(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).expect("gunzip");
        out
    } else {
        raw
    }
}

pub fn decode(format: Format, body: &[u8]) -> Decoded {
    let options = Options { limits: vigil::source::IngestConfig::default().limits(), keep_raw: false };
    let (decoded, error) = decode_body(&format, body, &options, chrono::Utc::now());
    assert_eq!(error, None, "the body was refused as a whole");
    decoded
}

fn decode_file(format: Format, path: &str) -> Decoded {
    decode(format, &bytes(&shared(path)))
}

fn get(e: &SecurityEvent, path: &str) -> Option<String> {
    FieldPath::parse(path).expect("path").get(e).map(|v| v.to_text().into_owned())
}

/// Asserts each (path, value) of an event.
fn fields(e: &SecurityEvent, expected: &[(&str, &str)]) {
    for (path, value) in expected {
        assert_eq!(get(e, path).as_deref(), Some(*value), "{path}\n{}", serde_json::to_string_pretty(e).expect("json"));
    }
}

fn by_record_id(events: &[SecurityEvent], id: u64) -> &SecurityEvent {
    events
        .iter()
        .find(|e| e.attributes["windows"]["EventRecordID"].as_u64() == Some(id))
        .unwrap_or_else(|| panic!("no record {id}"))
}

fn messages(rejected: &[Rejection]) -> Vec<String> {
    rejected.iter().map(|r| format!("{}: {}", r.line, r.message)).collect()
}

#[test]
fn evtx_security_and_sysmon_records_map_to_their_fields() {
    let security = decode_file(Format::Windows, "inputs/windows-evtx/security.evtx");
    assert_eq!((security.events.len(), security.rejected.len()), (2261, 0), "{:?}", messages(&security.rejected));
    let created = by_record_id(&security.events, 51);
    assert_eq!((created.class, created.action.as_deref()), (EventClass::Account, Some("user_created")));
    fields(
        created,
        &[
            ("user.target.name", "fsir"),
            ("user.target.id", "S-1-5-21-2603537626-3982775912-406486804-1000"),
            ("user.name", "WIN-03DLIIOFRRA$"),
            ("host.name", "WIN-03DLIIOFRRA"),
            ("time", "2016-07-08T18:15:23.398026200Z"),
            ("attributes.windows.SamAccountName", "fsir"),
        ],
    );
    let member = by_record_id(&security.events, 54);
    assert_eq!(member.action.as_deref(), Some("group_member_added"));
    fields(
        member,
        &[("user.target.roles", "Users"), ("user.target.id", "S-1-5-21-2603537626-3982775912-406486804-1000")],
    );
    let logon = by_record_id(&security.events, 2);
    assert_eq!((logon.class, logon.outcome), (EventClass::Authentication, Outcome::Success));
    fields(logon, &[("user.name", "SYSTEM"), ("user.domain", "NT AUTHORITY"), ("labels.logon_type", "0")]);

    let sysmon = decode_file(Format::Windows, "inputs/windows-evtx/sysmon.evtx");
    assert_eq!(sysmon.events.len(), 358);
    let ping = by_record_id(&sysmon.events, 1742);
    assert_eq!((ping.class, ping.action.as_deref()), (EventClass::Process, Some("process_started")));
    fields(
        ping,
        &[
            ("process.executable", "C:\\Windows\\SysWOW64\\PING.EXE"),
            ("process.name", "PING.EXE"),
            ("process.command_line", "ping  -n 6 127.0.0.1"),
            ("process.pid", "9112"),
            ("process.parent.pid", "8392"),
            ("user.name", "SYSTEM"),
            ("user.domain", "NT AUTHORITY"),
            ("file.hash.sha256", "8f16a431c919a0aa7c9466ec1cdc1e721f30eb5c8182835585a1b74abecb1920"),
            ("attributes.windows.IntegrityLevel", "System"),
        ],
    );
    let connection = by_record_id(&sysmon.events, 2061);
    assert_eq!((connection.class, connection.action.as_deref()), (EventClass::Network, Some("connection")));
    fields(
        connection,
        &[
            ("source.ip", "192.168.2.128"),
            ("destination.ip", "185.26.182.117"),
            ("destination.port", "443"),
            ("network.direction", "outbound"),
            ("network.transport", "tcp"),
        ],
    );
    // sysmon.evtx ends in chunks that were never written: each is reported, none panics.
    assert!(!sysmon.rejected.is_empty());
    assert!(sysmon.rejected.iter().all(|r| r.message.contains("chunk")), "{:?}", messages(&sysmon.rejected));
}

#[test]
fn damaged_evtx_files_keep_their_good_records_and_name_the_damage() {
    let zero = decode_file(Format::Windows, "inputs/windows-evtx/sample-with-zero-data-size-event.evtx");
    assert_eq!(zero.events.len(), 449);
    assert_eq!(zero.rejected.len(), 1, "{:?}", messages(&zero.rejected));
    assert!(zero.rejected[0].message.contains("record data size"), "{}", zero.rejected[0].message);
    assert!(zero.rejected[0].message.contains("chunk 0"), "{}", zero.rejected[0].message);

    let bad_magic = decode_file(Format::Windows, "inputs/windows-evtx/sample_with_a_bad_chunk_magic.evtx");
    assert_eq!(bad_magic.events.len(), 301);
    assert_eq!(bad_magic.rejected.len(), 3, "{:?}", messages(&bad_magic.rejected));
    assert!(bad_magic.rejected.iter().any(|r| r.message.contains("chunk header magic")));
    // A record of the System log, by its event id in the shared vocabulary of `event_N`.
    assert!(zero.events.iter().any(|e| e.action.as_deref() == Some("event_6005") && e.class == EventClass::System));

    // A file cut in the middle: what comes before the cut still decodes.
    let whole = bytes(&shared("inputs/windows-evtx/security.evtx"));
    let cut = decode(Format::Windows, &whole[..whole.len() / 2]);
    assert!(cut.events.len() > 500, "{}", cut.events.len());
    assert_eq!(cut.rejected.len(), 1, "the cut is reported: {:?}", messages(&cut.rejected));
    assert!(cut.rejected[0].message.contains("the rest is missing"), "{}", cut.rejected[0].message);
}

#[test]
fn evtx_and_its_evtx_dump_json_decode_alike() {
    // SigmaHQ's regression cases ship each EVTX with evtx_dump's pretty-printed JSON.
    let root = shared("sigma/regression_data");
    let mut cases = Vec::new();
    for entry in walk(&root) {
        if entry.extension().is_some_and(|e| e == "evtx") {
            let json = entry.with_extension("json");
            if json.exists() {
                cases.push((entry, json));
            }
        }
    }
    assert!(cases.len() >= 100, "{} regression cases", cases.len());
    // evtx_dump writes times to the microsecond; EVTX holds them to 100 ns.
    let key = |e: &SecurityEvent| {
        let micros = e.time.timestamp_micros();
        (e.class, e.action.clone(), micros, get(e, "host.name"), get(e, "process.command_line"), get(e, "user.name"))
    };
    for (evtx, json) in cases.iter().take(40) {
        let a = decode(Format::Windows, &bytes(evtx));
        let b = decode(Format::Windows, &bytes(json));
        assert!(
            a.rejected.is_empty() && b.rejected.is_empty(),
            "{}: {:?} {:?}",
            evtx.display(),
            messages(&a.rejected),
            messages(&b.rejected)
        );
        let (mut ka, mut kb): (Vec<_>, Vec<_>) =
            (a.events.iter().map(key).collect(), b.events.iter().map(key).collect());
        ka.sort();
        kb.sort();
        assert_eq!(ka, kb, "{}", evtx.display());
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() { stack.push(path) } else { out.push(path) }
        }
    }
    out.sort();
    out
}

#[derive(serde::Deserialize)]
struct AuditCases {
    tests: BTreeMap<String, String>,
}

#[test]
fn auditd_agrees_with_go_libaudit_on_its_own_cases() {
    let dir = shared("inputs/auditd/aucoalesce/testdata");
    let mut compared = 0;
    for golden_path in walk(&dir).into_iter().filter(|p| p.to_string_lossy().ends_with(".json.golden")) {
        let yaml_path =
            PathBuf::from(golden_path.to_string_lossy().trim_end_matches(".json.golden").to_owned() + ".yaml");
        let cases: AuditCases =
            serde_saphyr::from_str(&std::fs::read_to_string(&yaml_path).expect("yaml")).expect("cases");
        let golden: Vec<Value> = serde_json::from_slice(&bytes(&golden_path)).expect("golden");
        for expected in golden {
            let name = expected["test_name"].as_str().expect("name");
            let Some(lines) = cases.tests.get(name) else { continue };
            let out = decode(Format::Auditd, lines.as_bytes());
            assert!(out.rejected.is_empty(), "{name}: {:?}", messages(&out.rejected));
            assert_eq!(out.events.len(), 1, "{name} is one event");
            let e = &out.events[0];
            let g = &expected["event"];
            let want = |pointer: &str| g.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
            assert_eq!(get(e, "process.pid"), want("/process/pid"), "{name} pid");
            assert_eq!(get(e, "process.parent.pid"), want("/process/ppid"), "{name} ppid");
            if want("/process/name").is_some() {
                assert_eq!(get(e, "process.name"), want("/process/name"), "{name} name");
            }
            if let Some(exe) = want("/process/exe") {
                assert_eq!(get(e, "process.executable").as_deref(), Some(exe.as_str()), "{name} exe");
            }
            if let Some(args) = g.pointer("/process/args").and_then(Value::as_array) {
                let joined: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
                assert_eq!(get(e, "process.command_line").as_deref(), Some(joined.join(" ").as_str()), "{name} args");
            }
            if let Some(ip) = want("/source/ip") {
                assert_eq!(get(e, "source.ip").as_deref(), Some(ip.as_str()), "{name} source");
            }
            if let Some(ip) = want("/destination/ip") {
                assert_eq!(get(e, "destination.ip").as_deref(), Some(ip.as_str()), "{name} destination");
                assert_eq!(get(e, "destination.port"), want("/destination/port"), "{name} port");
            }
            // go-libaudit names the first path item; Vigil the item a call created or
            // deleted (`23.ref`, not its parent directory `sessions/`), so directories differ.
            if e.class == EventClass::File && want("/file/path").is_some_and(|p| !p.ends_with('/')) {
                assert_eq!(get(e, "file.path"), want("/file/path"), "{name} file");
            }
            let outcome = match want("/result").as_deref() {
                Some("success") => Outcome::Success,
                Some("fail") => Outcome::Failure,
                _ => e.outcome,
            };
            assert_eq!(e.outcome, outcome, "{name} outcome");
            compared += 1;
        }
    }
    assert!(compared >= 40, "{compared} cases compared");
}

#[test]
fn otrf_auditd_datasets_give_their_commands() {
    let arp = decode_file(Format::Auditd, "otrf/extracted/sh_arp_cache/sh_arp_cache_2020-11-10074812.log");
    assert!(arp.rejected.is_empty() && arp.warnings.is_empty());
    let commands: Vec<String> = arp.events.iter().filter_map(|e| get(e, "process.command_line")).collect();
    assert_eq!(commands, ["arp -a", "grep -v ^?"]);
    fields(
        &arp.events[0],
        &[
            ("process.executable", "/usr/sbin/arp"),
            ("process.parent.pid", "29002"),
            ("user.id", "1000"),
            ("time", "2020-11-10T07:48:16.155Z"),
        ],
    );
    // The working directory is the sample's CWD record, as the lab machine wrote it.
    let log = std::fs::read_to_string(shared("otrf/extracted/sh_arp_cache/sh_arp_cache_2020-11-10074812.log"))
        .expect("sample");
    let cwd = log.split("cwd=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("a CWD record");
    assert!(cwd.starts_with('/'), "{cwd}");
    fields(&arp.events[0], &[("labels.cwd", cwd)]);
    let dd =
        decode_file(Format::Auditd, "otrf/extracted/sh_binary_padding_dd/sh_binary_padding_dd_2020-11-10081941.log");
    fields(&dd.events[0], &[("process.command_line", "dd if=/dev/zero bs=1 count=1"), ("process.name", "dd")]);
}

#[test]
fn suricata_eve_records() {
    let eve = decode_file(Format::Suricata, "inputs/suricata/eve.json");
    assert!(eve.rejected.is_empty(), "{:?}", messages(&eve.rejected));
    assert_eq!(eve.events.len(), 1);
    let file = eve.events.iter().find(|e| e.action.as_deref() == Some("file_transferred")).expect("fileinfo");
    assert_eq!(file.class, EventClass::File);
    fields(
        file,
        &[
            ("file.name", "eicar.com"),
            ("file.size", "68"),
            ("url.domain", "www.eicar.org"),
            ("url.path", "/download/eicar.com"),
            ("http.user_agent", "curl/7.43.0"),
            ("source.ip", "188.40.238.250"),
            ("destination.port", "59908"),
            ("time", "2016-06-08T20:01:52.875791Z"),
        ],
    );
}

#[test]
fn zeek_json_and_tsv_logs() {
    for log in ["kerberos", "ntlm", "notice", "ftp", "dce_rpc", "known_services", "ntp", "ocsp"] {
        let out = decode_file(Format::Zeek, &format!("inputs/zeek/{log}.json.gz"));
        assert!(out.rejected.is_empty(), "{log}: {:?}", &messages(&out.rejected)[..out.rejected.len().min(3)]);
        assert!(!out.events.is_empty(), "{log}");
        assert!(out.events.iter().all(|e| e.provider.as_deref() == Some(&format!("zeek.{log}"))), "{log}");
    }
    let kerberos = decode_file(Format::Zeek, "inputs/zeek/kerberos.json.gz");
    let first = &kerberos.events[0];
    assert_eq!((first.class, first.action.as_deref()), (EventClass::Authentication, Some("kerberos_ticket_request")));
    fields(
        first,
        &[
            ("source.ip", "10.128.0.241"),
            ("destination.ip", "10.47.1.208"),
            ("destination.port", "808"),
            ("time", "2018-03-24T17:18:05.713879Z"),
        ],
    );
    let ntlm = decode_file(Format::Zeek, "inputs/zeek/ntlm.json.gz");
    assert_eq!(ntlm.events[0].outcome, Outcome::Success);

    let dir = "otrf/extracted/metasploit_nanodump_lsass_memory_dump_zeek_logs";
    for log in ["conn", "dns", "http", "kerberos", "smb_mapping", "files", "pe", "ssl", "x509", "weird"] {
        let out = decode_file(Format::Zeek, &format!("{dir}/{log}.log"));
        assert!(out.rejected.is_empty(), "{log}: {:?}", &messages(&out.rejected)[..out.rejected.len().min(3)]);
        assert!(!out.events.is_empty(), "{log}");
    }
    let conn = decode_file(Format::Zeek, &format!("{dir}/conn.log"));
    fields(
        &conn.events[0],
        &[
            ("source.ip", "192.168.56.30"),
            ("destination.port", "53"),
            ("network.transport", "udp"),
            ("network.protocol", "dns"),
            ("network.direction", "internal"),
            ("destination.bytes", "48"),
            ("time", "2023-09-06T14:14:13.145663Z"),
        ],
    );
    let kerberos = decode_file(Format::Zeek, &format!("{dir}/kerberos.log"));
    assert_eq!(kerberos.events[0].outcome, Outcome::Failure);
    assert_eq!(kerberos.events[0].attributes["zeek"]["error_msg"], "KDC_ERR_PREAUTH_REQUIRED");
    let dns = decode_file(Format::Zeek, &format!("{dir}/dns.log"));
    assert!(dns.events.iter().all(|e| e.class == EventClass::Dns));
    assert!(dns.events.iter().any(|e| get(e, "url.domain").is_some()));
}

/// Panther's log types and the formats that read them.
fn panther_format(log_type: &str) -> Option<Format> {
    Some(match log_type {
        "AWS.CloudTrail" => Format::Cloudtrail,
        "Azure.Audit" | "Azure.MonitorActivity" => Format::Azure,
        "Okta.SystemLog" => Format::Okta,
        "GCP.AuditLog" => Format::GcpAudit,
        "GitHub.Audit" => Format::GithubAudit,
        "Amazon.EKS.Audit" => Format::K8sAudit,
        _ => return None,
    })
}

/// Every `Log:` of Panther's rule tests with the format of its rule's log type.
fn panther_logs() -> Vec<(PathBuf, Format, Value)> {
    let mut out = Vec::new();
    for path in walk(&shared("inputs/panther")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "yml")) {
        let rule: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).expect("rule")).expect("rule yaml");
        let types: Vec<&str> = rule["LogTypes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        for test in rule["Tests"].as_array().into_iter().flatten() {
            let log = &test["Log"];
            // A rule of several log types: the record says which it is.
            let log_type = log["p_log_type"].as_str().or(types.first().copied()).unwrap_or("");
            if let Some(format) = panther_format(log_type) {
                out.push((path.clone(), format, log.clone()));
            }
        }
    }
    out
}

#[test]
fn panther_cloud_records_decode_and_are_told_apart() {
    let logs = panther_logs();
    assert!(logs.len() > 500, "{} records", logs.len());
    let mut by_format: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut refused = Vec::new();
    let mut untold = Vec::new();
    for (path, format, log) in &logs {
        let line = serde_json::to_vec(log).expect("json");
        let out = decode(format.clone(), &line);
        let counts = by_format.entry(format.to_string()).or_default();
        counts.0 += 1;
        if out.events.len() == 1 {
            counts.1 += 1;
            // `auto` tells the format or refuses a record with no mark of one; it never
            // reads a record as another format.
            let auto = decode(Format::Auto, &line);
            match auto.events.first() {
                Some(e) => assert_eq!(e.provider, out.events[0].provider, "auto on {}: {log}", path.display()),
                None => untold.push(format!("{}: {log}", path.display())),
            }
        } else {
            refused.push((path.clone(), log.clone(), out.rejected));
        }
    }
    // A record is refused only for lacking, as its producer writes it, the field its format
    // requires: Panther's tests include records sanitised down to a few fields, and some
    // with every key lower-cased (`eventname`), which no producer writes.
    for (path, log, rejected) in &refused {
        assert_eq!(rejected.len(), 1, "{}", path.display());
        let vigil::event::DecodeError::Invalid { problems } = &rejected[0].error else {
            panic!("{}: {}", path.display(), rejected[0].message)
        };
        assert_eq!(problems[0].reason, "missing required field", "{}", path.display());
        let pointer = format!("/{}", problems[0].field.replace('.', "/"));
        assert!(log.pointer(&pointer).is_none(), "{} has {}: {log}", path.display(), problems[0].field);
    }
    assert!(refused.len() * 10 < logs.len(), "{} of {} refused", refused.len(), logs.len());
    // Only records sanitised down to a field or two carry no mark of their format.
    assert!(
        untold.len() * 20 < logs.len(),
        "{} of {} not told apart:\n{}",
        untold.len(),
        logs.len(),
        untold.join("\n")
    );
    for (format, (all, decoded)) in &by_format {
        assert!(*decoded > 0, "{format}: none of {all} decoded");
    }
}

#[test]
fn named_cloud_records() {
    let rule = |path: &str| -> Vec<Value> {
        let rule: Value = serde_saphyr::from_str(&std::fs::read_to_string(shared(path)).expect("rule")).expect("yaml");
        rule["Tests"].as_array().expect("tests").iter().map(|t| t["Log"].clone()).collect()
    };
    let one = |format: Format, log: &Value| -> SecurityEvent {
        let mut out = decode(format, &serde_json::to_vec(log).expect("json"));
        assert_eq!(out.events.len(), 1, "{:?}", messages(&out.rejected));
        out.events.remove(0)
    };
    let logins = rule("inputs/panther/aws_cloudtrail_rules/aws_console_login_without_mfa.yml");
    let e = one(Format::Cloudtrail, &logins[0]);
    assert_eq!(
        (e.class, e.action.as_deref(), e.outcome),
        (EventClass::Authentication, Some("logon"), Outcome::Success)
    );
    fields(
        &e,
        &[
            ("user.name", "tester"),
            ("source.ip", "111.111.111.111"),
            ("cloud.account_id", "123456789012"),
            ("cloud.service", "signin"),
            ("attributes.cloudtrail.additionalEventData.MFAUsed", "No"),
        ],
    );
    let signins = rule("inputs/panther/azure_signin_rules/azure_failed_signins.yml");
    let e = one(Format::Azure, &signins[0]);
    assert_eq!((e.class, e.outcome), (EventClass::Authentication, Outcome::Failure));
    fields(&e, &[("source.ip", "12.12.12.12"), ("user.name", "some-service-principal"), ("cloud.provider", "azure")]);
    let diag = rule("inputs/panther/azure_activity_rules/azure_diagnostic_settings_deleted.yml");
    let e = one(Format::Azure, &diag[0]);
    fields(
        &e,
        &[
            ("action", "Microsoft.Insights/diagnosticSettings/delete"),
            ("cloud.account_id", "12345678-1234-1234-1234-123456789abc"),
        ],
    );
}

#[test]
fn otrf_cloudtrail_exfiltration_records() {
    let out = decode_file(
        Format::Cloudtrail,
        "otrf/extracted/ec2_proxy_s3_exfiltration/ec2_proxy_s3_exfiltration_2020-09-14011940.json",
    );
    assert_eq!((out.events.len(), out.rejected.len()), (103, 0), "{:?}", messages(&out.rejected));
    let get_object = out.events.iter().find(|e| e.action.as_deref() == Some("GetObject")).expect("GetObject");
    fields(
        get_object,
        &[
            ("user.name", "MordorNginxStack-BankingWAFRole-9S3E0UAE1MM0/i-0317f6c6b66ae9c40"),
            ("user.roles", "MordorNginxStack-BankingWAFRole-9S3E0UAE1MM0"),
            ("source.ip", "1.2.3.4"),
            ("cloud.service", "s3"),
            ("destination.bytes", "89"),
            ("time", "2020-09-14T01:02:34Z"),
            ("attributes.cloudtrail.requestParameters.key", "ring.txt"),
        ],
    );
    let assume = out.events.iter().find(|e| e.action.as_deref() == Some("AssumeRole")).expect("AssumeRole");
    fields(assume, &[("user.name", "ec2.amazonaws.com"), ("source.domain", "ec2.amazonaws.com")]);
    // The same records told apart by `auto`.
    let auto = decode_file(
        Format::Auto,
        "otrf/extracted/ec2_proxy_s3_exfiltration/ec2_proxy_s3_exfiltration_2020-09-14011940.json",
    );
    assert_eq!(auto.events.len(), 103);
}

#[test]
fn otrf_windows_datasets_in_their_flattened_forms() {
    let dcsync = decode_file(
        Format::Windows,
        "otrf/extracted/covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges/covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges_2020-08-05020926.json",
    );
    assert!(dcsync.rejected.is_empty(), "{:?}", messages(&dcsync.rejected));
    let access: Vec<&SecurityEvent> =
        dcsync.events.iter().filter(|e| e.action.as_deref() == Some("directory_object_access")).collect();
    assert!(!access.is_empty());
    let replication = access
        .iter()
        .find(|e| {
            get(e, "attributes.windows.Properties").is_some_and(|p| p.contains("1131f6aa-9c07-11d1-f79f-00c04fc2dcd2"))
        })
        .expect("a DS-Replication-Get-Changes access");
    assert_eq!(replication.class, EventClass::Audit);
    assert!(get(replication, "user.name").is_some());
    assert!(get(replication, "host.name").is_some());

    for dataset in [
        "cmd_psexec_lsa_secrets_dump/cmd_psexec_lsa_secrets_dump_2020-10-1903305471.json",
        "schtask_create/schtask_create_2020-12-1907003032.json",
    ] {
        let out = decode_file(Format::Windows, &format!("otrf/extracted/{dataset}"));
        assert!(out.rejected.is_empty(), "{dataset}: {:?}", &messages(&out.rejected)[..out.rejected.len().min(3)]);
        assert!(out.events.len() > 100, "{dataset}");
        let auto = decode_file(Format::Auto, &format!("otrf/extracted/{dataset}"));
        assert_eq!(auto.events.len(), out.events.len(), "{dataset} with auto");
    }
    let schtask = decode_file(Format::Windows, "otrf/extracted/schtask_create/schtask_create_2020-12-1907003032.json");
    assert!(schtask.events.iter().any(|e| e.action.as_deref() == Some("scheduled_task_created")), "a 4698");

    // Sentinel's WindowsEvent table: `EventData` as a JSON string.
    let sentinel = decode_file(
        Format::Windows,
        "otrf/extracted/sysmon_log4shell_cve2021_44228_java_serialized_object/sysmon_log4shell_cve2021_44228_java_serialized_object_2022-05-13045800.json",
    );
    assert!(sentinel.rejected.is_empty(), "{:?}", &messages(&sentinel.rejected)[..sentinel.rejected.len().min(3)]);
    let first = &sentinel.events[0];
    fields(first, &[("destination.port", "8080"), ("process.name", "tomcat9.exe"), ("host.name", "WORKSTATION5")]);
}

#[test]
fn otrf_sentinel_syslog_rows_carry_auditd_and_sysmon_for_linux() {
    let auoms = decode_file(
        Format::Auto,
        "otrf/extracted/syslog_auoms_auditd_log4shell_cve2021_44228_jndi_reference/syslog_auoms_auditd_log4shell_cve2021_44228_jndi_reference_2022-05-11181020.json",
    );
    assert!(auoms.rejected.is_empty(), "{:?}", &messages(&auoms.rejected)[..auoms.rejected.len().min(3)]);
    let exec = auoms.events.iter().find(|e| e.action.as_deref() == Some("process_started")).expect("an AUOMS_EXECVE");
    fields(exec, &[("process.executable", "/usr/lib/jvm/java-8-openjdk-amd64/jre/bin/java"), ("user.name", "tomcat")]);
    let sysmon = decode_file(
        Format::Auto,
        "otrf/extracted/syslog_sysmon_log4shell_cve2021_44228_jndi_reference/syslog_sysmon_log4shell_cve2021_44228_jndi_reference_2022-05-11181020.json",
    );
    assert!(sysmon.rejected.is_empty(), "{:?}", &messages(&sysmon.rejected)[..sysmon.rejected.len().min(3)]);
    let connection = sysmon.events.iter().find(|e| e.class == EventClass::Network).expect("a Sysmon 3");
    assert_eq!(get(connection, "host.name").as_deref(), Some("UBUNTU5"));
    assert!(sysmon.events.iter().all(|e| e.provider.as_deref() == Some("Linux-Sysmon")));
}

#[test]
fn bad_input_gets_a_precise_error_and_costs_only_itself() {
    // An XML bomb between two good events.
    let good = "<Event><System><Provider Name=\"Microsoft-Windows-Security-Auditing\"/><EventID>4625</EventID><Channel>Security</Channel><Computer>DC01</Computer></System><EventData><Data Name=\"TargetUserName\">admin</Data></EventData></Event>";
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]><Event><System><EventID>&lol1;</EventID></System></Event>";
    let out = decode(Format::Windows, format!("{good}\n{bomb}\n{good}\n").as_bytes());
    assert_eq!(out.events.len(), 2, "{:?}", messages(&out.rejected));
    assert_eq!(
        messages(&out.rejected),
        ["2: not readable as windows: XML with a DTD (`<!DOCTYPE`) is refused: no entity is expanded"]
    );

    // JSON nesting past the limit, in ECS NDJSON.
    let deep = format!("{{\"@timestamp\":\"2026-01-01T00:00:00Z\",\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let ecs = format!(
        "{{\"@timestamp\":\"2026-01-01T00:00:00Z\",\"event\":{{\"category\":\"network\"}}}}\n{deep}\n{{\"@timestamp\":\"2026-01-01T00:00:01Z\"}}\n"
    );
    let out = decode(Format::Ecs, ecs.as_bytes());
    assert_eq!(out.events.len(), 2);
    assert_eq!(out.rejected[0].line, 2);
    assert!(
        out.rejected[0].message.starts_with("nesting deeper than 32 levels at byte"),
        "{}",
        out.rejected[0].message
    );

    // A CloudTrail file that is not JSON: each line named, none stored.
    let out = decode(Format::Cloudtrail, b"<html><body>Access Denied</body></html>\n");
    assert!(out.events.is_empty());
    assert_eq!(out.rejected[0].line, 1);
    assert!(out.rejected[0].message.starts_with("malformed JSON at column 1"), "{}", out.rejected[0].message);
    // …and a truncated Records file.
    let out = decode(
        Format::Cloudtrail,
        b"{\"Records\":[{\"eventName\":\"GetObject\",\"eventTime\":\"2026-01-01T00:00:00Z\"},{\"eventNa",
    );
    assert!(out.events.is_empty());
    assert!(out.rejected[0].message.starts_with("malformed JSON"), "{}", out.rejected[0].message);

    // An auditd event without its EOE, in a stream that writes them.
    let audit = "type=SYSCALL msg=audit(1700000000.100:1): arch=c000003e syscall=59 success=yes exit=0 ppid=1 pid=10 uid=0 comm=\"id\" exe=\"/usr/bin/id\"\n\
                 type=EXECVE msg=audit(1700000000.100:1): argc=1 a0=\"id\"\n\
                 type=EOE msg=audit(1700000000.100:1):\n\
                 type=SYSCALL msg=audit(1700000001.100:2): arch=c000003e syscall=59 success=yes exit=0 ppid=1 pid=11 uid=0 comm=\"whoami\" exe=\"/usr/bin/whoami\"\n\
                 type=EXECVE msg=audit(1700000001.100:2): argc=1 a0=\"whoami\"\n\
                 type=SYSCALL msg=audit(1700000002.100:3 arch=c000003e\n";
    let out = decode(Format::Auditd, audit.as_bytes());
    let commands: Vec<String> = out.events.iter().filter_map(|e| get(e, "process.command_line")).collect();
    assert_eq!(commands, ["id", "whoami"], "both events are stored");
    assert_eq!(
        messages(&out.warnings),
        [
            "4: not readable as auditd: event 1700000001.100:2 ended without its EOE record; stored with the 2 record(s) read"
        ]
    );
    assert_eq!(messages(&out.rejected), ["6: not readable as auditd: `audit(` is not closed"]);

    // CEF with a broken escape between good lines.
    let cef = "CEF:0|Acme|IDS|1.0|100|Port scan|5|src=10.0.0.1 dst=10.0.0.2\n\
               CEF:0|Acme|IDS|1.0|100|Bad|5|src=10.0.0.1 msg=ends in \\\n\
               CEF:0|Acme|IDS|1.0|101|Login|3|suser=bob outcome=failure\n";
    let out = decode(Format::Cef, cef.as_bytes());
    assert_eq!(out.events.len(), 2);
    assert_eq!(
        messages(&out.rejected),
        ["2: not readable as cef: extension at byte 46: the value of `msg` ends in a dangling backslash"]
    );
}

/// Events of each class, through a sink's encoder and back through the matching decoder.
#[test]
fn ecs_ocsf_cef_and_leef_round_trip_through_the_sinks() {
    use vigil::transform::{Format as Sink, Input, Output, builtin};
    let event = |json: Value| -> SecurityEvent { serde_json::from_value(json).expect("event") };
    let base = serde_json::json!({ "id": "01900000-0000-7000-8000-000000000001", "time": "2026-03-02T11:58:01.250Z",
        "observed_time": "2026-03-02T11:58:02Z" });
    let with = |extra: Value| {
        let mut v = base.clone();
        v.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        event(v)
    };
    let samples = [
        with(
            serde_json::json!({ "class": "authentication", "action": "ssh_login", "outcome": "failure", "severity": "low",
            "source": { "ip": "203.0.113.7", "port": 52311 }, "user": { "name": "admin" }, "host": { "name": "bastion01" },
            "network": { "transport": "tcp", "protocol": "ssh" }, "provider": "sshd" }),
        ),
        with(serde_json::json!({ "class": "process", "action": "process_started", "severity": "high",
            "host": { "name": "WS-0042" }, "user": { "name": "pgustavo", "domain": "MORDOR" },
            "process": { "pid": 4242, "name": "powershell.exe", "command_line": "powershell.exe -nop -enc SQBFAFgA" } })),
        with(
            serde_json::json!({ "class": "network", "outcome": "success", "source": { "ip": "10.4.4.4", "port": 50000, "bytes": 400000 },
            "destination": { "ip": "198.51.100.200", "port": 443, "bytes": 12000 }, "network": { "transport": "tcp" } }),
        ),
        with(serde_json::json!({ "class": "http", "outcome": "failure", "source": { "ip": "198.51.100.23" },
            "url": { "full": "https://shop.example.com/login?next=%2Fadmin" },
            "http": { "method": "POST", "status_code": 401, "user_agent": "curl/8.5.0" }, "tenant": "acme" })),
    ];
    let compared = [
        "class",
        "action",
        "outcome",
        "severity",
        "time",
        "source.ip",
        "source.port",
        "destination.ip",
        "destination.port",
        "user.name",
        "host.name",
        "process.pid",
        "process.command_line",
        "url.full",
        "http.method",
        "http.status_code",
    ];
    for (sink, input) in
        [(Sink::Ecs, Format::Ecs), (Sink::Ocsf, Format::Ocsf), (Sink::Cef, Format::Cef), (Sink::Leef, Format::Leef)]
    {
        for original in &samples {
            let encoded = match builtin(&sink).apply(Input::Event(original)).expect("encodes") {
                Output::Json(v) => serde_json::to_vec(&v).expect("json"),
                Output::Text(t) => t.into_bytes(),
            };
            let out = decode(input.clone(), &encoded);
            assert_eq!(
                out.events.len(),
                1,
                "{input}: {:?}\n{}",
                messages(&out.rejected),
                String::from_utf8_lossy(&encoded)
            );
            let back = &out.events[0];
            for path in compared {
                // CEF and LEEF carry the time to the millisecond, as the samples have it.
                assert_eq!(
                    get(back, path),
                    get(original, path),
                    "{input} {path}\n{}",
                    String::from_utf8_lossy(&encoded)
                );
            }
            assert_eq!(back.id, original.id, "{input} keeps the event id");
        }
    }
}

/// The incidents `vigil rules backtest --input` raises on a file (by rule).
fn backtest_incidents(input: &Path, format: &str) -> std::collections::BTreeSet<String> {
    let out = std::process::Command::new(crate::helpers::vigil_bin())
        .args(["rules", "backtest", "--json", "--rules"])
        .arg(crate::helpers::rules_dir())
        .arg("--input")
        .arg(input)
        .args(["--format", format])
        .output()
        .expect("backtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", input.display());
    assert!(stderr.contains(" 0 record(s) did not decode"), "{}: {stderr}", input.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .filter(|r| r["kind"] == "incident")
        .map(|r| r["record"]["rule_id"].as_str().expect("rule").to_owned())
        .collect()
}

/// Each OTRF dataset through the shipped rules gives the incidents its description implies
/// (`otrf/meta`, the dataset's name), and no other.
#[test]
fn otrf_datasets_raise_the_incidents_their_descriptions_imply() {
    let cases: &[(&str, &str, &[&str])] = &[
        // DCSync: DRSUAPI DsGetNCChanges by a user account (4662 with the replication rights).
        (
            "covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges/covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges_2020-08-05020926.json",
            "windows",
            &["dcsync"],
        ),
        // SDAWS-200914011940: instance-profile keys taken through IMDS, used from outside for S3.
        (
            "ec2_proxy_s3_exfiltration/ec2_proxy_s3_exfiltration_2020-09-14011940.json",
            "cloudtrail",
            &["instance_credentials_used_externally"],
        ),
        // A scheduled task created on another host with `schtasks /create /S`.
        ("schtask_create/schtask_create_2020-12-1907003032.json", "windows", &["remote_scheduled_task"]),
        // Log4Shell (JNDI reference): Tomcat's JVM starts bash on the Linux host (Sysmon for Linux via Sentinel).
        (
            "syslog_sysmon_log4shell_cve2021_44228_jndi_reference/syslog_sysmon_log4shell_cve2021_44228_jndi_reference_2022-05-11181020.json",
            "auto",
            &["web_service_spawns_shell"],
        ),
        // Log4Shell (serialised object): Tomcat starts an encoded PowerShell on Windows.
        (
            "sysmon_log4shell_cve2021_44228_java_serialized_object/sysmon_log4shell_cve2021_44228_java_serialized_object_2022-05-13045800.json",
            "windows",
            &["encoded_powershell", "web_service_spawns_shell"],
        ),
        // The PsExec dataset's recording began by clearing the Security and System logs (1102, 104).
        (
            "cmd_psexec_lsa_secrets_dump/cmd_psexec_lsa_secrets_dump_2020-10-1903305471.json",
            "windows",
            &["audit_logging_disabled"],
        ),
        // Discovery with `arp -a` and binary padding with `dd`: no shipped rule covers them, and nothing else fires.
        ("sh_arp_cache/sh_arp_cache_2020-11-10074812.log", "auditd", &[]),
        ("sh_binary_padding_dd/sh_binary_padding_dd_2020-11-10081941.log", "auditd", &[]),
        // The network side of the nanodump campaign: internal traffic only.
        ("metasploit_nanodump_lsass_memory_dump_zeek_logs/conn.log", "zeek", &[]),
    ];
    for (file, format, expected) in cases {
        let input = shared(&format!("otrf/extracted/{file}"));
        let got = backtest_incidents(&input, format);
        let expected: std::collections::BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(got, expected, "{file}");
    }
}

/// Failed sshd logins from `ip`, timed just before now, as syslog lines.
fn sshd_failures(ip: &str, from: usize, n: usize) -> String {
    let now = chrono::Utc::now();
    (from..from + n)
        .map(|i| {
            let at = (now - chrono::Duration::seconds(30 - i as i64)).format("%b %e %H:%M:%S");
            format!("{at} bastion01 sshd[{}]: Failed password for root from {ip} port {} ssh2\n", 4000 + i, 40000 + i)
        })
        .collect()
}

#[test]
fn a_tailed_file_is_read_through_its_config_resumes_after_a_crash_and_feeds_detection() {
    use crate::helpers::{Server, post, wait_for};
    use std::io::Write;
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, sshd_failures("203.0.113.77", 0, 6)).expect("write");
    let mut server = Server::start(
        dir.path(),
        &format!("[[sources.file]]\npath = {log:?}\nformat = \"syslog\"\npoll_interval = \"100ms\"\n"),
    );
    let stored = |server: &Server| {
        let body = serde_json::json!({ "from": "1h", "filter": "event.source.ip == \"203.0.113.77\"",
            "group_by": ["source.ip"], "aggregates": ["count"] });
        let (status, result) = post(server, "/v1/hunts", body);
        assert_eq!(status, 200, "{result}");
        result["rows"][0]["count"].as_u64().unwrap_or(0)
    };
    wait_for(Duration::from_secs(30), "the file's six lines", || (stored(&server) == 6).then_some(()));

    // A crash, six more lines while it is down: the saved offset means each line once.
    server.kill9();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(sshd_failures("203.0.113.77", 6, 6).as_bytes()))
        .expect("append");
    server.restart();
    wait_for(Duration::from_secs(30), "the lines written while down", || (stored(&server) >= 12).then_some(()));
    let incident = crate::helpers::wait_for_incident(&server, "ssh_brute_force");
    assert_eq!(incident["entities"]["source_ips"], serde_json::json!(["203.0.113.77"]), "{incident}");
    assert_eq!(stored(&server), 12, "no line read twice across the crash");
    assert_eq!(
        crate::helpers::metric(&server.metrics(), &["vigil_events_ingested_total{", "file"]),
        6.0,
        "the restarted process read only the six new lines"
    );
}
