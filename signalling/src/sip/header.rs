//! Header field names: the ones RFC 3261 and the extensions a PBX meets define, recognised
//! case-insensitively and in their compact forms (RFC 3261 §7.3.3, IANA SIP parameters).

use std::borrow::Cow;
use std::fmt;

use super::grammar::unfold;

macro_rules! header_names {
    ($($variant:ident = $canonical:literal, $lower:literal, $compact:expr, $list:literal;)*) => {
        /// A header field name. Names outside this list are [`HeaderName::Other`]; the message
        /// keeps their spelling.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HeaderName {
            $(
                #[doc = concat!("`", $canonical, "`.")]
                $variant,
            )*
            /// An extension header field this type does not name.
            Other,
        }

        impl HeaderName {
            /// The long form with its registered capitalisation (`Other` has none: empty).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $canonical,)*
                    Self::Other => "",
                }
            }

            /// The compact form, if the name has one.
            pub const fn compact(self) -> Option<char> {
                match self {
                    $(Self::$variant => $compact,)*
                    Self::Other => None,
                }
            }

            /// Whether the grammar allows several comma-separated values in one field, so that
            /// they may be split on commas (RFC 3261 §7.3.1).
            pub const fn is_list(self) -> bool {
                match self {
                    $(Self::$variant => $list,)*
                    Self::Other => false,
                }
            }

            fn from_lowercase(name: &[u8]) -> Self {
                match name {
                    $($lower => Self::$variant,)*
                    _ => Self::Other,
                }
            }
        }
    };
}

header_names! {
    Accept = "Accept", b"accept", None, true;
    AcceptContact = "Accept-Contact", b"accept-contact", Some('a'), true;
    AcceptEncoding = "Accept-Encoding", b"accept-encoding", None, true;
    AcceptLanguage = "Accept-Language", b"accept-language", None, true;
    AlertInfo = "Alert-Info", b"alert-info", None, true;
    Allow = "Allow", b"allow", None, true;
    AllowEvents = "Allow-Events", b"allow-events", Some('u'), true;
    AuthenticationInfo = "Authentication-Info", b"authentication-info", None, false;
    Authorization = "Authorization", b"authorization", None, false;
    CallId = "Call-ID", b"call-id", Some('i'), false;
    CallInfo = "Call-Info", b"call-info", None, true;
    Contact = "Contact", b"contact", Some('m'), true;
    ContentDisposition = "Content-Disposition", b"content-disposition", None, false;
    ContentEncoding = "Content-Encoding", b"content-encoding", Some('e'), true;
    ContentLanguage = "Content-Language", b"content-language", None, true;
    ContentLength = "Content-Length", b"content-length", Some('l'), false;
    ContentType = "Content-Type", b"content-type", Some('c'), false;
    CSeq = "CSeq", b"cseq", None, false;
    Date = "Date", b"date", None, false;
    ErrorInfo = "Error-Info", b"error-info", None, true;
    Event = "Event", b"event", Some('o'), false;
    Expires = "Expires", b"expires", None, false;
    From = "From", b"from", Some('f'), false;
    Identity = "Identity", b"identity", Some('y'), false;
    IdentityInfo = "Identity-Info", b"identity-info", Some('n'), false;
    InReplyTo = "In-Reply-To", b"in-reply-to", None, true;
    MaxForwards = "Max-Forwards", b"max-forwards", None, false;
    MimeVersion = "MIME-Version", b"mime-version", None, false;
    MinExpires = "Min-Expires", b"min-expires", None, false;
    MinSe = "Min-SE", b"min-se", None, false;
    Organization = "Organization", b"organization", None, false;
    PAssertedIdentity = "P-Asserted-Identity", b"p-asserted-identity", None, true;
    PPreferredIdentity = "P-Preferred-Identity", b"p-preferred-identity", None, true;
    Path = "Path", b"path", None, true;
    Priority = "Priority", b"priority", None, false;
    Privacy = "Privacy", b"privacy", None, false;
    ProxyAuthenticate = "Proxy-Authenticate", b"proxy-authenticate", None, false;
    ProxyAuthorization = "Proxy-Authorization", b"proxy-authorization", None, false;
    ProxyRequire = "Proxy-Require", b"proxy-require", None, true;
    RAck = "RAck", b"rack", None, false;
    Reason = "Reason", b"reason", None, true;
    RecordRoute = "Record-Route", b"record-route", None, true;
    ReferTo = "Refer-To", b"refer-to", Some('r'), false;
    ReferredBy = "Referred-By", b"referred-by", Some('b'), false;
    RejectContact = "Reject-Contact", b"reject-contact", Some('j'), true;
    Replaces = "Replaces", b"replaces", None, false;
    ReplyTo = "Reply-To", b"reply-to", None, false;
    RequestDisposition = "Request-Disposition", b"request-disposition", Some('d'), true;
    Require = "Require", b"require", None, true;
    RetryAfter = "Retry-After", b"retry-after", None, false;
    Route = "Route", b"route", None, true;
    RSeq = "RSeq", b"rseq", None, false;
    Server = "Server", b"server", None, false;
    ServiceRoute = "Service-Route", b"service-route", None, true;
    SessionExpires = "Session-Expires", b"session-expires", Some('x'), false;
    Subject = "Subject", b"subject", Some('s'), false;
    SubscriptionState = "Subscription-State", b"subscription-state", None, false;
    Supported = "Supported", b"supported", Some('k'), true;
    Timestamp = "Timestamp", b"timestamp", None, false;
    To = "To", b"to", Some('t'), false;
    Unsupported = "Unsupported", b"unsupported", None, true;
    UserAgent = "User-Agent", b"user-agent", None, false;
    Via = "Via", b"via", Some('v'), true;
    Warning = "Warning", b"warning", None, true;
    WwwAuthenticate = "WWW-Authenticate", b"www-authenticate", None, false;
}

/// No registered name is longer; longer names are extensions without lowercasing them.
const LONGEST_NAME: usize = 24;

impl HeaderName {
    /// The header named `name` (long or compact form, any case).
    pub fn from_bytes(name: &[u8]) -> Self {
        if let [c] = name {
            return Self::from_compact(c.to_ascii_lowercase());
        }
        if name.len() > LONGEST_NAME {
            return Self::Other;
        }
        let mut lower = [0u8; LONGEST_NAME];
        let lower = &mut lower[..name.len()];
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        Self::from_lowercase(lower)
    }

    fn from_compact(c: u8) -> Self {
        match c {
            b'a' => Self::AcceptContact,
            b'b' => Self::ReferredBy,
            b'c' => Self::ContentType,
            b'd' => Self::RequestDisposition,
            b'e' => Self::ContentEncoding,
            b'f' => Self::From,
            b'i' => Self::CallId,
            b'j' => Self::RejectContact,
            b'k' => Self::Supported,
            b'l' => Self::ContentLength,
            b'm' => Self::Contact,
            b'n' => Self::IdentityInfo,
            b'o' => Self::Event,
            b'r' => Self::ReferTo,
            b's' => Self::Subject,
            b't' => Self::To,
            b'u' => Self::AllowEvents,
            b'v' => Self::Via,
            b'x' => Self::SessionExpires,
            b'y' => Self::Identity,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Other => "extension",
            name => name.as_str(),
        })
    }
}

/// One header field of a parsed message, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The field's name.
    pub name: HeaderName,
    /// The name as received (compact or long, any case).
    pub raw_name: &'a str,
    /// The value as received, without the surrounding white space; folds are kept.
    pub value: &'a str,
}

impl<'a> Header<'a> {
    /// The value with each fold replaced by one space.
    pub fn value_unfolded(&self) -> Cow<'a, str> {
        unfold(self.value)
    }

    /// Whether this field has the extension name `name` (case-insensitively).
    pub fn is_named(&self, name: &str) -> bool {
        self.raw_name.eq_ignore_ascii_case(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_compact_forms_map_to_long_ones() {
        assert_eq!(
            HeaderName::from_bytes(b"MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::from_bytes(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"i"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::CallId.compact(), Some('i'));
    }

    #[test]
    fn every_compact_form_round_trips() {
        for c in b'a'..=b'z' {
            let name = HeaderName::from_compact(c);
            if name != HeaderName::Other {
                assert_eq!(name.compact(), Some(char::from(c)));
                assert_eq!(HeaderName::from_bytes(name.as_str().as_bytes()), name);
            }
        }
    }

    #[test]
    fn longest_registered_name_fits_the_lowercase_buffer() {
        assert!(HeaderName::from_bytes(b"P-Preferred-Identity").is_list());
        assert_eq!(
            HeaderName::from_bytes(b"Request-Disposition"),
            HeaderName::RequestDisposition
        );
    }
}
