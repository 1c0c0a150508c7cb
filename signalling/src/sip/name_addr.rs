//! `( name-addr / addr-spec ) *( SEMI param )`: the value of From, To, Contact, Route,
//! Record-Route and their kin (RFC 3261 §20.10, §20.20, §20.39, §25.1).

use std::borrow::Cow;

use super::error::ValueError;
use super::grammar::{Cursor, find_byte, is_lws, is_token, parse_decimal, trim_lws};
use super::params::{Params, unquote};
use super::uri::Uri;

/// An address with its optional display name and its header parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    display_name: Option<DisplayName<'a>>,
    uri: Uri<'a>,
    bracketed: bool,
    params: Params<'a>,
}

/// A display name as received: a quoted string (with its quotes) or a run of tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisplayName<'a>(&'a str);

/// One Contact value: an address, or `*` (remove all bindings, RFC 3261 §10.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `*`.
    Wildcard,
    /// An address.
    Address(NameAddr<'a>),
}

impl<'a> DisplayName<'a> {
    /// The name as received, quotes included.
    pub fn as_raw(&self) -> &'a str {
        self.0
    }

    /// The name as text: quotes and escapes removed, or the tokens separated by one space.
    pub fn text(&self) -> Cow<'a, str> {
        if self.0.starts_with('"') {
            return unquote(self.0);
        }
        let single_spaced = !self.0.contains(['\t', '\r', '\n']) && !self.0.contains("  ");
        if single_spaced {
            self.0.into()
        } else {
            self.0
                .split(|c: char| c.is_ascii_whitespace())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
                .into()
        }
    }
}

impl<'a> NameAddr<'a> {
    /// Parses one value (one element of a list).
    pub fn parse(s: &'a str) -> Result<Self, ValueError> {
        let mut c = Cursor::new(s);
        c.skip_lws();
        let display_name = display_name(&mut c)?;
        let bracketed = display_name.is_some() || c.peek() == Some(b'<');
        let uri = if bracketed {
            // No white space inside the brackets (RFC 4475 §3.1.2.14).
            c.expect(b'<', "'<'")?;
            let uri = c.take_until(|b| b == b'>');
            c.expect(b'>', "'>' closing the URI")?;
            Uri::parse(uri)?
        } else {
            // Without brackets, every ';' starts a header parameter (RFC 3261 §20.10).
            let uri = Uri::parse(c.take_until(|b| b == b';' || is_lws(b)))?;
            if uri.as_sip().is_some_and(|u| u.headers().is_some())
                || find_byte(uri.as_str(), b'?').is_some()
            {
                return Err(ValueError::UriHeaders);
            }
            uri
        };
        let params = Params::parse(&mut c)?;
        Ok(Self {
            display_name,
            uri,
            bracketed,
            params,
        })
    }

    /// The display name, if any.
    pub fn display_name(&self) -> Option<DisplayName<'a>> {
        self.display_name
    }

    /// The address.
    pub fn uri(&self) -> Uri<'a> {
        self.uri
    }

    /// Whether the address was written inside `<…>`.
    pub fn is_bracketed(&self) -> bool {
        self.bracketed
    }

    /// The header parameters (after the address).
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// The `tag` parameter (From and To, RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }
}

/// Reads a display name and stops before `<`; reads nothing when the value is an addr-spec.
fn display_name<'a>(c: &mut Cursor<'a>) -> Result<Option<DisplayName<'a>>, ValueError> {
    match c.peek() {
        Some(b'"') => {
            let quoted = c.quoted_string()?;
            c.skip_lws();
            Ok(Some(DisplayName(quoted)))
        }
        Some(b'<') => Ok(None),
        _ => {
            let mark = c.rest();
            c.token("a display name or an address")?;
            // A token directly followed by ':' is a URI scheme: an addr-spec, no display name.
            if c.peek() == Some(b':') {
                *c = Cursor::new(mark);
                return Ok(None);
            }
            loop {
                c.skip_lws();
                match c.peek() {
                    Some(b'<') => break,
                    Some(b) if is_token(b) => c.token("a display name token")?,
                    _ => return Err(c.unexpected("a display name token or '<'")),
                };
            }
            Ok(Some(DisplayName(trim_lws(c.since(mark)))))
        }
    }
}

impl<'a> Contact<'a> {
    /// Parses one Contact value.
    pub fn parse(s: &'a str) -> Result<Self, ValueError> {
        if s.trim_matches(|c: char| c.is_ascii_whitespace()) == "*" {
            return Ok(Self::Wildcard);
        }
        let address = NameAddr::parse(s)?;
        if let Some(q) = address.params.get("q") {
            parse_qvalue(q.ok_or(ValueError::Empty)?)?;
        }
        Ok(Self::Address(address))
    }

    /// The address, unless this is the wildcard.
    pub fn address(&self) -> Option<&NameAddr<'a>> {
        match self {
            Self::Wildcard => None,
            Self::Address(a) => Some(a),
        }
    }

    /// The `expires` parameter in seconds; malformed or over 2³²−1 is an error the registrar
    /// may treat as the default (RFC 3261 §20.10, RFC 4475 §3.1.2.4).
    pub fn expires(&self) -> Option<Result<u32, ValueError>> {
        let value = self.address()?.params.get("expires")?;
        Some(
            value
                .ok_or(ValueError::Empty)
                .and_then(|v| parse_decimal(v, u64::from(u32::MAX)))
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        )
    }

    /// The `q` parameter in thousandths (0–1000).
    pub fn q(&self) -> Option<u16> {
        self.address()?
            .params
            .get("q")
            .flatten()
            .and_then(|q| parse_qvalue(q).ok())
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_qvalue(s: &str) -> Result<u16, ValueError> {
    let bad = || ValueError::Unexpected {
        expected: "a q-value from 0 to 1",
        found: s.chars().next(),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match (int, thousandths) {
        ("0", t) => Ok(t),
        ("1", 0) => Ok(1000),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::host::Host;

    #[test]
    fn quoted_display_name_with_escapes_and_folded_params() {
        let a = NameAddr::parse(
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(a.display_name().unwrap().text(), "J Rosenberg \\\"");
        assert_eq!(a.tag(), Some("98asjd8"));
        assert_eq!(a.uri().as_sip().unwrap().user(), Some("jdrosen"));
    }

    #[test]
    fn addr_spec_params_belong_to_the_header() {
        let a =
            NameAddr::parse(" sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert!(a.display_name().is_none());
        assert!(!a.is_bracketed());
        assert_eq!(a.tag(), Some("1918181833n"));
        assert!(a.uri().as_sip().unwrap().params().is_empty());
    }

    #[test]
    fn token_display_names_with_or_without_space_before_the_bracket() {
        let a =
            NameAddr::parse("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>").unwrap();
        assert_eq!(
            a.display_name().unwrap().as_raw(),
            "token1~` token2'+_ token3*%!.-"
        );
        let b = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(b.display_name().unwrap().text(), "caller");
        assert_eq!(
            b.uri().as_sip().unwrap().host(),
            Host::Domain("example.com")
        );
    }

    #[test]
    fn folded_display_names_read_as_single_spaced_text() {
        let quoted = NameAddr::parse("\"Alice\r\n Example\" <sip:a@example.com>").unwrap();
        assert_eq!(quoted.display_name().unwrap().text(), "Alice Example");
        let tokens = NameAddr::parse("A.\r\n   Bell <sip:a.g.bell@example.com>").unwrap();
        assert_eq!(tokens.display_name().unwrap().text(), "A. Bell");
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "<sip:joe@example.org",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn contact_wildcard_expires_and_q() {
        assert_eq!(Contact::parse(" * "), Ok(Contact::Wildcard));
        let c = Contact::parse("<sip:a@b>;expires=3600;q=0.7").unwrap();
        assert_eq!(c.expires(), Some(Ok(3600)));
        assert_eq!(c.q(), Some(700));
        assert!(Contact::parse("<sip:a@b>;q=1.5").is_err());
        let big =
            Contact::parse("<sip:user@host129.example.com>\r\n  ;expires=280297596632815").unwrap();
        assert!(matches!(
            big.expires(),
            Some(Err(ValueError::TooLarge { .. }))
        ));
    }
}
