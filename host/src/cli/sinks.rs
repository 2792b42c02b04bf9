//! `vigil sinks status` and `vigil dlq list|show|replay|purge`.
//!
//! Listing and showing dead letters read the store read-only, so they work beside a
//! running server or without one. Status, replay and purge go through the running server
//! (`--url`, default `api.listen`): only it holds the sinks.

use std::process::ExitCode;

use anyhow::Context;

use super::{DlqCommand, DlqSelect};
use crate::config::VigilConfig;
use crate::export::{DlqFilter, SinkStatus, dlq};
use crate::store::Store;

pub(crate) fn server(config: &VigilConfig, url: Option<String>) -> String {
    url.unwrap_or_else(|| format!("http://{}", config.api.listen)).trim_end_matches('/').to_owned()
}

fn filter(select: &DlqSelect) -> anyhow::Result<DlqFilter> {
    Ok(DlqFilter {
        sink: select.sink.clone(),
        reason: select.reason.clone(),
        from: select.from.as_deref().map(super::rules::parse_time).transpose()?,
        to: select.to.as_deref().map(super::rules::parse_time).transpose()?,
    })
}

pub(crate) async fn call(
    method: reqwest::Method,
    endpoint: String,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
    let mut request = reqwest::Client::new().request(method, &endpoint);
    if let Ok(token) = std::env::var("VIGIL_TOKEN") {
        request = request.bearer_auth(token.trim());
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.with_context(|| format!("sending to {endpoint} (is Vigil running?)"))?;
    let status = response.status();
    let body = response.json().await.context("reading the response")?;
    Ok((status, body))
}

pub(crate) fn refused(status: reqwest::StatusCode, body: &serde_json::Value) -> ExitCode {
    eprintln!("{status}: {}", body["error"]["message"].as_str().unwrap_or("refused"));
    ExitCode::FAILURE
}

/// `vigil sinks status`.
pub fn status(config: &VigilConfig, url: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let endpoint = format!("{}/v1/sinks", server(config, url));
    let (code, body) = super::block_on_value(call(reqwest::Method::GET, endpoint, None))?;
    if !code.is_success() {
        return Ok(refused(code, &body));
    }
    let sinks: Vec<SinkStatus> = serde_json::from_value(body["sinks"].clone()).context("unexpected answer")?;
    if json {
        for s in &sinks {
            println!("{}", serde_json::to_string(s)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<13}  {:<9}  {:<9}  {:>9}  {:>12}  {:>10}  {:>6}  LAST ERROR",
        "SINK", "TYPE", "STATE", "BREAKER", "CURSOR", "BACKLOG", "OLDEST(s)", "DLQ"
    );
    for s in &sinks {
        println!(
            "{:<16}  {:<13}  {:<9}  {:<9}  {:>9}  {:>12}  {:>10}  {:>6}  {}",
            s.name,
            s.kind,
            s.state,
            s.breaker,
            s.cursor,
            format!("{} ({})", s.backlog_records, bytesize::ByteSize(s.backlog_bytes)),
            s.oldest_undelivered_seconds,
            s.dlq_records,
            s.last_error.as_deref().unwrap_or("-")
        );
    }
    if sinks.is_empty() {
        println!("(no sinks configured)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigil dlq …`.
pub fn dlq(config: &VigilConfig, command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { select, limit, json } => {
            let store = open(config)?;
            let letters = dlq::list(&store, &filter(&select)?, limit)?;
            if json {
                for l in &letters {
                    println!("{}", serde_json::to_string(l)?);
                }
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<16}  {:>10}  {:<8}  {:<20}  {:>6}  REASON", "SINK", "SEQ", "KIND", "DEAD-LETTERED", "STATUS");
            for l in &letters {
                println!(
                    "{:<16}  {:>10}  {:<8}  {:<20}  {:>6}  {}",
                    l.sink,
                    l.seq,
                    l.kind.as_str(),
                    l.time.format("%Y-%m-%d %H:%M:%S"),
                    l.status.map_or("-".into(), |s| s.to_string()),
                    l.reason
                );
            }
            if letters.is_empty() {
                println!("(no dead letters)");
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { sink, seq } => match dlq::get(&open(config)?, &sink, seq)? {
            Some(letter) => {
                println!("{}", serde_json::to_string_pretty(&letter)?);
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("no dead letter {sink}/{seq}");
                Ok(ExitCode::FAILURE)
            }
        },
        DlqCommand::Replay { select, url } => change(config, "replay", "replayed", &select, url),
        DlqCommand::Purge { select, url } => change(config, "purge", "purged", &select, url),
    }
}

fn change(
    config: &VigilConfig,
    action: &str,
    counted: &str,
    select: &DlqSelect,
    url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let endpoint = format!("{}/v1/dlq/{action}", server(config, url));
    let body = serde_json::to_value(filter(select)?)?;
    let (code, body) = super::block_on_value(call(reqwest::Method::POST, endpoint, Some(body)))?;
    if !code.is_success() {
        return Ok(refused(code, &body));
    }
    println!("{counted} {}", body[counted].as_u64().unwrap_or(0));
    Ok(ExitCode::SUCCESS)
}

fn open(config: &VigilConfig) -> anyhow::Result<Store> {
    Store::open_read_only(&config.store.path)
        .with_context(|| format!("opening the store in {} (has Vigil run here yet?)", config.store.path.display()))
}
