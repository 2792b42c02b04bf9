//! The syslog sink against real receivers: rsyslog and syslog-ng parse our RFC 5424
//! frames (and syslog-ng our CEF payloads) over UDP, TCP with octet counting, and TLS with
//! a client certificate. `scripts/setup.sh` installs both.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{Server, blocking, free_port, wait_for};

const PROBE: &str = "udp-ready-probe";

/// A receiver process, stopped by PID when dropped.
struct Peer {
    child: Child,
    dir: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("out.jsonl")).unwrap_or_default();
        // The receiver may be mid-write: only complete lines count.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.contains(PROBE))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("receiver wrote non-JSON ({e}): {l}")))
            .collect()
    }

    /// What was received once there are `n` messages, or at the deadline (for the
    /// assertions to say what is missing).
    fn lines_when(&self, timeout: Duration, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + timeout;
        wait_for(timeout + Duration::from_secs(5), "the receiver's output", || {
            let lines = self.lines();
            (lines.len() >= n || std::time::Instant::now() > deadline).then_some(lines)
        })
    }

    /// Waits until the UDP input is up too: probes until one is written.
    fn wait_udp(&self, port: u16) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        wait_for(Duration::from_secs(20), "the receiver's UDP input", || {
            let _ = socket.send_to(format!("<14>1 - - probe - - - {PROBE}").as_bytes(), ("127.0.0.1", port));
            std::fs::read_to_string(self.dir.join("out.jsonl")).unwrap_or_default().contains(PROBE).then_some(())
        });
    }

    fn wait_listening(&mut self, port: u16) {
        wait_for(Duration::from_secs(20), "the receiver to listen", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "receiver exited with {status}: {}",
                    std::fs::read_to_string(self.dir.join("peer.log")).unwrap_or_default()
                );
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        });
    }
}

fn config(template: &str, dir: &Path, port: u16, tls_port: u16) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers").join(template))
        .expect("peer config");
    let text = text
        .replace("@DIR@", &dir.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@TLSPORT@", &tls_port.to_string());
    let path = dir.join(template.trim_end_matches(".in"));
    std::fs::write(&path, text).expect("write peer config");
    path
}

fn rsyslog(dir: &Path, port: u16) -> Peer {
    let bin = Path::new("/usr/sbin/rsyslogd");
    assert!(bin.exists(), "rsyslogd is missing: run scripts/setup.sh");
    std::fs::create_dir_all(dir.join("work")).expect("work dir");
    let conf = config("rsyslog.conf.in", dir, port, 0);
    let log = std::fs::File::create(dir.join("peer.log")).expect("log");
    let child = Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("pid"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rsyslogd");
    let mut peer = Peer { child, dir: dir.to_owned() };
    peer.wait_listening(port);
    peer.wait_udp(port);
    peer
}

fn syslog_ng(dir: &Path, port: u16, tls_port: u16) -> Peer {
    let root = crate::helpers::peers_dir().join("syslog-ng");
    let bin = root.join("usr/sbin/syslog-ng");
    assert!(bin.exists(), "syslog-ng is missing under {}: run scripts/setup.sh", root.display());
    // ca.pem, server.pem/key for "localhost", client.pem/key: both signed by the CA, which
    // syslog-ng checks client certificates against.
    crate::helpers::TlsFiles::generate(dir);
    // A client certificate the CA did not sign, which syslog-ng must refuse.
    let stranger = rcgen::generate_simple_self_signed(vec!["stranger".into()]).expect("certificate");
    std::fs::write(dir.join("stranger.pem"), stranger.cert.pem()).expect("cert");
    std::fs::write(dir.join("stranger.key"), stranger.signing_key.serialize_pem()).expect("key");
    let conf = config("syslog-ng.conf.in", dir, port, tls_port);
    let log = std::fs::File::create(dir.join("peer.log")).expect("log");
    let child = Command::new(&bin)
        .env("LD_LIBRARY_PATH", root.join("usr/lib/syslog-ng"))
        .arg("-F")
        // Its own messages (connections, TLS refusals) to stderr, which is peer.log.
        .arg("-e")
        .arg("--no-caps")
        .arg(format!("--module-path={}", root.join("usr/lib/syslog-ng/3.38").display()))
        .arg("-f")
        .arg(&conf)
        .arg("-R")
        .arg(dir.join("persist"))
        .arg("-c")
        .arg(dir.join("ctl"))
        .arg("-p")
        .arg(dir.join("pid"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start syslog-ng");
    let mut peer = Peer { child, dir: dir.to_owned() };
    peer.wait_listening(port);
    peer.wait_listening(tls_port);
    peer.wait_udp(port);
    peer
}

/// `n` events with distinct ids and a message with spaces, `=` and a backslash.
fn ingest(server: &Server, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("0190c000-0000-7000-8000-{i:012}")).collect();
    let body = ids
        .iter()
        .map(|id| {
            serde_json::json!({"id": id, "class": "authentication", "action": "ssh_login", "outcome": "failure",
                "severity": "high", "source": {"ip": "203.0.113.7", "port": 52311}, "user": {"name": "admin"},
                "host": {"name": "bastion01"}, "message": "Failed password for admin a=b c\\d"})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let status = blocking(async {
        reqwest::Client::new().post(server.url("/v1/events")).body(body).send().await.map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202));
    ids
}

#[test]
fn rsyslog_parses_our_rfc5424_over_udp_and_tcp() {
    let peer_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let peer = rsyslog(peer_dir.path(), port);
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = |name: &str, protocol: &str| {
        format!(
            "[sinks.{name}]\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"{protocol}\"\nhostname = \"vigil-test\"\n\
             route = {{ records = [\"event\"], classes = [\"authentication\"] }}\n"
        )
    };
    let server = Server::start(dir.path(), &format!("{}{}", sink("tcp", "tcp"), sink("udp", "udp")));
    let ids = ingest(&server, 200);
    let lines = peer.lines_when(Duration::from_secs(30), 400);
    for input in ["imtcp", "imudp"] {
        let got: HashSet<String> = lines
            .iter()
            .filter(|l| l["inputname"] == input)
            .map(|l| {
                l["rfc5424-sd"]["vigil@32473"]["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("structured data parsed: {l}"))
                    .to_owned()
            })
            .collect();
        let count = lines.iter().filter(|l| l["inputname"] == input).count();
        assert_eq!(
            got,
            ids.iter().cloned().collect::<HashSet<_>>(),
            "every event over {input} ({count} messages, {} distinct); log:\n{}",
            got.len(),
            server.log()
        );
    }
    for l in &lines {
        assert_eq!(l["msgid"], "EVENT");
        assert_eq!(l["app_name"], "vigil");
        assert_eq!(l["hostname"], "vigil-test");
        assert_eq!(l["rfc5424-sd"]["vigil@32473"]["kind"], "event");
        // local4 (20) × 8 + error (3) for a high-severity event.
        assert_eq!(l["pri"], "163", "{l}");
        let record: serde_json::Value = serde_json::from_str(l["msg"].as_str().expect("msg")).expect("JSON payload");
        assert_eq!(record["message"], "Failed password for admin a=b c\\d");
    }
}

#[test]
fn syslog_ng_parses_our_cef_over_tcp_udp_and_tls_with_a_client_certificate() {
    let peer_dir = tempfile::tempdir().expect("tempdir");
    let (port, tls_port) = (free_port(), free_port());
    let peer = syslog_ng(peer_dir.path(), port, tls_port);
    let p = peer_dir.path();
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = |name: &str, protocol: &str, port: u16, extra: &str| {
        format!(
            "[sinks.{name}]\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"{protocol}\"\nformat = \"cef\"\n\
             route = {{ records = [\"event\"], classes = [\"authentication\"] }}\n{extra}"
        )
    };
    let tls = |client: &str| {
        format!(
            "tls = {{ ca_file = {:?}, server_name = \"localhost\", client_cert_file = {:?}, client_key_file = {:?} }}\n",
            p.join("ca.pem"),
            p.join(format!("{client}.pem")),
            p.join(format!("{client}.key"))
        )
    };
    let server = Server::start(
        dir.path(),
        &format!(
            "{}{}{}{}",
            sink("tcp", "tcp", port, ""),
            sink("udp", "udp", port, ""),
            sink("tls", "tls", tls_port, &tls("client")),
            sink("stranger", "tls", tls_port, &tls("stranger"))
        ),
    );
    let ids = ingest(&server, 150);
    let lines = peer.lines_when(Duration::from_secs(30), 450);
    let want: HashSet<String> = ids.iter().cloned().collect();
    for source in ["s_tcp", "s_udp", "s_tls"] {
        let got: HashSet<String> = lines
            .iter()
            .filter(|l| l["SOURCE"] == source)
            .map(|l| {
                l["cef"]["ext"]["externalId"].as_str().unwrap_or_else(|| panic!("CEF extension parsed: {l}")).to_owned()
            })
            .collect();
        assert_eq!(got, want, "every event once through {source}");
    }
    // The stranger's certificate is refused: nothing of it arrived (150 over TLS, not 300),
    // and its sink says why it is waiting.
    assert_eq!(lines.iter().filter(|l| l["SOURCE"] == "s_tls").count(), 150, "only the CA-signed client got in");
    let sinks = crate::helpers::get(&server, "/v1/sinks");
    let stranger = sinks["sinks"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "stranger")).cloned();
    let stranger = stranger.expect("the stranger sink");
    assert!(stranger["backlog_records"].as_u64() >= Some(150), "{stranger}");
    assert_eq!(stranger["state"], "unhealthy", "{stranger}");
    assert!(
        stranger["last_error"].as_str().is_some_and(|e| e.contains("refused the client certificate")),
        "a TLS 1.3 refusal comes after the handshake; it must not count as delivered: {stranger}"
    );
    for l in &lines {
        let cef = &l["cef"];
        assert_eq!(cef["version"], "CEF:0");
        assert_eq!(cef["vendor"], "Vigil");
        assert_eq!(cef["signature_id"], "authentication:ssh_login");
        assert_eq!(cef["severity"], "7", "high maps to CEF 7");
        assert_eq!(cef["ext"]["src"], "203.0.113.7");
        assert_eq!(cef["ext"]["suser"], "admin");
        // `=` and `\` in a value are escaped in CEF and come back intact.
        assert_eq!(cef["ext"]["msg"], "Failed password for admin a\\=b c\\\\d", "{l}");
        assert_eq!(l["_SDATA"]["vigil@32473"]["kind"], "event");
        assert_eq!(l["MSGID"], "EVENT");
    }
}

#[test]
fn syslog_ng_parses_our_leef_into_its_header_and_attributes() {
    let peer_dir = tempfile::tempdir().expect("tempdir");
    let (port, tls_port) = (free_port(), free_port());
    let peer = syslog_ng(peer_dir.path(), port, tls_port);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &format!(
            "[sinks.qradar]\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nformat = \"leef\"\n\
             route = {{ records = [\"event\"], classes = [\"authentication\"] }}\n"
        ),
    );
    let ids = ingest(&server, 40);
    let lines = peer.lines_when(Duration::from_secs(30), 40);
    let got: HashSet<String> = lines
        .iter()
        .map(|l| l["leef"]["attr"]["externalId"].as_str().unwrap_or_else(|| panic!("LEEF parsed: {l}")).to_owned())
        .collect();
    assert_eq!(got, ids.iter().cloned().collect::<HashSet<_>>(), "every event once, parsed by syslog-ng");
    for l in &lines {
        let leef = &l["leef"];
        assert_eq!(
            (leef["version"].as_str(), leef["vendor"].as_str(), leef["product"].as_str(), leef["delimiter"].as_str()),
            (Some("LEEF:2.0"), Some("Vigil"), Some("Vigil"), Some("^")),
            "{l}"
        );
        assert_eq!(leef["event_id"], "authentication:ssh_login");
        let attr = &leef["attr"];
        assert_eq!((attr["src"].as_str(), attr["srcPort"].as_str()), (Some("203.0.113.7"), Some("52311")), "{l}");
        assert_eq!((attr["usrName"].as_str(), attr["identHostName"].as_str()), (Some("admin"), Some("bastion01")));
        assert_eq!((attr["cat"].as_str(), attr["sev"].as_str()), (Some("authentication"), Some("7")), "{l}");
        // LEEF has no escaping: `=` and `\` in a value go as they are, and only the declared
        // delimiter ends a value (as QRadar reads it). syslog-ng's kv-parser, a generic
        // key=value reader, also starts a pair at ` a=` inside the value, so the message is
        // checked in the attributes as received.
        let attributes = leef["attributes"].as_str().expect("attributes");
        assert!(attributes.ends_with("^msg=Failed password for admin a=b c\\d"), "{l}");
        assert!(attr["devTime"].as_str().is_some_and(|t| t.len() == 13 && t.bytes().all(|b| b.is_ascii_digit())));
    }
}
