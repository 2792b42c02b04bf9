//! `vigil demo --scenario DIR`: a labelled scenario for `vigil rules score`.
//!
//! An hour of a small company's records in the formats its producers write — sshd
//! syslog lines, Winlogbeat JSON of Windows Security events, CloudTrail, Zeek `conn`
//! JSON, Kubernetes audit events and ECS web access records — read with `--format auto`.
//! Hidden in ordinary traffic: twelve attacks of auth, network, process, cloud and IAM
//! kinds, and benign look-alikes (a mistyped password, an upload, a nmap of a few ports,
//! a member added to an ordinary group, MFA logins). Attack sizes are drawn from the
//! ranges public incident write-ups report, not from the rules' thresholds; the truth file
//! says which entity each attack and each look-alike is, and which rules may find it.

use std::net::Ipv4Addr;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::incident::score::{Benign, Expected, Truth};

/// A scenario: its records (one per line, mixed formats) and what is in them.
#[derive(Debug)]
pub struct Scenario {
    /// Records in time order, each on its own line.
    pub lines: Vec<String>,
    /// The labels.
    pub truth: Truth,
}

struct Builder {
    rng: StdRng,
    start: DateTime<Utc>,
    records: Vec<(DateTime<Utc>, String)>,
    truth: Truth,
}

const STAFF: [&str; 24] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj", "olivia",
    "peggy", "rupert", "sybil", "trent", "uma", "victor", "walter", "xena", "yusuf", "zoe", "quinn",
];
const HOSTS: [&str; 4] = ["web01", "web02", "db01", "build03"];

impl Builder {
    fn at(&self, secs: i64) -> DateTime<Utc> {
        self.start + Duration::seconds(secs)
    }

    fn push(&mut self, t: DateTime<Utc>, line: String) {
        self.records.push((t, line));
    }

    fn expect(&mut self, entity: &str, behaviour: &str, rules: &[&str]) {
        self.truth.expect.push(Expected {
            entity: entity.into(),
            behaviour: behaviour.into(),
            rules: rules.iter().map(|r| (*r).to_owned()).collect(),
        });
    }

    fn benign(&mut self, entity: &str, why: &str) {
        self.truth.benign.push(Benign { entity: entity.into(), why: why.into() });
    }

    fn sshd(&mut self, secs: i64, host: &str, msg: &str) {
        let t = self.at(secs);
        let pid = self.rng.random_range(2_000..60_000);
        self.push(t, format!("{} {host} sshd[{pid}]: {msg}", t.format("%b %e %H:%M:%S")));
    }

    fn windows(&mut self, secs: i64, id: u32, data: serde_json::Value) {
        let t = self.at(secs);
        let mut record = json!({ "EventID": id, "Channel": "Security", "Computer": "DC01.corp.example",
            "TimeCreated": rfc3339(t), "ProviderName": "Microsoft-Windows-Security-Auditing" });
        if let (Some(o), Some(d)) = (record.as_object_mut(), data.as_object()) {
            o.extend(d.clone());
        }
        self.push(t, record.to_string());
    }

    fn cloudtrail(&mut self, secs: i64, name: &str, user: &str, source: &str, extra: serde_json::Value) {
        let t = self.at(secs);
        let mut record = json!({ "eventVersion": "1.08", "eventTime": rfc3339(t), "eventSource": source,
            "eventName": name, "awsRegion": "eu-west-1", "sourceIPAddress": "198.51.100.77",
            "userAgent": "aws-cli/2.15.0", "recipientAccountId": "123456789012",
            "eventID": uuid(&mut self.rng),
            "userIdentity": { "type": "IAMUser", "userName": user, "accountId": "123456789012",
                "arn": format!("arn:aws:iam::123456789012:user/{user}") } });
        merge(&mut record, &extra);
        self.push(t, record.to_string());
    }

    fn conn(&mut self, secs: i64, from: &str, to: &str, port: u16, sent: u64, state: &str) {
        let t = self.at(secs);
        let record = json!({ "ts": t.timestamp_micros() as f64 / 1e6, "uid": format!("C{}", self.rng.random::<u32>()),
            "id.orig_h": from, "id.orig_p": self.rng.random_range(32_768..60_999), "id.resp_h": to,
            "id.resp_p": port, "proto": "tcp", "duration": 1.5, "orig_bytes": sent, "resp_bytes": 512,
            "conn_state": state });
        self.push(t, record.to_string());
    }

    fn web(&mut self, secs: i64, client: &str, path: &str, status: u16) {
        let t = self.at(secs);
        let record = json!({ "@timestamp": rfc3339(t), "event": { "category": ["web"], "kind": "event",
            "outcome": if status < 400 { "success" } else { "failure" } },
            "source": { "ip": client }, "url": { "path": path }, "host": { "name": "web01" },
            "http": { "request": { "method": "GET" }, "response": { "status_code": status } },
            "user_agent": { "original": "Mozilla/5.0" } });
        self.push(t, record.to_string());
    }

    fn ecs_logon(&mut self, secs: i64, client: &str, user: &str, ok: bool) {
        let t = self.at(secs);
        let record = json!({ "@timestamp": rfc3339(t), "event": { "category": ["authentication"], "type": ["start"],
            "action": "logon", "outcome": if ok { "success" } else { "failure" } },
            "source": { "ip": client }, "user": { "name": user }, "host": { "name": "vpn01" },
            "observer": { "product": "openvpn" } });
        self.push(t, record.to_string());
    }

    fn k8s(&mut self, secs: i64, user: &str, verb: &str, resource: &str, sub: Option<&str>) {
        let t = self.at(secs);
        let mut object =
            json!({ "resource": resource, "namespace": "payments", "name": "api-7d4f9", "apiVersion": "v1" });
        if let Some(sub) = sub {
            object["subresource"] = json!(sub);
        }
        let record = json!({ "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": uuid(&mut self.rng), "stage": "ResponseComplete", "verb": verb, "objectRef": object,
            "user": { "username": user, "groups": ["system:authenticated"] }, "sourceIPs": ["10.8.0.21"],
            "requestReceivedTimestamp": rfc3339(t), "stageTimestamp": rfc3339(t),
            "responseStatus": { "code": if verb == "create" { 101 } else { 200 } } });
        self.push(t, record.to_string());
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn uuid(rng: &mut StdRng) -> String {
    let n: u128 = rng.random();
    let h = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn merge(into: &mut serde_json::Value, extra: &serde_json::Value) {
    if let (Some(o), Some(e)) = (into.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
}

fn public(rng: &mut StdRng, net: [u8; 3]) -> String {
    Ipv4Addr::new(net[0], net[1], net[2], rng.random_range(2..=250)).to_string()
}

/// The scenario of `seed`, starting at `start` and lasting an hour.
pub fn generate(seed: u64, start: DateTime<Utc>) -> Scenario {
    let mut b = Builder {
        rng: StdRng::seed_from_u64(seed),
        start,
        records: Vec::new(),
        truth: Truth { name: format!("vigil scenario (seed {seed})"), ..Truth::default() },
    };
    background(&mut b);
    attacks(&mut b);
    lookalikes(&mut b);
    b.records.sort_by_key(|(t, _)| *t);
    Scenario { lines: b.records.into_iter().map(|(_, l)| l).collect(), truth: b.truth }
}

/// An hour of ordinary work: a few logins per person (two dozen people), web traffic,
/// connections, cloud reads.
fn background(b: &mut Builder) {
    for _ in 0..2_000 {
        let secs = b.rng.random_range(0..3_600);
        let user = STAFF[b.rng.random_range(0..STAFF.len())];
        let office = format!("10.1.{}.{}", b.rng.random_range(0..4), b.rng.random_range(2..250));
        match b.rng.random_range(0..100) {
            0..=1 => {
                let host = HOSTS[b.rng.random_range(0..HOSTS.len())];
                b.sshd(secs, host, &format!("Accepted publickey for {user} from {office} port 50022 ssh2"));
            }
            2..=3 => b.ecs_logon(secs, &office, user, true),
            4..=5 => b.windows(
                secs,
                4624,
                json!({ "TargetUserName": user, "TargetDomainName": "CORP", "LogonType": 3,
                "IpAddress": office, "WorkstationName": "WKS-12" }),
            ),
            6..=59 => {
                let client = public(&mut b.rng, [198, 18, 0]);
                let path = ["/", "/login", "/api/orders", "/static/app.js"][b.rng.random_range(0..4)];
                b.web(secs, &client, path, 200);
            }
            60..=84 => {
                let to = public(&mut b.rng, [192, 0, 2]);
                let sent = b.rng.random_range(400..2_000_000);
                b.conn(secs, &office, &to, 443, sent, "SF");
            }
            _ => b.cloudtrail(secs, "GetObject", user, "s3.amazonaws.com", json!({ "readOnly": true })),
        }
    }
}

fn attacks(b: &mut Builder) {
    // SSH brute force: a bot trying common accounts, 8 to 40 passwords in a few minutes.
    let ssh = public(&mut b.rng, [203, 0, 113]);
    let tries = b.rng.random_range(8..=40);
    for i in 0..tries {
        let user = ["root", "admin", "ubuntu", "test"][i % 4];
        b.sshd(300 + i as i64 * 4, "web01", &format!("Failed password for {user} from {ssh} port {} ssh2", 40_000 + i));
    }
    b.expect(&ssh, "SSH brute force", &["ssh_brute_force", "ssh_slow_brute_force", "password_spraying"]);

    // Windows logon brute force from a compromised workstation (network logons, 4625).
    let wks = "10.1.7.66";
    for i in 0..b.rng.random_range(10..=30) {
        b.windows(
            600 + i * 6,
            4625,
            json!({ "TargetUserName": "Administrator", "TargetDomainName": "CORP",
            "LogonType": 3, "IpAddress": wks, "WorkstationName": "WKS-66", "Status": "0xc000006d",
            "SubStatus": "0xc000006a", "FailureReason": "%%2313" }),
        );
    }
    b.expect(wks, "Windows logon brute force", &["auth_brute_force"]);

    // Password spraying at the VPN: one password against 10 to 25 accounts.
    let sprayer = public(&mut b.rng, [198, 51, 100]);
    for i in 0..b.rng.random_range(10..=25) {
        b.ecs_logon(900 + i * 20, &sprayer, STAFF[i as usize % STAFF.len()], false);
    }
    b.expect(&sprayer, "password spraying", &["password_spraying", "auth_brute_force"]);

    // A brute force that finds the password.
    let guesser = public(&mut b.rng, [203, 0, 113]);
    for i in 0..b.rng.random_range(6..=15) {
        b.ecs_logon(1200 + i * 5, &guesser, "erin", false);
    }
    b.ecs_logon(1300, &guesser, "erin", true);
    b.expect(&guesser, "brute force then success", &["brute_force_then_success"]);

    // Domain Admins gains a member.
    b.windows(
        1500,
        4728,
        json!({ "SubjectUserName": "helpdesk2", "SubjectDomainName": "CORP",
        "MemberName": "CN=svc_print,OU=Service,DC=corp,DC=example", "TargetUserName": "Domain Admins",
        "TargetDomainName": "CORP" }),
    );
    b.expect(
        "CN=svc_print,OU=Service,DC=corp,DC=example",
        "privileged group change",
        &["privileged_group_member_added"],
    );

    // The intruder stops the trail, with their own keys.
    b.cloudtrail(
        1800,
        "StopLogging",
        "intruder",
        "cloudtrail.amazonaws.com",
        json!({ "requestParameters": { "name": "arn:aws:cloudtrail:eu-west-1:123456789012:trail/main" } }),
    );
    b.expect("intruder", "audit logging stopped", &["audit_logging_disabled"]);

    // An internal host uploads 1.5 to 6 GB to a host on the internet (no direction in Zeek).
    let mule = "10.1.3.99";
    let chunks = b.rng.random_range(3..=12);
    for i in 0..chunks {
        b.conn(2000 + i * 60, mule, "192.0.2.200", 443, 500_000_000, "SF");
    }
    b.expect(mule, "exfiltration to a public address", &["data_exfiltration"]);

    // A port scan of a server: 50 to 500 ports in under a minute.
    let scanner = public(&mut b.rng, [198, 51, 100]);
    for port in 0..b.rng.random_range(50..=500) {
        b.conn(2200 + i64::from(port) / 10, &scanner, "10.1.0.10", 1 + port, 0, "REJ");
    }
    b.expect(&scanner, "port scan", &["port_scan"]);

    // A web scanner asks for known files.
    let web = public(&mut b.rng, [203, 0, 113]);
    let paths = [
        "/.env",
        "/.git/config",
        "/wp-login.php",
        "/phpmyadmin/",
        "/server-status",
        "/backup.tar.gz",
        "/.aws/credentials",
        "/actuator/env",
        "/config.json",
        "/.DS_Store",
        "/admin/",
        "/debug/pprof/",
    ];
    for (i, path) in paths.iter().enumerate() {
        b.web(2400 + i as i64, &web, path, 404);
    }
    b.expect(&web, "web path scan", &["web_path_scan"]);

    // A console login without MFA, then a key made for another user.
    b.cloudtrail(2600, "ConsoleLogin", "contractor", "signin.amazonaws.com", json!({
        "responseElements": { "ConsoleLogin": "Success" },
        "additionalEventData": { "LoginTo": "https://console.aws.amazon.com/console/", "MobileVersion": "No", "MFAUsed": "No" } }));
    b.expect("contractor", "console login without MFA", &["cloud_console_login_without_mfa"]);
    b.cloudtrail(
        2700,
        "CreateAccessKey",
        "contractor",
        "iam.amazonaws.com",
        json!({ "requestParameters": { "userName": "finance-admin" } }),
    );
    b.expect("finance-admin", "access key for another user", &["access_key_created_for_another_user"]);

    // Someone opens a shell in a payments pod.
    b.k8s(3000, "dev-temp@example.com", "create", "pods", Some("exec"));
    b.expect("dev-temp@example.com", "exec into a pod", &["k8s_exec_into_pod"]);
}

/// Benign behaviour that looks like the attacks at a glance.
fn lookalikes(b: &mut Builder) {
    // A user mistypes twice, then logs in.
    b.sshd(400, "db01", "Failed password for carol from 10.1.2.30 port 50100 ssh2");
    b.sshd(410, "db01", "Failed password for carol from 10.1.2.30 port 50100 ssh2");
    b.sshd(420, "db01", "Accepted password for carol from 10.1.2.30 port 50100 ssh2");
    b.benign("10.1.2.30", "a mistyped password, then a login");
    // A laptop with a stale saved password: three failures at the VPN over an hour.
    for i in 0..3 {
        b.ecs_logon(500 + i * 1200, "10.1.5.44", "frank", false);
    }
    b.benign("10.1.5.44", "a stale saved password");
    // A nightly upload to the backup provider: a few hundred megabytes.
    b.conn(1000, "10.1.0.5", "192.0.2.150", 443, 300_000_000, "SF");
    b.benign("10.1.0.5", "a backup of a few hundred megabytes");
    // An admin checks a few ports of one server.
    for port in [22, 80, 443, 5432, 8080] {
        b.conn(1100, "10.1.0.2", "10.1.0.10", port, 0, "S0");
    }
    b.benign("10.1.0.2", "an admin checking five ports");
    // A member added to an ordinary group.
    b.windows(
        1600,
        4728,
        json!({ "SubjectUserName": "helpdesk2", "SubjectDomainName": "CORP",
        "MemberName": "CN=bob,OU=Users,DC=corp,DC=example", "TargetUserName": "Marketing" }),
    );
    b.benign("CN=bob,OU=Users,DC=corp,DC=example", "added to an ordinary group");
    // Console logins with MFA; a key made for oneself.
    b.cloudtrail(
        2650,
        "ConsoleLogin",
        "alice",
        "signin.amazonaws.com",
        json!({
        "responseElements": { "ConsoleLogin": "Success" },
        "additionalEventData": { "MFAUsed": "Yes", "MobileVersion": "No" } }),
    );
    b.benign("cfo-laptop-user", "a console login with MFA");
    b.cloudtrail(
        2750,
        "CreateAccessKey",
        "ci-bot",
        "iam.amazonaws.com",
        json!({ "requestParameters": { "userName": "ci-bot" } }),
    );
    b.benign("ci-bot", "a key rotated by its own user");
    // A broken link clicked a few times.
    for i in 0..4 {
        b.web(2500 + i * 30, "198.18.7.7", "/old-pricing", 404);
    }
    b.benign("198.18.7.7", "a broken link");
    // Reading pods is not exec.
    b.k8s(3100, "sre@example.com", "get", "pods", None);
    b.benign("sre@example.com", "reading pods");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_scenario_with_a_label_per_attack() {
        let start = DateTime::from_timestamp(1_767_225_600, 0).expect("time");
        let a = generate(7, start);
        let b = generate(7, start);
        assert_eq!(a.lines, b.lines);
        assert_eq!(a.truth.expect.len(), 12);
        assert_eq!(a.truth.benign.len(), 9);
        assert!(a.lines.len() > 2_000);
        assert_ne!(generate(8, start).lines, a.lines);
    }
}
