//! EVTX files, the binary logs Windows writes, read with the `evtx` crate record by record.
//!
//! A damaged chunk or record is reported (by record id, or by chunk and offset) with the
//! parser's whole reason, and the records around it are still read: the parser moves on
//! to the next record, and to the next chunk after a chunk it cannot read.

use evtx::{EvtxParser, ParserSettings};

use super::super::{Ctx, Decoded, finish};
use crate::event::DecodeError;
use crate::source::batch::Rejection;

/// The first bytes of every EVTX file.
pub const MAGIC: &[u8] = b"ElfFile\0";

/// An error with every cause it carries, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Decodes every record of an EVTX file; `line` of a rejection is the record's position.
pub fn decode(file: &[u8], ctx: &Ctx<'_>, out: &mut Decoded) {
    // Read in place: the parser copies each chunk it reads, not the whole file.
    let parser = EvtxParser::from_read_seek(std::io::Cursor::new(file));
    let mut parser = match parser {
        // The crate renders each record as JSON text, read straight into the flat map:
        // unindented text is less to write and to read.
        Ok(parser) => parser.with_configuration(ParserSettings::new().num_threads(1).indent(false)),
        Err(e) => return out.reject(1, DecodeError::unreadable("evtx", chain(&e))),
    };
    // The header says how many 64 KiB chunks follow it: a shorter file was cut.
    let declared = u64::from(parser.header().chunk_count);
    let header_bytes = u64::from(parser.header().header_block_size).max(4096);
    let whole_chunks = (file.len() as u64).saturating_sub(header_bytes) / CHUNK_BYTES;
    let mut read = 0;
    for (at, record) in parser.records_json_bytes().enumerate() {
        read = at + 1;
        let position = at + 1;
        match record {
            Ok(record) => {
                let id = record.event_record_id;
                let result = super::stream::flatten(&record.data)
                    .and_then(|fields| super::map(fields, ctx))
                    .and_then(|event| finish(event, "", ctx));
                match result {
                    Ok(event) => out.events.push(event),
                    Err(error) => out.rejected.push(Rejection { record: Some(id), ..Rejection::new(position, error) }),
                }
            }
            Err(e) => {
                let record = match &e {
                    evtx::err::EvtxError::FailedToParseRecord { record_id, .. } => Some(*record_id),
                    _ => None,
                };
                let error = DecodeError::unreadable("evtx", chain(&e));
                tracing::debug!(position, error = %error, "EVTX record skipped.");
                out.rejected.push(Rejection { record, ..Rejection::new(position, error) });
            }
        }
    }
    if whole_chunks < declared {
        let reason = format!(
            "the file ends after {} bytes, inside chunk {whole_chunks} of the {declared} its header declares: the rest is missing",
            file.len()
        );
        out.reject(read + 1, DecodeError::unreadable("evtx", reason));
    }
}

/// The size of an EVTX chunk.
const CHUNK_BYTES: u64 = 64 * 1024;
