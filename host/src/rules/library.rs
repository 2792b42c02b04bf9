//! The rule library: `rules/lib/*.rhai`, shared by every rule, like Falco's lists and macros.
//!
//! A library file may define named lists in a constant map `LISTS` and functions. Rules look
//! lists up with `in_list(value, "name")` (a hash-set lookup) and call the functions like
//! their own:
//!
//! ```rhai
//! const LISTS = #{
//!     admin_accounts: ["root", "admin", "administrator"],
//!     private_networks: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
//! };
//!
//! fn is_private(ip) {
//!     in_cidr(ip, "10.0.0.0/8") || in_cidr(ip, "172.16.0.0/12") || in_cidr(ip, "192.168.0.0/16")
//! }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{AST, Engine, Scope};
use rustc_hash::FxHashSet;

use super::RuleError;
use super::predicate::Lists;

/// The compiled library: its lists and the ASTs whose functions rules may call.
#[derive(Debug, Default, Clone)]
pub struct Library {
    /// Named lists.
    pub lists: Lists,
    /// Library files with their compiled code.
    pub files: Vec<(PathBuf, AST)>,
    /// Hash of the library sources, part of every rule's fingerprint.
    pub fingerprint: u64,
}

/// Compiles library sources (path, text) with a base engine; reports every error.
pub fn compile(engine: &Engine, sources: &[(PathBuf, String)]) -> Result<Library, Vec<RuleError>> {
    let mut library = Library::default();
    let mut errors = Vec::new();
    let mut hasher = std::hash::DefaultHasher::new();
    for (path, text) in sources {
        std::hash::Hash::hash(&(path, text), &mut hasher);
        match compile_file(engine, path, text, &mut library.lists) {
            Ok(ast) => library.files.push((path.clone(), ast)),
            Err(e) => errors.extend(e),
        }
    }
    library.fingerprint = std::hash::Hasher::finish(&hasher);
    if errors.is_empty() { Ok(library) } else { Err(errors) }
}

fn compile_file(engine: &Engine, path: &Path, text: &str, lists: &mut Lists) -> Result<AST, Vec<RuleError>> {
    let ast = engine.compile(text).map_err(|e| vec![RuleError::at(path, e.1, e.0.to_string())])?;
    let mut scope = Scope::new();
    engine.run_ast_with_scope(&mut scope, &ast).map_err(|e| vec![RuleError::at(path, e.position(), e.to_string())])?;
    let mut errors = Vec::new();
    if let Some(map) = scope.get_value::<rhai::Map>("LISTS") {
        for (name, items) in map {
            let Some(items) = items.clone().try_cast::<rhai::Array>() else {
                errors.push(RuleError::new(path, format!("LISTS.{name} must be an array of strings")));
                continue;
            };
            let set: Option<FxHashSet<String>> =
                items.into_iter().map(|d| d.try_cast::<rhai::ImmutableString>().map(|s| s.to_string())).collect();
            match set {
                None => errors.push(RuleError::new(path, format!("LISTS.{name} must hold only strings"))),
                Some(_) if lists.contains_key(name.as_str()) => {
                    errors.push(RuleError::new(path, format!("list `{name}` is defined twice")));
                }
                Some(set) => {
                    lists.insert(name.to_string(), Arc::new(set));
                }
            }
        }
    }
    if errors.is_empty() { Ok(ast) } else { Err(errors) }
}
