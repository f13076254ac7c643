//! Python objects every request uses, created once per server: interned environ keys and common values.

use pyo3::prelude::*;
use pyo3::types::PyString;

/// Headers common enough to deserve a prebuilt environ key: (lower-case name, environ key).
const KNOWN_HEADERS: &[(&str, &str)] = &[
    ("host", "HTTP_HOST"),
    ("user-agent", "HTTP_USER_AGENT"),
    ("accept", "HTTP_ACCEPT"),
    ("accept-encoding", "HTTP_ACCEPT_ENCODING"),
    ("accept-language", "HTTP_ACCEPT_LANGUAGE"),
    ("connection", "HTTP_CONNECTION"),
    ("cookie", "HTTP_COOKIE"),
    ("content-type", "CONTENT_TYPE"),
    ("content-length", "CONTENT_LENGTH"),
    ("authorization", "HTTP_AUTHORIZATION"),
    ("referer", "HTTP_REFERER"),
    ("origin", "HTTP_ORIGIN"),
    ("cache-control", "HTTP_CACHE_CONTROL"),
    ("pragma", "HTTP_PRAGMA"),
    ("if-modified-since", "HTTP_IF_MODIFIED_SINCE"),
    ("if-none-match", "HTTP_IF_NONE_MATCH"),
    ("x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
    ("x-forwarded-proto", "HTTP_X_FORWARDED_PROTO"),
    ("x-forwarded-host", "HTTP_X_FORWARDED_HOST"),
    ("x-real-ip", "HTTP_X_REAL_IP"),
    ("x-requested-with", "HTTP_X_REQUESTED_WITH"),
    ("upgrade-insecure-requests", "HTTP_UPGRADE_INSECURE_REQUESTS"),
    ("sec-fetch-site", "HTTP_SEC_FETCH_SITE"),
    ("sec-fetch-mode", "HTTP_SEC_FETCH_MODE"),
    ("sec-fetch-dest", "HTTP_SEC_FETCH_DEST"),
    ("sec-fetch-user", "HTTP_SEC_FETCH_USER"),
    ("dnt", "HTTP_DNT"),
    ("expect", "HTTP_EXPECT"),
    ("transfer-encoding", "HTTP_TRANSFER_ENCODING"),
    ("range", "HTTP_RANGE"),
    ("x-csrftoken", "HTTP_X_CSRFTOKEN"),
];

const METHODS: &[&str] = &["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// Interned keys and shared values, owned by the server for its lifetime.
pub struct PyConsts {
    pub request_method: Py<PyString>,
    pub path_info: Py<PyString>,
    pub query_string: Py<PyString>,
    pub server_protocol: Py<PyString>,
    pub remote_addr: Py<PyString>,
    pub remote_port: Py<PyString>,
    pub content_length: Py<PyString>,
    pub wsgi_input: Py<PyString>,
    pub url_scheme: Py<PyString>,
    pub http_host: Py<PyString>,
    pub http_10: Py<PyString>,
    pub http_11: Py<PyString>,
    pub empty: Py<PyString>,
    pub methods: Vec<(&'static str, Py<PyString>)>,
    pub headers: Vec<(&'static str, Py<PyString>)>,
}

impl PyConsts {
    #[must_use]
    pub fn new(py: Python<'_>) -> Self {
        let s = |text: &str| PyString::intern(py, text).unbind();
        PyConsts {
            request_method: s("REQUEST_METHOD"),
            path_info: s("PATH_INFO"),
            query_string: s("QUERY_STRING"),
            server_protocol: s("SERVER_PROTOCOL"),
            remote_addr: s("REMOTE_ADDR"),
            remote_port: s("REMOTE_PORT"),
            content_length: s("CONTENT_LENGTH"),
            wsgi_input: s("wsgi.input"),
            url_scheme: s("wsgi.url_scheme"),
            http_host: s("HTTP_HOST"),
            http_10: s("HTTP/1.0"),
            http_11: s("HTTP/1.1"),
            empty: s(""),
            methods: METHODS.iter().map(|m| (*m, s(m))).collect(),
            headers: KNOWN_HEADERS.iter().map(|(name, key)| (*name, s(key))).collect(),
        }
    }

    /// The prebuilt environ key for a header name, if it is a common one.
    #[must_use]
    pub fn header_key(&self, name: &[u8]) -> Option<&Py<PyString>> {
        self.headers
            .iter()
            .find(|(known, _)| known.len() == name.len() && known.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, key)| key)
    }
}
