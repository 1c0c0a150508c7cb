//! What to do with a message that failed to parse or validate: answer it statelessly when enough
//! of it can be read to route and match a response, drop it otherwise.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::builder::ResponseBuilder;
use super::error::Error;
use super::grammar::{split_list, unfold};
use super::header::HeaderName;
use super::limits::Limits;
use super::message::Response;
use super::parser::{first_line, is_status_line, lenient_fields, request_method};
use super::via::Via;

/// The outcome for a message that was not accepted.
#[derive(Clone, Debug)]
pub enum Rejection {
    /// Send this response (to the top Via of the request, RFC 3261 §18.2.2).
    Respond(Box<Response>),
    /// Send nothing.
    Drop(DropReason),
}

/// Why a rejected message gets no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Nothing but empty lines (a keep-alive).
    Empty,
    /// A response, or something that looks like one: responses are never answered.
    NotARequest,
    /// An ACK, which is never answered (RFC 3261 §17.2.1).
    Ack,
    /// The start line does not begin with a method.
    UnreadableStartLine,
    /// A header field that a response must copy is missing or unreadable.
    Unanswerable(HeaderName),
    /// The response would break a limit (the copied fields are too large).
    ResponseNotBuilt,
}

/// Decides how to reject `buf`, whose parse or validation failed with `error`: a response with
/// the status that fits the error (400 with a reason phrase naming the problem, 505, 513, 416,
/// 501) for a request whose Via, From, To, Call-ID and CSeq can be read leniently, else a drop.
pub fn rejection(buf: &[u8], error: &Error, limits: &Limits) -> Rejection {
    match answer(buf, error, limits) {
        Ok(response) => Rejection::Respond(Box::new(response)),
        Err(reason) => Rejection::Drop(reason),
    }
}

fn answer(buf: &[u8], error: &Error, limits: &Limits) -> Result<Response, DropReason> {
    if matches!(error, Error::Empty) {
        return Err(DropReason::Empty);
    }
    let line = first_line(buf);
    if is_status_line(line) {
        return Err(DropReason::NotARequest);
    }
    match request_method(line) {
        Some("ACK") => return Err(DropReason::Ack),
        Some(_) => {}
        None => return Err(DropReason::UnreadableStartLine),
    }
    let mut copied = CopiedFields::default();
    for (name, value) in lenient_fields(buf, limits) {
        copied.keep(name, value);
    }
    let status = error.status();
    let top_via = copied.vias.first().and_then(|v| split_list(v).next());
    let top_via = top_via.ok_or(DropReason::Unanswerable(HeaderName::Via))?;
    // The response is routed by the top Via: it must be readable, whatever else is broken.
    if !Via::is_routable(top_via) {
        return Err(DropReason::Unanswerable(HeaderName::Via));
    }
    let from = required(copied.from, HeaderName::From)?;
    let to = required(copied.to, HeaderName::To)?;
    let call_id = required(copied.call_id, HeaderName::CallId)?;
    let cseq = required(copied.cseq, HeaderName::CSeq)?;
    let mut builder =
        ResponseBuilder::new(status).reason(reason_phrase(status.canonical_reason(), error));
    for via in &copied.vias {
        builder = builder.header(HeaderName::Via, unfold(via));
    }
    builder
        .header(HeaderName::From, unfold(from))
        .header(HeaderName::To, unfold(to))
        .header(HeaderName::CallId, unfold(call_id))
        .header(HeaderName::CSeq, unfold(cseq))
        .to_tag(stateless_tag(call_id, top_via, from))
        .into_response(limits)
        .map_err(|_| DropReason::ResponseNotBuilt)
}

/// A copied field's value, if present and not empty.
fn required(value: Option<&str>, name: HeaderName) -> Result<&str, DropReason> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(DropReason::Unanswerable(name))
}

/// The first value of each field a response copies, and every Via.
#[derive(Default)]
struct CopiedFields<'a> {
    vias: Vec<&'a str>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    call_id: Option<&'a str>,
    cseq: Option<&'a str>,
}

impl<'a> CopiedFields<'a> {
    fn keep(&mut self, name: HeaderName, value: &'a str) {
        let slot = match name {
            HeaderName::Via => {
                self.vias.push(value);
                return;
            }
            HeaderName::From => &mut self.from,
            HeaderName::To => &mut self.to,
            HeaderName::CallId => &mut self.call_id,
            HeaderName::CSeq => &mut self.cseq,
            _ => return,
        };
        slot.get_or_insert(value);
    }
}

/// `Bad Request (malformed To header: …)`: the canonical phrase and the problem, on one line
/// and in printable characters whatever the error quoted from the message.
fn reason_phrase(canonical: &str, error: &Error) -> String {
    let detail: String = error
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    format!("{canonical} ({detail})")
}

/// A To tag that is the same for every retransmission of the request, as a stateless answer
/// needs (RFC 3261 §16.11).
fn stateless_tag(call_id: &str, top_via: &str, from: &str) -> String {
    let mut hasher = DefaultHasher::new();
    (call_id, top_via, from).hash(&mut hasher);
    format!("sl{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::status::StatusCode;
    use bytes::Bytes;

    fn reject(raw: &str) -> Rejection {
        let limits = Limits::default();
        let error = match Message::parse(Bytes::copy_from_slice(raw.as_bytes()), &limits) {
            Ok(Message::Request(r)) => r.validate(&limits).unwrap_err(),
            Ok(Message::Response(r)) => r.validate(&limits).unwrap_err(),
            Err(e) => e,
        };
        rejection(raw.as_bytes(), &error, &limits)
    }

    const HEADERS: &str = "Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\n\
                           To: <sip:b@example.com>\r\nCall-ID: c@h\r\nCSeq: 1 OPTIONS\r\n";

    #[test]
    fn bad_version_is_answered_with_505() {
        let Rejection::Respond(r) = reject(&format!(
            "OPTIONS sip:b@example.com SIP/3.0\r\n{HEADERS}\r\n"
        )) else {
            panic!("dropped")
        };
        assert_eq!(r.status(), StatusCode::VERSION_NOT_SUPPORTED);
        assert!(r.headers().to().unwrap().tag().is_some());
        assert_eq!(r.headers().call_id(), Ok("c@h"));
    }

    #[test]
    fn reason_phrase_names_the_header() {
        let raw =
            format!("OPTIONS sip:b@example.com SIP/2.0\r\n{HEADERS}Max-Forwards: 300\r\n\r\n");
        let Rejection::Respond(r) = reject(&raw) else {
            panic!("dropped")
        };
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.reason().contains("Max-Forwards"), "{}", r.reason());
    }

    #[test]
    fn responses_acks_and_headerless_requests_are_dropped() {
        assert!(matches!(
            reject("SIP/2.0 4294967301 x\r\n\r\n"),
            Rejection::Drop(DropReason::NotARequest)
        ));
        let ack = format!("ACK sip:b@example.com SIP/3.0\r\n{HEADERS}\r\n");
        assert!(matches!(reject(&ack), Rejection::Drop(DropReason::Ack)));
        let no_call_id = "INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                          From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCSeq: 1 INVITE\r\n\r\n";
        assert!(matches!(
            reject(no_call_id),
            Rejection::Drop(DropReason::Unanswerable(HeaderName::CallId))
        ));
        assert!(matches!(
            reject("\r\n\r\n"),
            Rejection::Drop(DropReason::Empty)
        ));
    }

    #[test]
    fn stateless_tag_is_stable() {
        assert_eq!(stateless_tag("a", "b", "c"), stateless_tag("a", "b", "c"));
        assert_ne!(stateless_tag("a", "b", "c"), stateless_tag("a", "b", "d"));
    }
}
