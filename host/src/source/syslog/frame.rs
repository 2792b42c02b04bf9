//! Stream framing for syslog over TCP and TLS: RFC 6587 octet counting (`LEN SP MSG`) and
//! newline-delimited frames, detected per frame so one connection may mix them.
//!
//! A frame that cannot be read is yielded as [`Frame::Malformed`] and skipped; the stream
//! stays usable. An oversize octet-counted frame is skipped by its declared length, an
//! oversize line up to its newline.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// One unit read from a syslog stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message's bytes, without framing.
    Message(BytesMut),
    /// A frame that was skipped, and why (a metric label).
    Malformed(&'static str),
}

/// The framing decoder.
#[derive(Debug)]
pub struct SyslogFramer {
    max_frame: usize,
    /// Bytes of an oversize octet-counted frame still to skip.
    skip_bytes: usize,
    /// Whether an oversize line is being skipped up to its newline.
    skip_line: bool,
}

impl SyslogFramer {
    /// A decoder refusing frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame, skip_bytes: 0, skip_line: false }
    }
}

/// The length prefix of an octet-counted frame: `Some((len, prefix_len))`, `None` when the
/// buffer does not start with `DIGITS SP` (then it is a newline-framed message), or
/// `Err(())` when more bytes are needed to tell.
fn octet_count(buf: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 10 || buf[0] == b'0' {
        return Ok(None);
    }
    match buf.get(digits) {
        None => Err(()),
        Some(b' ') => {
            let text = std::str::from_utf8(&buf[..digits]).map_err(|_| ())?;
            Ok(text.parse().ok().map(|len| (len, digits + 1)))
        }
        Some(_) => Ok(None),
    }
}

impl Decoder for SyslogFramer {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        {
            if self.skip_bytes > 0 {
                let n = self.skip_bytes.min(buf.len());
                buf.advance(n);
                self.skip_bytes -= n;
                if self.skip_bytes > 0 {
                    return Ok(None);
                }
            }
            if self.skip_line {
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.skip_line = false;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                }
            }
            // Separators between frames.
            let blank = buf.iter().take_while(|b| matches!(b, b'\n' | b'\r' | b' ' | b'\0')).count();
            buf.advance(blank);
            if buf.is_empty() {
                return Ok(None);
            }
            match octet_count(buf) {
                Err(()) => Ok(None),
                Ok(Some((len, prefix))) => {
                    if len > self.max_frame {
                        buf.advance(prefix);
                        self.skip_bytes = len;
                        return Ok(Some(Frame::Malformed("frame_too_large")));
                    }
                    if buf.len() < prefix + len {
                        buf.reserve(prefix + len - buf.len());
                        return Ok(None);
                    }
                    buf.advance(prefix);
                    Ok(Some(Frame::Message(buf.split_to(len))))
                }
                Ok(None) => match buf.iter().position(|&b| b == b'\n') {
                    Some(i) if i > self.max_frame => {
                        buf.advance(i + 1);
                        Ok(Some(Frame::Malformed("frame_too_large")))
                    }
                    Some(i) => {
                        let mut line = buf.split_to(i + 1);
                        line.truncate(i);
                        if line.last() == Some(&b'\r') {
                            line.truncate(i - 1);
                        }
                        Ok(Some(Frame::Message(line)))
                    }
                    None if buf.len() > self.max_frame => {
                        buf.clear();
                        self.skip_line = true;
                        Ok(Some(Frame::Malformed("frame_too_large")))
                    }
                    None => Ok(None),
                },
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if self.skip_bytes > 0 || self.skip_line {
            buf.clear();
            self.skip_bytes = 0;
            self.skip_line = false;
            return Ok(None);
        }
        if buf.is_empty() {
            return Ok(None);
        }
        // The peer closed mid-frame: an unterminated line is still a message, a short
        // octet-counted frame is not.
        let rest = buf.split();
        match octet_count(&rest) {
            Ok(Some(_)) => Ok(Some(Frame::Malformed("truncated_frame"))),
            _ => Ok(Some(Frame::Message(rest))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], max: usize) -> Vec<Frame> {
        let mut framer = SyslogFramer::new(max);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = framer.decode(&mut buf).expect("decode") {
            out.push(f);
        }
        while let Some(f) = framer.decode_eof(&mut buf).expect("eof") {
            out.push(f);
        }
        out
    }

    fn msg(s: &str) -> Frame {
        Frame::Message(BytesMut::from(s))
    }

    #[test]
    fn octet_counted_and_lf_frames_mix() {
        let input = b"11 <13>1 hello\n<13>plain line\r\n5 abcde7 <1>xyz\n";
        assert_eq!(frames(input, 1024), vec![msg("<13>1 hello"), msg("<13>plain line"), msg("abcde"), msg("<1>xyz\n")]);
    }

    #[test]
    fn frames_split_across_reads_are_joined() {
        let mut framer = SyslogFramer::new(1024);
        let mut buf = BytesMut::from(&b"12 <13>1 he"[..]);
        assert_eq!(framer.decode(&mut buf).expect("decode"), None);
        buf.extend_from_slice(b"llo!");
        assert_eq!(framer.decode(&mut buf).expect("decode"), Some(msg("<13>1 hello!")));
    }

    #[test]
    fn oversize_frames_are_skipped_and_the_stream_continues() {
        let mut input = b"20 ".to_vec();
        input.extend_from_slice(&[b'x'; 20]);
        input.extend_from_slice(b"3 abc");
        assert_eq!(frames(&input, 10), vec![Frame::Malformed("frame_too_large"), msg("abc")]);
        let mut input = vec![b'y'; 30];
        input.extend_from_slice(b"\nok\n");
        assert_eq!(frames(&input, 10), vec![Frame::Malformed("frame_too_large"), msg("ok")]);
    }

    #[test]
    fn oversize_lines_spanning_reads_are_skipped_to_their_newline() {
        let mut framer = SyslogFramer::new(8);
        let mut buf = BytesMut::from(&[b'z'; 12][..]);
        assert_eq!(framer.decode(&mut buf).expect("decode"), Some(Frame::Malformed("frame_too_large")));
        buf.extend_from_slice(b"zzzz\nnext\n");
        assert_eq!(framer.decode(&mut buf).expect("decode"), Some(msg("next")));
    }

    #[test]
    fn truncated_octet_frames_at_eof_are_malformed() {
        assert_eq!(frames(b"50 <13>1 short", 1024), vec![Frame::Malformed("truncated_frame")]);
        assert_eq!(frames(b"<13>no newline", 1024), vec![msg("<13>no newline")]);
    }

    #[test]
    fn digits_without_a_space_are_a_plain_line() {
        assert_eq!(frames(b"2024-01-01 something\n", 1024), vec![msg("2024-01-01 something")]);
    }
}
