//! The example plugins of `guest-examples/`, built from source to WebAssembly components by
//! this crate's build script (as wasmtime builds its test programs), for Vigil's tests and
//! benches: each constant is the path of a component.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
