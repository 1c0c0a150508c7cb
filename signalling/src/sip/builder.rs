//! Building messages to send: responses derived from a request as RFC 3261 §8.2.6 requires, and
//! new requests; both serialise to wire bytes with a computed Content-Length.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::Error;
use super::grammar::{is_token_str, unfold};
use super::header::HeaderName;
use super::limits::Limits;
use super::message::{Message, Request, Response};
use super::method::Method;
use super::name_addr::NameAddr;
use super::status::StatusCode;

/// Why a message could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A value holds CR or LF, which would end the header field early.
    #[error("the {0} value contains CR or LF")]
    LineBreak(String),
    /// An extension header name that is not a token, or a known name passed as an extension.
    #[error("{0:?} is not a valid extension header field name")]
    BadName(String),
    /// Content-Length is always computed from the body.
    #[error("Content-Length is computed from the body and cannot be set")]
    ContentLength,
    /// A Request-URI with white space or line breaks.
    #[error("the Request-URI contains white space")]
    BadUri,
    /// The bytes built do not parse back (a value broke its header's grammar).
    #[error("the built message does not parse: {0}")]
    Unparseable(#[from] Error),
}

/// A header field name of a message being built.
#[derive(Clone, Debug)]
enum Name {
    Known(HeaderName),
    Extension(String),
}

/// Header fields and body shared by both builders.
#[derive(Clone, Debug, Default)]
struct Draft {
    headers: Vec<(Name, String)>,
    body: Bytes,
}

impl Draft {
    fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        self.headers.push((Name::Known(name), value.into()));
    }

    fn push_extension(&mut self, name: String, value: String) {
        self.headers.push((Name::Extension(name), value));
    }

    fn set_body(&mut self, content_type: String, body: Bytes) {
        self.headers
            .retain(|(n, _)| !matches!(n, Name::Known(HeaderName::ContentType)));
        self.push(HeaderName::ContentType, content_type);
        self.body = body;
    }

    /// The message on the wire: `start_line` (without its CRLF), the header fields with
    /// `to_tag` added to a To that has none, the computed Content-Length, the empty line and the
    /// body. Sized exactly up front: responses are kept for retransmission, and growing the
    /// buffer on the way cost a copy.
    fn wire(&self, start_line: &str, to_tag: Option<&str>) -> Result<Bytes, BuildError> {
        let to_tag = to_tag.filter(|_| self.to_needs_tag());
        let content_length = self.body.len().to_string();
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name_len(name) + value.len() + 4)
            .sum();
        let len = start_line.len()
            + 2
            + headers
            + to_tag.map_or(0, |tag| ";tag=".len() + tag.len())
            + "Content-Length: ".len()
            + content_length.len()
            + 4
            + self.body.len();
        let mut out = BytesMut::with_capacity(len);
        out.put_slice(start_line.as_bytes());
        out.put_slice(b"\r\n");
        self.write(&mut out, to_tag)?;
        out.put_slice(b"Content-Length: ");
        out.put_slice(content_length.as_bytes());
        out.put_slice(b"\r\n\r\n");
        out.put_slice(&self.body);
        debug_assert_eq!(out.len(), len, "the computed size is exact");
        Ok(out.freeze())
    }

    /// Whether the (first) To header field has no tag yet.
    fn to_needs_tag(&self) -> bool {
        self.headers
            .iter()
            .find(|(name, _)| matches!(name, Name::Known(HeaderName::To)))
            .is_some_and(|(_, value)| !NameAddr::parse(value).is_ok_and(|to| to.tag().is_some()))
    }

    /// Writes the header fields, `to_tag` appended to the first To.
    fn write(&self, out: &mut BytesMut, mut to_tag: Option<&str>) -> Result<(), BuildError> {
        for (name, value) in &self.headers {
            let is_to = matches!(name, Name::Known(HeaderName::To));
            let name = match name {
                Name::Known(HeaderName::ContentLength) => return Err(BuildError::ContentLength),
                Name::Known(HeaderName::Other) => return Err(BuildError::BadName(String::new())),
                Name::Known(known) => known.as_str(),
                Name::Extension(name)
                    if is_token_str(name)
                        && HeaderName::from_bytes(name.as_bytes()) == HeaderName::Other =>
                {
                    name
                }
                Name::Extension(name) => return Err(BuildError::BadName(name.clone())),
            };
            if value.contains(['\r', '\n']) {
                return Err(BuildError::LineBreak(name.to_owned()));
            }
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            if is_to && let Some(tag) = to_tag.take() {
                out.put_slice(b";tag=");
                out.put_slice(tag.as_bytes());
            }
            out.put_slice(b"\r\n");
        }
        Ok(())
    }
}

/// The length of a header field name as written (an invalid one is refused while writing).
fn name_len(name: &Name) -> usize {
    match name {
        Name::Known(known) => known.as_str().len(),
        Name::Extension(name) => name.len(),
    }
}

/// A response under construction.
#[derive(Clone, Debug)]
pub struct ResponseBuilder {
    status: StatusCode,
    reason: Option<String>,
    to_tag: Option<String>,
    draft: Draft,
}

impl ResponseBuilder {
    /// A response with no header fields yet.
    pub fn new(status: StatusCode) -> Self {
        Self {
            status,
            reason: None,
            to_tag: None,
            draft: Draft::default(),
        }
    }

    /// A response to `request`, with the header fields RFC 3261 §8.2.6.2 copies from it: every
    /// Via field in order, From, To, Call-ID and CSeq, and Timestamp for 100 Trying (§8.2.6.1).
    /// Give the To tag with [`ResponseBuilder::to_tag`] unless the request had one.
    pub fn for_request(request: &Request, status: StatusCode) -> Self {
        let headers = request.headers();
        let mut builder = Self::new(status);
        let copied = [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ];
        for name in copied {
            for value in headers.get_all(name) {
                builder.draft.push(name, unfold(value));
            }
        }
        if status == StatusCode::TRYING
            && let Some(timestamp) = headers.get(HeaderName::Timestamp)
        {
            builder.draft.push(HeaderName::Timestamp, unfold(timestamp));
        }
        builder
    }

    /// Replaces the canonical reason phrase.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The tag to add to To if it has none (RFC 3261 §8.2.6.2).
    pub fn to_tag(mut self, tag: impl Into<String>) -> Self {
        self.to_tag = Some(tag.into());
        self
    }

    /// Adds a header field.
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.draft.push(name, value);
        self
    }

    /// Adds an extension header field.
    pub fn extension_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.draft.push_extension(name.into(), value.into());
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: impl Into<String>, body: Bytes) -> Self {
        self.draft.set_body(content_type.into(), body);
        self
    }

    /// The response on the wire.
    pub fn build(&self) -> Result<Bytes, BuildError> {
        let reason = self
            .reason
            .as_deref()
            .unwrap_or(self.status.canonical_reason());
        if reason.contains(['\r', '\n']) {
            return Err(BuildError::LineBreak("reason phrase".to_owned()));
        }
        let start_line = format!("SIP/2.0 {} {reason}", self.status);
        self.draft.wire(&start_line, self.to_tag.as_deref())
    }

    /// The response, built and parsed back (which checks that every value kept its syntax).
    pub fn into_response(self, limits: &Limits) -> Result<Response, BuildError> {
        match Message::parse(self.build()?, limits)? {
            Message::Response(response) => Ok(response),
            Message::Request(_) => Err(Error::BadStartLine.into()),
        }
    }
}

/// A request under construction.
#[derive(Clone, Debug)]
pub struct RequestBuilder {
    method: Method,
    uri: String,
    draft: Draft,
}

impl RequestBuilder {
    /// A request with no header fields yet.
    pub fn new(method: Method, uri: impl Into<String>) -> Self {
        Self {
            method,
            uri: uri.into(),
            draft: Draft::default(),
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.draft.push(name, value);
        self
    }

    /// Adds an extension header field.
    pub fn extension_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.draft.push_extension(name.into(), value.into());
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: impl Into<String>, body: Bytes) -> Self {
        self.draft.set_body(content_type.into(), body);
        self
    }

    /// The request on the wire.
    pub fn build(&self) -> Result<Bytes, BuildError> {
        if self.uri.is_empty() || self.uri.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(BuildError::BadUri);
        }
        let start_line = format!("{} {} SIP/2.0", self.method, self.uri);
        self.draft.wire(&start_line, None)
    }

    /// The request, built and parsed back.
    pub fn into_request(self, limits: &Limits) -> Result<Request, BuildError> {
        match Message::parse(self.build()?, limits)? {
            Message::Request(request) => Ok(request),
            Message::Response(_) => Err(Error::BadStartLine.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Request {
        let raw = "INVITE sip:bob@example.com SIP/2.0\r\n\
                   Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP a.example.com;branch=z9hG4bK0\r\n\
                   Via: SIP/2.0/TCP\r\n origin.example.com;branch=z9hG4bKx\r\n\
                   From: Alice <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
                   Call-ID: c1@a\r\nCSeq: 7 INVITE\r\nTimestamp: 54\r\nMax-Forwards: 69\r\n\
                   Content-Type: application/sdp\r\nContent-Length: 2\r\n\r\nv=";
        Message::parse(Bytes::from(raw), &Limits::default())
            .unwrap()
            .as_request()
            .unwrap()
            .clone()
    }

    #[test]
    fn response_copies_the_transaction_fields_and_adds_the_to_tag() {
        let response = ResponseBuilder::for_request(&invite(), StatusCode::BUSY_HERE)
            .to_tag("b2")
            .into_response(&Limits::default())
            .unwrap();
        let h = response.headers();
        assert_eq!(response.status(), StatusCode::BUSY_HERE);
        assert_eq!(response.reason(), "Busy Here");
        let vias: Vec<_> = h.vias().map(|v| v.unwrap().host().to_string()).collect();
        assert_eq!(
            vias,
            ["p1.example.com", "a.example.com", "origin.example.com"]
        );
        assert_eq!(h.to().unwrap().tag(), Some("b2"));
        assert_eq!(h.from().unwrap().tag(), Some("a1"));
        assert_eq!(h.call_id().unwrap(), "c1@a");
        assert_eq!(h.cseq().unwrap().seq, 7);
        assert_eq!(h.get(HeaderName::Timestamp), None);
        assert_eq!(h.get(HeaderName::ContentLength), Some("0"));
    }

    #[test]
    fn trying_copies_timestamp_and_an_existing_to_tag_is_kept() {
        let request = invite();
        let trying = ResponseBuilder::for_request(&request, StatusCode::TRYING)
            .into_response(&Limits::default())
            .unwrap();
        assert_eq!(trying.headers().get(HeaderName::Timestamp), Some("54"));
        let again =
            ResponseBuilder::for_request(&trying_as_request(), StatusCode::OK).to_tag("new");
        let ok = again.into_response(&Limits::default()).unwrap();
        assert_eq!(ok.headers().to().unwrap().tag(), Some("old"));
    }

    fn trying_as_request() -> Request {
        let raw = "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=f\r\n\
                   To: <sip:c@d>;tag=old\r\nCall-ID: x\r\nCSeq: 2 BYE\r\n\r\n";
        Message::parse(Bytes::from(raw), &Limits::default())
            .unwrap()
            .as_request()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_built_response_is_the_same_each_time_and_sized_exactly() {
        let builder = ResponseBuilder::for_request(&invite(), StatusCode::OK)
            .to_tag("b2")
            .header(HeaderName::Contact, "<sip:b@192.0.2.9>")
            .body("application/sdp", Bytes::from_static(b"v=0\r\n"));
        let (first, second) = (builder.build().unwrap(), builder.build().unwrap());
        assert_eq!(first, second, "building does not change the builder");
        let text = std::str::from_utf8(&first).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text.contains("To: <sip:bob@example.com>;tag=b2\r\n"));
        assert!(text.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"));
    }

    #[test]
    fn header_injection_and_manual_content_length_are_refused() {
        let injected =
            ResponseBuilder::new(StatusCode::OK).header(HeaderName::Server, "x\r\nVia: evil");
        assert_eq!(
            injected.build(),
            Err(BuildError::LineBreak("Server".to_owned()))
        );
        let manual = ResponseBuilder::new(StatusCode::OK).header(HeaderName::ContentLength, "5");
        assert_eq!(manual.build(), Err(BuildError::ContentLength));
        let bad_name =
            RequestBuilder::new(Method::Options, "sip:a@b").extension_header("X Bad", "1");
        assert!(matches!(bad_name.build(), Err(BuildError::BadName(_))));
    }

    #[test]
    fn request_with_body_round_trips() {
        let request = RequestBuilder::new(Method::Message, "sip:bob@example.com")
            .header(HeaderName::Via, "SIP/2.0/UDP h;branch=z9hG4bK9")
            .extension_header("X-Tenant", "acme")
            .body("text/plain", Bytes::from_static(b"hello"))
            .into_request(&Limits::default())
            .unwrap();
        assert_eq!(request.method(), &Method::Message);
        assert_eq!(request.body().as_ref(), b"hello");
        assert_eq!(request.headers().extension("x-tenant").next(), Some("acme"));
        assert_eq!(request.headers().content_type(), Some("text/plain"));
    }
}
