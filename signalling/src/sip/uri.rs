//! URIs (RFC 3261 §19.1 and §25.1 SIP and SIPS URIs, RFC 3966 tel URIs, and any other absolute
//! URI kept opaque), borrowed from the message. Escapes are kept as received; see
//! [`percent_decode`] for comparisons.

use std::borrow::Cow;
use std::fmt;

use super::error::ValueError;
use super::grammar::{ByteSet, find_byte, is_lws, split_byte};
use super::host::{Host, parse_hostport};

/// A parsed URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// `tel:`.
    Tel(TelUri<'a>),
    /// Any other scheme, kept opaque.
    Other(OtherUri<'a>),
}

/// The scheme of a URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `sip`.
    Sip,
    /// `sips`.
    Sips,
    /// `tel`.
    Tel,
    /// Anything else.
    Other,
}

/// A `sip:` or `sips:` URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipUri<'a> {
    raw: &'a str,
    secure: bool,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host: Host<'a>,
    port: Option<u16>,
    params: UriParams<'a>,
    headers: Option<&'a str>,
}

/// A `tel:` URI (RFC 3966).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelUri<'a> {
    raw: &'a str,
    number: &'a str,
    params: UriParams<'a>,
}

/// A URI of a scheme this layer does not interpret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtherUri<'a> {
    raw: &'a str,
    scheme: &'a str,
}

/// The `;name[=value]` parameters of a SIP or tel URI, validated, iterated on demand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UriParams<'a>(&'a str);

impl<'a> Uri<'a> {
    /// Parses a whole URI.
    pub fn parse(s: &'a str) -> Result<Self, ValueError> {
        let colon = find_byte(s, b':').ok_or(ValueError::Unexpected {
            expected: "a URI scheme followed by ':'",
            found: None,
        })?;
        let (scheme, rest) = (&s[..colon], &s[colon + 1..]);
        if !is_scheme(scheme) {
            return Err(ValueError::Unexpected {
                expected: "a URI scheme",
                found: scheme.chars().next(),
            });
        }
        if rest.bytes().any(is_lws) {
            return Err(ValueError::WhitespaceInUri);
        }
        match scheme_of(scheme) {
            Scheme::Sip => SipUri::parse(s, false, rest).map(Self::Sip),
            Scheme::Sips => SipUri::parse(s, true, rest).map(Self::Sip),
            Scheme::Tel => TelUri::parse(s, rest).map(Self::Tel),
            Scheme::Other => OtherUri::parse(s, scheme, rest).map(Self::Other),
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::Sip(u) if u.secure => Scheme::Sips,
            Self::Sip(_) => Scheme::Sip,
            Self::Tel(_) => Scheme::Tel,
            Self::Other(_) => Scheme::Other,
        }
    }

    /// The URI as received.
    pub fn as_str(&self) -> &'a str {
        match self {
            Self::Sip(u) => u.raw,
            Self::Tel(u) => u.raw,
            Self::Other(u) => u.raw,
        }
    }

    /// The SIP URI, if it is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Self::Sip(u) => Some(u),
            _ => None,
        }
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn scheme_of(scheme: &str) -> Scheme {
    if scheme.eq_ignore_ascii_case("sip") {
        Scheme::Sip
    } else if scheme.eq_ignore_ascii_case("sips") {
        Scheme::Sips
    } else if scheme.eq_ignore_ascii_case("tel") {
        Scheme::Tel
    } else {
        Scheme::Other
    }
}

/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

impl<'a> SipUri<'a> {
    fn parse(raw: &'a str, secure: bool, rest: &'a str) -> Result<Self, ValueError> {
        // '@' occurs nowhere in a SIP URI but as the end of userinfo, which may itself hold
        // ';' and '?' (RFC 4475 §3.1.1.2, §3.1.1.9): split there first.
        let (userinfo, hostpart) = match find_byte(rest, b'@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(info) => {
                let (user, password) = match find_byte(info, b':') {
                    Some(c) => (&info[..c], Some(&info[c + 1..])),
                    None => (info, None),
                };
                check_chars(user, is_user_char, "a user character")?;
                if user.is_empty() {
                    return Err(ValueError::Unexpected {
                        expected: "a user",
                        found: Some('@'),
                    });
                }
                if let Some(p) = password {
                    check_chars(p, is_password_char, "a password character")?;
                }
                (Some(user), password)
            }
            None => (None, None),
        };
        let (before_headers, headers) = match find_byte(hostpart, b'?') {
            Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
            None => (hostpart, None),
        };
        let (hostport, params) = match find_byte(before_headers, b';') {
            Some(s) => (&before_headers[..s], &before_headers[s..]),
            None => (before_headers, ""),
        };
        let (host, port) = parse_hostport(hostport)?;
        let params = UriParams::parse(params)?;
        if let Some(h) = headers {
            check_headers(h)?;
        }
        Ok(Self {
            raw,
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The URI as received.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Whether the scheme is `sips`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The user part, still escaped.
    pub fn user(&self) -> Option<&'a str> {
        self.user
    }

    /// The password, still escaped.
    pub fn password(&self) -> Option<&'a str> {
        self.password
    }

    /// The host.
    pub fn host(&self) -> Host<'a> {
        self.host
    }

    /// The port, if the URI gives one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The URI parameters.
    pub fn params(&self) -> UriParams<'a> {
        self.params
    }

    /// The `?headers` part, still escaped, if any.
    pub fn headers(&self) -> Option<&'a str> {
        self.headers
    }

    /// Whether the URI has the `lr` parameter (a loose router, RFC 3261 §16.12).
    pub fn is_loose_router(&self) -> bool {
        self.params.get("lr").is_some()
    }

    /// The `transport` parameter.
    pub fn transport(&self) -> Option<&'a str> {
        self.params.get("transport").flatten()
    }
}

impl<'a> TelUri<'a> {
    fn parse(raw: &'a str, rest: &'a str) -> Result<Self, ValueError> {
        let (number, params) = match find_byte(rest, b';') {
            Some(s) => (&rest[..s], &rest[s..]),
            None => (rest, ""),
        };
        // RFC 3966 global or local number with visual separators.
        let is_digit = |b: u8| {
            b.is_ascii_hexdigit() || matches!(b, b'*' | b'#' | b'+' | b'-' | b'.' | b'(' | b')')
        };
        if number.is_empty() {
            return Err(ValueError::Empty);
        }
        check_chars(number, is_digit, "a telephone number character")?;
        Ok(Self {
            raw,
            number,
            params: UriParams::parse(params)?,
        })
    }

    /// The number, with its visual separators.
    pub fn number(&self) -> &'a str {
        self.number
    }

    /// The parameters (`phone-context`, `ext`, …).
    pub fn params(&self) -> UriParams<'a> {
        self.params
    }
}

impl<'a> OtherUri<'a> {
    fn parse(raw: &'a str, scheme: &'a str, rest: &'a str) -> Result<Self, ValueError> {
        // RFC 3261 absoluteURI: reserved, unreserved and escaped characters only.
        let is_uric = |b: u8| URIC.contains(b);
        if rest.is_empty() {
            return Err(ValueError::Empty);
        }
        check_chars(rest, is_uric, "a URI character")?;
        Ok(Self { raw, scheme })
    }

    /// The scheme as received.
    pub fn scheme(&self) -> &'a str {
        self.scheme
    }
}

impl<'a> UriParams<'a> {
    /// Validates `;name[=value]…` (or nothing).
    fn parse(s: &'a str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Ok(Self(s));
        }
        let body = s.strip_prefix(';').ok_or(ValueError::Unexpected {
            expected: "';'",
            found: s.chars().next(),
        })?;
        for param in split_byte(body, b';') {
            let (name, value) = split_param(param);
            if name.is_empty() || value == Some("") {
                return Err(ValueError::Unexpected {
                    expected: "a URI parameter",
                    found: param.chars().next().or(Some(';')),
                });
            }
            check_chars(name, is_param_char, "a URI parameter character")?;
            if let Some(v) = value {
                check_chars(v, is_param_char, "a URI parameter character")?;
            }
        }
        Ok(Self(s))
    }

    /// The parameters in order: name, and value if it has one (both still escaped).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + use<'a> {
        split_byte(self.0, b';').skip(1).map(split_param)
    }

    /// The parameter `name` (case-insensitive): `Some(None)` when present without a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parameters as received, with their leading `;`.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

fn split_param(param: &str) -> (&str, Option<&str>) {
    match find_byte(param, b'=') {
        Some(eq) => (&param[..eq], Some(&param[eq + 1..])),
        None => (param, None),
    }
}

/// `user = 1*( unreserved / escaped / user-unreserved )` (escapes are checked apart).
const USER: ByteSet = ByteSet::alphanumeric_and(b"-_.!~*'()&=+$,;?/");
/// `password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )`.
const PASSWORD: ByteSet = ByteSet::alphanumeric_and(b"-_.!~*'()&=+$,");
/// `paramchar = param-unreserved / unreserved / escaped`.
const PARAM: ByteSet = ByteSet::alphanumeric_and(b"-_.!~*'()[]/:&+$");
/// `hname` and `hvalue` characters: hnv-unreserved / unreserved / escaped.
const HEADER: ByteSet = ByteSet::alphanumeric_and(b"-_.!~*'()[]/?:+$");
/// `uric` of an absoluteURI: reserved / unreserved / escaped.
const URIC: ByteSet = ByteSet::alphanumeric_and(b"-_.!~*'();/?:@&=+$,");

fn is_user_char(b: u8) -> bool {
    USER.contains(b)
}

fn is_password_char(b: u8) -> bool {
    PASSWORD.contains(b)
}

fn is_param_char(b: u8) -> bool {
    PARAM.contains(b)
}

/// `hname "=" hvalue *( "&" hname "=" hvalue )`.
fn check_headers(s: &str) -> Result<(), ValueError> {
    let is_hchar = |b: u8| HEADER.contains(b);
    for header in split_byte(s, b'&') {
        let (name, value) = header.split_once('=').ok_or(ValueError::Unexpected {
            expected: "'=' in a URI header",
            found: None,
        })?;
        if name.is_empty() {
            return Err(ValueError::Empty);
        }
        check_chars(name, is_hchar, "a URI header character")?;
        check_chars(value, is_hchar, "a URI header character")?;
    }
    Ok(())
}

/// Checks that `s` holds only characters in `allowed` or `%HH` escapes.
fn check_chars(
    s: &str,
    allowed: impl Fn(u8) -> bool,
    expected: &'static str,
) -> Result<(), ValueError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(ValueError::BadEscape)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(ValueError::BadEscape);
            }
            i += 3;
        } else if allowed(b) {
            i += 1;
        } else {
            return Err(ValueError::Unexpected {
                expected,
                found: s[i..].chars().next(),
            });
        }
    }
    Ok(())
}

/// `s` with its `%HH` escapes decoded (the result may hold any octet, NUL included, RFC 4475
/// §3.1.1.4); invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('%') {
        return Cow::Borrowed(s.as_bytes());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let decoded = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(octet) => {
                out.push(octet);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        *Uri::parse(s).unwrap().as_sip().unwrap()
    }

    #[test]
    fn userinfo_may_hold_semicolons_and_question_marks() {
        let u = sip(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        );
        assert_eq!(
            u.user(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!(u.host(), Host::Domain("example.com"));
        assert!(u.params().is_empty());
    }

    #[test]
    fn escaped_params_stay_escaped() {
        let u = sip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert_eq!(u.params().get("%6C%72"), Some(None));
        assert_eq!(u.params().get("n%61me"), Some(Some("v%61lue%25%34%31")));
        assert_eq!(percent_decode("v%61lue%25%34%31").as_ref(), b"value%41");
    }

    #[test]
    fn ipv6_host_port_params_and_headers() {
        let u = sip("sips:alice@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&Priority=urgent");
        assert!(u.is_secure());
        assert_eq!(u.host(), Host::Ipv6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port(), Some(5061));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.is_loose_router());
        assert_eq!(u.headers(), Some("Subject=hi&Priority=urgent"));
    }

    #[test]
    fn other_schemes_are_opaque_and_tel_is_understood() {
        assert_eq!(
            Uri::parse("soap.beep://192.0.2.103:3002").unwrap().scheme(),
            Scheme::Other
        );
        let Uri::Tel(t) = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap()
        else {
            panic!("not tel")
        };
        assert_eq!(t.number(), "+1-201-555-0123");
        assert_eq!(t.params().get("phone-context"), Some(Some("example.com")));
    }

    #[test]
    fn malformed_uris_are_rejected() {
        for bad in [
            "<sip:user@example.com>",
            "sip:user@example.com; lr",
            "sip:user@example.com;;lr",
            "sip:us er@example.com",
            "sip:%zz@example.com",
            "sip:@example.com",
            "sip:",
            "tel:",
            "nocolon",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn escaped_nul_decodes_without_shortening() {
        assert_eq!(percent_decode("null-%00-null").as_ref(), b"null-\0-null");
    }
}
