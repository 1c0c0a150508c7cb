//! Parsed messages: [`Request`], [`Response`] and [`Message`] own the received buffer
//! (`Bytes`, shared, never copied) and an index of its header fields; [`Headers`] hands out
//! header values as slices of it and parses structured values on access.

use bytes::Bytes;

use super::cseq::CSeq;
use super::error::{Error, HeaderError, ValueError};
use super::grammar::{is_word, parse_decimal, split_list};
use super::header::{Header, HeaderName};
use super::limits::Limits;
use super::method::Method;
use super::name_addr::{Contact, NameAddr};
use super::parser::{Field, Span, StartLine, leading_empty_lines, parse_head};
use super::status::StatusCode;
use super::uri::Uri;
use super::via::Via;

/// A parsed request or response.
#[derive(Clone, Debug)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// A parsed request.
#[derive(Clone, Debug)]
pub struct Request {
    method: Method,
    uri: Span,
    headers: Headers,
    body: Bytes,
}

/// A parsed response.
#[derive(Clone, Debug)]
pub struct Response {
    status: StatusCode,
    reason: Span,
    headers: Headers,
    body: Bytes,
}

/// The header fields of a parsed message, in the order received.
#[derive(Clone, Debug)]
pub struct Headers {
    /// The message: leading empty lines, start line, header fields and body.
    buf: Bytes,
    /// Where the start line begins.
    start: usize,
    fields: Vec<Field>,
}

impl Message {
    /// Parses one complete message: a datagram, or a frame that [`frame_length`] cut from a
    /// stream.
    ///
    /// Octets after the body that Content-Length gives are ignored (RFC 3261 §18.3); without
    /// Content-Length the body is the rest of the buffer. Header values are parsed later, when
    /// asked for; [`Request::validate`] checks the ones a server relies on.
    ///
    /// [`frame_length`]: super::frame_length
    pub fn parse(buf: Bytes, limits: &Limits) -> Result<Self, Error> {
        if buf.len() > limits.max_message_size || u32::try_from(buf.len()).is_err() {
            return Err(Error::TooLarge {
                limit: limits.max_message_size,
            });
        }
        if leading_empty_lines(&buf) == buf.len() {
            return Err(Error::Empty);
        }
        let head = parse_head(&buf, limits)?.ok_or(Error::Incomplete)?;
        let available = buf.len() - head.body_start;
        let body_len = match content_length(&buf, &head.fields)? {
            Some(declared) if declared > available => {
                return Err(Error::BodyTruncated {
                    declared,
                    available,
                });
            }
            Some(declared) => declared,
            None => available,
        };
        let buf = buf.slice(..head.body_start + body_len);
        let body = buf.slice(head.body_start..);
        let headers = Headers {
            start: head.start,
            fields: head.fields,
            buf,
        };
        Ok(match head.start_line {
            StartLine::Request { method, uri } => {
                let method = Method::from_token_in(&headers.buf, headers.text(method));
                Self::Request(Request {
                    method,
                    uri,
                    headers,
                    body,
                })
            }
            StartLine::Response { status, reason } => Self::Response(Response {
                status,
                reason,
                headers,
                body,
            }),
        })
    }

    /// The header fields.
    pub fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
        }
    }

    /// The body (empty when there is none).
    pub fn body(&self) -> &Bytes {
        match self {
            Self::Request(r) => &r.body,
            Self::Response(r) => &r.body,
        }
    }

    /// The message as received, from its start line to the end of its body.
    pub fn as_bytes(&self) -> Bytes {
        self.headers().message_bytes()
    }

    /// The request, if this is one.
    pub fn as_request(&self) -> Option<&Request> {
        match self {
            Self::Request(r) => Some(r),
            Self::Response(_) => None,
        }
    }

    /// The response, if this is one.
    pub fn as_response(&self) -> Option<&Response> {
        match self {
            Self::Request(_) => None,
            Self::Response(r) => Some(r),
        }
    }
}

/// The value of the only Content-Length field, if there is one.
fn content_length(buf: &[u8], fields: &[Field]) -> Result<Option<usize>, Error> {
    let mut lengths = fields
        .iter()
        .filter(|f| f.name == HeaderName::ContentLength);
    let Some(field) = lengths.next() else {
        return Ok(None);
    };
    if lengths.next().is_some() {
        return Err(HeaderError::duplicate(HeaderName::ContentLength).into());
    }
    let value = std::str::from_utf8(&buf[field.value.range()]).map_err(|_| Error::NotUtf8)?;
    let length = parse_decimal(value, u64::from(u32::MAX))
        .map_err(HeaderError::malformed(HeaderName::ContentLength))?;
    Ok(Some(usize::try_from(length).unwrap_or(usize::MAX)))
}

impl Request {
    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The Request-URI as received.
    pub fn uri_str(&self) -> &str {
        self.headers.text(self.uri)
    }

    /// The Request-URI, parsed.
    pub fn uri(&self) -> Result<Uri<'_>, Error> {
        Uri::parse(self.uri_str()).map_err(Error::RequestUri)
    }

    /// The header fields.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The request as received.
    pub fn as_bytes(&self) -> Bytes {
        self.headers.message_bytes()
    }

    /// Checks what RFC 3261 requires of a request before it is processed (§8.2, §16.3): the
    /// header fields every request carries, their syntax, the CSeq method, the Request-URI.
    pub fn validate(&self, limits: &Limits) -> Result<(), Error> {
        super::validate::request(self, limits)
    }
}

impl Response {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason phrase as received.
    pub fn reason(&self) -> &str {
        self.headers.text(self.reason)
    }

    /// The header fields.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The response as received.
    pub fn as_bytes(&self) -> Bytes {
        self.headers.message_bytes()
    }

    /// Checks the header fields a response must carry to be matched to a transaction; one that
    /// fails is dropped (RFC 3261 §18.1.2).
    pub fn validate(&self, limits: &Limits) -> Result<(), Error> {
        super::validate::response(self, limits)
    }
}

impl Headers {
    /// The text of a span inside the header section.
    fn text(&self, span: Span) -> &str {
        // The header section was checked to be UTF-8 and spans end on ASCII delimiters, so this
        // cannot fail; an empty string is a safe answer if it ever did.
        std::str::from_utf8(&self.buf[span.range()]).unwrap_or_default()
    }

    fn header(&self, field: &Field) -> Header<'_> {
        Header {
            name: field.name,
            raw_name: self.text(field.raw_name),
            value: self.text(field.value),
        }
    }

    fn message_bytes(&self) -> Bytes {
        self.buf.slice(self.start..)
    }

    /// All header fields in order.
    pub fn iter(&self) -> impl Iterator<Item = Header<'_>> {
        self.fields.iter().map(|f| self.header(f))
    }

    /// The number of header fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no header fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The values of every field named `name`; [`HeaderName::Other`] matches every extension
    /// field, [`Headers::extension`] picks one by name.
    pub fn get_all(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(move |f| f.name == name)
            .map(|f| self.text(f.value))
    }

    /// The value of the first field named `name`.
    pub fn get(&self, name: HeaderName) -> Option<&str> {
        self.get_all(name).next()
    }

    /// How many fields are named `name`.
    pub fn count(&self, name: HeaderName) -> usize {
        self.get_all(name).count()
    }

    /// Every value of `name`: the fields in order, each split on commas when the header is a
    /// list (RFC 3261 §7.3.1), so that `Via: a, b` and two Via fields read alike.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.get_all(name).flat_map(move |v| {
            let mut whole = Some(v);
            let mut list = name.is_list().then(|| split_list(v));
            std::iter::from_fn(move || match list.as_mut() {
                Some(items) => items.next(),
                None => whole.take(),
            })
        })
    }

    /// The values of the extension header `name` (case-insensitive).
    pub fn extension<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.iter()
            .filter(move |h| h.name == HeaderName::Other && h.is_named(name))
            .map(|h| h.value)
    }

    /// The value of `name`, which must appear exactly once.
    pub fn single(&self, name: HeaderName) -> Result<&str, HeaderError> {
        let mut all = self.get_all(name);
        let value = all.next().ok_or(HeaderError::missing(name))?;
        match all.next() {
            Some(_) => Err(HeaderError::duplicate(name)),
            None => Ok(value),
        }
    }

    /// The Call-ID, checked against `word [ "@" word ]`.
    pub fn call_id(&self) -> Result<&str, HeaderError> {
        let value = self.single(HeaderName::CallId)?;
        check_call_id(value).map_err(HeaderError::malformed(HeaderName::CallId))?;
        Ok(value)
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        let value = self.single(HeaderName::CSeq)?;
        CSeq::parse_in(&self.buf, value).map_err(HeaderError::malformed(HeaderName::CSeq))
    }

    /// The From address.
    pub fn from(&self) -> Result<NameAddr<'_>, HeaderError> {
        self.name_addr(HeaderName::From)
    }

    /// The To address.
    pub fn to(&self) -> Result<NameAddr<'_>, HeaderError> {
        self.name_addr(HeaderName::To)
    }

    fn name_addr(&self, name: HeaderName) -> Result<NameAddr<'_>, HeaderError> {
        NameAddr::parse(self.single(name)?).map_err(HeaderError::malformed(name))
    }

    /// Every Via value, topmost first.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, HeaderError>> {
        self.values(HeaderName::Via)
            .map(|v| Via::parse(v).map_err(HeaderError::malformed(HeaderName::Via)))
    }

    /// The topmost Via value: where a response to this request goes.
    pub fn top_via(&self) -> Result<Via<'_>, HeaderError> {
        self.vias()
            .next()
            .unwrap_or(Err(HeaderError::missing(HeaderName::Via)))
    }

    /// Max-Forwards (0–255), if present.
    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        let Some(value) = self.get(HeaderName::MaxForwards) else {
            return Ok(None);
        };
        if self.count(HeaderName::MaxForwards) > 1 {
            return Err(HeaderError::duplicate(HeaderName::MaxForwards));
        }
        parse_decimal(value, 255)
            .map(|v| u8::try_from(v).ok())
            .map_err(HeaderError::malformed(HeaderName::MaxForwards))
    }

    /// Every Contact value.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'_>, HeaderError>> {
        self.values(HeaderName::Contact)
            .map(|v| Contact::parse(v).map_err(HeaderError::malformed(HeaderName::Contact)))
    }

    /// Every Route value, in order.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, HeaderError>> {
        self.addresses(HeaderName::Route)
    }

    /// Every Record-Route value, in order.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, HeaderError>> {
        self.addresses(HeaderName::RecordRoute)
    }

    fn addresses(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<NameAddr<'_>, HeaderError>> {
        self.values(name).map(move |v| {
            NameAddr::parse(v)
                .and_then(|a| {
                    // Route and Record-Route values are always name-addr (RFC 3261 §20.30).
                    a.is_bracketed().then_some(a).ok_or(ValueError::Unexpected {
                        expected: "'<'",
                        found: v.chars().next(),
                    })
                })
                .map_err(HeaderError::malformed(name))
        })
    }

    /// The Expires value in seconds, if present; a malformed or overlarge value is an error the
    /// caller may treat as the default (RFC 3261 §20.19).
    pub fn expires(&self) -> Option<Result<u32, HeaderError>> {
        let value = self.get(HeaderName::Expires)?;
        Some(
            parse_decimal(value, u64::from(u32::MAX))
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
                .map_err(HeaderError::malformed(HeaderName::Expires)),
        )
    }

    /// The Content-Type value, if present.
    pub fn content_type(&self) -> Option<&str> {
        self.get(HeaderName::ContentType)
    }
}

/// `callid = word [ "@" word ]`.
fn check_call_id(value: &str) -> Result<(), ValueError> {
    let mut parts = value.splitn(2, '@');
    for word in parts.by_ref() {
        if word.is_empty() {
            return Err(ValueError::Empty);
        }
        if let Some(bad) = word.chars().find(|&c| !c.is_ascii() || !is_word(c as u8)) {
            return Err(ValueError::Unexpected {
                expected: "a Call-ID word character",
                found: Some(bad),
            });
        }
    }
    Ok(())
}
