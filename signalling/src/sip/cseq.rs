//! `CSeq = 1*DIGIT LWS Method` (RFC 3261 §20.16).

use bytes::Bytes;

use super::error::ValueError;
use super::grammar::{Cursor, is_lws, parse_decimal};
use super::method::Method;

/// A parsed CSeq value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CSeq {
    /// The sequence number (RFC 3261 §8.1.1.5: a 32-bit unsigned integer).
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Parses a CSeq value; an extension method is copied.
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let (seq, method) = split(s)?;
        Ok(Self {
            seq,
            method: method.parse()?,
        })
    }

    /// Parses a CSeq value that lies inside `buf`, so that an extension method borrows from it.
    pub(crate) fn parse_in(buf: &Bytes, s: &str) -> Result<Self, ValueError> {
        let (seq, method) = split(s)?;
        Ok(Self {
            seq,
            method: Method::from_token_in(buf, method),
        })
    }
}

fn split(s: &str) -> Result<(u32, &str), ValueError> {
    let mut c = Cursor::new(s);
    c.skip_lws();
    let seq = parse_decimal(c.take_until(is_lws), u64::from(u32::MAX))?;
    if !c.skip_lws() {
        return Err(c.unexpected("white space after the sequence number"));
    }
    let method = c.token("a method")?;
    c.finish("the end after the method")?;
    Ok((
        u32::try_from(seq).map_err(|_| ValueError::TooLarge {
            max: u64::from(u32::MAX),
        })?,
        method,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_cseq_with_leading_zeros() {
        assert_eq!(
            CSeq::parse("0009\r\n  INVITE"),
            Ok(CSeq {
                seq: 9,
                method: Method::Invite
            })
        );
    }

    #[test]
    fn overlarge_or_incomplete_cseq_is_rejected() {
        assert!(matches!(
            CSeq::parse("36893488147419103232 REGISTER"),
            Err(ValueError::TooLarge { .. })
        ));
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("INVITE").is_err());
        assert!(CSeq::parse("1 INVITE extra").is_err());
    }
}
