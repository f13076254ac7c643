//! The event loop with a plain Rust handler plugged into its seam, over real loopback sockets: keep-alive,
//! pipelining, and a panic inside request handling answered with 500 while the server keeps serving.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use _rustwsgi::http::response::{encode_simple, Framing, HeadOptions};
use _rustwsgi::http::Limits;
use _rustwsgi::server::listener::Listener;
use _rustwsgi::server::{Control, Exchange, Handler, LoopConfig, Outcome, Server, Worker};

/// Answers with the request target; panics for `/panic`.
struct EchoTarget;

impl Handler for EchoTarget {
    fn thread_scope(&self, body: &mut dyn FnMut(&dyn Worker)) {
        body(&EchoWorker);
    }
}

struct EchoWorker;

impl Worker for EchoWorker {
    fn blocking(&self, f: &mut (dyn FnMut() + Send)) {
        f();
    }

    fn handle(&self, exchange: &mut Exchange, _control: &dyn Control) -> Outcome {
        let mut io = exchange.conn.io.lock();
        let target = exchange.head.target(io.data()).to_vec();
        io.consume(exchange.consumed);
        assert!(target != b"/panic", "handler bug on purpose");
        let mut head = Vec::new();
        let options = HeadOptions::new(1, Framing::KnownLength(target.len() as u64), exchange.head.keep_alive);
        _rustwsgi::http::response::encode_head(&mut head, b"200 OK", b"", &options);
        let mut slices = [IoSlice::new(&head), IoSlice::new(&target)];
        io.write_all_vectored(&mut slices, &mut |_| Ok(())).unwrap();
        if exchange.head.keep_alive {
            Outcome::KeepAlive
        } else {
            Outcome::Close
        }
    }

    fn on_panic(&self, exchange: &mut Exchange) {
        let response = encode_simple(1, b"500 Internal Server Error", b"Internal Server Error", false);
        exchange.conn.io.lock().write_nonblocking(&response);
    }

    fn report_overdue(&self, _overdue: &[_rustwsgi::server::deadline::Overdue]) {}
}

fn start(threads: usize) -> (Server, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = OwnedFd::from(listener);
    let config = LoopConfig {
        threads,
        keep_alive: Duration::from_secs(5),
        header_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(30),
        limits: Limits::default(),
        health_path: None,
        max_requests: 0,
        timeout: None,
        max_connections: 0,
        max_queue: 1024,
        max_queue_wait: None,
        proxy_protocol: false,
        proxy_trusted: _rustwsgi::http::forwarded::TrustedProxies::default(),
    };
    let server = Server::new(vec![Listener::from_fd(fd, false).unwrap()], config).unwrap();
    server.start(&(Arc::new(EchoTarget) as Arc<dyn Handler>)).unwrap();
    (server, port)
}

fn exchange(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8(response).unwrap()
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (server, port) = start(2);
    let response = exchange(
        port,
        b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\nGET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let bodies: Vec<&str> = response
        .split("\r\n\r\n")
        .skip(1)
        .map(|part| part.split("HTTP/1.1").next().unwrap())
        .collect();
    assert_eq!(bodies, ["/one", "/two", "/three"]);
    server.shutdown(true);
    assert!(server.wait(Duration::from_secs(10)));
}

#[test]
fn panic_in_a_handler_is_a_500_and_the_server_keeps_serving() {
    let (server, port) = start(1);
    let response = exchange(port, b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{response}"
    );
    for _ in 0..3 {
        let response = exchange(port, b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("/after"));
    }
    server.shutdown(true);
    assert!(server.wait(Duration::from_secs(10)));
}

#[test]
fn malformed_request_gets_400_and_close_without_reaching_the_handler() {
    let (server, port) = start(1);
    let response = exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{response}");
    assert!(response.contains("Connection: close\r\n"));
    server.shutdown(true);
    assert!(server.wait(Duration::from_secs(10)));
}
