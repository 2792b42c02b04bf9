//! Sink implementations, one folder or file per `type`.

pub mod file;
