//! Request heads: bytes in, a validated `RequestHead` (offsets into the caller's buffer) or an `HttpError` out.
//! "Not complete yet" is a normal answer, not an error. Framing rules follow RFC 9112 §2-§7 strictly.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::error::HttpError;

/// Size limits applied while the head is read (all in bytes, except `fields`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
    /// Largest accepted body; 0 means unlimited.
    pub body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 8190,
            fields: 100,
            field_size: 8190,
            body: 0,
        }
    }
}

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

/// One header line as offsets into the buffer the head was parsed from.
#[derive(Debug, Clone)]
pub struct HeaderRange {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// A parsed and validated request head. Ranges index the buffer given to `parse_request`.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<HeaderRange>,
    /// Length of the head including the blank line; the body starts here.
    pub head_len: usize,
    pub body: BodyKind,
    /// The client asked to keep the connection open (RFC 9112 §9.3).
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// The outcome of feeding bytes to the parser.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    Complete(RequestHead),
}

const MAX_HEADERS_ON_STACK: usize = 128;

/// Parses the request head at the start of `buf`.
///
/// # Errors
/// Any violation of the request syntax, of the framing rules, or of `limits`.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed, HttpError> {
    let Some(head_len) = scan_head(buf, limits)? else {
        return Ok(Parsed::Incomplete);
    };
    let head_bytes = &buf[..head_len];
    // Uninitialised slots: zeroing a hundred headers per request would cost more than parsing a small head.
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_ON_STACK];
    let mut heap;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.fields < MAX_HEADERS_ON_STACK {
        &mut stack[..=limits.fields]
    } else {
        heap = (0..=limits.fields).map(|_| MaybeUninit::uninit()).collect::<Vec<_>>();
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head_bytes, slots) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::BadRequest("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeaderFieldsTooLarge),
        Err(httparse::Error::Version) => return Err(HttpError::BadRequest("unsupported HTTP version")),
        Err(httparse::Error::Token) => return Err(HttpError::BadRequest("invalid method")),
        Err(httparse::Error::HeaderName) => return Err(HttpError::BadRequest("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(HttpError::BadRequest("invalid header value")),
        Err(_) => return Err(HttpError::BadRequest("malformed request line")),
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::BadRequest("malformed request line"));
    };
    if req.headers.len() > limits.fields {
        return Err(HttpError::HeaderFieldsTooLarge);
    }
    validate_target(method, target)?;

    let base = buf.as_ptr() as usize;
    let range_of = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let mut framing = Framing::default();
    let mut headers = Vec::with_capacity(req.headers.len());
    for header in req.headers.iter() {
        framing.note(header.name, header.value, minor_version)?;
        headers.push(HeaderRange {
            name: range_of(header.name.as_bytes()),
            value: range_of(header.value),
        });
    }
    let body = framing.body_kind(minor_version, limits)?;
    Ok(Parsed::Complete(RequestHead {
        method: range_of(method.as_bytes()),
        target: range_of(target.as_bytes()),
        minor_version,
        headers,
        head_len,
        body,
        keep_alive: framing.keep_alive(minor_version),
        expect_continue: minor_version == 1 && framing.expect_continue && body != BodyKind::Empty,
    }))
}

/// Walks the head line by line enforcing the line-ending and size rules httparse leaves open,
/// and returns the head length once the blank line is there.
fn scan_head(buf: &[u8], limits: &Limits) -> Result<Option<usize>, HttpError> {
    let mut line_start = 0;
    let mut lines = 0usize;
    let mut seen_request_line = false;
    loop {
        let rest = &buf[line_start..];
        let (limit, too_long) = if seen_request_line {
            (limits.field_size, HttpError::HeaderFieldsTooLarge)
        } else {
            (limits.request_line, HttpError::UriTooLong)
        };
        let line = next_line(rest, limit, too_long)?;
        let Some((content_len, line_len)) = line else {
            return Ok(None);
        };
        line_start += line_len;
        if content_len == 0 {
            if seen_request_line {
                return Ok(Some(line_start));
            }
            // RFC 9112 §2.2: empty lines before the request line are ignored.
            continue;
        }
        if seen_request_line {
            lines += 1;
            if lines > limits.fields {
                return Err(HttpError::HeaderFieldsTooLarge);
            }
        }
        seen_request_line = true;
    }
}

/// The first line of `rest`: its length without and with its CRLF, or `None` while it is incomplete; `too_long`
/// when it passes `limit`. One SIMD search for the first CR or LF finds both the line end and any bare CR or LF
/// (RFC 9112 §2.2: refused rather than guessed at). Of several faults, the one whose byte comes first in the
/// stream is reported, so the answer does not depend on where a read happened to split the request.
fn next_line(rest: &[u8], limit: usize, too_long: HttpError) -> Result<Option<(usize, usize)>, HttpError> {
    let Some(end) = memchr::memchr2(b'\r', b'\n', rest) else {
        return if rest.len() > limit { Err(too_long) } else { Ok(None) };
    };
    let (found, next) = (rest[end], rest.get(end + 1));
    // A bare CR within the limit comes before the line is too long; past it, the length is the first fault.
    if found == b'\r' && next.is_some_and(|&b| b != b'\n') && end <= limit {
        return Err(HttpError::BadRequest("bare CR in request head"));
    }
    if end > limit {
        return Err(too_long);
    }
    match (found, next) {
        (b'\r', Some(b'\n')) => Ok(Some((end, end + 2))),
        // A final CR may be the start of CRLF.
        (b'\r', None) => Ok(None),
        _ => Err(HttpError::BadRequest("bare LF in request head")),
    }
}

/// RFC 9112 §3.2: origin-form, absolute-form, authority-form (CONNECT) or asterisk-form (OPTIONS).
fn validate_target(method: &str, target: &str) -> Result<(), HttpError> {
    let bytes = target.as_bytes();
    let ok = match bytes.first() {
        Some(b'/') => true,
        Some(b'*') => bytes.len() == 1 && method == "OPTIONS",
        Some(_) if method == "CONNECT" => !target.contains('/'),
        Some(_) => {
            let lower = target.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
            lower.starts_with("http://") || lower.starts_with("https://")
        }
        None => false,
    };
    if ok && !bytes.iter().any(|&b| b < 0x21 || b == 0x7f) {
        Ok(())
    } else {
        Err(HttpError::BadRequest("invalid request target"))
    }
}

/// What the framing-relevant headers said, gathered while walking them once.
#[derive(Default)]
#[allow(clippy::struct_excessive_bools)] // independent facts, each from its own header
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked_last: bool,
    other_coding: bool,
    hosts: usize,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Framing {
    fn note(&mut self, name: &str, value: &[u8], minor_version: u8) -> Result<(), HttpError> {
        if name.eq_ignore_ascii_case("content-length") {
            if self.content_length.is_some() {
                return Err(HttpError::BadRequest("duplicate Content-Length"));
            }
            self.content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if minor_version == 0 {
                // RFC 9112 §6.1: a 1.0 message with Transfer-Encoding has faulty framing.
                return Err(HttpError::BadRequest("Transfer-Encoding in an HTTP/1.0 request"));
            }
            self.note_transfer_encoding(value)?;
        } else if name.eq_ignore_ascii_case("host") {
            self.hosts += 1;
            // RFC 9112 §3.2: Host = uri-host [ ":" port ]; anything else (spaces, controls) is refused.
            if !value
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b))
            {
                return Err(HttpError::BadRequest("invalid Host header"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in list_items(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue = trim_ows(value).eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    /// RFC 9112 §6.3: chunked must be the final coding and appear once; a coding we cannot decode is 501.
    fn note_transfer_encoding(&mut self, value: &[u8]) -> Result<(), HttpError> {
        for coding in value.split(|&b| b == b',') {
            let coding = trim_ows(coding);
            if coding.is_empty() {
                return Err(HttpError::BadRequest("empty transfer coding"));
            }
            if self.chunked_last {
                return Err(HttpError::BadRequest("chunked is not the final transfer coding"));
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked_last = true;
            } else if !coding.iter().all(|&b| is_token_byte(b)) {
                return Err(HttpError::BadRequest("invalid transfer coding"));
            } else {
                self.other_coding = true;
            }
        }
        self.transfer_encoding = true;
        Ok(())
    }

    fn body_kind(&self, minor_version: u8, limits: &Limits) -> Result<BodyKind, HttpError> {
        if self.hosts > 1 {
            return Err(HttpError::BadRequest("duplicate Host header"));
        }
        if minor_version == 1 && self.hosts == 0 {
            return Err(HttpError::BadRequest("missing Host header"));
        }
        if self.transfer_encoding {
            if self.content_length.is_some() {
                // RFC 9112 §6.3 allows "chunked wins, then close"; refusing is the safer reading.
                return Err(HttpError::BadRequest("both Content-Length and Transfer-Encoding"));
            }
            // RFC 9112 §6.3: a request whose final coding is not chunked cannot be framed: 400.
            if !self.chunked_last {
                return Err(HttpError::BadRequest("chunked is not the final transfer coding"));
            }
            // RFC 9112 §6.1: only chunked is implemented; any other coding before it is 501.
            if self.other_coding {
                return Err(HttpError::NotImplemented("unsupported transfer coding"));
            }
            return Ok(BodyKind::Chunked);
        }
        match self.content_length {
            Some(len) if limits.body != 0 && len > limits.body => Err(HttpError::PayloadTooLarge),
            Some(0) | None => Ok(BodyKind::Empty),
            Some(len) => Ok(BodyKind::Length(len)),
        }
    }

    fn keep_alive(&self, minor_version: u8) -> bool {
        !self.close && (minor_version == 1 || self.keep_alive)
    }
}

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`; signs, spaces inside, lists, leading zeros and overflow are refused.
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let digits = trim_ows(value);
    // Leading zeros are refused too: some parsers read them as octal, so they are a smuggling lever.
    let padded = digits.len() > 1 && digits[0] == b'0';
    if digits.is_empty() || digits.len() > 19 || padded || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadRequest("invalid Content-Length"));
    }
    Ok(digits.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// Strips optional whitespace (spaces and tabs, RFC 9110 §5.6.3) from both ends.
#[must_use]
pub fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// RFC 9110 §5.6.2 tchar.
#[must_use]
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl RequestHead {
    /// The method as bytes of `buf`.
    #[must_use]
    pub fn method<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.method.clone()]
    }

    /// The raw request target as bytes of `buf`.
    #[must_use]
    pub fn target<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.target.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(buf: &[u8], limits: &Limits) -> Result<bool, HttpError> {
        parse_request(buf, limits).map(|parsed| matches!(parsed, Parsed::Complete(_)))
    }

    #[test]
    fn line_exactly_at_the_limit_is_accepted_whatever_the_split() {
        let request = b"GET /abcdefghijklm HTTP/1.1\r\nHost: abcdefghijklmnopqrstuvwxyz\r\n\r\n";
        let limits = Limits {
            request_line: 27,
            field_size: 32,
            ..Limits::default()
        };
        assert_eq!(outcome(request, &limits), Ok(true));
        for cut in 0..request.len() {
            assert_eq!(outcome(&request[..cut], &limits), Ok(false), "prefix of {cut} bytes");
        }
        let tighter = Limits {
            request_line: 26,
            ..limits
        };
        assert_eq!(outcome(request, &tighter), Err(HttpError::UriTooLong));
    }

    #[test]
    fn first_fault_in_the_stream_decides_whatever_the_split() {
        let limits = Limits {
            request_line: 16,
            ..Limits::default()
        };
        let cases: &[(&[u8], HttpError)] = &[
            (b"GET /\rX\n", HttpError::BadRequest("bare CR in request head")),
            (b"GET /aaaaaaaaaaaaaaaaaaaa\rX HTTP/1.1\r\n", HttpError::UriTooLong),
            (
                b"G\rXaaaaaaaaaaaaaaaaaaaaaaa",
                HttpError::BadRequest("bare CR in request head"),
            ),
            (
                b"GET / HTTP/1.1\nHost: a\r\n\r\n",
                HttpError::BadRequest("bare LF in request head"),
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(
                outcome(request, &limits),
                Err(*expected),
                "{:?}",
                String::from_utf8_lossy(request)
            );
            for cut in 1..request.len() {
                if let Err(err) = outcome(&request[..cut], &limits) {
                    assert_eq!(err, *expected, "prefix {:?}", String::from_utf8_lossy(&request[..cut]));
                }
            }
        }
    }
}
