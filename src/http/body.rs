//! Request body framing: a decoder for Content-Length and chunked bodies (RFC 9112 §6, §7.1) that can be fed
//! any split of the bytes and never reads past the end of the body.

use super::error::HttpError;
use super::request::BodyKind;

/// Longest chunk extension accepted on one size line.
const MAX_CHUNK_EXT: usize = 4096;
/// Largest trailer section accepted (it is read and dropped).
const MAX_TRAILERS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of the size; `digits` counts them.
    Size {
        digits: u8,
    },
    /// Whitespace after the size: only `;` may follow.
    SizeBws,
    /// Inside a chunk extension; `len` bytes so far.
    Ext {
        len: usize,
    },
    /// A CR ended the size line; LF must follow.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
}

/// Incremental body decoder. Feed raw bytes with `decode`; it reports how many it consumed.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: DecoderState,
    /// Largest accepted decoded size; 0 means unlimited.
    limit: u64,
    decoded: u64,
}

#[derive(Debug, Clone)]
enum DecoderState {
    Length { remaining: u64 },
    Chunked { phase: Chunk, size: u64, trailers: usize },
    Done,
}

impl BodyDecoder {
    #[must_use]
    pub fn new(kind: BodyKind, limit: u64) -> Self {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => DecoderState::Done,
            BodyKind::Length(remaining) => DecoderState::Length { remaining },
            BodyKind::Chunked => DecoderState::Chunked {
                phase: Chunk::Size { digits: 0 },
                size: 0,
                trailers: 0,
            },
        };
        BodyDecoder {
            state,
            limit,
            decoded: 0,
        }
    }

    /// True once the whole body (and for chunked, the trailers) has been consumed.
    #[must_use]
    pub fn is_done(&self) -> bool {
        matches!(self.state, DecoderState::Done)
    }

    /// Decoded body bytes produced so far.
    #[must_use]
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Consumes a prefix of `input`, appending decoded body bytes to `out`; returns how many bytes of `input` were
    /// consumed. Stops at the end of the body: bytes after it belong to the next request.
    ///
    /// # Errors
    /// Malformed chunked framing, or a body larger than the limit.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        match &mut self.state {
            DecoderState::Done => Ok(0),
            DecoderState::Length { remaining } => {
                let take = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                out.extend_from_slice(&input[..take]);
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = DecoderState::Done;
                }
                self.decoded += take as u64;
                Ok(take)
            }
            DecoderState::Chunked { .. } => self.decode_chunked(input, out),
        }
    }

    fn decode_chunked(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        let DecoderState::Chunked { phase, size, trailers } = &mut self.state else {
            return Ok(0);
        };
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match *phase {
                Chunk::Size { digits } => {
                    if let Some(d) = hex_value(b) {
                        // 16 hex digits overflow a u64; refuse before that (RFC 9112 §7.1 warns of it).
                        if digits >= 15 {
                            return Err(HttpError::BadRequest("chunk size too large"));
                        }
                        *size = *size * 16 + u64::from(d);
                        *phase = Chunk::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(HttpError::BadRequest("invalid chunk size"));
                    } else {
                        *phase = match b {
                            b';' => Chunk::Ext { len: 0 },
                            b' ' | b'\t' => Chunk::SizeBws,
                            b'\r' => Chunk::SizeLf,
                            _ => return Err(HttpError::BadRequest("invalid chunk size")),
                        };
                    }
                }
                Chunk::SizeBws => {
                    *phase = match b {
                        b' ' | b'\t' => Chunk::SizeBws,
                        b';' => Chunk::Ext { len: 0 },
                        _ => return Err(HttpError::BadRequest("invalid chunk size")),
                    };
                }
                Chunk::Ext { len } => {
                    if b == b'\r' {
                        *phase = Chunk::SizeLf;
                    } else if b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f {
                        return Err(HttpError::BadRequest("invalid chunk extension"));
                    } else if len >= MAX_CHUNK_EXT {
                        return Err(HttpError::BadRequest("chunk extension too long"));
                    } else {
                        *phase = Chunk::Ext { len: len + 1 };
                    }
                }
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(HttpError::BadRequest("bare CR in chunk size line"));
                    }
                    if *size == 0 {
                        *phase = Chunk::TrailerStart;
                    } else {
                        self.decoded = self.decoded.saturating_add(*size);
                        if self.limit != 0 && self.decoded > self.limit {
                            return Err(HttpError::PayloadTooLarge);
                        }
                        *phase = Chunk::Data;
                    }
                }
                Chunk::Data => {
                    let avail = input.len() - i;
                    let take = usize::try_from(*size).map_or(avail, |s| s.min(avail));
                    out.extend_from_slice(&input[i..i + take]);
                    *size -= take as u64;
                    i += take;
                    if *size == 0 {
                        *phase = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::DataCr => {
                    if b != b'\r' {
                        return Err(HttpError::BadRequest("missing CRLF after chunk data"));
                    }
                    *phase = Chunk::DataLf;
                }
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err(HttpError::BadRequest("missing CRLF after chunk data"));
                    }
                    *phase = Chunk::Size { digits: 0 };
                }
                Chunk::TrailerStart => {
                    *phase = match b {
                        b'\r' => Chunk::EndLf,
                        b'\n' => return Err(HttpError::BadRequest("bare LF in trailers")),
                        // RFC 9112 §5.2: no obs-fold in trailers either.
                        b' ' | b'\t' => return Err(HttpError::BadRequest("obs-fold in trailers")),
                        _ => Chunk::TrailerLine,
                    };
                    *trailers += 1;
                }
                Chunk::TrailerLine => {
                    *trailers += 1;
                    if *trailers > MAX_TRAILERS {
                        return Err(HttpError::HeaderFieldsTooLarge);
                    }
                    match b {
                        b'\r' => *phase = Chunk::TrailerLf,
                        b'\n' | 0 => return Err(HttpError::BadRequest("invalid trailer")),
                        _ => {}
                    }
                }
                Chunk::TrailerLf => {
                    if b != b'\n' {
                        return Err(HttpError::BadRequest("bare CR in trailers"));
                    }
                    *phase = Chunk::TrailerStart;
                }
                Chunk::EndLf => {
                    if b != b'\n' {
                        return Err(HttpError::BadRequest("bare CR after last chunk"));
                    }
                    self.state = DecoderState::Done;
                    return Ok(i + 1);
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

/// The value of one hex digit.
#[must_use]
pub fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes a complete body held in `input`, or reports that more bytes are needed.
/// Returns the decoded body and how many bytes of `input` it spanned.
///
/// # Errors
/// As `BodyDecoder::decode`.
pub fn decode_complete(kind: BodyKind, limit: u64, input: &[u8]) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut decoder = BodyDecoder::new(kind, limit);
    let mut out = Vec::new();
    let used = decoder.decode(input, &mut out)?;
    Ok(decoder.is_done().then_some((out, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut decoder = BodyDecoder::new(BodyKind::Chunked, 0);
        let mut out = Vec::new();
        let used = decoder.decode(input, &mut out)?;
        Ok((out, used, decoder.is_done()))
    }

    #[test]
    fn chunked_simple_body_decodes_and_stops_at_end() {
        let (out, used, done) = decode_all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET /").unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(used, b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n".len());
    }

    #[test]
    fn chunked_trailers_are_consumed() {
        let (out, _, done) = decode_all(b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n").unwrap();
        assert_eq!(out, b"abc");
        assert!(done);
    }

    #[test]
    fn chunked_every_split_gives_same_result() {
        let input: &[u8] = b"a\r\n0123456789\r\n1 ; x=y\r\nZ\r\n0\r\nT: v\r\n\r\n";
        let (whole, _, _) = decode_all(input).unwrap();
        for split in 0..input.len() {
            let mut decoder = BodyDecoder::new(BodyKind::Chunked, 0);
            let mut out = Vec::new();
            let a = decoder.decode(&input[..split], &mut out).unwrap();
            assert_eq!(a, split);
            decoder.decode(&input[split..], &mut out).unwrap();
            assert!(decoder.is_done());
            assert_eq!(out, whole);
        }
    }

    #[test]
    fn chunked_malformed_inputs_are_rejected() {
        let cases: &[&[u8]] = &[
            b"\r\n",
            b"x\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\n",
            b"+5\r\n",
            b"5 5\r\n",
            b"1_0\r\n",
            b"5\nhello\r\n",
            b"5\rhello",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"1;a\x00b\r\nx\r\n",
        ];
        for case in cases {
            assert!(
                decode_all(case).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn chunked_over_limit_is_payload_too_large() {
        let mut decoder = BodyDecoder::new(BodyKind::Chunked, 4);
        let mut out = Vec::new();
        assert_eq!(
            decoder.decode(b"5\r\nhello\r\n", &mut out),
            Err(HttpError::PayloadTooLarge)
        );
    }

    #[test]
    fn length_body_stops_at_length() {
        let mut decoder = BodyDecoder::new(BodyKind::Length(3), 0);
        let mut out = Vec::new();
        assert_eq!(decoder.decode(b"abcdef", &mut out).unwrap(), 3);
        assert!(decoder.is_done());
        assert_eq!(out, b"abc");
    }

    #[test]
    fn decode_complete_reports_incomplete_body() {
        assert!(decode_complete(BodyKind::Length(10), 0, b"abc").unwrap().is_none());
        assert_eq!(
            decode_complete(BodyKind::Length(3), 0, b"abcd").unwrap(),
            Some((b"abc".to_vec(), 3))
        );
    }
}
