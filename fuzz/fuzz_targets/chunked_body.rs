//! Chunked body decoder on arbitrary bytes, fed whole and in two pieces.
//!
//! Input layout: two bytes of split point (little-endian, taken modulo the body length + 1), one byte of body
//! limit (0 = unlimited), then the raw body bytes. Both ways of feeding must decode the same bytes, consume the
//! same count, and end in the same error or done state; nothing is consumed past the input or past the end of
//! the body, and `decode_complete` agrees with the incremental decoder.

#![no_main]

use _rustwsgi::http::body::{decode_complete, BodyDecoder};
use _rustwsgi::http::request::BodyKind;
use _rustwsgi::http::HttpError;
use libfuzzer_sys::fuzz_target;

/// The state a decoder ends in after being fed.
#[derive(Debug, PartialEq, Eq)]
struct Fed {
    out: Vec<u8>,
    /// Bytes consumed by successful calls. After an error the count is meaningless (the connection is dropped,
    /// and `decode` reports no count with an error), so it is left out of the comparison.
    consumed: Option<usize>,
    result: Result<bool, HttpError>,
    decoded: u64,
}

fn feed(limit: u64, pieces: &[&[u8]]) -> Fed {
    let mut decoder = BodyDecoder::new(BodyKind::Chunked, limit);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut pending: Vec<u8> = Vec::new();
    for piece in pieces {
        // What a connection holds: the bytes not consumed yet, then the newly arrived piece.
        pending.extend_from_slice(piece);
        match decoder.decode(&pending, &mut out) {
            Ok(used) => {
                assert!(used <= pending.len(), "consumed {used} of {} bytes", pending.len());
                consumed += used;
                pending.drain(..used);
                if decoder.is_done() {
                    break;
                }
                assert!(pending.is_empty(), "stopped early without finishing the body");
            }
            Err(err) => {
                return Fed {
                    out,
                    consumed: None,
                    result: Err(err),
                    decoded: decoder.decoded(),
                };
            }
        }
    }
    Fed {
        out,
        consumed: Some(consumed),
        result: Ok(decoder.is_done()),
        decoded: decoder.decoded(),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let body = &data[3..];
    let split = usize::from(u16::from_le_bytes([data[0], data[1]])) % (body.len() + 1);
    let limit = u64::from(data[2]);

    let whole = feed(limit, &[body]);
    if let Some(consumed) = whole.consumed {
        assert!(consumed <= body.len());
        if whole.result == Ok(false) {
            assert_eq!(consumed, body.len(), "an unfinished body left input unconsumed");
        }
    }
    match whole.result {
        // decoded() counts announced chunk sizes, so it runs ahead of the output inside a chunk.
        Ok(true) => assert_eq!(
            whole.decoded,
            whole.out.len() as u64,
            "decoded() disagrees with the body"
        ),
        Ok(false) => assert!(whole.decoded >= whole.out.len() as u64, "decoded() behind the output"),
        Err(_) => {}
    }
    if limit != 0 {
        assert!(
            whole.out.len() as u64 <= limit,
            "{} bytes decoded over a limit of {limit}",
            whole.out.len()
        );
    }

    let (first, second) = body.split_at(split);
    let pieces = feed(limit, &[first, second]);
    if pieces != whole {
        let same_prefix = pieces.out.iter().zip(&whole.out).take_while(|(a, b)| a == b).count();
        panic!(
            "split at {split} differs from the whole body: split gave {} output bytes, consumed {:?}, {:?}, \
             decoded {}; whole gave {} output bytes, consumed {:?}, {:?}, decoded {}; outputs agree on the first {}",
            pieces.out.len(),
            pieces.consumed,
            pieces.result,
            pieces.decoded,
            whole.out.len(),
            whole.consumed,
            whole.result,
            whole.decoded,
            same_prefix,
        );
    }

    match decode_complete(BodyKind::Chunked, limit, body) {
        Ok(Some((out, used))) => {
            assert_eq!(whole.result, Ok(true));
            assert!(
                out == whole.out && Some(used) == whole.consumed,
                "decode_complete disagrees"
            );
        }
        Ok(None) => assert_eq!(whole.result, Ok(false)),
        Err(err) => assert_eq!(whole.result, Err(err)),
    }
});
