//! The request corpus under tests/requests, fed to the parser and body decoder whole and in random splits:
//! valid requests must give the expected method, target, version and body every time; invalid ones must give
//! the expected status every time, never a request.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::fs;
use std::path::{Path, PathBuf};

use _rustwsgi::http::body::BodyDecoder;
use _rustwsgi::http::{parse_request, HttpError, Limits, Parsed, RequestHead};
use _rustwsgi::wsgi::environ::{percent_decode, split_target};

/// Outcome of feeding one request's bytes, whatever the split.
#[derive(Debug, PartialEq)]
enum Fed {
    Request {
        method: Vec<u8>,
        target: Vec<u8>,
        minor_version: u8,
        body: Vec<u8>,
    },
    Refused(u16),
    Incomplete,
}

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/requests").join(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "http"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus for {kind}");
    files
}

/// Feeds `pieces` one after another the way a connection does: parse the head from what has arrived, then
/// decode the body from whatever follows.
fn feed(pieces: &[&[u8]]) -> Fed {
    let limits = Limits::default();
    let mut buf = Vec::new();
    let mut head: Option<RequestHead> = None;
    let mut decoder: Option<BodyDecoder> = None;
    let mut body = Vec::new();
    let mut body_pos = 0;
    for piece in pieces {
        buf.extend_from_slice(piece);
        if head.is_none() {
            match parse_request(&buf, &limits) {
                Ok(Parsed::Incomplete) => continue,
                Ok(Parsed::Complete(parsed)) => {
                    decoder = Some(BodyDecoder::new(parsed.body, limits.body));
                    body_pos = parsed.head_len;
                    head = Some(parsed);
                }
                Err(err) => return Fed::Refused(err.status().0),
            }
        }
        let decoder = decoder.as_mut().unwrap();
        match decoder.decode(&buf[body_pos..], &mut body) {
            Ok(used) => body_pos += used,
            Err(err) => return Fed::Refused(HttpError::status(err).0),
        }
    }
    match (head, decoder) {
        (Some(head), Some(decoder)) if decoder.is_done() => Fed::Request {
            method: head.method(&buf).to_vec(),
            target: head.target(&buf).to_vec(),
            minor_version: head.minor_version,
            body,
        },
        _ => Fed::Incomplete,
    }
}

/// A small deterministic generator so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap() % n.max(1)
    }
}

fn splits(data: &[u8], seed: u64) -> Vec<Vec<&[u8]>> {
    let mut all = vec![vec![data], data.chunks(1).collect()];
    let mut rng = Lcg(seed);
    for _ in 0..20 {
        let mut cuts: Vec<usize> = (0..=rng.below(6)).map(|_| rng.below(data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in cuts {
            pieces.push(&data[start..cut]);
            start = cut;
        }
        pieces.push(&data[start..]);
        all.push(pieces);
    }
    all
}

fn expected(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path.with_extension("json")).unwrap()).unwrap()
}

#[test]
fn corpus_valid_requests_parse_identically_in_every_split() {
    for (i, path) in corpus("valid").into_iter().enumerate() {
        let data = fs::read(&path).unwrap();
        let want = expected(&path);
        let whole = feed(&[&data]);
        let Fed::Request {
            method,
            target,
            minor_version,
            body,
        } = &whole
        else {
            panic!("{}: not accepted: {whole:?}", path.display());
        };
        assert_eq!(
            method.as_slice(),
            want["method"].as_str().unwrap().as_bytes(),
            "{}",
            path.display()
        );
        assert_eq!(
            format!("HTTP/1.{minor_version}"),
            want["version"].as_str().unwrap(),
            "{}",
            path.display()
        );
        let (raw_path, query) = split_target(target);
        let decoded_path: String = percent_decode(raw_path).iter().map(|&b| char::from(b)).collect();
        assert_eq!(decoded_path, want["path"].as_str().unwrap(), "{}", path.display());
        let query: String = query.iter().map(|&b| char::from(b)).collect();
        assert_eq!(query, want["query"].as_str().unwrap(), "{}", path.display());
        let body: String = body.iter().map(|&b| char::from(b)).collect();
        assert_eq!(body, want["body"].as_str().unwrap(), "{}", path.display());
        for pieces in splits(&data, i as u64) {
            assert_eq!(
                feed(&pieces),
                whole,
                "{} split as {:?}",
                path.display(),
                pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn corpus_invalid_requests_are_refused_in_every_split() {
    for (i, path) in corpus("invalid").into_iter().enumerate() {
        let data = fs::read(&path).unwrap();
        let status = u16::try_from(expected(&path)["status"].as_u64().unwrap()).unwrap();
        for pieces in splits(&data, 1000 + i as u64) {
            assert_eq!(
                feed(&pieces),
                Fed::Refused(status),
                "{} split as {:?}",
                path.display(),
                pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
            );
        }
    }
}
