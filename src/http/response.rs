//! Response heads: status line, the server's own headers, body framing and chunk encoding.
//! The application's headers arrive already validated and serialized; this file decides the framing.

use super::date::with_http_date;
use super::error::HttpError;

pub const SERVER_HEADER: &[u8] = b"Server: rustwsgi\r\n";
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304); the app's own headers are sent as they are.
    NoBody,
    /// The app's `Content-Length`, already among its headers.
    AppLength(u64),
    /// A length the server computed because it saw the whole body; the header is added here.
    KnownLength(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 only).
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 without a length).
    UntilClose,
}

/// RFC 9110 §6.4.1: HEAD responses and 1xx, 204 and 304 never carry content.
#[must_use]
pub fn body_allowed(status: u16, is_head: bool) -> bool {
    !(is_head || (100..200).contains(&status) || status == 204 || status == 304)
}

/// What the server decides about a response head beyond the app's status and headers.
#[derive(Debug, Clone, Copy)]
pub struct HeadOptions {
    pub minor_version: u8,
    pub framing: Framing,
    pub keep_alive: bool,
    /// The app sent no `Date` of its own.
    pub add_date: bool,
    /// The app sent no `Server` of its own.
    pub add_server: bool,
}

impl HeadOptions {
    #[must_use]
    pub fn new(minor_version: u8, framing: Framing, keep_alive: bool) -> Self {
        HeadOptions {
            minor_version,
            framing,
            keep_alive,
            add_date: true,
            add_server: true,
        }
    }
}

/// Writes the complete response head into `out`.
/// `status` is the app's status string (`200 OK`); `app_headers` are its serialized `Name: value\r\n` lines.
pub fn encode_head(out: &mut Vec<u8>, status: &[u8], app_headers: &[u8], options: &HeadOptions) {
    encode_status_line(out, options.minor_version, status);
    out.extend_from_slice(app_headers);
    end_head(out, options);
}

/// Writes the status line (`HTTP/1.1 200 OK\r\n`): the start of a head that `end_head` completes.
pub fn encode_status_line(out: &mut Vec<u8>, minor_version: u8, status: &[u8]) {
    out.extend_from_slice(if minor_version == 0 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\n");
}

/// Length of the `HTTP/1.x ` prefix `encode_status_line` puts before the status.
pub const STATUS_OFFSET: usize = 9;

/// Appends the server's own headers and the blank line to a head holding the status line and the app's headers.
pub fn end_head(out: &mut Vec<u8>, options: &HeadOptions) {
    let HeadOptions {
        minor_version,
        framing,
        keep_alive,
        add_date,
        add_server,
    } = *options;
    if add_server {
        out.extend_from_slice(SERVER_HEADER);
    }
    if add_date {
        with_http_date(|date| {
            out.extend_from_slice(b"Date: ");
            out.extend_from_slice(date.as_bytes());
            out.extend_from_slice(b"\r\n");
        });
    }
    match framing {
        Framing::KnownLength(len) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa_u64(len, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::NoBody | Framing::AppLength(_) | Framing::UntilClose => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if minor_version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The whole response for a refused request; the connection is closed after it.
#[must_use]
pub fn encode_error(err: HttpError) -> Vec<u8> {
    encode_simple(1, err.status_line().as_bytes(), err.detail().as_bytes(), false)
}

/// A complete plain-text response with a known body, as used for errors the server answers itself.
#[must_use]
pub fn encode_simple(minor_version: u8, status: &[u8], body: &[u8], keep_alive: bool) -> Vec<u8> {
    encode_plain(minor_version, status, b"", body, keep_alive)
}

/// Like `encode_simple` with extra header lines (`Name: value\r\n`), closing the connection.
#[must_use]
pub fn encode_simple_with(minor_version: u8, status: &[u8], extra_headers: &[u8], body: &[u8]) -> Vec<u8> {
    encode_plain(minor_version, status, extra_headers, body, false)
}

fn encode_plain(minor_version: u8, status: &[u8], extra_headers: &[u8], body: &[u8], keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    let mut headers = b"Content-Type: text/plain; charset=utf-8\r\n".to_vec();
    headers.extend_from_slice(extra_headers);
    let options = HeadOptions::new(minor_version, Framing::KnownLength(body.len() as u64 + 1), keep_alive);
    encode_head(&mut out, status, &headers, &options);
    out.extend_from_slice(body);
    out.push(b'\n');
    out
}

/// The size line that starts a chunk: hex length and CRLF.
#[must_use]
pub fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    let mut n = len;
    let mut i = 16;
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[i..]
}

/// Decimal digits of `n` in `buf`.
pub fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_line_is_lowercase_hex_with_crlf() {
        assert_eq!(chunk_size_line(0, &mut [0; 18]), b"0\r\n");
        assert_eq!(chunk_size_line(255, &mut [0; 18]), b"ff\r\n");
        assert_eq!(chunk_size_line(0x1234_abcd, &mut [0; 18]), b"1234abcd\r\n");
    }

    #[test]
    fn encode_head_http10_keep_alive_says_so() {
        let mut out = Vec::new();
        encode_head(
            &mut out,
            b"200 OK",
            b"X: y\r\n",
            &HeadOptions::new(0, Framing::KnownLength(5), true),
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.0 200 OK\r\nX: y\r\nServer: rustwsgi\r\nDate: "));
        assert!(text.ends_with("Content-Length: 5\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn encode_error_closes_and_explains() {
        let text = String::from_utf8(encode_error(HttpError::UriTooLong)).unwrap();
        assert!(text.starts_with("HTTP/1.1 414 URI Too Long\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nrequest line too long\n"));
    }

    #[test]
    fn body_allowed_excludes_head_1xx_204_304() {
        assert!(body_allowed(200, false));
        assert!(!body_allowed(200, true));
        assert!(!body_allowed(101, false));
        assert!(!body_allowed(204, false));
        assert!(!body_allowed(304, false));
    }
}
