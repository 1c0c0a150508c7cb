//! `host` and `hostport` (RFC 3261 §25.1): domain names, IPv4 addresses and IPv6 references.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::ValueError;
use super::grammar::{find_byte, parse_decimal};

/// The host part of a URI or a Via.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Host<'a> {
    /// A domain name as received (compare case-insensitively).
    Domain(&'a str),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address (written as a `[…]` reference).
    Ipv6(Ipv6Addr),
}

impl Host<'_> {
    /// The address, if the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Self::Domain(_) => None,
            Self::Ipv4(a) => Some(a.into()),
            Self::Ipv6(a) => Some(a.into()),
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => f.write_str(d),
            Self::Ipv4(a) => write!(f, "{a}"),
            Self::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Parses a whole `host`.
pub(crate) fn parse_host(s: &str) -> Result<Host<'_>, ValueError> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(ValueError::BadHost)?;
        return inner
            .parse()
            .map(Host::Ipv6)
            .map_err(|_| ValueError::BadHost);
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return s.parse().map(Host::Ipv4).map_err(|_| ValueError::BadHost);
    }
    is_hostname(s)
        .then_some(Host::Domain(s))
        .ok_or(ValueError::BadHost)
}

/// Parses a whole `hostport`.
pub(crate) fn parse_hostport(s: &str) -> Result<(Host<'_>, Option<u16>), ValueError> {
    let split = match s.strip_prefix('[') {
        Some(_) => find_byte(s, b']')
            .map(|i| i + 1)
            .ok_or(ValueError::BadHost)?,
        None => find_byte(s, b':').unwrap_or(s.len()),
    };
    let (host, port) = s.split_at(split);
    let port = match port.strip_prefix(':') {
        Some(port) => Some(parse_port(port)?),
        None if port.is_empty() => None,
        None => return Err(ValueError::BadHost),
    };
    Ok((parse_host(host)?, port))
}

/// Parses a `port`.
pub(crate) fn parse_port(s: &str) -> Result<u16, ValueError> {
    parse_decimal(s, u64::from(u16::MAX))
        .ok()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or(ValueError::BadPort)
}

/// `hostname = *( domainlabel "." ) toplabel [ "." ]`; labels are alphanumeric runs joined by
/// hyphens. A final `.` is allowed (fully qualified).
fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    let mut label_start = true;
    let mut previous = b'.';
    for b in s.bytes() {
        match b {
            b'.' if label_start || previous == b'-' => return false,
            b'.' => label_start = true,
            b'-' if label_start => return false,
            b if b.is_ascii_alphanumeric() || b == b'-' => label_start = false,
            _ => return false,
        }
        previous = b;
    }
    !label_start && previous != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_references_keep_the_port_outside_the_brackets() {
        let (host, port) = parse_hostport("[2001:db8::10]:5070").unwrap();
        assert_eq!(host, Host::Ipv6("2001:db8::10".parse().unwrap()));
        assert_eq!(port, Some(5070));
        // RFC 5118 §4.4: inside the brackets it is part of the address.
        let (host, port) = parse_hostport("[2001:db8::10:5070]").unwrap();
        assert_eq!(host, Host::Ipv6("2001:db8::10:5070".parse().unwrap()));
        assert_eq!(port, None);
    }

    #[test]
    fn unbracketed_ipv6_and_bad_names_are_rejected() {
        assert!(parse_hostport("2001:db8::10").is_err());
        assert!(parse_host("exa mple.com").is_err());
        assert!(parse_host("-bad.example.com").is_err());
        assert!(parse_host("1.2.3.4.5").is_err());
        assert!(parse_hostport("example.com:70000").is_err());
    }

    #[test]
    fn names_and_ipv4_addresses_parse() {
        assert_eq!(
            parse_host("chair-dnrc.example.com"),
            Ok(Host::Domain("chair-dnrc.example.com"))
        );
        assert_eq!(
            parse_host("192.0.2.1"),
            Ok(Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(
            parse_hostport("example.com."),
            Ok((Host::Domain("example.com."), None))
        );
    }
}
