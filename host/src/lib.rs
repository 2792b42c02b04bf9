//! Vigil: a security response engine.
//!
//! Events come in through [`source`], are validated into [`event::SecurityEvent`]s and
//! appended to the durable log in [`store`]. [`detect`] runs the [`rules`] over the log;
//! [`incident`] turns alerts into incidents; [`export`] delivers events, alerts and
//! incident changes to sinks, each from its own cursor. [`api`] serves HTTP, [`config`]
//! reads the config file, [`app`] wires and runs everything and [`cli`] is the command line.
//!
//! Modules are layered; a module uses only modules of lower layers (checked by a test):
//!
//! | layer | modules |
//! |---|---|
//! | 0 | `event`, `telemetry`, `store` |
//! | 1 | `source`, `intel` |
//! | 2 | `transform`, `actions` |
//! | 3 | `plugins` |
//! | 4 | `rules`, `detect` |
//! | 5 | `incident` |
//! | 6 | `playbook`, `export` |
//! | 7 | `hunt`, `forensics` |
//! | 8 | `api` |
//! | 9 | `config` |
//! | top | `app`, `cli` |

pub mod actions;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod detect;
pub mod event;
pub mod export;
pub mod forensics;
pub mod hunt;
pub mod incident;
pub mod intel;
pub mod playbook;
pub mod plugins;
pub mod rules;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod transform;
