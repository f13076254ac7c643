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
    ("priority", "HTTP_PRIORITY"),
    ("sec-ch-ua", "HTTP_SEC_CH_UA"),
    ("sec-ch-ua-mobile", "HTTP_SEC_CH_UA_MOBILE"),
    ("sec-ch-ua-platform", "HTTP_SEC_CH_UA_PLATFORM"),
    ("forwarded", "HTTP_FORWARDED"),
    ("x-forwarded-port", "HTTP_X_FORWARDED_PORT"),
    ("x-request-id", "HTTP_X_REQUEST_ID"),
    ("traceparent", "HTTP_TRACEPARENT"),
    ("if-match", "HTTP_IF_MATCH"),
    ("if-unmodified-since", "HTTP_IF_UNMODIFIED_SINCE"),
    ("if-range", "HTTP_IF_RANGE"),
    ("upgrade", "HTTP_UPGRADE"),
];

// A request's known headers are tracked in one `u64` bit set (see `environ::build_environ`).
const _: () = assert!(KNOWN_HEADERS.len() <= 64);

const METHODS: &[&str] = &["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// A header name with a prebuilt environ key.
struct KnownHeader {
    /// Lower case.
    name: &'static str,
    words: (u64, u64),
    key: Py<PyString>,
}

/// A header name's first and last 8 bytes (zero-padded when shorter) as two words, with bit 5 of every byte set.
/// That lower-cases letters, and for the names a request can carry (tokens: no CR, which would become `-`) it
/// maps no other byte onto a letter or `-`, the only bytes of known names: so equal words mean the same name
/// up to letter case, for names of up to 16 bytes.
fn name_words(name: &[u8]) -> (u64, u64) {
    const LOWER: u64 = 0x2020_2020_2020_2020;
    let word = |bytes: [u8; 8]| u64::from_le_bytes(bytes) | LOWER;
    if let (Some(&head), Some(&tail)) = (name.first_chunk::<8>(), name.last_chunk::<8>()) {
        (word(head), word(tail))
    } else {
        let mut padded = [0u8; 8];
        padded[..name.len()].copy_from_slice(name);
        (word(padded), word(padded))
    }
}

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
    /// `KNOWN_HEADERS` with their interned keys, ordered by name length.
    headers: Vec<KnownHeader>,
    /// The headers whose names have `n` bytes are `headers[header_starts[n]..header_starts[n + 1]]`.
    header_starts: Vec<usize>,
}

impl PyConsts {
    #[must_use]
    pub fn new(py: Python<'_>) -> Self {
        let s = |text: &str| PyString::intern(py, text).unbind();
        let mut headers: Vec<_> = KNOWN_HEADERS
            .iter()
            .map(|(name, key)| KnownHeader {
                name,
                words: name_words(name.as_bytes()),
                key: s(key),
            })
            .collect();
        headers.sort_by_key(|known| known.name.len());
        let longest = headers.last().map_or(0, |known| known.name.len());
        let header_starts = (0..=longest + 1)
            .map(|len| headers.partition_point(|known| known.name.len() < len))
            .collect();
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
            headers,
            header_starts,
        }
    }

    /// The prebuilt environ key for a header name, if it is a common one, with its index (below 64, the same
    /// for every spelling of the name). Only known names of the same length are compared, and those by two
    /// words each (`name_words`): several share a length and a long prefix (`sec-fetch-*`).
    #[must_use]
    pub fn header_key(&self, name: &[u8]) -> Option<(usize, &Py<PyString>)> {
        let (&start, &end) = (
            self.header_starts.get(name.len())?,
            self.header_starts.get(name.len() + 1)?,
        );
        if start == end {
            return None;
        }
        let words = name_words(name);
        (start..end)
            .find(|&i| {
                let known = &self.headers[i];
                // The words cover names up to 16 bytes; a longer one is compared whole too.
                known.words == words && (name.len() <= 16 || known.name.as_bytes().eq_ignore_ascii_case(name))
            })
            .map(|i| (i, &self.headers[i].key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_key_finds_every_known_header_in_any_case_and_nothing_else() {
        Python::initialize();
        Python::attach(|py| {
            let consts = PyConsts::new(py);
            let mut indexes = std::collections::HashSet::new();
            for (name, key) in KNOWN_HEADERS {
                for spelling in [name.to_string(), name.to_ascii_uppercase()] {
                    let (index, found) = consts.header_key(spelling.as_bytes()).expect(name);
                    assert_eq!(found.bind(py).to_str().unwrap(), *key);
                    assert!(index < 64);
                    indexes.insert(index);
                }
            }
            assert_eq!(indexes.len(), KNOWN_HEADERS.len(), "one index per header");
            // Also names of a known length that differ inside (past 16 bytes, only in the middle).
            for unknown in [
                "",
                "x",
                "hosts",
                "hos",
                "hust",
                "x-custom-header",
                "sec-fetch-sitf",
                "if-modifXed-since",
                "upgrade-insecure-reXuests",
                "a-name-longer-than-any-known-one",
            ] {
                assert!(consts.header_key(unknown.as_bytes()).is_none(), "{unknown}");
            }
        });
    }
}
