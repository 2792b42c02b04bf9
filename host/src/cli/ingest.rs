//! `vigil ingest FILE|-`: reads records in any input format and stores them — directly in
//! the data directory, or through a running server's `POST /v1/events?format=…` with
//! `--url`.
//!
//! Line formats stream through in batches, so files of any size pass; every bad record is
//! reported by its line number in the input (EVTX records by position and record id).

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::input::{self, Batch};
use crate::config::VigilConfig;
use crate::source::decode::{Format, Options};
use crate::source::{BatchReport, Ingestor, Rejection};
use crate::store::{Log, Store};
use crate::telemetry::MetricsRegistry;

const CHUNK_BYTES: usize = 2 << 20;
const CHUNK_LINES: usize = 5000;
const SHOWN: usize = 20;

pub async fn run(config: VigilConfig, input: PathBuf, format: Format, url: Option<String>) -> anyhow::Result<ExitCode> {
    let report = match url {
        Some(url) => send_to_server(&config, input, &format, &url).await?,
        None => store_directly(&config, input, format).await?,
    };
    Ok(print(report))
}

/// What an ingest did, over the whole input.
#[derive(Debug, Default)]
struct Report {
    accepted: usize,
    rejected: Vec<Rejection>,
    warnings: Vec<Rejection>,
}

async fn store_directly(config: &VigilConfig, input: PathBuf, format: Format) -> anyhow::Result<Report> {
    let store = Store::open(&config.store).with_context(|| {
        format!(
            "opening {} (if a server is running on it, use --url to send events to it)",
            config.store.path.display()
        )
    })?;
    let (_log, writer, writer_thread) = Log::start(&store, &config.store)?;
    let ingestor = Ingestor::new(writer, config.ingest.clone(), &MetricsRegistry::default());
    let options = Options { limits: config.ingest.limits(), keep_raw: false };
    let (plugins, _host) = input::plugin_decoders(config)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(4);
    let reader = std::thread::spawn(move || {
        input::read(&input, &format, options, &plugins, |batch| Ok(tx.blocking_send(batch).is_ok()))
    });
    let mut report = Report::default();
    let mut failed = None;
    while let Some(batch) = rx.recv().await {
        report.rejected.extend(batch.rejected);
        report.warnings.extend(batch.warnings);
        if batch.events.is_empty() || failed.is_some() {
            continue;
        }
        match ingestor.append("cli", &batch.events, Vec::new()).await {
            Ok(receipt) => report.accepted += receipt.count as usize,
            Err(e) => failed = Some(e),
        }
    }
    let read = reader.join().map_err(|_| anyhow::anyhow!("the input reader panicked"))?;
    drop(ingestor);
    let _ = writer_thread.join();
    if let Some(e) = failed {
        return Err(e).context("storing the events");
    }
    read?;
    Ok(report)
}

/// A chunk of raw input: the bytes of whole lines (or the whole input) and, for each line
/// sent, its line number in the input.
struct Chunk {
    body: Vec<u8>,
    lines: Vec<usize>,
}

async fn send_to_server(config: &VigilConfig, input: PathBuf, format: &Format, url: &str) -> anyhow::Result<Report> {
    let url = format!("{}/v1/events?format={format}", url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Chunk>>(4);
    let max_body = config.ingest.max_body_bytes.as_u64() as usize;
    let format = format.clone();
    let reader = std::thread::spawn(move || {
        if let Err(e) = read_chunks(&input, &format, max_body, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut report = Report::default();
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        let answer = post(&client, &url, chunk.body).await?;
        if let Some(reason) = answer.body_error {
            bail!("the input was refused as a whole: {reason}");
        }
        report.accepted += answer.accepted;
        // Lines in the answer count within the chunk; put back the input's numbers.
        let renumber = |mut r: Rejection| {
            if !chunk.lines.is_empty() {
                r.line = chunk.lines.get(r.line.saturating_sub(1)).copied().unwrap_or(r.line);
            }
            r
        };
        report.rejected.extend(answer.rejected.into_iter().map(renumber));
        report.warnings.extend(answer.warnings.into_iter().map(renumber));
    }
    reader.join().map_err(|_| anyhow::anyhow!("the input reader panicked"))?;
    Ok(report)
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> anyhow::Result<BatchReport> {
    let mut request = client.post(url);
    if let Ok(token) = std::env::var("VIGIL_TOKEN") {
        request = request.bearer_auth(token.trim());
    }
    let response = request
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .with_context(|| format!("sending to {url}"))?;
    let status = response.status();
    let json: serde_json::Value = response.json().await.with_context(|| format!("reading the response of {url}"))?;
    if !(status.is_success() || status.as_u16() == 207 || status.as_u16() == 400 && json.get("rejected").is_some()) {
        bail!("{url} answered {status}: {}", json["error"]["message"].as_str().unwrap_or("no message"));
    }
    let rejections = |key: &str| -> Vec<Rejection> {
        json[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|r| {
                        let error = crate::event::DecodeError::Invalid { problems: Vec::new() };
                        Rejection {
                            line: r["line"].as_u64().unwrap_or(0) as usize,
                            record: r["record"].as_u64(),
                            message: r["message"].as_str().unwrap_or("rejected").to_owned(),
                            error,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(BatchReport {
        accepted: json["accepted"].as_u64().unwrap_or(0) as usize,
        rejected: rejections("rejected"),
        warnings: rejections("warnings"),
        first_seq: None,
        body_error: None,
    })
}

/// Reads the input on a plain thread: whole (an input that is not line-shaped, and Zeek
/// TSV, whose header every line needs), or in chunks of whole lines.
fn read_chunks(
    path: &std::path::Path,
    format: &Format,
    max_body: usize,
    tx: &tokio::sync::mpsc::Sender<anyhow::Result<Chunk>>,
) -> anyhow::Result<()> {
    let mut reader = input::open(path)?;
    let mut first = Vec::new();
    reader.read_until(b'\n', &mut first)?;
    if input::whole(format, &first) || *format == Format::Zeek && first.starts_with(b"#") {
        let mut body = first;
        reader.take(max_body as u64 + 1).read_to_end(&mut body)?;
        if body.len() > max_body {
            bail!("the input is larger than ingest.max_body_bytes ({max_body} bytes); ingest it without --url");
        }
        let _ = tx.blocking_send(Ok(Chunk { body, lines: Vec::new() }));
        return Ok(());
    }
    let mut chunk = Chunk { body: Vec::new(), lines: Vec::new() };
    let mut line = first;
    let mut number = 0;
    loop {
        if line.is_empty() {
            break;
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if !text.iter().all(u8::is_ascii_whitespace) {
            chunk.body.extend_from_slice(text);
            chunk.body.push(b'\n');
            chunk.lines.push(number);
        }
        if chunk.body.len() >= CHUNK_BYTES || chunk.lines.len() >= CHUNK_LINES {
            let full = std::mem::replace(&mut chunk, Chunk { body: Vec::new(), lines: Vec::new() });
            if tx.blocking_send(Ok(full)).is_err() {
                return Ok(());
            }
        }
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
    }
    if !chunk.lines.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}

fn describe(r: &Rejection) -> String {
    match r.record {
        Some(id) => format!("record {} (EVTX record id {id})", r.line),
        None => format!("line {}", r.line),
    }
}

/// Prints the outcome; exit 0 when every record was stored, 2 when some were refused, 1
/// when none was stored.
fn print(mut report: Report) -> ExitCode {
    report.rejected.sort_by_key(|r| r.line);
    println!("accepted {} event(s), rejected {} record(s)", report.accepted, report.rejected.len());
    for r in report.rejected.iter().take(SHOWN) {
        println!("  {}: {}", describe(r), r.message);
    }
    if report.rejected.len() > SHOWN {
        println!("  … and {} more", report.rejected.len() - SHOWN);
    }
    if !report.warnings.is_empty() {
        println!("stored with warnings: {}", report.warnings.len());
        for r in report.warnings.iter().take(SHOWN) {
            println!("  {}: {}", describe(r), r.message);
        }
    }
    match (report.accepted, report.rejected.len()) {
        (0, 0) => {
            println!("the input holds no records");
            ExitCode::FAILURE
        }
        (0, _) => ExitCode::FAILURE,
        (_, 0) => ExitCode::SUCCESS,
        _ => ExitCode::from(2),
    }
}
