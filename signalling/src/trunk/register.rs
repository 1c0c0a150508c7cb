//! The REGISTER a trunk sends its carrier (RFC 3261 §10.2) and the reading of the carrier's
//! answer, as plain functions of plain data: no socket, no clock.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use centrex_coord::snapshot::TrunkSnapshot;

use crate::auth::client::ServerChallenge;
use crate::sip::{BuildError, HeaderName, Method, RequestBuilder, Response, StatusCode};

/// Shortest refresh interval, whatever the carrier grants.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// One registration "session" (§10.2.4): refreshes reuse the Call-ID and From tag, and the
/// CSeq grows with each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
}

/// Everything one REGISTER request says.
#[derive(Debug, Clone, Copy)]
pub struct RegisterRequest<'a> {
    pub trunk: &'a TrunkSnapshot,
    /// The user part of the address of record (the trunk's digest username).
    pub username: &'a str,
    /// Our advertised UDP address: written into Via and Contact.
    pub contact: SocketAddr,
    pub session: &'a Session,
    pub branch: &'a str,
    pub expires: u32,
    /// `(header, value)` answering the carrier's last challenge.
    pub authorization: Option<(HeaderName, &'a str)>,
}

/// `sip:<host>` (with `:<port>` unless 5060): the Request-URI, also the digest `uri`.
pub fn registrar_uri(trunk: &TrunkSnapshot) -> String {
    if trunk.port == 5060 {
        format!("sip:{}", trunk.host)
    } else {
        format!("sip:{}:{}", trunk.host, trunk.port)
    }
}

/// `sip:<username>@<our address>`: the Contact we register.
pub fn contact_uri(username: &str, contact: SocketAddr) -> String {
    format!("sip:{username}@{contact}")
}

impl RegisterRequest<'_> {
    /// The request on the wire.
    pub fn build(&self) -> Result<Bytes, BuildError> {
        let aor = format!("<sip:{}@{}>", self.username, self.trunk.host);
        let mut builder = RequestBuilder::new(Method::Register, registrar_uri(self.trunk))
            .header(
                HeaderName::Via,
                format!("SIP/2.0/UDP {};branch={};rport", self.contact, self.branch),
            )
            .header(HeaderName::MaxForwards, "70")
            .header(
                HeaderName::From,
                format!("{aor};tag={}", self.session.from_tag),
            )
            .header(HeaderName::To, aor)
            .header(HeaderName::CallId, self.session.call_id.clone())
            .header(HeaderName::CSeq, format!("{} REGISTER", self.session.cseq))
            .header(
                HeaderName::Contact,
                format!("<{}>", contact_uri(self.username, self.contact)),
            )
            .header(HeaderName::Expires, self.expires.to_string());
        if let Some((name, value)) = self.authorization {
            builder = builder.header(name, value);
        }
        builder.header(HeaderName::UserAgent, "Centrex").build()
    }
}

/// What a final answer to our REGISTER means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: bound for this many seconds (0: un-registered).
    Registered { granted: u32 },
    /// 401/407: answer `challenge` in `header` and send again.
    Challenged {
        challenge: ServerChallenge,
        header: HeaderName,
    },
    /// 401/407 whose challenges we cannot answer.
    Unanswerable(String),
    /// 423: ask again for at least this many seconds.
    TooBrief { min_expires: u32 },
    /// Any other final answer: its status line.
    Refused(String),
}

/// `<code> <reason>` of a response, as published in `last_error`.
pub fn status_line(response: &Response) -> String {
    format!("{} {}", response.status(), response.reason())
}

/// Reads the carrier's final answer to a REGISTER that asked for `requested` seconds for the
/// Contact `contact` (our [`contact_uri`]).
pub fn read_answer(response: &Response, contact: &str, requested: u32) -> Answer {
    let status = response.status();
    let headers = response.headers();
    if status.is_success() {
        return Answer::Registered {
            granted: granted_expiry(response, contact).unwrap_or(requested),
        };
    }
    let challenges = match status {
        StatusCode::UNAUTHORIZED => Some((HeaderName::WwwAuthenticate, HeaderName::Authorization)),
        StatusCode::PROXY_AUTHENTICATION_REQUIRED => Some((
            HeaderName::ProxyAuthenticate,
            HeaderName::ProxyAuthorization,
        )),
        _ => None,
    };
    if let Some((challenge_header, answer_header)) = challenges {
        return match ServerChallenge::best(headers.get_all(challenge_header)) {
            Ok(challenge) => Answer::Challenged {
                challenge,
                header: answer_header,
            },
            Err(error) => Answer::Unanswerable(format!(
                "cannot answer the challenge: {error} ({})",
                status_line(response)
            )),
        };
    }
    if status == StatusCode::INTERVAL_TOO_BRIEF
        && let Some(Ok(min_expires)) = headers
            .get(HeaderName::MinExpires)
            .map(|v| v.trim().parse::<u32>())
    {
        return Answer::TooBrief { min_expires };
    }
    Answer::Refused(status_line(response))
}

/// The binding time a 2xx grants our Contact: its `expires` parameter, else the Expires header.
fn granted_expiry(response: &Response, contact: &str) -> Option<u32> {
    let headers = response.headers();
    let ours = headers.contacts().flatten().find(|c| {
        c.address()
            .is_some_and(|a| a.uri().as_str().eq_ignore_ascii_case(contact))
    });
    if let Some(Ok(expires)) = ours.as_ref().and_then(|c| c.expires()) {
        return Some(expires);
    }
    headers.expires().and_then(Result::ok)
}

/// When to refresh a binding granted for `granted` seconds: at half of it, at least a second
/// from now.
pub fn refresh_after(granted: u32) -> Duration {
    (Duration::from_secs(u64::from(granted)) / 2).max(MIN_REFRESH)
}

/// The wait before the attempt after `failures` consecutive failures (≥ 1): `min` doubled per
/// failure, capped at `max`.
pub fn retry_after(failures: u32, min: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    min.saturating_mul(1 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::digest::Algorithm;
    use crate::sip::{Limits, Message};
    use centrex_coord::snapshot::{self as snap, DigestCredentials};

    fn trunk(port: u16) -> TrunkSnapshot {
        TrunkSnapshot {
            schema: snap::SCHEMA_VERSION,
            source: snap::Source {
                namespace: "ns".into(),
                name: "carrier".into(),
                uid: "u".into(),
                generation: 3,
            },
            host: "carrier.example".into(),
            port,
            transport: snap::Transport::Udp,
            registration: Some(snap::TrunkRegistration {
                credentials: DigestCredentials::derive("acme", "carrier.example", b"pw"),
                expiry_seconds: 600,
            }),
            inbound_sources: vec![],
            number_prefixes: vec![],
            max_channels: 10,
            calls_per_second: 1,
            country_code: "1".into(),
            national_prefix: "1".into(),
            international_prefix: "011".into(),
        }
    }

    fn session() -> Session {
        Session {
            call_id: "c1@127.0.0.1".into(),
            from_tag: "f1".into(),
            cseq: 7,
        }
    }

    fn response(raw: &str) -> Response {
        let raw = format!(
            "SIP/2.0 {raw}\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\
             From: <sip:acme@carrier.example>;tag=f1\r\nTo: <sip:acme@carrier.example>;tag=t\r\n\
             Call-ID: c1@127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        );
        let raw = raw.replacen("\r\nVia", "\r\nCSeq: 7 REGISTER\r\nVia", 1);
        Message::parse(Bytes::from(raw), &Limits::default())
            .unwrap()
            .as_response()
            .unwrap()
            .clone()
    }

    #[test]
    fn the_register_addresses_the_carrier_and_binds_our_contact() {
        let trunk = trunk(5060);
        let session = session();
        let bytes = RegisterRequest {
            trunk: &trunk,
            username: "acme",
            contact: "127.0.0.1:5070".parse().unwrap(),
            session: &session,
            branch: "z9hG4bKabc",
            expires: 600,
            authorization: Some((HeaderName::Authorization, "Digest x=\"y\"")),
        }
        .build()
        .unwrap();
        let Message::Request(request) = Message::parse(bytes, &Limits::default()).unwrap() else {
            panic!("not a request")
        };
        request.validate(&Limits::default()).unwrap();
        let h = request.headers();
        assert_eq!(request.uri_str(), "sip:carrier.example");
        assert_eq!(h.get(HeaderName::To), Some("<sip:acme@carrier.example>"));
        assert_eq!(h.from().unwrap().tag(), Some("f1"));
        assert_eq!(
            h.get(HeaderName::Contact),
            Some("<sip:acme@127.0.0.1:5070>")
        );
        assert_eq!(h.expires(), Some(Ok(600)));
        assert_eq!(h.cseq().unwrap().seq, 7);
        assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bKabc"));
        assert_eq!(h.get(HeaderName::Authorization), Some("Digest x=\"y\""));
    }

    #[test]
    fn a_carrier_on_another_port_is_addressed_with_it() {
        assert_eq!(registrar_uri(&trunk(5080)), "sip:carrier.example:5080");
    }

    #[test]
    fn the_granted_time_comes_from_our_contact_then_from_expires() {
        let contact = "sip:acme@127.0.0.1:5070";
        let ours = response(
            "200 OK\r\nContact: <sip:other@192.0.2.1>;expires=30, <sip:acme@127.0.0.1:5070>;expires=120\r\nExpires: 900",
        );
        assert_eq!(
            read_answer(&ours, contact, 600),
            Answer::Registered { granted: 120 }
        );
        let header_only = response("200 OK\r\nExpires: 900");
        assert_eq!(
            read_answer(&header_only, contact, 600),
            Answer::Registered { granted: 900 }
        );
        let bare = response("200 OK");
        assert_eq!(
            read_answer(&bare, contact, 600),
            Answer::Registered { granted: 600 }
        );
    }

    #[test]
    fn a_401_is_a_challenge_answered_in_authorization_and_a_407_in_proxy_authorization() {
        let www = response(
            "401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"carrier.example\", nonce=\"n\", algorithm=SHA-256, qop=\"auth\"",
        );
        let Answer::Challenged { challenge, header } = read_answer(&www, "sip:x", 60) else {
            panic!("not a challenge")
        };
        assert_eq!(
            (challenge.algorithm, header),
            (Algorithm::Sha256, HeaderName::Authorization)
        );
        let proxy = response(
            "407 Proxy Authentication Required\r\nProxy-Authenticate: Digest realm=\"carrier.example\", nonce=\"n\"",
        );
        assert!(matches!(
            read_answer(&proxy, "sip:x", 60),
            Answer::Challenged {
                header: HeaderName::ProxyAuthorization,
                ..
            }
        ));
    }

    #[test]
    fn a_challenge_we_cannot_answer_says_why() {
        let basic = response("401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"");
        let Answer::Unanswerable(error) = read_answer(&basic, "sip:x", 60) else {
            panic!("answerable?")
        };
        assert!(error.starts_with("cannot answer the challenge"), "{error}");
        assert!(error.contains("401"), "{error}");
    }

    #[test]
    fn a_refusal_is_reported_by_its_status_line() {
        let forbidden = response("403 Forbidden");
        assert_eq!(
            read_answer(&forbidden, "sip:x", 60),
            Answer::Refused("403 Forbidden".into())
        );
        let brief = response("423 Interval Too Brief\r\nMin-Expires: 1800");
        assert_eq!(
            read_answer(&brief, "sip:x", 60),
            Answer::TooBrief { min_expires: 1800 }
        );
    }

    #[test]
    fn refreshes_come_at_half_the_granted_time_and_never_sooner_than_a_second() {
        assert_eq!(refresh_after(600), Duration::from_secs(300));
        assert_eq!(refresh_after(1), Duration::from_secs(1));
    }

    #[test]
    fn retries_back_off_from_the_minimum_to_the_maximum() {
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=7)
            .map(|n| retry_after(n, min, max).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(retry_after(u32::MAX, min, max), max);
    }
}
