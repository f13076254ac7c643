//! The per-request environ: a copy of the listener's constant template plus the request's own keys
//! (PEP 3333 §"environ Variables"). Every value set here is a `str`.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use std::io::Write as _;

use crate::http::body::hex_value;
use crate::http::forwarded::{client_info, TrustedProxies};
use crate::http::request::{trim_ows, HeaderRange, RequestHead};
use crate::http::response::itoa_u64;
use crate::server::connection::Peer;

use super::consts::PyConsts;

/// Per-server rules applied while building environ.
#[derive(Debug, Default)]
pub struct EnvironRules {
    /// Peers whose `Forwarded`/`X-Forwarded-*` headers set `REMOTE_ADDR`, `wsgi.url_scheme` and `HTTP_HOST`.
    pub trusted: TrustedProxies,
    /// Mount point (already `SCRIPT_NAME` in the template); removed from the start of `PATH_INFO`.
    pub root_path: Vec<u8>,
}

/// Headers the roomy template has room for beyond its own entries (about 19): a desktop browser sends 13.
const ROOMY_HEADERS: usize = 21;

/// The environ templates of one listener: `base` (the listener's constant keys) plus, with empty values, the keys
/// `build_environ` and the caller set for every request, in two hash table sizes.
///
/// A copy keeps its template's table size. A request whose headers do not fit grows its environ, a reallocation
/// and rehash on every request; a larger table costs more to copy and to free (it is beyond Python's
/// small-object allocator). So each request copies the smaller template its entries fit in: a client that sends
/// only `Host` gets the compact one, a browser or an HTTP library the roomy one.
pub struct EnvironTemplate {
    compact: Py<PyDict>,
    roomy: Py<PyDict>,
    /// Entries the compact template's table holds before it grows.
    compact_entries: usize,
    /// Entries in either template.
    len: usize,
}

impl EnvironTemplate {
    /// # Errors
    /// Python allocation failures.
    pub fn new(consts: &PyConsts, base: &Bound<'_, PyDict>) -> PyResult<Self> {
        let py = base.py();
        let compact = base.copy()?;
        add_per_request_keys(consts, &compact)?;
        let roomy_entries = ffi::Py_ssize_t::try_from(compact.len() + ROOMY_HEADERS).unwrap_or(ffi::Py_ssize_t::MAX);
        // SAFETY: _PyDict_NewPresized returns a new reference, or NULL with an exception set.
        let roomy = unsafe { Bound::from_owned_ptr_or_err(py, ffi::_PyDict_NewPresized(roomy_entries))? };
        let roomy = roomy.cast_into::<PyDict>()?;
        // One by one: `update` would give the empty dict a copy of `base`'s own table.
        for (key, value) in compact.iter() {
            roomy.set_item(key, value)?;
        }
        Ok(EnvironTemplate {
            len: compact.len(),
            compact_entries: table_capacity(&compact)?,
            compact: compact.unbind(),
            roomy: roomy.unbind(),
        })
    }

    /// The template for a request with `headers` header lines.
    #[must_use]
    pub fn for_request<'py>(&self, py: Python<'py>, headers: usize) -> &Bound<'py, PyDict> {
        // One more for a CONTENT_LENGTH the server may add.
        if self.len + headers < self.compact_entries {
            self.compact.bind(py)
        } else {
            self.roomy.bind(py)
        }
    }
}

/// Gives `dict`, with empty values, the keys every request's environ gets that it lacks.
fn add_per_request_keys(consts: &PyConsts, dict: &Bound<'_, PyDict>) -> PyResult<()> {
    let py = dict.py();
    for key in [
        &consts.request_method,
        &consts.path_info,
        &consts.query_string,
        &consts.server_protocol,
        &consts.remote_addr,
        &consts.remote_port,
        &consts.wsgi_input,
    ] {
        if !dict.contains(key.bind(py))? {
            dict.set_item(key.bind(py), consts.empty.bind(py))?;
        }
    }
    Ok(())
}

/// Entries a copy of `dict` holds before its hash table grows. The interpreter does not say, and its sizing rule
/// differs between versions, so a copy is filled until its size changes (once per listener, at start).
fn table_capacity(dict: &Bound<'_, PyDict>) -> PyResult<usize> {
    let size_of = |d: &Bound<'_, PyDict>| -> PyResult<usize> { d.call_method0("__sizeof__")?.extract() };
    let probe = dict.copy()?;
    let allocated = size_of(&probe)?;
    let mut extra = 0;
    while size_of(&probe)? == allocated {
        probe.set_item(format!("\0capacity probe {extra}"), 0)?;
        extra += 1;
    }
    Ok(probe.len() - 1)
}

/// Builds the environ for `head`, whose ranges index `buf`. `content_length` overrides the header (set for
/// bodies the server decoded itself, such as buffered chunked ones).
///
/// # Errors
/// Python allocation failures.
#[allow(clippy::too_many_arguments)] // one caller, on the hot path: no struct to pack and unpack
pub fn build_environ<'py>(
    py: Python<'py>,
    consts: &PyConsts,
    template: &EnvironTemplate,
    head: &RequestHead,
    buf: &[u8],
    peer: &Peer,
    content_length: Option<u64>,
    rules: &EnvironRules,
) -> PyResult<Bound<'py, PyDict>> {
    let environ = template.for_request(py, head.headers.len()).copy()?;
    let method = head.method(buf);
    match consts.methods.iter().find(|(m, _)| m.as_bytes() == method) {
        Some((_, interned)) => environ.set_item(consts.request_method.bind(py), interned.bind(py))?,
        None => environ.set_item(consts.request_method.bind(py), latin1(py, method)?)?,
    }
    let (path, query) = split_target(head.target(buf));
    let path = percent_decode(path);
    environ.set_item(
        consts.path_info.bind(py),
        latin1(py, strip_root(&path, &rules.root_path))?,
    )?;
    environ.set_item(consts.query_string.bind(py), latin1(py, query)?)?;
    let protocol = if head.minor_version == 0 {
        &consts.http_10
    } else {
        &consts.http_11
    };
    environ.set_item(consts.server_protocol.bind(py), protocol.bind(py))?;
    match peer {
        Peer::Ip(addr) => {
            let mut text = [0u8; 48];
            let ip = format_ip(addr.ip(), &mut text);
            environ.set_item(consts.remote_addr.bind(py), latin1(py, ip)?)?;
            let mut digits = [0; 20];
            let port = itoa_u64(u64::from(addr.port()), &mut digits);
            environ.set_item(consts.remote_port.bind(py), latin1(py, port)?)?;
        }
        Peer::Unix => {
            environ.set_item(consts.remote_addr.bind(py), consts.empty.bind(py))?;
            environ.set_item(consts.remote_port.bind(py), consts.empty.bind(py))?;
        }
    }
    // The known headers seen so far, by `header_key` index: their repeats are found without comparing names.
    let mut seen = 0u64;
    for (i, header) in head.headers.iter().enumerate() {
        let name = &buf[header.name.clone()];
        let (key, repeated) = match consts.header_key(name) {
            Some((index, key)) => {
                let bit = 1u64 << index;
                let repeated = seen & bit != 0;
                seen |= bit;
                (key.bind(py).clone(), repeated)
            }
            // Names with `_` (never a known one) are dropped: they would collide with the `-` form and let a
            // client spoof a header such as X-Auth-User that a proxy in front sets.
            None if name.contains(&b'_') => continue,
            None => (
                PyString::new(py, &environ_key(name)),
                repeated_earlier(&head.headers[..i], name, buf),
            ),
        };
        let value = trim_ows(&buf[header.value.clone()]);
        if content_length.is_some() && name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        if repeated {
            if let Some(existing) = environ.get_item(&key)? {
                let separator = if name.eq_ignore_ascii_case(b"cookie") {
                    "; "
                } else {
                    ", "
                };
                let joined = format!(
                    "{}{separator}{}",
                    existing.cast::<PyString>()?.to_str()?,
                    latin1(py, value)?.to_str()?
                );
                environ.set_item(&key, joined)?;
                continue;
            }
        }
        environ.set_item(&key, latin1(py, value)?)?;
    }
    if let Some(len) = content_length {
        environ.set_item(consts.content_length.bind(py), len.to_string())?;
    }
    let peer_trusted = match peer {
        Peer::Ip(addr) => rules.trusted.contains(addr.ip()),
        // A unix socket is reachable only from this machine: the proxy in front of it is trusted.
        Peer::Unix => true,
    };
    if peer_trusted && head.headers.iter().any(|h| is_forwarding(&buf[h.name.clone()])) {
        let headers = head
            .headers
            .iter()
            .map(|h| (&buf[h.name.clone()], &buf[h.value.clone()]));
        let info = client_info(headers, &rules.trusted);
        if let Some(addr) = info.addr {
            environ.set_item(consts.remote_addr.bind(py), addr)?;
        }
        if let Some(scheme) = info.scheme {
            environ.set_item(consts.url_scheme.bind(py), scheme)?;
        }
        if let Some(host) = info.host {
            environ.set_item(consts.http_host.bind(py), host)?;
        }
    }
    Ok(environ)
}

/// The textual form of `ip` in `buf`, without the formatting machinery for the common IPv4 case.
fn format_ip(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> &[u8] {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let mut scratch = [0; 20];
                let digits = itoa_u64(u64::from(octet), &mut scratch);
                buf[len..len + digits.len()].copy_from_slice(digits);
                len += digits.len();
            }
            &buf[..len]
        }
        std::net::IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // An IPv6 address is at most 45 characters, so this cannot run out of room.
            let _ = write!(cursor, "{ip}");
            let len = usize::try_from(cursor.position()).unwrap_or(0);
            &buf[..len]
        }
    }
}

/// `Forwarded` or `X-Forwarded-*`: worth reading only when present.
fn is_forwarding(name: &[u8]) -> bool {
    name.len() >= 9
        && (name[..9].eq_ignore_ascii_case(b"forwarded")
            || name[..name.len().min(12)].eq_ignore_ascii_case(b"x-forwarded-"))
}

/// `PATH_INFO` without the mount point, when the request is under it.
fn strip_root<'a>(path: &'a [u8], root: &[u8]) -> &'a [u8] {
    match path.strip_prefix(root) {
        Some(rest) if !root.is_empty() && (rest.is_empty() || rest.starts_with(b"/")) => rest,
        _ => path,
    }
}

fn repeated_earlier(earlier: &[HeaderRange], name: &[u8], buf: &[u8]) -> bool {
    earlier
        .iter()
        .any(|h| h.name.len() == name.len() && buf[h.name.clone()].eq_ignore_ascii_case(name))
}

/// `HTTP_` + upper-cased name with `-` as `_`; `Content-Type`/`Content-Length` have no prefix (PEP 3333).
fn environ_key(name: &[u8]) -> String {
    let mut key = String::with_capacity(name.len() + 5);
    if !name.eq_ignore_ascii_case(b"content-type") && !name.eq_ignore_ascii_case(b"content-length") {
        key.push_str("HTTP_");
    }
    // Header names are tokens (ASCII), checked by the parser.
    key.extend(name.iter().map(|&b| {
        if b == b'-' {
            '_'
        } else {
            char::from(b.to_ascii_uppercase())
        }
    }));
    key
}

/// Splits a request target into path and query. Absolute-form targets lose their scheme and authority.
#[must_use]
pub fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    let mut rest = target;
    if !rest.starts_with(b"/") {
        if let Some(scheme_end) = rest.windows(3).position(|w| w == b"://") {
            let after = &rest[scheme_end + 3..];
            let authority_end = after
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(after.len());
            rest = &after[authority_end..];
        }
    }
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(q) => (&rest[..q], &rest[q + 1..]),
        None => (rest, &b""[..]),
    };
    (if path.is_empty() { b"/" } else { path }, query)
}

/// Decodes `%XX` escapes; malformed escapes stay as they are.
#[must_use]
pub fn percent_decode(input: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !input.contains(&b'%') {
        return std::borrow::Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex_value(input[i + 1]), hex_value(input[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// Bytes as a `str`, one code point per byte (latin-1), as PEP 3333 requires for values from the wire.
///
/// # Errors
/// Python allocation failures.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len =
        ffi::Py_ssize_t::try_from(bytes.len()).map_err(|_| pyo3::exceptions::PyOverflowError::new_err("too long"))?;
    if bytes.is_ascii() {
        // Most of a request head is ASCII: copied straight into a new ASCII string, with no decoding pass.
        // SAFETY: PyUnicode_New(len, 127) returns a compact ASCII string with room for `len` bytes (or null on
        // failure, reported below); it is filled with ASCII before any Python code can see it.
        unsafe {
            let obj = ffi::PyUnicode_New(len, 127);
            if !obj.is_null() {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), ffi::PyUnicode_1BYTE_DATA(obj), bytes.len());
            }
            return Ok(Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked());
        }
    }
    // SAFETY: the pointer and length describe `bytes`, which outlives the call; latin-1 decoding cannot fail
    // except on allocation, which the returned null reports.
    unsafe {
        let obj = ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null());
        Ok(Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_environ_fits_its_template_table() {
        Python::initialize();
        Python::attach(|py| {
            let consts = PyConsts::new(py);
            let base = PyDict::new(py);
            for i in 0..12 {
                base.set_item(format!("CONSTANT_{i}"), "").unwrap();
            }
            let template = EnvironTemplate::new(&consts, &base).unwrap();
            assert!(template.for_request(py, 0).is(template.compact.bind(py)));
            assert!(template.for_request(py, 13).is(template.roomy.bind(py)));
            let size_of = |d: &Bound<'_, PyDict>| -> usize { d.call_method0("__sizeof__").unwrap().extract().unwrap() };
            // Up to a browser's headers and more: the request's headers and a CONTENT_LENGTH never grow its copy.
            for headers in 0..=20 {
                let environ = template.for_request(py, headers).copy().unwrap();
                let allocated = size_of(&environ);
                for i in 0..=headers {
                    environ.set_item(format!("HTTP_HEADER_{i}"), "value").unwrap();
                }
                assert_eq!(size_of(&environ), allocated, "{headers} headers grew the environ");
            }
        });
    }

    #[test]
    fn split_target_handles_origin_and_absolute_forms() {
        assert_eq!(split_target(b"/a/b?x=1&y"), (&b"/a/b"[..], &b"x=1&y"[..]));
        assert_eq!(split_target(b"/plain"), (&b"/plain"[..], &b""[..]));
        assert_eq!(split_target(b"http://example.com/p?q"), (&b"/p"[..], &b"q"[..]));
        assert_eq!(split_target(b"http://example.com"), (&b"/"[..], &b""[..]));
        assert_eq!(split_target(b"http://example.com?q=1"), (&b"/"[..], &b"q=1"[..]));
    }

    #[test]
    fn percent_decode_decodes_valid_escapes_only() {
        assert_eq!(&*percent_decode(b"/caf%C3%A9"), b"/caf\xc3\xa9");
        assert_eq!(&*percent_decode(b"/a%2Fb"), b"/a/b");
        assert_eq!(&*percent_decode(b"/100%"), b"/100%");
        assert_eq!(&*percent_decode(b"/%zz%4"), b"/%zz%4");
    }

    #[test]
    fn environ_key_uppercases_and_prefixes() {
        assert_eq!(environ_key(b"X-Custom-Thing"), "HTTP_X_CUSTOM_THING");
        assert_eq!(environ_key(b"content-type"), "CONTENT_TYPE");
    }
}
