//! `vigil demo`: a realistic event stream with attacks hidden in normal traffic.
//!
//! Normal traffic: office users logging in over SSH (now and then mistyping a password),
//! web requests, DNS lookups and process starts. Hidden in it, from a random documentation
//! address each run: an SSH brute force that ends in a root login and a new UID-0 account,
//! and a web path scan from a second address. The SSH lines go through the real syslog
//! parser, so the demo exercises the same mapping a production feed does.

use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::event::{Endpoint, EventClass, Http, Outcome, Process, SecurityEvent, Url, User};
use crate::source::syslog::parse_syslog;

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Events to generate.
    pub events: usize,
    /// Seed for a reproducible stream; random when absent.
    pub seed: Option<u64>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { events: 5000, seed: None }
    }
}

/// The generated stream and what is hidden in it.
#[derive(Debug)]
pub struct DemoStream {
    /// Events in time order.
    pub events: Vec<SecurityEvent>,
    /// The SSH brute-force address.
    pub brute_force_ip: IpAddr,
    /// The web-scanning address.
    pub scanner_ip: IpAddr,
    /// The password-spraying address.
    pub sprayer_ip: IpAddr,
}

const HOSTS: [&str; 4] = ["bastion01", "web02", "db01", "build03"];
const USERS: [&str; 6] = ["alice", "bob", "carol", "deploy", "backup", "erin"];
const GUESSES: [&str; 8] = ["root", "admin", "oracle", "test", "ubuntu", "pi", "postgres", "root"];
const SPRAYED: [&str; 11] =
    ["alice.w", "bob.k", "carol.m", "dave.p", "erin.s", "frank.t", "grace.h", "heidi.l", "ivan.r", "judy.c", "mike.o"];
const PATHS: [&str; 6] = ["/", "/login", "/api/orders", "/static/app.js", "/api/cart", "/health"];
/// What a scanner asks for (a real one asks for hundreds).
const SCAN_PATHS: [&str; 16] = [
    "/.env",
    "/wp-login.php",
    "/.git/config",
    "/admin",
    "/phpmyadmin",
    "/backup.zip",
    "/config.php",
    "/server-status",
    "/.aws/credentials",
    "/actuator/env",
    "/wp-config.php.bak",
    "/.DS_Store",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/cgi-bin/.%2e/.%2e/bin/sh",
    "/solr/admin/info/system",
    "/.svn/entries",
];

/// Generates the stream, ending now, spread over ten minutes of event time.
pub fn generate(options: &DemoOptions) -> DemoStream {
    let mut rng = match options.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_rng(&mut rand::rng()),
    };
    let brute_force_ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, rng.random_range(1..=254)));
    let scanner_ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, rng.random_range(1..=254)));
    let sprayer_ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, rng.random_range(1..=254)));
    let total = options.events.max(200);
    // The sprayer tries one account every 50 s or so: eleven accounts in ten minutes. That
    // is also a brute force by count; both rules are of one family, so it is one incident.
    let spray_every = total / SPRAYED.len();
    let span = Duration::minutes(10);
    let start = Utc::now() - span;
    let step = span / i32::try_from(total).unwrap_or(i32::MAX);
    // The attacks run in the middle of the stream.
    let attack_from = total / 3;
    let attack_len = 40usize;
    let scan_from = total / 2;
    let mut events = Vec::with_capacity(total);
    let mut pid = 20_000;
    for i in 0..total {
        let t = start + step * i32::try_from(i).unwrap_or(i32::MAX);
        pid += rng.random_range(1..7);
        let host = HOSTS[rng.random_range(0..HOSTS.len())];
        let event = if (attack_from..attack_from + attack_len).contains(&i) {
            let user = GUESSES[rng.random_range(0..GUESSES.len())];
            let port = rng.random_range(30_000..65_000);
            ssh(t, "bastion01", pid, &format!("Failed password for {user} from {brute_force_ip} port {port} ssh2"))
        } else if i == attack_from + attack_len {
            ssh(t, "bastion01", pid, &format!("Accepted password for root from {brute_force_ip} port 51515 ssh2"))
        } else if i == attack_from + attack_len + 3 {
            syslog(
                t,
                "bastion01",
                "useradd",
                pid,
                "new user: name=sysupdate, UID=0, GID=0, home=/root, shell=/bin/bash",
            )
        } else if i % spray_every == spray_every / 2 && i / spray_every < SPRAYED.len() {
            let user = SPRAYED[i / spray_every];
            ssh(
                t,
                "bastion01",
                pid,
                &format!("Failed password for invalid user {user} from {sprayer_ip} port 40404 ssh2"),
            )
        } else if (scan_from..scan_from + 30).contains(&i) {
            http(t, scanner_ip, "GET", SCAN_PATHS[i % SCAN_PATHS.len()], 404, "Mozilla/5.0 zgrab/0.x")
        } else {
            normal(&mut rng, t, host, pid)
        };
        events.push(event);
    }
    DemoStream { events, brute_force_ip, scanner_ip, sprayer_ip }
}

fn normal(rng: &mut StdRng, t: DateTime<Utc>, host: &str, pid: u32) -> SecurityEvent {
    let user = USERS[rng.random_range(0..USERS.len())];
    let office =
        IpAddr::V4(Ipv4Addr::new(10, rng.random_range(0..4), rng.random_range(0..=255), rng.random_range(1..=254)));
    match rng.random_range(0..100) {
        0..=24 => {
            let method = if rng.random_bool(0.8) { "publickey" } else { "password" };
            let port = rng.random_range(30_000..65_000);
            ssh(t, host, pid, &format!("Accepted {method} for {user} from {office} port {port} ssh2"))
        }
        25..=26 => ssh(t, host, pid, &format!("Failed password for {user} from {office} port 40022 ssh2")),
        27..=59 => {
            let path = PATHS[rng.random_range(0..PATHS.len())];
            let status = if rng.random_bool(0.97) { 200 } else { 404 };
            let client = IpAddr::V4(Ipv4Addr::new(
                rng.random_range(11..200),
                rng.random_range(0..=255),
                rng.random_range(0..=255),
                rng.random_range(1..=254),
            ));
            http(t, client, "GET", path, status, "Mozilla/5.0 (X11; Linux x86_64)")
        }
        60..=79 => {
            let mut e = SecurityEvent::new(EventClass::Dns, t);
            e.provider = Some("coredns".into());
            e.source = Some(Endpoint { ip: Some(office), ..Default::default() });
            let name = ["api.github.com", "deb.debian.org", "pypi.org", "slack.com"][rng.random_range(0..4)];
            e.attributes.insert("dns".into(), serde_json::json!({ "question": { "name": name, "type": "A" } }));
            e.outcome = Outcome::Success;
            e
        }
        _ => {
            let mut e = SecurityEvent::new(EventClass::Process, t);
            e.action = Some("process_started".into());
            e.host = Some(Box::new(crate::event::Host { name: Some(host.into()), ..Default::default() }));
            e.user = Some(Box::new(User { name: Some(user.into()), ..Default::default() }));
            let (name, cmd) = [
                ("git", "git pull --ff-only"),
                ("python3", "python3 manage.py migrate"),
                ("ls", "ls -la"),
                ("cron", "/usr/sbin/cron -f"),
            ][rng.random_range(0..4)];
            e.process = Some(Box::new(Process {
                pid: Some(pid),
                name: Some(name.into()),
                command_line: Some(cmd.into()),
                ..Default::default()
            }));
            e
        }
    }
}

fn syslog(t: DateTime<Utc>, host: &str, app: &str, pid: u32, msg: &str) -> SecurityEvent {
    let line = format!("<38>{} {host} {app}[{pid}]: {msg}", t.format("%b %e %H:%M:%S"));
    let mut event = parse_syslog(&line, Utc::now(), false);
    // Keep sub-second event time, which RFC 3164 timestamps cannot carry.
    event.time = t;
    event
}

fn ssh(t: DateTime<Utc>, host: &str, pid: u32, msg: &str) -> SecurityEvent {
    syslog(t, host, "sshd", pid, msg)
}

fn http(t: DateTime<Utc>, client: IpAddr, method: &str, path: &str, status: u16, agent: &str) -> SecurityEvent {
    let mut e = SecurityEvent::new(EventClass::Http, t);
    e.provider = Some("nginx".into());
    e.source = Some(Endpoint { ip: Some(client), ..Default::default() });
    e.destination = Some(Endpoint { domain: Some("shop.example.com".into()), port: Some(443), ..Default::default() });
    e.url =
        Some(Box::new(Url { path: Some(path.into()), domain: Some("shop.example.com".into()), ..Default::default() }));
    e.http = Some(Box::new(Http {
        method: Some(method.into()),
        status_code: Some(status),
        user_agent: Some(agent.into()),
        ..Default::default()
    }));
    e.outcome = if status < 400 { Outcome::Success } else { Outcome::Failure };
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_reproducible_and_hides_the_attacks() {
        let options = DemoOptions { events: 1000, seed: Some(7) };
        let a = generate(&options);
        let b = generate(&options);
        assert_eq!(a.brute_force_ip, b.brute_force_ip);
        assert_eq!(a.events.len(), 1000);
        let from_attacker = |e: &SecurityEvent| e.source.as_ref().and_then(|s| s.ip) == Some(a.brute_force_ip);
        let failures = a.events.iter().filter(|e| from_attacker(e) && e.outcome == Outcome::Failure).count();
        assert_eq!(failures, 40);
        assert!(a.events.iter().any(|e| from_attacker(e) && e.outcome == Outcome::Success));
        assert!(a.events.windows(2).all(|w| w[0].time <= w[1].time));
        assert!(a.events.iter().all(|e| crate::event::validate(e, &Default::default()).is_empty()));
    }
}
