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

/// `n` fixture events through one of Vigil's sink encoders, one per line (ECS documents,
/// CEF lines…): realistic bodies of the formats those sinks and their peers produce.
#[allow(dead_code)]
pub fn encoded_body(sink: vigil::transform::Format, n: usize) -> String {
    use vigil::transform::{Input, Output, builtin};
    let (events, _) = vigil::source::batch::decode_batch(
        ndjson_body(n).as_bytes(),
        &vigil::event::DecodeLimits::default(),
        chrono::Utc::now(),
    );
    let transform = builtin(&sink);
    let mut out = String::with_capacity(n * 600);
    for e in &events {
        match transform.apply(Input::Event(e)).expect("the fixtures encode") {
            Output::Json(v) => out.push_str(&v.to_string()),
            Output::Text(t) => out.push_str(&t),
        }
        out.push('\n');
    }
    out
}
