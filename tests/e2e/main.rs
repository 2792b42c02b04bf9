//! End-to-end tests: the `vigil` binary and the library against real sockets on loopback.

mod api;
mod channels;
mod cli;
mod cluster;
mod crash;
mod detection;
mod email;
mod evidence;
mod helpers;
mod http_ingest;
mod hunt;
mod inputs;
mod intel;
mod layering;
mod mock;
mod operations;
mod plugins;
mod quality;
mod response;
mod schemas;
mod sigma;
mod sinks;
mod syslog;
mod syslog_sink;
