//! The first parsing stage: the start line, the boundaries and names of the header fields, and
//! where the body starts. One pass over the bytes, no copy; values are left for later.

use std::ops::Range;

use memchr::{memchr, memchr_iter, memrchr};

use super::error::{Error, ValueError};
use super::grammar::{is_lws, is_token};
use super::header::HeaderName;
use super::limits::Limits;
use super::status::StatusCode;

/// A byte range of the message buffer; `u32` keeps a field index entry small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span of `range`, which lies in a buffer of at most `u32::MAX` bytes.
    pub(crate) fn new(range: Range<usize>) -> Self {
        // Callers reject larger buffers first (`Error::TooLarge`).
        Self {
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    /// The span as a range.
    pub(crate) fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// The parsed start line.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StartLine {
    /// `Method SP Request-URI SP SIP-Version`.
    Request { method: Span, uri: Span },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`.
    Response { status: StatusCode, reason: Span },
}

/// One header field: its recognised name, and the spans of its name and value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    pub(crate) name: HeaderName,
    pub(crate) raw_name: Span,
    pub(crate) value: Span,
}

/// The start line and header fields of a message whose header section is complete.
#[derive(Debug)]
pub(crate) struct Head {
    /// Where the start line begins (after any leading empty lines, RFC 3261 §7.5).
    pub(crate) start: usize,
    pub(crate) start_line: StartLine,
    pub(crate) fields: Vec<Field>,
    /// Where the body begins, right after the empty line.
    pub(crate) body_start: usize,
}

/// The number of leading CRLF (or LF) bytes, which precede a message or make a keep-alive.
pub(crate) fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// Parses the start line and indexes the header fields; `Ok(None)` when the header section is
/// not complete yet (a stream needs more bytes; a datagram is truncated).
pub(crate) fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, Error> {
    let start = leading_empty_lines(buf);
    let Some((line_end, mut pos)) = find_line(buf, start) else {
        return if buf.len() - start > limits.max_line_length {
            Err(Error::LineTooLong {
                limit: limits.max_line_length,
            })
        } else {
            Ok(None)
        };
    };
    let line = &buf[start..line_end];
    if line.len() > limits.max_line_length {
        return Err(Error::LineTooLong {
            limit: limits.max_line_length,
        });
    }
    if has_bare_cr(line) {
        return Err(Error::BareCr);
    }
    let start_line = parse_start_line(line, start)?;
    let mut fields = Vec::with_capacity(16);
    loop {
        match scan_field(buf, pos, limits) {
            Scan::Field { name, value, next } => {
                if fields.len() == limits.max_headers {
                    return Err(Error::TooManyHeaders {
                        limit: limits.max_headers,
                    });
                }
                fields.push(Field {
                    name: HeaderName::from_bytes(&buf[name.clone()]),
                    raw_name: Span::new(name),
                    value: Span::new(value),
                });
                pos = next;
            }
            Scan::End { body_start } => {
                // Header values are handed out as &str: check once that they are UTF-8.
                std::str::from_utf8(&buf[start..body_start]).map_err(|_| Error::NotUtf8)?;
                return Ok(Some(Head {
                    start,
                    start_line,
                    fields,
                    body_start,
                }));
            }
            Scan::Incomplete => return Ok(None),
            Scan::Bad { error, .. } => return Err(error),
        }
    }
}

/// Header fields read leniently, skipping the lines that do not parse: what is left of a bad
/// message to answer it with. Bounded like a strict parse.
pub(crate) fn lenient_fields<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> impl Iterator<Item = (HeaderName, &'a str)> + use<'a> {
    let start = leading_empty_lines(buf);
    let mut pos = find_line(buf, start).map_or(buf.len(), |(_, next)| next);
    let limits = limits.clone();
    let mut remaining = limits.max_headers;
    std::iter::from_fn(move || {
        while remaining > 0 {
            remaining -= 1;
            match scan_field(buf, pos, &limits) {
                Scan::Field { name, value, next } => {
                    pos = next;
                    if let Ok(value) = std::str::from_utf8(&buf[value]) {
                        return Some((HeaderName::from_bytes(&buf[name]), value));
                    }
                }
                Scan::Bad { next, .. } => pos = next,
                Scan::End { .. } | Scan::Incomplete => return None,
            }
        }
        None
    })
}

/// The first line of `buf` (the start line), leading empty lines skipped.
pub(crate) fn first_line(buf: &[u8]) -> &[u8] {
    let start = leading_empty_lines(buf);
    match find_line(buf, start) {
        Some((end, _)) => &buf[start..end],
        None => &buf[start..],
    }
}

/// Whether a start line is a Status-Line (responses start with the version).
pub(crate) fn is_status_line(line: &[u8]) -> bool {
    line.get(..4)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"SIP/"))
}

/// The method token of a Request-Line, if it starts with one.
pub(crate) fn request_method(line: &[u8]) -> Option<&str> {
    let method = &line[..memchr(b' ', line)?];
    let method = std::str::from_utf8(method).ok()?;
    (!method.is_empty() && method.bytes().all(is_token)).then_some(method)
}

fn parse_start_line(line: &[u8], offset: usize) -> Result<StartLine, Error> {
    if is_status_line(line) {
        parse_status_line(line, offset)
    } else {
        parse_request_line(line, offset)
    }
}

fn parse_request_line(line: &[u8], offset: usize) -> Result<StartLine, Error> {
    let method_end = request_method(line).ok_or(Error::BadStartLine)?.len();
    if line.last().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(Error::ExtraWhitespace);
    }
    let version_start = memrchr(b' ', line)
        .filter(|&i| i > method_end)
        .ok_or(Error::BadStartLine)?
        + 1;
    check_version(&line[version_start..])?;
    let uri = &line[method_end + 1..version_start - 1];
    match uri {
        [] | [b' ', ..] => return Err(Error::ExtraWhitespace),
        [.., b' '] => return Err(Error::ExtraWhitespace),
        _ if uri.iter().any(|&b| is_lws(b)) => {
            return Err(Error::RequestUri(ValueError::WhitespaceInUri));
        }
        _ => {}
    }
    Ok(StartLine::Request {
        method: Span::new(offset..offset + method_end),
        uri: Span::new(offset + method_end + 1..offset + version_start - 1),
    })
}

fn parse_status_line(line: &[u8], offset: usize) -> Result<StartLine, Error> {
    let version_end = memchr(b' ', line).ok_or(Error::BadStartLine)?;
    check_version(&line[..version_end])?;
    let rest = &line[version_end + 1..];
    let (code, reason_start) = match rest {
        [a, b, c] => ([*a, *b, *c], rest.len()),
        [a, b, c, b' ', ..] => ([*a, *b, *c], 4),
        _ => return Err(Error::BadStatusCode),
    };
    let status = std::str::from_utf8(&code)
        .ok()
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
        .and_then(StatusCode::new)
        .ok_or(Error::BadStatusCode)?;
    let reason = offset + version_end + 1 + reason_start..offset + line.len();
    Ok(StartLine::Response {
        status,
        reason: Span::new(reason),
    })
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT`, case-insensitive (RFC 3261 §7.1); only 2.0 is
/// spoken here.
fn check_version(v: &[u8]) -> Result<(), Error> {
    let digits = v
        .get(4..)
        .filter(|_| is_status_line(v))
        .ok_or(Error::BadStartLine)?;
    let dot = memchr(b'.', digits).ok_or(Error::BadStartLine)?;
    let (major, minor) = (&digits[..dot], &digits[dot + 1..]);
    let numeric = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
    if !numeric(major) || !numeric(minor) {
        return Err(Error::BadStartLine);
    }
    if digits != b"2.0" {
        return Err(Error::VersionNotSupported);
    }
    Ok(())
}

/// What one step of the header scan found.
enum Scan {
    Field {
        name: Range<usize>,
        value: Range<usize>,
        next: usize,
    },
    End {
        body_start: usize,
    },
    Incomplete,
    Bad {
        error: Error,
        next: usize,
    },
}

/// Reads the header field starting at `pos`, continuation lines included.
fn scan_field(buf: &[u8], pos: usize, limits: &Limits) -> Scan {
    let Some((end, mut next)) = find_line(buf, pos) else {
        return Scan::Incomplete;
    };
    if end == pos {
        return Scan::End { body_start: next };
    }
    let mut value_end = end;
    while let Some(b' ' | b'\t') = buf.get(next) {
        match find_line(buf, next) {
            Some((e, n)) => (value_end, next) = (e, n),
            None => return Scan::Incomplete,
        }
    }
    let bad = |error| Scan::Bad { error, next };
    let line = &buf[pos..value_end];
    if matches!(line[0], b' ' | b'\t') {
        return bad(Error::LeadingFold);
    }
    if line.len() > limits.max_line_length {
        return bad(Error::LineTooLong {
            limit: limits.max_line_length,
        });
    }
    if has_bare_cr(line) {
        return bad(Error::BareCr);
    }
    let Some(colon) = memchr(b':', line) else {
        return bad(Error::MissingColon);
    };
    // White space may separate the name from the colon (RFC 3261 HCOLON).
    let name_len = line[..colon]
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    if name_len == 0 || !line[..name_len].iter().all(|&b| is_token(b)) {
        return bad(Error::BadHeaderName);
    }
    let value = &line[colon + 1..];
    let lead = value
        .iter()
        .position(|&b| !is_lws(b))
        .unwrap_or(value.len());
    let trail = value
        .iter()
        .rposition(|&b| !is_lws(b))
        .map_or(lead, |i| i + 1);
    let value_start = pos + colon + 1;
    Scan::Field {
        name: pos..pos + name_len,
        value: value_start + lead..value_start + trail,
        next,
    }
}

/// The line starting at `from`: where it ends (before CR LF or LF) and where the next begins.
fn find_line(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = from + memchr(b'\n', buf.get(from..)?)?;
    let end = if nl > from && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

/// Whether `line` holds a CR that is not followed by LF (lines may be read differently by
/// another parser, which smuggles header fields past this one).
fn has_bare_cr(line: &[u8]) -> bool {
    memchr_iter(b'\r', line).any(|i| line.get(i + 1) != Some(&b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<Head>, Error> {
        parse_head(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn request_line_white_space_errors_are_distinguished() {
        assert_eq!(
            head("INVITE  sip:a@b  SIP/2.0\r\n\r\n").unwrap_err(),
            Error::ExtraWhitespace
        );
        assert_eq!(
            head("OPTIONS sip:a@b SIP/2.0  \r\n\r\n").unwrap_err(),
            Error::ExtraWhitespace
        );
        assert_eq!(
            head("INVITE sip:a@b; lr SIP/2.0\r\n\r\n").unwrap_err(),
            Error::RequestUri(ValueError::WhitespaceInUri)
        );
        assert_eq!(
            head("OPTIONS sip:a@b SIP/7.0\r\n\r\n").unwrap_err(),
            Error::VersionNotSupported
        );
        assert_eq!(
            head("OPTIONS sip:a@b HTTP/1.1\r\n\r\n").unwrap_err(),
            Error::BadStartLine
        );
    }

    #[test]
    fn status_line_needs_a_three_digit_code() {
        assert_eq!(
            head("SIP/2.0 4294967301 x\r\n\r\n").unwrap_err(),
            Error::BadStatusCode
        );
        assert_eq!(
            head("SIP/2.0 099 x\r\n\r\n").unwrap_err(),
            Error::BadStatusCode
        );
        assert!(head("SIP/2.0 100 \r\n\r\n").unwrap().is_some());
        assert!(head("sip/2.0 100\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn folded_fields_and_spaces_before_the_colon() {
        let h = head("OPTIONS sip:a@b SIP/2.0\r\nTO :\r\n sip:a@b\r\ncseq: 0009\r\n  INVITE\r\ns :\r\n\r\nbody")
            .unwrap()
            .unwrap();
        let names: Vec<_> = h.fields.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [HeaderName::To, HeaderName::CSeq, HeaderName::Subject]
        );
        assert_eq!(h.fields[2].value.range().len(), 0);
        assert_eq!(
            &"OPTIONS sip:a@b SIP/2.0\r\nTO :\r\n sip:a@b\r\ncseq: 0009\r\n  INVITE\r\ns :\r\n\r\nbody"
                [h.body_start..],
            "body"
        );
    }

    #[test]
    fn incomplete_heads_ask_for_more_and_bad_lines_fail() {
        assert!(
            head("OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n")
                .unwrap()
                .is_none()
        );
        assert_eq!(
            head("OPTIONS sip:a@b SIP/2.0\r\nno colon\r\n\r\n").unwrap_err(),
            Error::MissingColon
        );
        assert_eq!(
            head("OPTIONS sip:a@b SIP/2.0\r\n folded\r\n\r\n").unwrap_err(),
            Error::LeadingFold
        );
        assert_eq!(
            head("OPTIONS sip:a@b SIP/2.0\r\nX: a\rVia: b\r\n\r\n").unwrap_err(),
            Error::BareCr
        );
        assert_eq!(
            head("OPTIONS sip:a@b SIP/2.0\r\nBad Name: a\r\n\r\n").unwrap_err(),
            Error::BadHeaderName
        );
    }

    #[test]
    fn limits_bound_lines_and_fields() {
        let limits = Limits {
            max_headers: 2,
            max_line_length: 40,
            ..Limits::default()
        };
        let many = "OPTIONS sip:a@b SIP/2.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_head(many.as_bytes(), &limits).unwrap_err(),
            Error::TooManyHeaders { limit: 2 }
        );
        let long = format!("OPTIONS sip:a@b SIP/2.0\r\nA: {}\r\n\r\n", "x".repeat(50));
        assert_eq!(
            parse_head(long.as_bytes(), &limits).unwrap_err(),
            Error::LineTooLong { limit: 40 }
        );
    }

    #[test]
    fn lenient_scan_skips_bad_lines() {
        let buf = b"INVITE sip:a@b SIP/2.0\r\nbad line\r\nCall-ID: x\r\n\r\n";
        let fields: Vec<_> = lenient_fields(buf, &Limits::default()).collect();
        assert_eq!(fields, [(HeaderName::CallId, "x")]);
    }
}
