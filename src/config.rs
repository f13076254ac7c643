//! The server settings as they cross from Python: the same names as `rustwsgi.config`, no defaults of their own.

use std::time::Duration;

use pyo3::prelude::*;

use crate::http::forwarded::TrustedProxies;
use crate::http::Limits;
use crate::server::LoopConfig;
use crate::wsgi::input::BodyPace;

/// Read from the dict the Python side builds from its settings registry.
#[derive(Debug, FromPyObject)]
#[pyo3(from_item_all)]
pub struct ServerConfig {
    pub threads: usize,
    pub keep_alive: f64,
    pub limit_request_line: usize,
    pub limit_request_fields: usize,
    pub limit_request_field_size: usize,
    pub limit_request_body: u64,
    /// Peers whose forwarding headers are believed (addresses, CIDR blocks, `*`).
    #[pyo3(default)]
    pub forwarded_allow_ips: Vec<String>,
    /// Mount point of the app (`SCRIPT_NAME`); stripped from the start of `PATH_INFO`.
    #[pyo3(default)]
    pub root_path: String,
    /// Answered by the server itself, without Python: 200, or 503 while draining.
    #[pyo3(default)]
    pub health_path: Option<String>,
    /// Stop gracefully after this many responses (0: never); the supervisor starts a replacement.
    #[pyo3(default)]
    pub max_requests: u64,
    /// Expect a PROXY protocol header (v1/v2) from peers in `forwarded_allow_ips`.
    #[pyo3(default)]
    pub proxy_protocol: bool,
    /// Seconds a client has to send its request head (and a body of up to 64 KiB).
    #[pyo3(default = 30.0)]
    pub header_timeout: f64,
    /// Seconds a streamed request body may pause between bytes.
    #[pyo3(default = 30.0)]
    pub body_timeout: f64,
    /// Bytes per second a streamed body must average once `body_timeout` of waiting is used up (0: no minimum).
    #[pyo3(default = 500)]
    pub body_min_rate: u64,
    /// Seconds a client may take no bytes of its response before it is dropped.
    #[pyo3(default = 30.0)]
    pub write_timeout: f64,
    /// Seconds a request may spend in the application before the client gets 504 (0: no deadline).
    #[pyo3(default)]
    pub timeout: f64,
    /// Open connections beyond which accepting pauses (0: no limit).
    #[pyo3(default)]
    pub max_connections: usize,
    /// Requests waiting for a free thread beyond which new ones get 503 at once (0: the built-in 1024).
    #[pyo3(default)]
    pub max_queue: usize,
    /// Seconds a request may wait for a free thread before it is answered 503 (0: no limit).
    #[pyo3(default)]
    pub max_queue_wait: f64,
    /// Called after each response with (environ, status, body bytes sent, seconds taken); None when off.
    #[pyo3(default)]
    pub access_log: Option<Py<PyAny>>,
}

impl ServerConfig {
    #[must_use]
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.write_timeout.max(0.001))
    }

    #[must_use]
    pub fn body_pace(&self) -> BodyPace {
        BodyPace {
            idle: Duration::from_secs_f64(self.body_timeout.max(0.001)),
            min_rate: self.body_min_rate,
        }
    }

    #[must_use]
    pub fn loop_config(&self) -> LoopConfig {
        LoopConfig {
            threads: self.threads.max(1),
            health_path: self.health_path.clone().filter(|p| !p.is_empty()),
            max_requests: self.max_requests,
            proxy_protocol: self.proxy_protocol,
            proxy_trusted: TrustedProxies::parse(&self.forwarded_allow_ips).unwrap_or_default(),
            header_timeout: Duration::from_secs_f64(self.header_timeout.max(0.001)),
            write_timeout: self.write_timeout(),
            timeout: (self.timeout > 0.0).then(|| Duration::from_secs_f64(self.timeout)),
            max_connections: self.max_connections,
            max_queue: if self.max_queue == 0 { 1024 } else { self.max_queue },
            max_queue_wait: (self.max_queue_wait > 0.0).then(|| Duration::from_secs_f64(self.max_queue_wait)),
            keep_alive: Duration::from_secs_f64(self.keep_alive.max(0.0)),
            limits: Limits {
                request_line: self.limit_request_line,
                fields: self.limit_request_fields,
                field_size: self.limit_request_field_size,
                body: self.limit_request_body,
            },
        }
    }
}
