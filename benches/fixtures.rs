//! Realistic ~300-byte events shared by the benches.

/// One NDJSON line of about 300 bytes: an sshd failure as a syslog source would map it.
pub fn ndjson_event(i: usize) -> String {
    format!(
        concat!(
            r#"{{"class":"authentication","action":"ssh_login","outcome":"failure","provider":"sshd","#,
            r#""message":"Failed password for invalid user admin{} from 203.0.113.{} port {} ssh2","#,
            r#""source":{{"ip":"203.0.113.{}","port":{}}},"user":{{"name":"admin{}"}},"#,
            r#""host":{{"name":"bastion01"}},"process":{{"name":"sshd","pid":{}}}}}"#
        ),
        i % 100,
        i % 250,
        40_000 + i % 20_000,
        i % 250,
        40_000 + i % 20_000,
        i % 100,
        20_000 + i % 5_000
    )
}

/// `n` events as one NDJSON body.
pub fn ndjson_body(n: usize) -> String {
    let mut body = String::with_capacity(n * 320);
    for i in 0..n {
        body.push_str(&ndjson_event(i));
        body.push('\n');
    }
    body
}
