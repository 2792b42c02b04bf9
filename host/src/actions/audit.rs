//! The audit trail: an append-only, hash-chained record of every action — intent (written
//! durably before the action runs: who or what triggered it, the parameters, the policy
//! decision), result, rollbacks, approvals, cancellations.
//!
//! Record `n` carries `prev_hash` (record `n-1`'s hash) and `hash` = SHA-256 over
//! `prev_hash`, a newline and the record's JSON with `hash` empty. The chain's head
//! (last sequence number and hash) is kept beside it and written in the same atomic
//! commit. [`verify`] recomputes everything: an edited record breaks its hash, a reordered
//! or deleted one breaks the chain or the numbering, a truncated tail disagrees with the
//! head.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::quarantine::hex;
use crate::store::{self, Cf, Store, Table};

/// What an audit record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// An action is about to run (or was refused by policy).
    Intent,
    /// What an action did.
    Result,
    /// An undo (compensation, TTL expiry, operator).
    Rollback,
    /// An approval step was approved, denied or timed out.
    Approval,
    /// A run was started, cancelled or finished.
    Run,
}

/// One record of the trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When it was written.
    pub time: DateTime<Utc>,
    /// What it is about.
    pub kind: AuditKind,
    /// Who or what caused it (`rule:ssh_brute_force`, `api`, a token name).
    pub actor: String,
    /// The playbook run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// The step.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step_id: String,
    /// The incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    /// The action.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// The target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Details: parameters, policy decision, outcome, error.
    pub detail: Value,
    /// The previous record's hash (empty for the first).
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// A record to append (the chain fills in `seq`, `time` and the hashes).
#[derive(Clone, Debug, Default)]
pub struct AuditEntry {
    /// What it is about.
    pub kind: Option<AuditKind>,
    /// Who or what caused it.
    pub actor: String,
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The incident.
    pub incident_id: Option<String>,
    /// The action.
    pub action: String,
    /// The target.
    pub target: Option<String>,
    /// Details.
    pub detail: Value,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

fn records(store: &Store) -> Table<u64, AuditRecord> {
    Table::new(store, Cf::State, b"audit/")
}

fn head_table(store: &Store) -> Table<String, Head> {
    Table::new(store, Cf::Meta, b"")
}

const HEAD_KEY: &str = "audit-head";

fn hash_of(record: &AuditRecord) -> String {
    let mut unhashed = record.clone();
    unhashed.hash = String::new();
    // Plain data: encoding cannot fail.
    let json = serde_json::to_vec(&unhashed).expect("audit record serializes");
    let mut hasher = Sha256::new();
    hasher.update(record.prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(&json);
    hex(&hasher.finalize())
}

/// The writer of the chain; one per store.
#[derive(Debug)]
pub struct AuditLog {
    records: Table<u64, AuditRecord>,
    heads: Table<String, Head>,
    store: Store,
    head: Mutex<Head>,
}

impl AuditLog {
    /// Opens the chain of `store`, continuing after its head.
    pub fn open(store: &Store) -> store::Result<Self> {
        let heads = head_table(store);
        let head = heads.get(&HEAD_KEY.to_owned())?.unwrap_or_default();
        Ok(Self { records: records(store), heads, store: store.clone(), head: Mutex::new(head) })
    }

    /// Appends a record, fsynced before it returns (an intent is on disk before its action
    /// runs).
    pub fn append(&self, entry: AuditEntry) -> store::Result<AuditRecord> {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = AuditRecord {
            seq: head.seq + 1,
            time: Utc::now(),
            kind: entry.kind.unwrap_or(AuditKind::Run),
            actor: entry.actor,
            run_id: entry.run_id,
            step_id: entry.step_id,
            incident_id: entry.incident_id,
            action: entry.action,
            target: entry.target,
            detail: entry.detail,
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        record.hash = hash_of(&record);
        let next = Head { seq: record.seq, hash: record.hash.clone() };
        let ops = vec![self.records.put_op(&record.seq, &record)?, self.heads.put_op(&HEAD_KEY.to_owned(), &next)?];
        self.store.write(ops, true)?;
        *head = next;
        Ok(record)
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// Every problem, with the record it is at; empty when the chain is intact.
    pub problems: Vec<String>,
}

impl Verification {
    /// Whether the chain is intact.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Recomputes the whole chain.
pub fn verify(store: &Store) -> store::Result<Verification> {
    let mut report = Verification::default();
    let mut prev = Head::default();
    for (key, record) in records(store).scan(None, usize::MAX)? {
        report.records += 1;
        if key != record.seq {
            report.problems.push(format!("record stored at {key} says it is {}: moved", record.seq));
        }
        if record.seq != prev.seq + 1 {
            report.problems.push(format!(
                "record {} follows {}: records {}..{} are missing",
                record.seq,
                prev.seq,
                prev.seq + 1,
                record.seq.saturating_sub(1)
            ));
        }
        if record.prev_hash != prev.hash {
            report
                .problems
                .push(format!("record {}: chain broken (prev_hash does not match record {})", record.seq, prev.seq));
        }
        if hash_of(&record) != record.hash {
            report.problems.push(format!("record {}: content does not match its hash (edited)", record.seq));
        }
        prev = Head { seq: record.seq, hash: record.hash.clone() };
    }
    let head = head_table(store).get(&HEAD_KEY.to_owned())?.unwrap_or_default();
    if head != prev {
        report.problems.push(format!(
            "the chain ends at record {} but its head says {}: records were removed from the end",
            prev.seq, head.seq
        ));
    }
    Ok(report)
}

/// Every record, in order.
pub fn export(store: &Store, mut each: impl FnMut(&AuditRecord) -> std::io::Result<()>) -> store::Result<u64> {
    let mut n = 0;
    let table = records(store);
    let mut from = Some(1u64);
    while let Some(start) = from {
        let page = table.scan(Some(&start), 1024)?;
        from = page.last().map(|(k, _)| k + 1).filter(|_| page.len() == 1024);
        for (_, record) in &page {
            each(record).map_err(|e| store::Error::Corrupt {
                cf: "state",
                key: String::new(),
                reason: format!("export: {e}"),
            })?;
            n += 1;
        }
    }
    Ok(n)
}

/// Publishing the trail to NATS JetStream (`[actions.audit_nats]`), so a scaled-out
/// deployment has one audit view: every record, in order, to `subject`, with
/// `Nats-Msg-Id` = `<instance>-<seq>` (a record sent twice is dropped); the position is
/// kept in the store, so a restart goes on where it stopped.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditNatsConfig {
    /// The server.
    #[serde(flatten)]
    pub connection: crate::source::nats::NatsConnection,
    /// The subject.
    #[serde(default = "default_audit_subject")]
    pub subject: String,
    /// The stream to create when missing (empty: the subject belongs to an existing one).
    #[serde(default = "default_audit_stream")]
    pub stream: String,
    /// This instance's name in message ids (default: the data directory's path).
    #[serde(default)]
    pub instance: Option<String>,
}

fn default_audit_subject() -> String {
    "vigil.audit".into()
}

fn default_audit_stream() -> String {
    "VIGIL_AUDIT".into()
}

/// Publishes new audit records to JetStream until `shutdown` (checked every second).
pub async fn publish_to_nats(store: Store, config: AuditNatsConfig, shutdown: tokio_util::sync::CancellationToken) {
    let positions: Table<String, u64> = Table::new(&store, Cf::Cursors, b"audit-nats/");
    let key = config.subject.clone();
    let instance = config.instance.clone().unwrap_or_else(|| store.path().display().to_string());
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut js = None;
    loop {
        tokio::select! { _ = tick.tick() => {}, () = shutdown.cancelled() => return }
        if js.is_none() {
            match config.connection.connect(std::time::Duration::from_secs(10)).await {
                Ok(client) => {
                    let context = async_nats::jetstream::new(client);
                    if !config.stream.is_empty() {
                        let created = context
                            .get_or_create_stream(async_nats::jetstream::stream::Config {
                                name: config.stream.clone(),
                                subjects: vec![config.subject.clone()],
                                ..Default::default()
                            })
                            .await;
                        if let Err(e) = created {
                            tracing::warn!(error = %e, "Audit stream unavailable; retrying.");
                            continue;
                        }
                    }
                    js = Some(context);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Audit publisher cannot reach NATS; retrying.");
                    continue;
                }
            }
        }
        let Some(context) = &js else { continue };
        let from = match positions.get(&key) {
            Ok(p) => p.unwrap_or(0) + 1,
            Err(e) => {
                tracing::error!(error = %e, "Audit publisher cannot read its position.");
                continue;
            }
        };
        let page = match records(&store).scan(Some(&from), 512) {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "Audit publisher cannot read the trail.");
                continue;
            }
        };
        for (seq, record) in page {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{instance}-{seq}").as_str());
            // Plain data: encoding cannot fail.
            let payload = serde_json::to_vec(&record).expect("audit record serializes");
            let sent = match context.publish_with_headers(config.subject.clone(), headers, payload.into()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = sent {
                tracing::warn!(seq, error = %e, "Publishing an audit record failed; retrying.");
                break;
            }
            if let Err(e) = positions.put(&key, &seq) {
                tracing::error!(error = %e, "Audit publisher cannot store its position.");
                break;
            }
        }
    }
}

/// Records of one run (or all when `run` is empty), in order.
pub fn of_run(store: &Store, run: &str) -> store::Result<Vec<AuditRecord>> {
    let mut out = Vec::new();
    export(store, |r| {
        if run.is_empty() || r.run_id == run {
            out.push(r.clone());
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Op;
    use crate::store::testing::temp_store;

    fn entry(n: u64) -> AuditEntry {
        AuditEntry {
            kind: Some(AuditKind::Intent),
            actor: "test".into(),
            action: "block_ip".into(),
            target: Some(format!("10.0.0.{n}")),
            detail: serde_json::json!({ "n": n }),
            ..AuditEntry::default()
        }
    }

    fn chain(n: u64) -> (tempfile::TempDir, Store) {
        let (dir, store) = temp_store();
        let audit = AuditLog::open(&store).expect("open");
        for i in 1..=n {
            audit.append(entry(i)).expect("append");
        }
        (dir, store)
    }

    fn raw_put(store: &Store, seq: u64, record: &AuditRecord) {
        store.write(vec![records(store).put_op(&seq, record).expect("op")], true).expect("write");
    }

    #[test]
    fn an_intact_chain_verifies_and_continues_after_reopening() {
        let (_dir, store) = chain(3);
        AuditLog::open(&store).expect("reopen").append(entry(4)).expect("append");
        let report = verify(&store).expect("verify");
        assert_eq!(report.records, 4);
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(of_run(&store, "").expect("all").len(), 4);
    }

    #[test]
    fn an_edited_record_is_detected() {
        let (_dir, store) = chain(5);
        let mut record = records(&store).get(&3).expect("get").expect("record");
        record.target = Some("10.9.9.9".into());
        raw_put(&store, 3, &record);
        let report = verify(&store).expect("verify");
        assert_eq!(report.problems, ["record 3: content does not match its hash (edited)"]);
    }

    #[test]
    fn a_deleted_or_reordered_record_is_detected() {
        let (_dir, store) = chain(5);
        store.write(vec![records(&store).delete_op(&2)], true).expect("delete");
        let problems = verify(&store).expect("verify").problems;
        assert!(problems.iter().any(|p| p.contains("records 2..2 are missing")), "{problems:?}");

        let (_dir, store) = chain(5);
        let (a, b) =
            (records(&store).get(&2).expect("get").expect("2"), records(&store).get(&3).expect("get").expect("3"));
        raw_put(&store, 2, &b);
        raw_put(&store, 3, &a);
        let problems = verify(&store).expect("verify").problems;
        assert!(problems.iter().any(|p| p.contains("moved")), "{problems:?}");
    }

    #[test]
    fn a_truncated_tail_is_detected() {
        let (_dir, store) = chain(5);
        store
            .write(vec![Op::Delete { cf: Cf::State, key: [b"audit/".as_slice(), &5u64.to_be_bytes()].concat() }], true)
            .expect("delete");
        let problems = verify(&store).expect("verify").problems;
        assert_eq!(problems, ["the chain ends at record 4 but its head says 5: records were removed from the end"]);
    }
}
