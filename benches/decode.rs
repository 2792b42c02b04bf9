//! Input decoding throughput per format, on one thread: a body of real records (the
//! samples of `../shared/data/`, or the bench fixtures through Vigil's own encoders for the
//! formats the samples lack) split, parsed, mapped and validated into SecurityEvents.
//!
//! `cargo bench --bench decode` (records per second: `thrpt`), with the binary's allocator
//! (mimalloc).

#[path = "fixtures.rs"]
mod fixtures;
#[path = "samples.rs"]
mod samples;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use samples::shared;
use vigil::event::SecurityEvent;
use vigil::source::IngestConfig;
use vigil::source::decode::{Format, Options, decode_body};
use vigil::transform::Format as Sink;

// The allocator of the `vigil` binary: decoding allocates per field, so the system
// allocator would measure glibc rather than the decoders.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `body` repeated until it holds at least `records` lines.
fn repeat(body: &str, records: usize) -> String {
    let lines = body.lines().filter(|l| !l.trim().is_empty()).count().max(1);
    body.repeat(records.div_ceil(lines))
}

/// auditd: the OTRF `arp -a` exec, its serial renumbered, many times over.
fn auditd(events: usize) -> String {
    let sample = std::fs::read_to_string(shared("otrf/extracted/sh_arp_cache/sh_arp_cache_2020-11-10074812.log"))
        .expect("sample");
    let first: String = sample.lines().take(6).map(|l| format!("{l}\n")).collect();
    (0..events).map(|i| first.replace(":92733)", &format!(":{})", 100_000 + i))).collect()
}

/// Zeek TSV: the OTRF conn.log's rows many times under its header.
fn zeek(rows: usize) -> String {
    let log =
        std::fs::read_to_string(shared("otrf/extracted/metasploit_nanodump_lsass_memory_dump_zeek_logs/conn.log"))
            .expect("sample");
    let header: String =
        log.lines().filter(|l| l.starts_with('#') && !l.starts_with("#close")).map(|l| format!("{l}\n")).collect();
    let data: String = log.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    header + repeat(&data, rows).as_str()
}

fn syslog(lines: usize) -> String {
    let mut body = String::new();
    for i in 0..lines {
        let line = match i % 4 {
            0 => format!(
                "Dec 10 06:55:48 LabSZ sshd[{}]: Failed password for invalid user webmaster from 173.234.{}.186 port 38926 ssh2",
                24_000 + i % 1000,
                i % 250
            ),
            1 => format!(
                "Dec 10 06:55:46 LabSZ sshd[{}]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=173.234.{}.186  user=root",
                24_000 + i % 1000,
                i % 250
            ),
            2 => format!(
                "Dec 10 09:32:20 LabSZ sshd[{}]: Accepted publickey for fztu from 119.137.62.{} port 49116 ssh2",
                24_000 + i % 1000,
                i % 250
            ),
            _ => format!(
                "Dec 10 06:55:48 LabSZ sshd[{}]: Connection closed by 173.234.{}.186 [preauth]",
                24_000 + i % 1000,
                i % 250
            ),
        };
        body.push_str(&line);
        body.push('\n');
    }
    body
}

fn read(path: &str) -> String {
    String::from_utf8(std::fs::read(shared(path)).expect("sample")).expect("utf-8")
}

fn bench(c: &mut Criterion) {
    let options = Options { limits: IngestConfig::default().limits(), keep_raw: false };
    let n = 10_000;
    let cases: Vec<(&str, Format, Vec<u8>)> = vec![
        ("vigil", Format::Vigil, fixtures::ndjson_body(n).into_bytes()),
        ("ecs", Format::Ecs, fixtures::encoded_body(Sink::Ecs, n).into_bytes()),
        ("ocsf", Format::Ocsf, fixtures::encoded_body(Sink::Ocsf, n).into_bytes()),
        ("cef", Format::Cef, fixtures::encoded_body(Sink::Cef, n).into_bytes()),
        ("leef", Format::Leef, fixtures::encoded_body(Sink::Leef, n).into_bytes()),
        ("cloudtrail", Format::Cloudtrail, repeat(&read("otrf/extracted/ec2_proxy_s3_exfiltration/ec2_proxy_s3_exfiltration_2020-09-14011940.json"), n).into_bytes()),
        ("windows_json", Format::Windows, repeat(&read("otrf/extracted/covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges/covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges_2020-08-05020926.json"), n).into_bytes()),
        ("evtx", Format::Windows, std::fs::read(shared("inputs/windows-evtx/security.evtx")).expect("evtx")),
        ("suricata", Format::Suricata, repeat(&read("inputs/suricata/eve.json"), n).into_bytes()),
        ("zeek_tsv", Format::Zeek, zeek(n).into_bytes()),
        ("auditd", Format::Auditd, auditd(n / 6).into_bytes()),
        ("syslog_sshd", Format::Syslog, syslog(n).into_bytes()),
        ("auto_mixed", Format::Auto, [fixtures::encoded_body(Sink::Ecs, n / 2), repeat(&read("inputs/suricata/eve.json"), n / 2)].concat().into_bytes()),
    ];
    let mut group = c.benchmark_group("decode");
    group.sample_size(20);
    for (name, format, body) in &cases {
        let (decoded, error) = decode_body(format, body, &options, chrono::Utc::now());
        assert_eq!(error, None, "{name}");
        assert!(decoded.rejected.is_empty(), "{name}: {:?}", decoded.rejected.first());
        let events: Vec<SecurityEvent> = decoded.events;
        assert!(!events.is_empty(), "{name}");
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function(*name, |b| b.iter(|| decode_body(format, body, &options, chrono::Utc::now())));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
