//! Sink implementations, one folder per `type`, each split by concern (settings, request
//! building, the platform's answers). They only deliver: cursors, batching, retries, rate
//! limits, the breaker and the dead-letter queue belong to the framework.

pub mod chat;
pub mod datadog;
pub mod elasticsearch;
pub mod email;
pub mod file;
pub mod http;
pub mod incident;
pub mod nats;
pub mod opsgenie;
pub mod pagerduty;
pub mod slack;
pub mod splunk_hec;
pub mod sumo_logic;
pub mod syslog;
pub mod teams;
