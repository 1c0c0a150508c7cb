//! Canonical re-encoding of a parsed message: what a proxy forwards and what the round-trip
//! tests compare. The exact received bytes are [`Message::as_bytes`].

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::header::HeaderName;
use super::message::Message;

/// `msg` re-encoded with long header names, one space after each colon, folds replaced by a
/// space, and one Content-Length equal to the body; values, their order and the body are kept.
pub fn canonical(msg: &Message) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.as_bytes().len() + 32);
    match msg {
        Message::Request(r) => {
            let _ = write!(out, "{} {} SIP/2.0\r\n", r.method(), r.uri_str());
        }
        Message::Response(r) => {
            let _ = write!(out, "SIP/2.0 {} {}\r\n", r.status(), r.reason());
        }
    }
    for header in msg
        .headers()
        .iter()
        .filter(|h| h.name != HeaderName::ContentLength)
    {
        let name = match header.name {
            HeaderName::Other => header.raw_name,
            known => known.as_str(),
        };
        let _ = write!(out, "{name}: {}\r\n", header.value_unfolded());
    }
    let body = msg.body();
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.put_slice(body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Limits;

    #[test]
    fn compact_folded_message_is_rewritten_in_long_form() {
        let raw = "OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP\r\n  h;branch=z9hG4bK1\r\nX-Y :  1\r\nl: 2\r\n\r\nabEXTRA";
        let msg = Message::parse(Bytes::from(raw), &Limits::default()).unwrap();
        assert_eq!(
            canonical(&msg),
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nX-Y: 1\r\nContent-Length: 2\r\n\r\nab"
        );
    }
}
