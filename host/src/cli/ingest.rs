//! `vigil ingest FILE|-`: reads events (NDJSON or syslog lines) and stores them — directly
//! in the data directory, or through a running server's `POST /v1/events` with `--url`.
//!
//! Input is read in chunks of whole lines so files of any size stream through; every bad
//! line is reported by its line number in the input.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::InputFormat;
use crate::config::VigilConfig;
use crate::source::syslog::parse_syslog;
use crate::source::{BatchReport, Ingestor, Rejection};
use crate::store::{Log, Store};
use crate::telemetry::MetricsRegistry;

const CHUNK_BYTES: usize = 2 << 20;
const CHUNK_LINES: usize = 5000;
const SHOWN_REJECTIONS: usize = 20;

/// A chunk of input: NDJSON records and, for each, its line number in the input.
struct Chunk {
    body: Vec<u8>,
    lines: Vec<usize>,
    local_rejections: Vec<Rejection>,
}

enum Target {
    Direct(Ingestor),
    Http { client: reqwest::Client, url: String },
}

pub async fn run(
    config: VigilConfig,
    input: PathBuf,
    format: InputFormat,
    url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (target, writer_thread) = match url {
        Some(url) => (
            Target::Http { client: reqwest::Client::new(), url: format!("{}/v1/events", url.trim_end_matches('/')) },
            None,
        ),
        None => {
            let store = Store::open(&config.store).with_context(|| {
                format!(
                    "opening {} (if a server is running on it, use --url to send events to it)",
                    config.store.path.display()
                )
            })?;
            let (_log, writer, thread) = Log::start(&store, &config.store)?;
            (Target::Direct(Ingestor::new(writer, config.ingest.clone(), &MetricsRegistry::default())), Some(thread))
        }
    };
    let max_event = config.ingest.max_event_bytes.as_u64() as usize;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Chunk>>(4);
    let reader = std::thread::spawn(move || read_chunks(&input, format, max_event, &tx));
    let mut accepted = 0usize;
    let mut rejected: Vec<Rejection> = Vec::new();
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        rejected.extend(chunk.local_rejections);
        if chunk.lines.is_empty() {
            continue;
        }
        let report = send(&target, &chunk.body).await?;
        if let Some(reason) = report.body_error {
            bail!("the input was refused as a whole: {reason}");
        }
        accepted += report.accepted;
        for mut r in report.rejected {
            r.line = chunk.lines.get(r.line - 1).copied().unwrap_or(r.line);
            rejected.push(r);
        }
    }
    reader.join().map_err(|_| anyhow::anyhow!("input reader panicked"))?;
    if let Target::Direct(ingestor) = target {
        drop(ingestor);
        if let Some(thread) = writer_thread {
            let _ = thread.join();
        }
    }
    rejected.sort_by_key(|r| r.line);
    println!("accepted {accepted} event(s), rejected {}", rejected.len());
    for r in rejected.iter().take(SHOWN_REJECTIONS) {
        println!("  line {}: {}", r.line, r.message);
    }
    if rejected.len() > SHOWN_REJECTIONS {
        println!("  … and {} more", rejected.len() - SHOWN_REJECTIONS);
    }
    Ok(match (accepted, rejected.len()) {
        (_, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::FAILURE,
        _ => ExitCode::from(2),
    })
}

async fn send(target: &Target, body: &[u8]) -> anyhow::Result<BatchReport> {
    match target {
        Target::Direct(ingestor) => Ok(ingestor.ingest_body("cli", body, false).await?),
        Target::Http { client, url } => {
            let mut request = client.post(url);
            if let Ok(token) = std::env::var("VIGIL_TOKEN") {
                request = request.bearer_auth(token.trim());
            }
            let response = request
                .header("content-type", "application/x-ndjson")
                .body(body.to_vec())
                .send()
                .await
                .with_context(|| format!("sending to {url}"))?;
            let status = response.status();
            let json: serde_json::Value =
                response.json().await.with_context(|| format!("reading the response of {url}"))?;
            if !(status.is_success()
                || status.as_u16() == 207
                || status.as_u16() == 400 && json.get("rejected").is_some())
            {
                bail!("{url} answered {status}: {}", json["error"]["message"].as_str().unwrap_or("no message"));
            }
            let rejected = json["rejected"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|r| Rejection {
                            line: r["line"].as_u64().unwrap_or(0) as usize,
                            error: crate::event::DecodeError::Invalid { problems: Vec::new() },
                            message: r["message"].as_str().unwrap_or("rejected").to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(BatchReport {
                accepted: json["accepted"].as_u64().unwrap_or(0) as usize,
                rejected,
                first_seq: None,
                body_error: None,
            })
        }
    }
}

/// Reads the input on a plain thread and hands chunks of whole lines to the sender.
fn read_chunks(
    input: &Path,
    format: InputFormat,
    max_event: usize,
    tx: &tokio::sync::mpsc::Sender<anyhow::Result<Chunk>>,
) {
    let result = (|| -> anyhow::Result<()> {
        let reader: Box<dyn Read> = if input == Path::new("-") {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?)
        };
        let mut reader = BufReader::with_capacity(1 << 20, reader);
        if format == InputFormat::Json && reader.fill_buf()?.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            // One JSON array: sent whole, its positions reported as "lines".
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            let count = body.iter().filter(|&&b| b == b'{').count().max(1);
            let _ = tx.blocking_send(Ok(Chunk { body, lines: (1..=count).collect(), local_rejections: Vec::new() }));
            return Ok(());
        }
        let mut chunk = Chunk { body: Vec::new(), lines: Vec::new(), local_rejections: Vec::new() };
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            number += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match format {
                InputFormat::Json => chunk.body.extend_from_slice(text),
                InputFormat::Syslog => match syslog_line(text, max_event) {
                    Ok(json) => chunk.body.extend_from_slice(&json),
                    Err(error) => {
                        let message = error.to_string();
                        chunk.local_rejections.push(Rejection { line: number, error, message });
                        continue;
                    }
                },
            }
            chunk.body.push(b'\n');
            chunk.lines.push(number);
            if chunk.body.len() >= CHUNK_BYTES || chunk.lines.len() >= CHUNK_LINES {
                let full = std::mem::replace(
                    &mut chunk,
                    Chunk { body: Vec::new(), lines: Vec::new(), local_rejections: Vec::new() },
                );
                if tx.blocking_send(Ok(full)).is_err() {
                    return Ok(());
                }
            }
        }
        let _ = tx.blocking_send(Ok(chunk));
        Ok(())
    })();
    if let Err(e) = result {
        let _ = tx.blocking_send(Err(e));
    }
}

fn syslog_line(line: &[u8], max_event: usize) -> Result<Vec<u8>, crate::event::DecodeError> {
    use crate::event::DecodeError;
    if line.len() > max_event {
        return Err(DecodeError::TooLarge { size: line.len(), limit: max_event });
    }
    let text = std::str::from_utf8(line).map_err(|e| DecodeError::NotUtf8 { offset: e.valid_up_to() })?;
    let event = parse_syslog(text, chrono::Utc::now(), false);
    Ok(serde_json::to_vec(&event).expect("SecurityEvent serializes"))
}
