//! Tracing setup, the metrics registry, metric names, the [`Secret`] type that redacts
//! itself, a log throttle for per-record warnings, and [`pause`], the one cancellable wait
//! every retry loop uses.
//!
//! Layer 0: uses no other module of the crate.

mod metrics;
mod secret;

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use metrics::{MetricsRegistry, latency_histogram, names};
pub use secret::{Secret, SecretError, signature};

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON lines otherwise.
    #[default]
    Auto,
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Logging settings (`[telemetry]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log filter in `tracing` syntax (`info`, `vigil=debug,info`); the `VIGIL_LOG`
    /// environment variable overrides it.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// How often Vigil records its own health (sink backlogs) as `system` events.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub health_interval: std::time::Duration,
    /// A second listener that serves only `GET /metrics`, without a token, for a
    /// Prometheus scraper (the API's `/metrics` stays behind a viewer token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            log_format: LogFormat::Auto,
            health_interval: std::time::Duration::from_secs(30),
            metrics_listen: None,
        }
    }
}

/// Installs the global tracing subscriber. Later calls are ignored (tests call it freely).
pub fn init_tracing(config: &TelemetryConfig) {
    let asked = std::env::var("VIGIL_LOG").unwrap_or_else(|_| config.log_level.clone());
    let mut filter = EnvFilter::try_from_env("VIGIL_LOG")
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The EVTX parser narrates every file it opens; its errors reach us as results.
    if !asked.contains("evtx")
        && let Ok(quiet) = "evtx=error".parse()
    {
        filter = filter.add_directive(quiet);
    }
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    } else {
        builder.compact().try_init()
    };
}

/// Lets through at most one log line per interval for a repeating condition, and counts
/// the ones it held back, so a flood of bad input cannot flood the log.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A throttle that allows one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new((None, 0)) }
    }

    /// `Some(suppressed)` when a line may be logged now (with the number held back since
    /// the last one), `None` when this one should be held back.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = state.1;
                *state = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

/// Waits `wait`, or less when `stop` is cancelled; returns whether the whole wait passed.
/// Every retry and backoff waits through this, so shutdown never waits out a backoff.
pub async fn pause(stop: &tokio_util::sync::CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_allows_first_then_counts_suppressed() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        let t = Throttle::new(Duration::ZERO);
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), Some(0));
    }
}
