//! The PROXY protocol header (the `HAProxy` specification, versions 1 and 2) that a load balancer sends before the request,
//! carrying the real client address. Read only from trusted peers when `--proxy-protocol` is on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::HttpError;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 line is at most 107 bytes including CRLF.
const V1_MAX: usize = 107;

/// A parsed PROXY header.
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Bytes the header spans.
    pub len: usize,
    /// The client address, or None for `UNKNOWN` / `LOCAL` (health checks from the proxy itself).
    pub client: Option<SocketAddr>,
}

/// Parses a PROXY header at the start of `buf`; `Ok(None)` means more bytes are needed.
///
/// # Errors
/// A missing or malformed header: the connection cannot be trusted to carry a request.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<ProxyHeader>, HttpError> {
    if buf.len() < V2_SIGNATURE.len() {
        let v1_prefix = b"PROXY ".starts_with(&buf[..buf.len().min(6)]);
        let v2_prefix = V2_SIGNATURE.starts_with(buf);
        return if v1_prefix || v2_prefix { Ok(None) } else { Err(bad()) };
    }
    if buf.starts_with(V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(b"PROXY ") {
        parse_v1(buf)
    } else {
        Err(bad())
    }
}

fn bad() -> HttpError {
    HttpError::BadRequest("missing or invalid PROXY protocol header")
}

fn parse_v1(buf: &[u8]) -> Result<Option<ProxyHeader>, HttpError> {
    let Some(end) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX { Err(bad()) } else { Ok(None) };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(bad());
    }
    let line = std::str::from_utf8(&buf[6..end - 1]).map_err(|_| bad())?;
    let parts: Vec<&str> = line.split(' ').collect();
    let client = match parts.as_slice() {
        ["UNKNOWN", ..] => None,
        [family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| bad())?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(bad());
            }
            Some(SocketAddr::new(ip, sport.parse().map_err(|_| bad())?))
        }
        _ => return Err(bad()),
    };
    Ok(Some(ProxyHeader { len: end + 1, client }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<ProxyHeader>, HttpError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(bad());
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    let client = match (version_command & 0x0f, buf[13]) {
        // PROXY over TCP/IPv4.
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([body[8], body[9]])))
        }
        // PROXY over TCP/IPv6.
        (1, 0x21) if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        // LOCAL (the proxy speaking for itself), or a family without a usable client address (unix, UDP).
        (0 | 1, _) => None,
        _ => return Err(bad()),
    };
    Ok(Some(ProxyHeader { len, client }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_gives_client_and_length() {
        let buf = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\nGET / HTTP/1.1\r\n";
        let header = parse_proxy_header(buf).unwrap().unwrap();
        assert_eq!(header.client, Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(&buf[header.len..header.len + 3], b"GET");
    }

    #[test]
    fn v1_partial_waits_and_garbage_fails() {
        assert_eq!(parse_proxy_header(b"PRO").unwrap(), None);
        assert_eq!(parse_proxy_header(b"PROXY TCP4 1.2.3.4").unwrap(), None);
        assert!(parse_proxy_header(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\n").is_err());
        assert!(parse_proxy_header(b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n").is_err());
        assert_eq!(parse_proxy_header(b"PROXY UNKNOWN\r\n").unwrap().unwrap().client, None);
    }

    #[test]
    fn v2_ipv4_and_local() {
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&[0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0, 80]);
        buf.extend_from_slice(b"GET");
        let header = parse_proxy_header(&buf).unwrap().unwrap();
        assert_eq!(header.client, Some("198.51.100.9:8080".parse().unwrap()));
        assert_eq!(header.len, 28);
        assert_eq!(parse_proxy_header(&buf[..20]).unwrap(), None);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse_proxy_header(&local).unwrap().unwrap(),
            ProxyHeader { len: 16, client: None }
        );
    }
}
