//! A transform Vigil lacks natively: Splunk CIM (Common Information Model) key=value lines
//! for the Authentication, Network Traffic and Endpoint data models, so events land in
//! Splunk already normalized (`action`, `app`, `src`, `dest`, `user`, `signature`).

use vigil_sdk::{Error, Event, Transform};

/// Quotes a value the way Splunk's key=value extraction reads it.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

struct Cim;

impl Transform for Cim {
    fn transform(event: Event) -> Result<String, Error> {
        let full = event.value();
        let (model, action) = match event.class.as_str() {
            "authentication" => (
                "Authentication",
                match event.outcome.as_str() {
                    "success" => "success",
                    "failure" => "failure",
                    _ => "unknown",
                },
            ),
            "network" | "http" | "dns" => ("Network_Traffic", "allowed"),
            "process" | "file" => ("Endpoint", "allowed"),
            _ => ("Vigil", "unknown"),
        };
        let mut fields = vec![
            ("time", format!("{:.3}", event.time_ms as f64 / 1000.0)),
            ("tag", quoted(model)),
            ("action", quoted(action)),
            ("event_id", quoted(&event.id)),
        ];
        if let Some(app) = full["service"]["name"].as_str().or(event.action.as_deref()) {
            fields.push(("app", quoted(app)));
        }
        if let Some(src) = &event.source_ip {
            fields.push(("src", quoted(src)));
        }
        if let Some(dest) = event.destination_ip.as_ref().or(event.host_name.as_ref()) {
            fields.push(("dest", quoted(dest)));
        }
        if let Some(user) = &event.user_name {
            fields.push(("user", quoted(user)));
        }
        if let Some(signature) = &event.action {
            fields.push(("signature", quoted(signature)));
        }
        Ok(fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "))
    }
}

vigil_sdk::register_plugin!(transform: Cim);
