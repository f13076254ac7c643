//! Micro-benchmarks of the pure-Rust hot path: parsing a request head, decoding a chunked body, encoding a
//! response head, percent-decoding a path and reading forwarding headers. Run with `cargo bench`.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a broken benchmark

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use _rustwsgi::http::body::decode_complete;
use _rustwsgi::http::forwarded::{client_info, TrustedProxies};
use _rustwsgi::http::response::{encode_head, Framing, HeadOptions};
use _rustwsgi::http::{parse_request, BodyKind, Limits};
use _rustwsgi::wsgi::environ::{percent_decode, split_target};

const WRK_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n";
const BROWSER_GET: &[u8] = b"GET /articles/2026/11/rust-and-python?page=2&sort=new HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Connection: keep-alive\r\n\
Cookie: sessionid=abc123def456; csrftoken=0123456789abcdef\r\n\
Upgrade-Insecure-Requests: 1\r\n\r\n";

fn parsing(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse_request");
    for (name, request) in [("wrk_get_1_header", WRK_GET), ("browser_get_8_headers", BROWSER_GET)] {
        group.throughput(Throughput::Bytes(request.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse_request(black_box(request), &limits).unwrap()));
    }
    group.finish();
}

fn chunked(c: &mut Criterion) {
    let mut body = Vec::new();
    for _ in 0..64 {
        body.extend_from_slice(b"400\r\n");
        body.extend_from_slice(&[b'x'; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut group = c.benchmark_group("chunked");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("decode_64_chunks_of_1k", |b| {
        b.iter(|| decode_complete(BodyKind::Chunked, 0, black_box(&body)).unwrap());
    });
    group.finish();
}

fn response_head(c: &mut Criterion) {
    let headers = b"Content-Type: text/plain\r\nContent-Length: 12\r\n";
    let options = HeadOptions::new(1, Framing::AppLength(12), true);
    let mut out = Vec::with_capacity(256);
    c.bench_function("encode_head_2_headers", |b| {
        b.iter(|| {
            out.clear();
            encode_head(&mut out, black_box(b"200 OK"), black_box(headers), &options);
        });
    });
}

fn environ_pieces(c: &mut Criterion) {
    c.bench_function("split_and_percent_decode", |b| {
        b.iter(|| {
            let (path, _query) = split_target(black_box(b"/caf%C3%A9/menu%20du%20jour?x=1"));
            percent_decode(path).len()
        });
    });
    let trusted = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b"Host", b"example.com"),
        (b"X-Forwarded-For", b"203.0.113.9, 10.1.1.1"),
        (b"X-Forwarded-Proto", b"https"),
    ];
    c.bench_function("client_info_x_forwarded", |b| {
        b.iter(|| client_info(black_box(&headers).iter().copied(), &trusted));
    });
}

criterion_group!(benches, parsing, chunked, response_head, environ_pieces);
criterion_main!(benches);
