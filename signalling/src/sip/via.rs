//! One Via value, `sent-protocol LWS sent-by *( SEMI via-params )` (RFC 3261 §20.42, RFC 3581).

use std::net::IpAddr;

use super::error::ValueError;
use super::grammar::{Cursor, parse_decimal};
use super::host::{Host, parse_host, parse_port};
use super::params::Params;

/// The RFC 3261 branch prefix (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// A parsed Via value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    protocol: &'a str,
    version: &'a str,
    transport: Transport<'a>,
    host: Host<'a>,
    port: Option<u16>,
    params: Params<'a>,
}

/// The transport of a Via.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport<'a> {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SCTP.
    Sctp,
    /// WebSocket (RFC 7118).
    Ws,
    /// Secure WebSocket (RFC 7118).
    Wss,
    /// Any other token, as received.
    Other(&'a str),
}

impl<'a> Transport<'a> {
    fn from_token(t: &'a str) -> Self {
        const KNOWN: [(&str, Transport<'static>); 6] = [
            ("UDP", Transport::Udp),
            ("TCP", Transport::Tcp),
            ("TLS", Transport::Tls),
            ("SCTP", Transport::Sctp),
            ("WS", Transport::Ws),
            ("WSS", Transport::Wss),
        ];
        KNOWN
            .iter()
            .find(|(name, _)| t.eq_ignore_ascii_case(name))
            .map_or(Self::Other(t), |(_, known)| *known)
    }

    /// The token with its usual capitalisation.
    pub fn as_str(&self) -> &'a str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Sctp => "SCTP",
            Self::Ws => "WS",
            Self::Wss => "WSS",
            Self::Other(t) => t,
        }
    }

    /// Whether the transport is reliable (no retransmission timers, RFC 3261 §17).
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Self::Udp)
    }
}

impl<'a> Via<'a> {
    /// Parses one Via value (one element of the comma-separated list).
    ///
    /// Any `protocol/version` pair is accepted so that a request from another SIP version can
    /// still be answered; [`Via::is_sip_2_0`] tells whether it is the one this stack speaks.
    pub fn parse(s: &'a str) -> Result<Self, ValueError> {
        let mut c = Cursor::new(s);
        let (protocol, version, transport, host, port) = sent_by(&mut c)?;
        let params = Params::parse(&mut c)?;
        let via = Self {
            protocol,
            version,
            transport,
            host,
            port,
            params,
        };
        via.check_params()?;
        Ok(via)
    }

    /// Whether the value at least tells where a response goes (sent-protocol and sent-by),
    /// however broken its parameters: enough to answer a malformed request.
    pub(crate) fn is_routable(s: &str) -> bool {
        sent_by(&mut Cursor::new(s)).is_ok()
    }

    /// The parameters RFC 3261 and RFC 3581 give a syntax to must have it (one pass).
    fn check_params(&self) -> Result<(), ValueError> {
        for (name, value) in self.params.iter() {
            let required = || value.ok_or(ValueError::Empty);
            if name.eq_ignore_ascii_case("branch") {
                required()?;
            } else if name.eq_ignore_ascii_case("ttl") {
                parse_decimal(required()?, 255)?;
            } else if name.eq_ignore_ascii_case("rport") {
                value.map(parse_port).transpose()?;
            } else if name.eq_ignore_ascii_case("received") {
                parse_ip(required()?)?;
            } else if name.eq_ignore_ascii_case("maddr") {
                parse_host(required()?)?;
            }
        }
        Ok(())
    }

    /// Whether the sent-protocol is `SIP/2.0`.
    pub fn is_sip_2_0(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("SIP") && self.version == "2.0"
    }

    /// The protocol name and version as received (`SIP`, `2.0`).
    pub fn protocol(&self) -> (&'a str, &'a str) {
        (self.protocol, self.version)
    }

    /// The transport.
    pub fn transport(&self) -> Transport<'a> {
        self.transport
    }

    /// The sent-by host.
    pub fn host(&self) -> Host<'a> {
        self.host
    }

    /// The sent-by port, if given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// All parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.params.get("branch").flatten()
    }

    /// Whether the branch starts with the RFC 3261 magic cookie (and so identifies the
    /// transaction on its own).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<IpAddr> {
        self.params
            .get("received")
            .flatten()
            .and_then(|r| parse_ip(r).ok())
    }

    /// The `rport` parameter: `Some(None)` when asked for (RFC 3581), `Some(Some(port))` when
    /// filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|p| p.and_then(|p| parse_port(p).ok()))
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<Host<'a>> {
        self.params
            .get("maddr")
            .flatten()
            .and_then(|m| parse_host(m).ok())
    }

    /// The `ttl` parameter.
    pub fn ttl(&self) -> Option<u8> {
        self.params
            .get("ttl")
            .flatten()
            .and_then(|t| parse_decimal(t, 255).ok())
            .and_then(|t| u8::try_from(t).ok())
    }
}

/// The sent-protocol and sent-by: protocol, version, transport, host, port.
type SentBy<'a> = (&'a str, &'a str, Transport<'a>, Host<'a>, Option<u16>);

/// Reads `sent-protocol LWS sent-by`, leaving the cursor before the parameters.
fn sent_by<'a>(c: &mut Cursor<'a>) -> Result<SentBy<'a>, ValueError> {
    c.skip_lws();
    let protocol = c.token("a protocol name")?;
    if !c.separator(b'/') {
        return Err(c.unexpected("'/' after the protocol name"));
    }
    let version = c.token("a protocol version")?;
    if !c.separator(b'/') {
        return Err(c.unexpected("'/' after the protocol version"));
    }
    let transport = Transport::from_token(c.token("a transport")?);
    if !c.skip_lws() {
        return Err(c.unexpected("white space before sent-by"));
    }
    let host = if c.peek() == Some(b'[') {
        let mark = c.rest();
        c.take_until(|b| b == b']');
        c.expect(b']', "']' closing an IPv6 reference")?;
        c.since(mark)
    } else {
        c.take_while(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let host = parse_host(host)?;
    let port = if c.separator(b':') {
        Some(parse_port(c.take_while(|b| b.is_ascii_digit()))?)
    } else {
        None
    };
    Ok((protocol, version, transport, host, port))
}

/// An IP address, IPv6 with or without brackets (RFC 5118 §4.5 sees both in `received`).
fn parse_ip(s: &str) -> Result<IpAddr, ValueError> {
    let bare = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse().map_err(|_| ValueError::BadHost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_via_with_white_space_everywhere_parses() {
        let via = Via::parse("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert!(via.is_sip_2_0());
        assert_eq!(via.transport(), Transport::Udp);
        assert_eq!(via.host(), Host::Ipv4("192.0.2.2".parse().unwrap()));
        assert_eq!(via.branch(), Some("390skdjuw"));
        assert!(!via.has_rfc3261_branch());
    }

    #[test]
    fn ipv6_sent_by_rport_and_received() {
        let via = Via::parse(
            "SIP/2.0/TCP [2001:db8::9:1]:5060;rport;branch=z9hG4bKa;received=2001:db8::9:255",
        )
        .unwrap();
        assert_eq!(via.host(), Host::Ipv6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(via.port(), Some(5060));
        assert_eq!(via.rport(), Some(None));
        assert_eq!(via.received(), Some("2001:db8::9:255".parse().unwrap()));
        assert!(via.transport().is_reliable());
    }

    #[test]
    fn port_after_spaced_colon_and_unknown_transport() {
        let via =
            Via::parse("SIP/2.0/UNKNOWN t4.example.com : 5070 ;branch=z9hG4bKasd0f3en").unwrap();
        assert_eq!(via.transport(), Transport::Other("UNKNOWN"));
        assert_eq!(via.port(), Some(5070));
    }

    #[test]
    fn malformed_vias_are_rejected() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP2001:db8::1",
            "SIP/2.0 UDP host",
            "SIP/2.0/UDP host;ttl=256",
            "SIP/2.0/UDP host;received=host.example.com",
            "SIP/2.0/UDP host;branch",
            "SIP/2.0/UDP 2001:db8::1",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn other_versions_parse_but_are_not_sip_2_0() {
        assert!(
            !Via::parse("SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw")
                .unwrap()
                .is_sip_2_0()
        );
    }
}
