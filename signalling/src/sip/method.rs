//! SIP request methods (RFC 3261 §7.1 and the extensions a PBX meets), case-sensitive tokens.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use super::error::ValueError;
use super::grammar::is_token;

/// A request method; any other token is an [`Method::Extension`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// RFC 3261.
    Invite,
    /// RFC 3261.
    Ack,
    /// RFC 3261.
    Bye,
    /// RFC 3261.
    Cancel,
    /// RFC 3261.
    Options,
    /// RFC 3261.
    Register,
    /// RFC 3262.
    Prack,
    /// RFC 6665.
    Subscribe,
    /// RFC 6665.
    Notify,
    /// RFC 3903.
    Publish,
    /// RFC 6086.
    Info,
    /// RFC 3515.
    Refer,
    /// RFC 3428.
    Message,
    /// RFC 3311.
    Update,
    /// Any other token, kept as it was received (methods are case-sensitive).
    Extension(ExtensionMethod),
}

/// An extension method token, a slice of the message it came from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ExtensionMethod(Bytes);

impl ExtensionMethod {
    /// The token.
    pub fn as_str(&self) -> &str {
        // Only ever built from a validated token, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for ExtensionMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Method {
    /// The method named by `token` if it is a standard one.
    pub fn known(token: &str) -> Option<Self> {
        Some(match token {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "REGISTER" => Self::Register,
            "PRACK" => Self::Prack,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "PUBLISH" => Self::Publish,
            "INFO" => Self::Info,
            "REFER" => Self::Refer,
            "MESSAGE" => Self::Message,
            "UPDATE" => Self::Update,
            _ => return None,
        })
    }

    /// The method named by `token`, which lies inside `buf`: an extension method borrows from
    /// `buf` rather than copying.
    pub(crate) fn from_token_in(buf: &Bytes, token: &str) -> Self {
        Self::known(token)
            .unwrap_or_else(|| Self::Extension(ExtensionMethod(buf.slice_ref(token.as_bytes()))))
    }

    /// The method token.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Publish => "PUBLISH",
            Self::Info => "INFO",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Update => "UPDATE",
            Self::Extension(m) => m.as_str(),
        }
    }
}

impl FromStr for Method {
    type Err = ValueError;

    fn from_str(token: &str) -> Result<Self, ValueError> {
        if token.is_empty() {
            return Err(ValueError::Empty);
        }
        if let Some(bad) = token.bytes().position(|b| !is_token(b)) {
            return Err(ValueError::Unexpected {
                expected: "a method token",
                found: token[bad..].chars().next(),
            });
        }
        Ok(Self::known(token).unwrap_or_else(|| {
            Self::Extension(ExtensionMethod(Bytes::copy_from_slice(token.as_bytes())))
        }))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!("INVITE".parse(), Ok(Method::Invite));
        let lower: Method = "invite".parse().unwrap();
        assert!(matches!(lower, Method::Extension(_)));
        assert_eq!(lower.as_str(), "invite");
    }

    #[test]
    fn escaped_looking_method_is_an_extension() {
        let m: Method = "RE%47IST%45R".parse().unwrap();
        assert_ne!(m, Method::Register);
    }

    #[test]
    fn non_token_is_not_a_method() {
        assert!("IN VITE".parse::<Method>().is_err());
    }
}
