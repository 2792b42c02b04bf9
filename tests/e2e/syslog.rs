//! Syslog over TCP (octet counting and newline framing), UDP and TLS becomes
//! `SecurityEvent`s; malformed frames are counted and reported while the listener keeps
//! serving. The util-linux `logger` tool is used as a real sender.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Server, free_port, metric, sink_lines, wait_for};

fn start(extra: &str) -> (tempfile::TempDir, Server, u16, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tcp, udp) = (free_port(), free_port());
    let config = format!(
        "[sources.syslog]\ntcp = \"127.0.0.1:{tcp}\"\nudp = \"127.0.0.1:{udp}\"\nmax_frame_bytes = \"1KiB\"\n{extra}\n\
         [sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\nroute = {{ records = [\"event\"] }}\n"
    );
    let server = Server::start(dir.path(), &config);
    (dir, server, tcp, udp)
}

fn events(server: &Server, n: usize) -> Vec<Value> {
    wait_for(Duration::from_secs(30), &format!("{n} events in the sink"), || {
        let lines = sink_lines(&server.dir.join("out.jsonl"));
        (lines.len() >= n).then(|| lines.into_iter().map(|l| l["record"].clone()).collect())
    })
}

fn find<'a>(events: &'a [Value], needle: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
        .unwrap_or_else(|| panic!("no event with `{needle}` in {events:#?}"))
}

fn octet(frame: &str) -> Vec<u8> {
    format!("{} {frame}", frame.len()).into_bytes()
}

#[test]
fn tcp_and_udp_messages_become_events_and_bad_frames_are_counted() {
    let (_dir, server, tcp, udp) = start("");
    let mut stream = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
    let mut bytes = Vec::new();
    bytes.extend(octet("<38>1 2026-03-02T11:58:01.250Z bastion01 sshd 20417 - - Failed password for invalid user admin from 203.0.113.7 port 52311 ssh2"));
    // Declared larger than max_frame_bytes: skipped by its length, the stream goes on.
    bytes.extend(format!("2000 {}", "x".repeat(2000)).into_bytes());
    // Not UTF-8.
    bytes.extend(b"6 <13>\xff\xfe");
    // A newline-framed RFC 3164 message on the same connection.
    bytes.extend(
        b"<86>Mar  2 11:58:05 web02 sudo:    alice : TTY=pts/0 ; PWD=/srv/app ; USER=root ; COMMAND=/usr/bin/id\n",
    );
    stream.write_all(&bytes).expect("write");
    stream.flush().expect("flush");

    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket
        .send_to(
            b"<38>Mar  2 11:59:00 bastion01 sshd[20500]: Accepted publickey for carol from 10.1.2.3 port 50022 ssh2",
            ("127.0.0.1", udp),
        )
        .expect("send");
    socket.send_to(&vec![b'y'; 1500], ("127.0.0.1", udp)).expect("send oversize");

    let events = events(&server, 3);
    let failed = find(&events, "Failed password");
    assert_eq!(failed["class"], "authentication");
    assert_eq!(failed["outcome"], "failure");
    assert_eq!(failed["action"], "ssh_login");
    assert_eq!(failed["user"]["name"], "admin");
    assert_eq!(failed["source"]["ip"], "203.0.113.7");
    assert_eq!(failed["source"]["port"], 52311);
    assert_eq!(failed["host"]["name"], "bastion01");
    assert_eq!(failed["process"]["pid"], 20417);
    assert_eq!(failed["time"], "2026-03-02T11:58:01.250Z");
    assert_eq!(failed["attributes"]["syslog"]["facility"], "auth");

    let sudo = find(&events, "COMMAND=/usr/bin/id");
    assert_eq!(
        (sudo["class"].as_str(), sudo["user"]["target"]["name"].as_str()),
        (Some("authorization"), Some("root"))
    );

    let accepted = find(&events, "Accepted publickey");
    assert_eq!((accepted["outcome"].as_str(), accepted["user"]["name"].as_str()), (Some("success"), Some("carol")));

    let metrics = server.metrics();
    assert_eq!(metric(&metrics, &["vigil_events_rejected_total", "syslog_tcp", "frame_too_large"]), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, &["vigil_events_rejected_total", "syslog_tcp", "not_utf8"]), 1.0);
    assert_eq!(metric(&metrics, &["vigil_events_rejected_total", "syslog_udp", "frame_too_large"]), 1.0);
    assert!(server.log().contains("Malformed syslog frame skipped."), "the first bad frame is logged");

    // The listener still serves after the bad frames, on the same and new connections.
    stream.write_all(&octet("<38>1 - h sshd - - - Invalid user zed from 198.51.100.1 port 1")).expect("write");
    let mut second = TcpStream::connect(("127.0.0.1", tcp)).expect("connect again");
    second.write_all(&octet("<38>1 - h sshd - - - Invalid user amy from 198.51.100.2 port 2")).expect("write");
    let events = crate::syslog::events(&server, 5);
    assert_eq!(find(&events, "zed")["action"], "ssh_invalid_user");
    assert_eq!(find(&events, "amy")["source"]["ip"], "198.51.100.2");
}

#[test]
fn util_linux_logger_is_understood_over_tcp_and_udp() {
    let (_dir, server, tcp, udp) = start("");
    let send = |args: &[&str], port: u16, msg: &str| {
        let status = Command::new("logger")
            .args(args)
            .args(["-n", "127.0.0.1", "-P", &port.to_string(), "-t", "sshd", "--id=4242", "-p", "auth.info", msg])
            .status()
            .expect("logger (util-linux) is installed");
        assert!(status.success());
    };
    send(&["--rfc5424", "--tcp", "--octet-count"], tcp, "Failed password for root from 198.51.100.77 port 4242 ssh2");
    send(&["--rfc3164", "--udp"], udp, "Failed password for bob from 198.51.100.78 port 4243 ssh2");
    let events = events(&server, 2);
    for (ip, user) in [("198.51.100.77", "root"), ("198.51.100.78", "bob")] {
        let e = find(&events, ip);
        assert_eq!((e["class"].as_str(), e["outcome"].as_str()), (Some("authentication"), Some("failure")));
        assert_eq!(e["user"]["name"], user);
        assert_eq!(e["process"]["pid"], 4242);
        assert_eq!(e["attributes"]["syslog"]["facility"], "auth");
    }
}

#[test]
fn tls_listener_accepts_rfc5425_frames() {
    let certs = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certs.cert.pem()).expect("write cert");
    std::fs::write(&key, certs.signing_key.serialize_pem()).expect("write key");
    let port = free_port();
    let tls = format!("tls = {{ address = \"127.0.0.1:{port}\", cert_file = {cert:?}, key_file = {key:?} }}");
    let (_server_dir, server, _, _) = start(&tls);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.cert.der().clone()).expect("trust the test CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(("127.0.0.1", port)).expect("connect"));
    tls.write_all(&octet(
        "<38>1 2026-03-02T12:00:00Z vpn01 sshd 7 - - Failed password for root from 192.0.2.200 port 9 ssh2",
    ))
    .expect("write");
    tls.flush().expect("flush");
    let events = events(&server, 1);
    assert_eq!(find(&events, "192.0.2.200")["host"]["name"], "vpn01");
    // A client that does not speak TLS is refused and counted; the listener goes on.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = plain.write_all(b"<38>1 - - - - - plaintext\n");
    drop(plain);
    wait_for(Duration::from_secs(10), "the failed handshake counted", || {
        (metric(&server.metrics(), &["vigil_events_rejected_total", "syslog_tls", "tls_handshake"]) >= 1.0)
            .then_some(())
    });
}
