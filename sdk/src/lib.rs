//! `vigil-sdk`: the guest-side API for Vigil WebAssembly plugins.
//!
//! Plugins (custom actions, transforms and rule functions) are WebAssembly components that
//! Vigil loads at runtime and runs in a sandbox. This crate will hold the versioned WIT
//! contract (`wit/`) and the Rust API plugin authors implement; it is a placeholder until
//! the plugin host lands, so that the workspace layout and versioning are fixed now.
#![deny(missing_docs)]

/// The plugin API version this SDK speaks.
pub const API_VERSION: &str = "0.1.0";
