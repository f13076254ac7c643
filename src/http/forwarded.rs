//! Which peers may speak for the client (`--forwarded-allow-ips`), and what a trusted proxy says about the
//! client: `Forwarded` (RFC 7239) or `X-Forwarded-For` / `-Proto` / `-Host`.

use std::net::IpAddr;

/// A set of trusted proxy addresses: exact addresses, CIDR blocks, or everyone (`*`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    everyone: bool,
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses entries such as `127.0.0.1`, `::1`, `10.0.0.0/8`, `*`.
    ///
    /// # Errors
    /// An entry that is neither an address nor a CIDR block, with the entry in the message.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut trusted = TrustedProxies::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                trusted.everyone = true;
                continue;
            }
            let (addr, bits) = match entry.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (entry, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| format!("invalid address {entry:?}"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|&b| b <= max)
                    .ok_or(format!("invalid CIDR {entry:?}"))?,
                None => max,
            };
            trusted.nets.push((addr, bits));
        }
        Ok(trusted)
    }

    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.everyone || self.nets.iter().any(|&(net, bits)| in_net(ip, net, bits))
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// What a trusted proxy reported about the original request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub addr: Option<String>,
    /// `http` or `https`.
    pub scheme: Option<&'static str>,
    pub host: Option<String>,
}

/// Reads the forwarding headers among `headers` (name, value). `Forwarded` wins over the `X-Forwarded-*` family.
/// The client address is the right-most hop that is not itself a trusted proxy.
pub fn client_info<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>, trusted: &TrustedProxies) -> ClientInfo {
    let mut forwarded: Vec<&[u8]> = Vec::new();
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut proto = None;
    let mut host = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"forwarded") {
            forwarded.extend(value.split(|&b| b == b','));
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff.extend(value.split(|&b| b == b','));
        } else if name.eq_ignore_ascii_case(b"x-forwarded-proto") {
            proto = value.split(|&b| b == b',').next_back();
        } else if name.eq_ignore_ascii_case(b"x-forwarded-host") {
            host = value.split(|&b| b == b',').next_back();
        }
    }
    if !forwarded.is_empty() {
        return from_forwarded(&forwarded, trusted);
    }
    ClientInfo {
        addr: pick_client(xff.iter().map(|hop| trim(hop)), trusted),
        scheme: proto.and_then(|p| scheme(trim(p))),
        host: host.map(trim).filter(|h| valid_host(h)).map(latin1),
    }
}

fn from_forwarded(elements: &[&[u8]], trusted: &TrustedProxies) -> ClientInfo {
    let mut hops = Vec::new();
    let mut info = ClientInfo::default();
    for element in elements {
        for pair in element.split(|&b| b == b';') {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            let key = trim(&pair[..eq]);
            let value = unquote(trim(&pair[eq + 1..]));
            if key.eq_ignore_ascii_case(b"for") {
                hops.push(value);
            } else if key.eq_ignore_ascii_case(b"proto") {
                info.scheme = scheme(value).or(info.scheme);
            } else if key.eq_ignore_ascii_case(b"host") && valid_host(value) {
                info.host = Some(latin1(value));
            }
        }
    }
    info.addr = pick_client(hops.into_iter(), trusted);
    info
}

fn pick_client<'a>(hops: impl DoubleEndedIterator<Item = &'a [u8]>, trusted: &TrustedProxies) -> Option<String> {
    let mut last = None;
    for hop in hops.rev() {
        let addr = strip_port(hop);
        if addr.is_empty() {
            continue;
        }
        match std::str::from_utf8(addr).ok().and_then(|a| a.parse::<IpAddr>().ok()) {
            Some(ip) if trusted.contains(ip) => last = Some(ip.to_string()),
            Some(ip) => return Some(ip.to_string()),
            // Obfuscated identifiers (`_hidden`, `unknown`) stop the walk: nothing left of them is verifiable.
            None => return last,
        }
    }
    last
}

/// `1.2.3.4:80` → `1.2.3.4`, `[::1]:80` → `::1`; bare IPv6 stays whole.
fn strip_port(hop: &[u8]) -> &[u8] {
    if let Some(rest) = hop.strip_prefix(b"[") {
        return rest.iter().position(|&b| b == b']').map_or(rest, |end| &rest[..end]);
    }
    match (
        hop.iter().position(|&b| b == b':'),
        hop.iter().rposition(|&b| b == b':'),
    ) {
        (Some(first), Some(last)) if first == last => &hop[..first],
        _ => hop,
    }
}

fn scheme(value: &[u8]) -> Option<&'static str> {
    if value.eq_ignore_ascii_case(b"https") {
        Some("https")
    } else if value.eq_ignore_ascii_case(b"http") {
        Some("http")
    } else {
        None
    }
}

fn valid_host(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b))
}

fn unquote(value: &[u8]) -> &[u8] {
    value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value)
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap()
    }

    #[test]
    fn trusted_proxies_match_addresses_and_cidr() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8", "fd00::/8"]);
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(t.contains("10.200.3.4".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("127.0.0.2".parse().unwrap()));
        assert!(!t.contains("::1".parse().unwrap()));
        assert!(trusted(&["*"]).contains("8.8.8.8".parse().unwrap()));
        assert!(TrustedProxies::parse(&["nonsense"]).is_err());
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
    }

    #[test]
    fn x_forwarded_for_takes_rightmost_untrusted_hop() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b"X-Forwarded-For", b"203.0.113.9, 198.51.100.7, 10.1.1.1"),
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Host", b"example.com"),
        ];
        let info = client_info(headers.into_iter(), &t);
        assert_eq!(info.addr.as_deref(), Some("198.51.100.7"));
        assert_eq!(info.scheme, Some("https"));
        assert_eq!(info.host.as_deref(), Some("example.com"));
    }

    #[test]
    fn forwarded_header_wins_and_is_parsed() {
        let t = trusted(&["127.0.0.1"]);
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b"X-Forwarded-For", b"1.1.1.1"),
            (
                b"Forwarded",
                b"for=\"[2001:db8::1]:4711\";proto=https;host=shop.example",
            ),
        ];
        let info = client_info(headers.into_iter(), &t);
        assert_eq!(info.addr.as_deref(), Some("2001:db8::1"));
        assert_eq!(info.scheme, Some("https"));
        assert_eq!(info.host.as_deref(), Some("shop.example"));
    }

    #[test]
    fn junk_values_are_ignored() {
        let t = trusted(&["127.0.0.1"]);
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b"X-Forwarded-For", b"not-an-ip"),
            (b"X-Forwarded-Proto", b"gopher"),
            (b"X-Forwarded-Host", b"a b"),
        ];
        assert_eq!(client_info(headers.into_iter(), &t), ClientInfo::default());
    }
}
