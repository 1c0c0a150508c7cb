//! Typed errors of the message layer, each naming the part of the message it is about.

use super::header::HeaderName;
use super::method::Method;
use super::status::StatusCode;

/// Why a value (a header field value, a URI, a parameter) does not match its grammar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Nothing where something is required.
    #[error("empty value")]
    Empty,
    /// A character (or the end) where the grammar wants something else.
    #[error("expected {expected}, found {}", found.map_or_else(|| "the end".to_owned(), |c| format!("{c:?}")))]
    Unexpected {
        /// What the grammar allows there.
        expected: &'static str,
        /// What was there instead; `None` at the end of the value.
        found: Option<char>,
    },
    /// A quoted string without its closing quote.
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    /// Not a decimal number.
    #[error("not a decimal number")]
    NotANumber,
    /// A number larger than the field allows.
    #[error("number larger than {max}")]
    TooLarge {
        /// The largest value the field allows.
        max: u64,
    },
    /// A host that is neither a domain name nor an IP address.
    #[error("invalid host")]
    BadHost,
    /// A port that is not a number up to 65535.
    #[error("invalid port")]
    BadPort,
    /// A `%` not followed by two hexadecimal digits.
    #[error("invalid %-escape")]
    BadEscape,
    /// A URI with `?headers`, where the grammar forbids them or asks for `<…>`.
    #[error("URI headers are not allowed here")]
    UriHeaders,
    /// White space inside a URI.
    #[error("white space inside the URI")]
    WhitespaceInUri,
    /// A Via for another protocol than SIP/2.0.
    #[error("sent-protocol is not SIP/2.0")]
    NotSip2,
}

/// A problem with one header field of a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", match kind {
    HeaderErrorKind::Missing => format!("missing {name} header"),
    HeaderErrorKind::Duplicate => format!("more than one {name} header"),
    HeaderErrorKind::Malformed(e) => format!("malformed {name} header: {e}"),
})]
pub struct HeaderError {
    /// The header field.
    pub name: HeaderName,
    /// What is wrong with it.
    pub kind: HeaderErrorKind,
}

/// What is wrong with a header field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderErrorKind {
    /// The message lacks it.
    Missing,
    /// It may appear once but appears several times.
    Duplicate,
    /// Its value does not match its grammar.
    Malformed(ValueError),
}

impl HeaderError {
    /// `name` is missing.
    pub(crate) fn missing(name: HeaderName) -> Self {
        Self {
            name,
            kind: HeaderErrorKind::Missing,
        }
    }

    /// `name` appears more than once.
    pub(crate) fn duplicate(name: HeaderName) -> Self {
        Self {
            name,
            kind: HeaderErrorKind::Duplicate,
        }
    }

    /// A constructor for [`Result::map_err`]: `name` has a malformed value.
    pub(crate) fn malformed(name: HeaderName) -> impl Fn(ValueError) -> Self {
        move |e| Self {
            name,
            kind: HeaderErrorKind::Malformed(e),
        }
    }
}

/// Why a message was not accepted: a framing or start-line problem found by the parser, or a
/// rule of RFC 3261 broken by a request or response that parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Nothing but empty lines (a keep-alive, or nothing at all).
    #[error("empty message")]
    Empty,
    /// The message is larger than [`Limits::max_message_size`](super::Limits).
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The header fields are not closed by an empty line.
    #[error("header fields not terminated by an empty line")]
    Incomplete,
    /// A line is longer than [`Limits::max_line_length`](super::Limits).
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// More header fields than [`Limits::max_headers`](super::Limits).
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// More Via values than [`Limits::max_via`](super::Limits).
    #[error("more than {limit} Via values")]
    TooManyVias {
        /// The limit in force.
        limit: usize,
    },
    /// The first line is neither a Request-Line nor a Status-Line.
    #[error("start line is neither a Request-Line nor a Status-Line")]
    BadStartLine,
    /// Extra white space between or after the elements of the Request-Line.
    #[error("extra white space in the Request-Line")]
    ExtraWhitespace,
    /// A status code that is not three digits from 100 to 699.
    #[error("status code is not three digits from 100 to 699")]
    BadStatusCode,
    /// A well-formed SIP version other than 2.0.
    #[error("SIP version other than 2.0")]
    VersionNotSupported,
    /// The Request-URI does not match its grammar.
    #[error("malformed Request-URI: {0}")]
    RequestUri(ValueError),
    /// The Request-URI has a scheme other than sip, sips and tel.
    #[error("unsupported Request-URI scheme")]
    UnsupportedUriScheme,
    /// A header line without a colon.
    #[error("header line without a colon")]
    MissingColon,
    /// A header field name that is not a token.
    #[error("header field name is not a token")]
    BadHeaderName,
    /// A continuation line with no header field before it.
    #[error("continuation line without a header field")]
    LeadingFold,
    /// A CR not followed by LF.
    #[error("bare CR in the header fields")]
    BareCr,
    /// The start line and header fields are not UTF-8.
    #[error("header fields are not valid UTF-8")]
    NotUtf8,
    /// Content-Length is larger than the bytes that follow the header fields.
    #[error("Content-Length {declared} exceeds the {available} bytes of body received")]
    BodyTruncated {
        /// The Content-Length value.
        declared: usize,
        /// The bytes present after the header fields.
        available: usize,
    },
    /// No Content-Length on a stream transport, where it frames the message (RFC 3261 §18.3).
    #[error("missing Content-Length header on a stream transport")]
    MissingContentLength,
    /// The CSeq method differs from the request method.
    #[error("CSeq method differs from the request method {request}")]
    MethodMismatch {
        /// The method of the Request-Line.
        request: Method,
    },
    /// A header field is missing, repeated or malformed.
    #[error(transparent)]
    Header(#[from] HeaderError),
}

impl Error {
    /// The status code of the response to a request that failed this way (RFC 3261 §8.2, §21).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } => StatusCode::MESSAGE_TOO_LARGE,
            Self::VersionNotSupported => StatusCode::VERSION_NOT_SUPPORTED,
            Self::UnsupportedUriScheme => StatusCode::UNSUPPORTED_URI_SCHEME,
            // RFC 4475 §3.1.2.18: 501 for an unknown method ages better than 400.
            Self::MethodMismatch {
                request: Method::Extension(_),
            } => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
