//! Framing on stream transports (TCP, TLS): where one message ends, from Content-Length, which
//! is mandatory there (RFC 3261 §18.3), and the CRLF keep-alives of RFC 5626 §3.5.1.

use super::error::{Error, HeaderError};
use super::grammar::parse_decimal;
use super::header::HeaderName;
use super::limits::Limits;
use super::parser::{leading_empty_lines, parse_head};

/// What the start of a stream buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of this many bytes; cut it off and give it to
    /// [`Message::parse`](super::Message::parse).
    Complete(usize),
    /// This many bytes of CRLF: a keep-alive ping (`CRLFCRLF`, to be answered with `CRLF`) or
    /// pong, or padding before a message; discard them.
    KeepAlive(usize),
    /// Not enough bytes yet.
    Incomplete,
}

/// Tells how long the first message in `buf` is.
///
/// An error means the stream cannot be framed any more (oversized, malformed header section,
/// missing or invalid Content-Length): answer with [`rejection`](super::rejection) if it allows,
/// then close the connection.
pub fn frame_length(buf: &[u8], limits: &Limits) -> Result<Frame, Error> {
    let empty = leading_empty_lines(buf);
    if empty > 0 {
        return Ok(Frame::KeepAlive(empty));
    }
    if buf == b"\r" {
        return Ok(Frame::Incomplete);
    }
    let Some(head) = parse_head(buf, limits)? else {
        return if buf.len() > limits.max_message_size {
            Err(Error::TooLarge {
                limit: limits.max_message_size,
            })
        } else {
            Ok(Frame::Incomplete)
        };
    };
    let mut lengths = head
        .fields
        .iter()
        .filter(|f| f.name == HeaderName::ContentLength);
    let field = lengths.next().ok_or(Error::MissingContentLength)?;
    if lengths.next().is_some() {
        return Err(HeaderError::duplicate(HeaderName::ContentLength).into());
    }
    let value = std::str::from_utf8(&buf[field.value.range()]).map_err(|_| Error::NotUtf8)?;
    // An absurdly long number is malformed; a merely large one is over the size limit.
    let declared = parse_decimal(value, u64::MAX)
        .map_err(HeaderError::malformed(HeaderName::ContentLength))?;
    let total = usize::try_from(declared)
        .ok()
        .and_then(|body| body.checked_add(head.body_start));
    let total = total
        .filter(|&total| total <= limits.max_message_size)
        .ok_or(Error::TooLarge {
            limit: limits.max_message_size,
        })?;
    Ok(if buf.len() >= total {
        Frame::Complete(total)
    } else {
        Frame::Incomplete
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"MESSAGE sip:a@b SIP/2.0\r\nl: 5\r\n\r\nhello";

    #[test]
    fn complete_partial_and_pipelined_messages() {
        let limits = Limits::default();
        assert_eq!(frame_length(MSG, &limits), Ok(Frame::Complete(MSG.len())));
        assert_eq!(
            frame_length(&MSG[..MSG.len() - 1], &limits),
            Ok(Frame::Incomplete)
        );
        assert_eq!(frame_length(&MSG[..10], &limits), Ok(Frame::Incomplete));
        let two = [MSG, MSG].concat();
        assert_eq!(frame_length(&two, &limits), Ok(Frame::Complete(MSG.len())));
    }

    #[test]
    fn keep_alives_are_reported_separately() {
        let limits = Limits::default();
        assert_eq!(frame_length(b"\r\n\r\n", &limits), Ok(Frame::KeepAlive(4)));
        assert_eq!(
            frame_length(b"\r\nINVITE", &limits),
            Ok(Frame::KeepAlive(2))
        );
        assert_eq!(frame_length(b"\r", &limits), Ok(Frame::Incomplete));
    }

    #[test]
    fn stream_needs_a_valid_content_length_within_the_limit() {
        let limits = Limits {
            max_message_size: 100,
            ..Limits::default()
        };
        assert_eq!(
            frame_length(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", &limits),
            Err(Error::MissingContentLength)
        );
        assert!(matches!(
            frame_length(b"OPTIONS sip:a@b SIP/2.0\r\nl: -999\r\n\r\n", &limits),
            Err(Error::Header(_))
        ));
        assert_eq!(
            frame_length(b"OPTIONS sip:a@b SIP/2.0\r\nl: 1000\r\n\r\n", &limits),
            Err(Error::TooLarge { limit: 100 })
        );
        assert_eq!(
            frame_length(&[b'x'; 101], &limits),
            Err(Error::TooLarge { limit: 100 })
        );
    }
}
