//! Shared by the property tests, the mutation harness and the fuzz target: run every entry point
//! of the message layer over some bytes and check the invariants that must hold for any input.

#![allow(dead_code)]

use bytes::Bytes;
use centrex_signalling::sip::{
    HeaderName, Limits, Message, Rejection, canonical, frame_length, rejection,
};

/// The parts of a message that a canonical re-encoding must keep.
pub fn view(msg: &Message) -> (String, Vec<(HeaderName, String, String)>, Bytes) {
    let start = match msg {
        Message::Request(r) => format!("{} {}", r.method(), r.uri_str()),
        Message::Response(r) => format!("{} {}", r.status(), r.reason()),
    };
    let headers = msg
        .headers()
        .iter()
        .filter(|h| h.name != HeaderName::ContentLength)
        .map(|h| {
            (
                h.name,
                h.raw_name.to_ascii_lowercase(),
                h.value_unfolded().into_owned(),
            )
        })
        .map(|(name, raw, value)| {
            (
                name,
                if name == HeaderName::Other {
                    raw
                } else {
                    String::new()
                },
                value,
            )
        })
        .collect();
    (start, headers, msg.body().clone())
}

/// Parses, validates, reads every structured header, frames and rejects `bytes`; panics if an
/// invariant breaks. Returns whether the message was accepted.
pub fn exercise(bytes: Bytes) -> bool {
    let limits = Limits::default();
    let _ = frame_length(&bytes, &limits);
    let msg = match Message::parse(bytes.clone(), &limits) {
        Ok(msg) => msg,
        Err(error) => {
            check_rejection(&bytes, &error, &limits);
            return false;
        }
    };
    read_everything(&msg);
    let again = Message::parse(canonical(&msg), &limits).expect("a canonical message re-parses");
    assert_eq!(
        view(&msg),
        view(&again),
        "canonical re-encoding changed the message"
    );
    assert_eq!(
        canonical(&again),
        canonical(&msg),
        "canonical encoding is not stable"
    );
    let valid = match &msg {
        Message::Request(r) => r.validate(&limits),
        Message::Response(r) => r.validate(&limits),
    };
    match valid {
        Ok(()) => true,
        Err(error) => {
            check_rejection(&bytes, &error, &limits);
            false
        }
    }
}

fn check_rejection(bytes: &[u8], error: &centrex_signalling::sip::Error, limits: &Limits) {
    if let Rejection::Respond(response) = rejection(bytes, error, limits) {
        assert_eq!(response.status(), error.status());
        // The copied fields may be as broken as the request, but they are all there.
        for name in [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            assert!(
                response.headers().get(name).is_some(),
                "rejection lacks {name}"
            );
        }
    }
}

fn read_everything(msg: &Message) {
    let h = msg.headers();
    if let Message::Request(r) = msg {
        let _ = r.uri();
    }
    let _ = (
        h.call_id(),
        h.cseq(),
        h.from(),
        h.to(),
        h.max_forwards(),
        h.expires(),
        h.content_type(),
    );
    for via in h.vias().flatten() {
        let _ = (
            via.branch(),
            via.received(),
            via.rport(),
            via.maddr(),
            via.ttl(),
            via.params().iter().count(),
        );
    }
    for contact in h.contacts().flatten() {
        let _ = (contact.expires(), contact.q());
        if let Some(a) = contact.address() {
            let _ = (
                a.display_name().map(|d| d.text()),
                a.tag(),
                a.params().iter().count(),
            );
        }
    }
    let _ = h
        .routes()
        .chain(h.record_routes())
        .flatten()
        .map(|r| r.uri().as_str().len())
        .sum::<usize>();
    for name in [HeaderName::Accept, HeaderName::Supported, HeaderName::Allow] {
        let _ = h.values(name).count();
    }
}
