//! Request-head parser on arbitrary bytes.
//!
//! Input layout: two bytes of split point (little-endian, taken modulo the request length + 1), one byte
//! choosing the limits, then the request bytes. Checks:
//! - a complete head lies inside the input: `head_len <= len`, every range inside the head, and the head ends
//!   with the blank line;
//! - a prefix of the request (what a connection may have received so far) parses to `Incomplete` or to exactly
//!   what the whole request parses to; a complete head is reported once all of it is in the prefix, never earlier;
//!   a refused prefix means a refused request. With the `strict-errors` feature the refusal must also be the same
//!   `HttpError` (status and reason) whatever the split.

#![no_main]

use std::ops::Range;

use _rustwsgi::http::request::{BodyKind, Limits, Parsed, RequestHead};
use _rustwsgi::http::{parse_request, HttpError};
use libfuzzer_sys::fuzz_target;

/// Default limits for even selectors; small ones (so that every limit is reachable) for odd selectors.
fn limits(selector: u8) -> Limits {
    if selector & 1 == 0 {
        return Limits::default();
    }
    let size = 8 + usize::from((selector >> 1) & 0x1f) * 4;
    Limits {
        request_line: size,
        fields: usize::from(selector >> 6),
        field_size: size,
        body: u64::from(selector >> 1),
    }
}

fn check_inside(range: &Range<usize>, head_len: usize, what: &str) {
    assert!(
        range.start <= range.end && range.end <= head_len,
        "{what} range {range:?} outside the head (head_len {head_len})"
    );
}

fn check_head(head: &RequestHead, buf: &[u8], limits: &Limits) {
    assert!(
        head.head_len <= buf.len(),
        "head_len {} > input length {}",
        head.head_len,
        buf.len()
    );
    assert!(
        buf[..head.head_len].ends_with(b"\r\n\r\n"),
        "head does not end with a blank line"
    );
    check_inside(&head.method, head.head_len, "method");
    check_inside(&head.target, head.head_len, "target");
    assert!(!head.method(buf).is_empty(), "empty method");
    assert!(!head.target(buf).is_empty(), "empty target");
    assert!(head.minor_version <= 1, "minor version {}", head.minor_version);
    assert!(
        head.headers.len() <= limits.fields,
        "{} header fields over the limit",
        head.headers.len()
    );
    for header in &head.headers {
        check_inside(&header.name, head.head_len, "header name");
        check_inside(&header.value, head.head_len, "header value");
        assert!(!header.name.is_empty(), "empty header name");
    }
    if let BodyKind::Length(len) = head.body {
        assert!(len > 0, "Length(0) instead of Empty");
        assert!(
            limits.body == 0 || len <= limits.body,
            "body length {len} over the limit"
        );
    }
}

/// Everything a parse result says, in a comparable form.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Incomplete,
    Complete {
        method: Range<usize>,
        target: Range<usize>,
        minor_version: u8,
        headers: Vec<(Range<usize>, Range<usize>)>,
        head_len: usize,
        body: BodyKind,
        keep_alive: bool,
        expect_continue: bool,
    },
    Refused(HttpError),
}

fn outcome(result: Result<Parsed, HttpError>, buf: &[u8], limits: &Limits) -> Outcome {
    match result {
        Ok(Parsed::Incomplete) => Outcome::Incomplete,
        Ok(Parsed::Complete(head)) => {
            check_head(&head, buf, limits);
            Outcome::Complete {
                method: head.method.clone(),
                target: head.target.clone(),
                minor_version: head.minor_version,
                headers: head.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
                head_len: head.head_len,
                body: head.body,
                keep_alive: head.keep_alive,
                expect_continue: head.expect_continue,
            }
        }
        Err(err) => Outcome::Refused(err),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let buf = &data[3..];
    let mut split = usize::from(u16::from_le_bytes([data[0], data[1]])) % (buf.len() + 1);
    if cfg!(feature = "mask-cr-lf-split") && split > 0 && buf[split - 1] == b'\r' && buf.get(split) == Some(&b'\n') {
        // Never end the prefix between a CR and its LF: while a line is incomplete the head scanner counts a
        // trailing CR towards the line-length limits, so a line of exactly the limit is refused (414/431) when
        // a read ends right after its CR, and accepted when CRLF arrives together.
        split -= 1;
    }
    let limits = limits(data[2]);

    let whole = outcome(parse_request(buf, &limits), buf, &limits);
    let prefix = &buf[..split];
    let early = outcome(parse_request(prefix, &limits), prefix, &limits);
    match (&early, &whole) {
        (Outcome::Incomplete, Outcome::Complete { head_len, .. }) => {
            assert!(
                *head_len > split,
                "whole head of {head_len} bytes was in the prefix of {split}, yet Incomplete"
            );
        }
        (Outcome::Incomplete, _) => {}
        (Outcome::Complete { head_len, .. }, _) => {
            assert!(*head_len <= split);
            assert_eq!(
                early, whole,
                "a complete prefix of {split} bytes parsed differently from the whole input"
            );
        }
        (Outcome::Refused(_), Outcome::Refused(_)) if !cfg!(feature = "strict-errors") => {}
        (Outcome::Refused(_), _) => {
            assert_eq!(
                early, whole,
                "a prefix of {split} bytes was refused differently from the whole input"
            );
        }
    }
});
