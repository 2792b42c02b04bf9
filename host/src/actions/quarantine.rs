//! `quarantine_data` / `restore_data`: move a file into a quarantine area with its SHA-256
//! and metadata, and put it back byte-identical.
//!
//! Only files under `allowed_roots` can be taken (none by default: quarantine is off until
//! an operator names the directories it may touch). A quarantined file is stored as
//! `<dir>/<id>.bin` (read-only) beside `<id>.json` with its original path, SHA-256, size,
//! mode and the incident; restoring checks the hash before and after the move and refuses
//! to overwrite a file that has since appeared at the original path.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Action, ActionContext, ActionError, ActionSpec, Outcome, ParamKind, ParamSpec, TargetKind, param_str};

/// Settings (`[actions.quarantine_data]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default, schemars::JsonSchema)]
pub struct QuarantineConfig {
    /// Where quarantined files go (default: `quarantine/` in the data directory).
    pub dir: Option<PathBuf>,
    /// Directories whose files may be quarantined; empty: none.
    pub allowed_roots: Vec<PathBuf>,
}

/// What is recorded beside a quarantined file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// Quarantine id.
    pub id: String,
    /// Where the file was.
    pub original_path: PathBuf,
    /// Hex SHA-256 of its content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// When it was taken.
    pub quarantined_at: DateTime<Utc>,
    /// The incident, if any.
    pub incident_id: Option<String>,
    /// The step execution that took it (a retry finds the record instead of failing).
    pub idempotency_key: String,
}

/// The quarantine area.
#[derive(Debug)]
pub struct Vault {
    config: QuarantineConfig,
    dir: PathBuf,
}

fn failed(what: &str, e: impl std::fmt::Display) -> ActionError {
    ActionError::Failed(format!("{what}: {e}"))
}

/// Hex SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Moves `from` to `to`, copying (and syncing) across file systems.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => {
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

impl Vault {
    /// The vault of `config` (its directory, by default `quarantine/` in `data_dir`, is
    /// created on first use).
    pub fn new(config: &QuarantineConfig, data_dir: &Path) -> Self {
        let dir = config.dir.clone().unwrap_or_else(|| data_dir.join("quarantine"));
        Self { config: config.clone(), dir }
    }

    fn records(&self) -> Vec<QuarantineRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out: Vec<QuarantineRecord> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn take(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let path = PathBuf::from(super::required_str(&ctx.params, "path")?);
        if let Some(done) = self.records().into_iter().find(|r| r.idempotency_key == ctx.idempotency_key) {
            return Ok(outcome(&done, "already quarantined"));
        }
        let real = path.canonicalize().map_err(|e| failed(&format!("cannot quarantine {}", path.display()), e))?;
        let allowed = self
            .config
            .allowed_roots
            .iter()
            .filter_map(|root| root.canonicalize().ok())
            .any(|root| real.starts_with(&root));
        if !allowed {
            return Err(ActionError::Failed(format!(
                "{} is outside actions.quarantine_data.allowed_roots; refusing to quarantine it",
                path.display()
            )));
        }
        let meta = std::fs::metadata(&real).map_err(|e| failed("stat", e))?;
        if !meta.is_file() {
            return Err(ActionError::Failed(format!("{} is not a regular file", path.display())));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| failed("creating the quarantine directory", e))?;
        let (sha256, size) = sha256_file(&real).map_err(|e| failed("hashing", e))?;
        let id = uuid::Uuid::now_v7().to_string();
        #[cfg(unix)]
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        #[cfg(not(unix))]
        let mode = 0o644;
        let record = QuarantineRecord {
            id: id.clone(),
            original_path: real.clone(),
            sha256,
            size,
            mode,
            quarantined_at: ctx.now,
            incident_id: ctx.incident_id.clone(),
            idempotency_key: ctx.idempotency_key.clone(),
        };
        let stored = self.dir.join(format!("{id}.bin"));
        move_file(&real, &stored).map_err(|e| failed("moving into quarantine", e))?;
        let (check, _) = sha256_file(&stored).map_err(|e| failed("hashing the quarantined copy", e))?;
        if check != record.sha256 {
            return Err(ActionError::Failed(format!("quarantined copy of {} does not match its hash", path.display())));
        }
        #[cfg(unix)]
        let _ = std::fs::set_permissions(&stored, std::os::unix::fs::PermissionsExt::from_mode(0o400));
        let json = serde_json::to_vec_pretty(&record).map_err(|e| failed("encoding", e))?;
        std::fs::write(self.dir.join(format!("{id}.json")), json).map_err(|e| failed("writing metadata", e))?;
        Ok(outcome(&record, "quarantined"))
    }

    fn restore(&self, ctx: &ActionContext, id: Option<&str>) -> Result<Outcome, ActionError> {
        let path = param_str(&ctx.params, "path");
        let id = id.or(param_str(&ctx.params, "id"));
        let record = self
            .records()
            .into_iter()
            .rev()
            .find(|r| {
                id.is_some_and(|id| r.id == id)
                    || (id.is_none() && path.is_some_and(|p| r.original_path == Path::new(p)))
            })
            .ok_or_else(|| ActionError::Failed("no such file in quarantine".into()))?;
        let stored = self.dir.join(format!("{}.bin", record.id));
        let (sha, _) = sha256_file(&stored).map_err(|e| failed("reading the quarantined file", e))?;
        if sha != record.sha256 {
            return Err(ActionError::Failed(format!("quarantined file {} was altered (SHA-256 differs)", record.id)));
        }
        if record.original_path.exists() {
            return Err(ActionError::Failed(format!(
                "{} exists again; not overwriting it",
                record.original_path.display()
            )));
        }
        move_file(&stored, &record.original_path).map_err(|e| failed("restoring", e))?;
        #[cfg(unix)]
        let _ =
            std::fs::set_permissions(&record.original_path, std::os::unix::fs::PermissionsExt::from_mode(record.mode));
        let _ = std::fs::remove_file(self.dir.join(format!("{}.json", record.id)));
        Ok(outcome(&record, "restored"))
    }
}

fn outcome(record: &QuarantineRecord, verb: &str) -> Outcome {
    let path = record.original_path.display().to_string();
    Outcome {
        target: Some(path.clone()),
        detail: format!("{verb} {path} (sha256 {}, {} bytes)", record.sha256, record.size),
        data: json!({ "id": record.id, "sha256": record.sha256, "size": record.size }),
        expires_at: None,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ActionError> + Send + 'static,
) -> Result<T, ActionError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ActionError::Failed(e.to_string()))?
}

fn path_spec(id: &str, description: &str, inverse: Option<&str>, params: Vec<ParamSpec>) -> ActionSpec {
    ActionSpec {
        id: id.into(),
        description: description.into(),
        params,
        target: Some(("path".into(), TargetKind::Path)),
        capabilities: vec!["fs.quarantine".into()],
        idempotent: true,
        sensitive: false,
        inverse: inverse.map(Into::into),
        default_ttl: None,
    }
}

/// `quarantine_data`.
#[derive(Debug)]
pub struct QuarantineData {
    vault: Arc<Vault>,
    spec: ActionSpec,
}

impl QuarantineData {
    /// The action over `vault`.
    pub fn new(vault: Arc<Vault>) -> Self {
        let params = vec![ParamSpec::new("path", ParamKind::Path, true, "the file to quarantine")];
        let spec =
            path_spec("quarantine_data", "Move a file into quarantine with its SHA-256.", Some("restore_data"), params);
        Self { vault, spec }
    }
}

impl Action for QuarantineData {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        let (vault, ctx) = (self.vault.clone(), ctx.clone());
        Box::pin(blocking(move || vault.take(&ctx)))
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a ActionContext,
        done: &'a Outcome,
    ) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        let (vault, ctx, id) = (self.vault.clone(), ctx.clone(), done.data["id"].as_str().map(str::to_owned));
        Box::pin(blocking(move || vault.restore(&ctx, id.as_deref())))
    }
}

/// `restore_data`.
#[derive(Debug)]
pub struct RestoreData {
    vault: Arc<Vault>,
    spec: ActionSpec,
}

impl RestoreData {
    /// The action over `vault`.
    pub fn new(vault: Arc<Vault>) -> Self {
        let params = vec![
            ParamSpec::new("path", ParamKind::Path, false, "the original path (the latest quarantine of it)"),
            ParamSpec::new("id", ParamKind::String, false, "the quarantine id"),
        ];
        Self { vault, spec: path_spec("restore_data", "Put a quarantined file back, byte-identical.", None, params) }
    }
}

impl Action for RestoreData {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        let (vault, ctx) = (self.vault.clone(), ctx.clone());
        Box::pin(blocking(move || vault.restore(&ctx, None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_goes_into_quarantine_and_comes_back_byte_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let file = data.join("leak.csv");
        let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&file, &content).expect("write");
        let vault = Arc::new(Vault::new(
            &QuarantineConfig { dir: Some(dir.path().join("q")), allowed_roots: vec![data.clone()] },
            dir.path(),
        ));
        let (take, give) = (QuarantineData::new(vault.clone()), RestoreData::new(vault));
        let ctx =
            ActionContext::new("k1", json!({ "path": file.display().to_string() }).as_object().cloned().expect("o"));
        let done = take.execute(&ctx).await.expect("quarantine");
        assert!(!file.exists());
        assert_eq!(done.data["sha256"], hex(&Sha256::digest(&content)));
        assert_eq!(take.execute(&ctx).await.expect("retry").data["id"], done.data["id"], "a retry is idempotent");
        take.rollback(&ctx, &done).await.expect("restore");
        assert_eq!(std::fs::read(&file).expect("restored"), content);
        take.execute(&ActionContext::new("k2", ctx.params.clone())).await.expect("again");
        give.execute(&ctx).await.expect("restore by path");
        assert_eq!(std::fs::read(&file).expect("restored"), content);

        let outside = dir.path().join("elsewhere.txt");
        std::fs::write(&outside, b"x").expect("write");
        let ctx =
            ActionContext::new("k3", json!({ "path": outside.display().to_string() }).as_object().cloned().expect("o"));
        let err = take.execute(&ctx).await.expect_err("outside the roots");
        assert!(err.to_string().contains("outside actions.quarantine_data.allowed_roots"), "{err}");
        assert!(outside.exists());
    }
}
