//! Where the benches find the real third-party samples (`../shared/data/`).

/// A sample of `../shared/data/` (a bench whose data is missing fails).
pub fn shared(path: &str) -> std::path::PathBuf {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data").join(path);
    assert!(full.exists(), "the sample {} is missing", full.display());
    full
}
