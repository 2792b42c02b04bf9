//! Reading an input file (or stdin) in any input format, for the commands that take one
//! (`vigil ingest`, `vigil rules backtest --input`).
//!
//! Line formats stream: each line is decoded as it is read, and events come out in
//! batches, so a file of any size passes in bounded memory. EVTX files, Windows XML
//! documents, JSON arrays and pretty-printed JSON documents are read whole (they cannot
//! be split at lines). gzip input is recognised by its magic bytes and inflated on the fly.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;
use chrono::Utc;

use crate::event::SecurityEvent;
use crate::source::Rejection;
use crate::source::decode::{Decoded, Format, Options, PluginDecoders, StreamDecoder, windows};

/// Events decoded in one batch.
pub const BATCH: usize = 4096;

/// A batch of decoded input.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events, in input order.
    pub events: Vec<SecurityEvent>,
    /// Records refused, by line.
    pub rejected: Vec<Rejection>,
    /// Records stored with a warning.
    pub warnings: Vec<Rejection>,
}

/// What a whole input gave.
#[derive(Debug, Default)]
pub struct Totals {
    /// Non-blank lines (or records of a whole document) read.
    pub records: usize,
    /// Events decoded.
    pub events: usize,
    /// Records refused.
    pub rejected: usize,
}

/// The decode plugins of the configured plugins directory, for `format = "plugin:NAME"`,
/// and the host that runs them (keep it while the decoders are in use).
pub fn plugin_decoders(
    config: &crate::config::VigilConfig,
) -> anyhow::Result<(PluginDecoders, Option<crate::plugins::PluginHost>)> {
    let host = crate::app::plugin_host(config, None, None, &crate::telemetry::MetricsRegistry::default())?;
    let decoders = host.as_ref().map(crate::plugins::PluginHost::decoders).unwrap_or_default();
    Ok((decoders, host))
}

/// Opens a file or `-` (stdin), inflating gzip.
pub fn open(input: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> = if input == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?)
    };
    let mut reader = BufReader::with_capacity(1 << 20, raw);
    let gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
    })
}

/// Whether an input that starts with `first` (its first line) must be read whole.
pub fn whole(format: &Format, first: &[u8]) -> bool {
    if first.starts_with(windows::evtx::MAGIC) {
        return true;
    }
    if matches!(format, Format::Plugin(_)) {
        return false;
    }
    let line = first.trim_ascii();
    match line.first() {
        Some(b'[') => true,
        Some(b'<') => {
            matches!(format, Format::Windows | Format::Auto) && !line.ends_with(b">")
                || line.starts_with(b"<?xml")
                || line.starts_with(b"<Events")
        }
        // A first line that does not close its object starts a pretty-printed document.
        Some(b'{') => serde_json::from_slice::<serde::de::IgnoredAny>(line).is_err() && !line.ends_with(b"}"),
        _ => false,
    }
}

/// Reads `input` in `format`, handing each batch to `each` (which returns false to stop).
pub fn read(
    input: &Path,
    format: &Format,
    options: Options,
    plugins: &PluginDecoders,
    mut each: impl FnMut(Batch) -> anyhow::Result<bool>,
) -> anyhow::Result<Totals> {
    let mut decoder = StreamDecoder::new(format, options, plugins)?;
    let mut reader = open(input)?;
    let mut totals = Totals::default();
    let mut first = Vec::new();
    reader.read_until(b'\n', &mut first)?;
    let mut emit = |out: &mut Decoded, totals: &mut Totals| -> anyhow::Result<bool> {
        totals.events += out.events.len();
        totals.rejected += out.rejected.len();
        let batch = Batch {
            events: std::mem::take(&mut out.events),
            rejected: std::mem::take(&mut out.rejected),
            warnings: std::mem::take(&mut out.warnings),
        };
        each(batch)
    };
    let mut out = Decoded::default();
    if whole(format, &first) {
        let mut body = first;
        reader.read_to_end(&mut body)?;
        decoder
            .body(&body, Utc::now(), &mut out)
            .map_err(|reason| anyhow::anyhow!("the input was refused as a whole: {reason}"))?;
        totals.records = out.events.len() + out.rejected.len();
        // The refusals go with the first batch, the events in batches of BATCH.
        let mut events = std::mem::take(&mut out.events);
        loop {
            let rest = events.split_off(events.len().min(BATCH));
            out.events = events;
            let last = rest.is_empty();
            if !emit(&mut out, &mut totals)? || last {
                return Ok(totals);
            }
            events = rest;
        }
    }
    let mut line = first;
    let mut number = 0usize;
    loop {
        if line.is_empty() {
            break;
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !text.iter().all(u8::is_ascii_whitespace) {
            totals.records += 1;
            decoder.record(number, text, Utc::now(), &mut out);
            if out.events.len() >= BATCH && !emit(&mut out, &mut totals)? {
                return Ok(totals);
            }
        }
        line.clear();
        reader.read_until(b'\n', &mut line)?;
    }
    decoder.finish(Utc::now(), &mut out);
    emit(&mut out, &mut totals)?;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_arrays_and_evtx_are_read_whole() {
        assert!(whole(&Format::Cloudtrail, b"{\n"));
        assert!(whole(&Format::Cloudtrail, b"{\"Records\": [\n"));
        assert!(!whole(&Format::Cloudtrail, b"{\"eventName\":\"x\"}\n"));
        assert!(whole(&Format::Vigil, b"[{\"class\":\"dns\"}]"));
        assert!(whole(&Format::Windows, b"ElfFile\0\x01\x02"));
        assert!(whole(&Format::Windows, b"<?xml version=\"1.0\"?>\n"));
        assert!(!whole(&Format::Windows, b"<Event><System/></Event>\n"));
        assert!(!whole(&Format::Syslog, b"Mar  3 10:00:00 h sshd[1]: x\n"));
    }
}
