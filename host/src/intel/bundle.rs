//! Vigil's own detections as a STIX 2.1 bundle, for sharing with a threat-intel platform.
//!
//! Each detection becomes an `incident` (with an external reference to Vigil's id), an
//! `indicator` and a `sighting` for each attacking address (the sighting says Vigil saw it,
//! how often and when), an `attack-pattern` for each ATT&CK technique, and `related-to`
//! relationships tying them to the incident. Ids are derived from the content (UUIDv5), so
//! exporting the same incidents twice gives the same objects, and a consumer deduplicates
//! them. Cyber-observables get the deterministic ids STIX 2.1 §2.9 defines.

use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

/// The namespace STIX 2.1 defines for deterministic cyber-observable ids.
const SCO_NAMESPACE: Uuid = Uuid::from_u128(0x00ab_edb4_aa42_466c_9c01_fed2_3315_a9b7);
/// Vigil's namespace for the ids of the objects it exports.
const VIGIL_NAMESPACE: Uuid = Uuid::from_u128(0x6f3c_1d2e_8a4b_5c6d_9e0f_1a2b_3c4d_5e6f);

/// A detection to export.
#[derive(Clone, Debug, Default)]
pub struct Detection {
    /// Vigil's incident id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Priority (`P1`) and status (`contained`), for the labels.
    pub priority: String,
    /// Lifecycle status.
    pub status: String,
    /// The rule that raised it.
    pub rule: String,
    /// Opened.
    pub created: DateTime<Utc>,
    /// Last changed.
    pub modified: DateTime<Utc>,
    /// First and last triggering events.
    pub first_seen: DateTime<Utc>,
    /// Last triggering event.
    pub last_seen: DateTime<Utc>,
    /// Alerts folded into it.
    pub count: u64,
    /// ATT&CK technique ids.
    pub techniques: Vec<String>,
    /// Attacking addresses.
    pub source_ips: Vec<String>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn vigil_id(kind: &str, key: &str) -> String {
    format!("{kind}--{}", Uuid::new_v5(&VIGIL_NAMESPACE, format!("{kind}:{key}").as_bytes()))
}

/// The identity every exported object is created by.
pub fn identity_id() -> String {
    vigil_id("identity", "vigil")
}

/// The bundle of `detections`, created now.
pub fn export(detections: &[Detection], now: DateTime<Utc>) -> Value {
    let identity = identity_id();
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let mut objects = vec![json!({
        "type": "identity", "spec_version": "2.1", "id": identity,
        "created": ts(epoch), "modified": ts(epoch),
        "name": "Vigil", "identity_class": "system",
        "description": "Vigil security response engine",
    })];
    let mut seen = std::collections::BTreeSet::new();
    let mut once = |objects: &mut Vec<Value>, object: Value| {
        if let Some(id) = object.get("id").and_then(Value::as_str)
            && seen.insert(id.to_owned())
        {
            objects.push(object);
        }
    };
    for d in detections {
        let incident = vigil_id("incident", &d.id);
        let mut description = d.description.clone().unwrap_or_else(|| d.title.clone());
        description.push_str(&format!(" (rule {}, {} alerts)", d.rule, d.count));
        objects.push(json!({
            "type": "incident", "spec_version": "2.1", "id": incident,
            "created": ts(d.created), "modified": ts(d.modified.max(d.created)),
            "created_by_ref": identity,
            "name": d.title, "description": description,
            "labels": [d.priority.to_lowercase(), d.status],
            "external_references": [{ "source_name": "vigil", "external_id": d.id }],
        }));
        for technique in &d.techniques {
            let pattern = vigil_id("attack-pattern", technique);
            once(
                &mut objects,
                json!({
                    "type": "attack-pattern", "spec_version": "2.1", "id": pattern,
                    "created": ts(epoch), "modified": ts(epoch), "created_by_ref": identity,
                    "name": technique,
                    "external_references": [{
                        "source_name": "mitre-attack", "external_id": technique,
                        "url": format!("https://attack.mitre.org/techniques/{}/", technique.replace('.', "/")),
                    }],
                }),
            );
            objects.push(relationship(&incident, &pattern, d.created, &identity));
        }
        for ip in &d.source_ips {
            let Ok(addr) = ip.parse::<IpAddr>() else { continue };
            let kind = if addr.is_ipv4() { "ipv4-addr" } else { "ipv6-addr" };
            let sco =
                format!("{kind}--{}", Uuid::new_v5(&SCO_NAMESPACE, json!({ "value": ip }).to_string().as_bytes()));
            once(&mut objects, json!({ "type": kind, "spec_version": "2.1", "id": sco, "value": ip }));
            let indicator = vigil_id("indicator", &format!("{}:{ip}", d.id));
            objects.push(json!({
                "type": "indicator", "spec_version": "2.1", "id": indicator,
                "created": ts(d.created), "modified": ts(d.created), "created_by_ref": identity,
                "name": format!("{ip}: {}", d.title),
                "indicator_types": ["malicious-activity"],
                "pattern": format!("[{kind}:value = '{ip}']"), "pattern_type": "stix",
                "valid_from": ts(d.first_seen.min(d.created)),
            }));
            objects.push(json!({
                "type": "sighting", "spec_version": "2.1", "id": vigil_id("sighting", &format!("{}:{ip}", d.id)),
                "created": ts(d.created), "modified": ts(d.modified.max(d.created)), "created_by_ref": identity,
                "sighting_of_ref": indicator, "where_sighted_refs": [identity],
                "first_seen": ts(d.first_seen), "last_seen": ts(d.last_seen.max(d.first_seen)),
                "count": d.count.clamp(1, 999_999_999),
            }));
            objects.push(relationship(&incident, &indicator, d.created, &identity));
        }
    }
    json!({
        "type": "bundle",
        "id": vigil_id("bundle", &format!("{}:{}", ts(now), detections.len())),
        "objects": objects,
    })
}

fn relationship(source: &str, target: &str, created: DateTime<Utc>, identity: &str) -> Value {
    json!({
        "type": "relationship", "spec_version": "2.1",
        "id": vigil_id("relationship", &format!("{source}>{target}")),
        "created": ts(created), "modified": ts(created), "created_by_ref": identity,
        "relationship_type": "related-to", "source_ref": source, "target_ref": target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observable_ids_are_the_ones_stix_defines() {
        // STIX 2.1 §2.9's deterministic id of ipv4-addr 198.51.100.3, as the OASIS `stix2`
        // library (3.0.2) computes it: `stix2.IPv4Address(value='198.51.100.3').id`.
        let detection = Detection {
            id: "INC-1".into(),
            title: "t".into(),
            source_ips: vec!["198.51.100.3".into()],
            ..Detection::default()
        };
        let bundle = export(&[detection], Utc::now());
        let ids: Vec<&str> =
            bundle["objects"].as_array().expect("objects").iter().filter_map(|o| o["id"].as_str()).collect();
        assert!(ids.contains(&"ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4"), "{ids:?}");
        // Exporting again gives the same ids.
        let again = export(
            &[Detection {
                id: "INC-1".into(),
                title: "t".into(),
                source_ips: vec!["198.51.100.3".into()],
                ..Detection::default()
            }],
            Utc::now(),
        );
        assert_eq!(bundle["objects"], again["objects"]);
    }
}
