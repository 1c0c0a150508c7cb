//! `*( SEMI generic-param )` after a header field value (RFC 3261 §25.1): validated once when the
//! value is parsed, then iterated on demand without allocating.

use super::error::ValueError;
use std::borrow::Cow;

use super::grammar::{ByteSet, Cursor, unfold};

/// The parameters of a header field value (Via, From, To, Contact…).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a str,
}

/// Iterator over [`Params`]: name, and value if there is one. A quoted-string value keeps its
/// quotes and escapes.
#[derive(Clone, Debug)]
pub struct ParamIter<'a> {
    cursor: Cursor<'a>,
}

impl<'a> Params<'a> {
    /// Reads parameters from the cursor to the end of the value; fails on the first malformed one.
    pub(crate) fn parse(cursor: &mut Cursor<'a>) -> Result<Self, ValueError> {
        let mark = cursor.rest();
        while next_param(cursor)?.is_some() {}
        Ok(Self {
            raw: cursor.since(mark),
        })
    }

    /// The parameters in order.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter {
            cursor: Cursor::new(self.raw),
        }
    }

    /// The parameter `name` (case-insensitive): `Some(None)` when present without a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The parameters as received, from the first `;`.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        // The text was validated by `Params::parse`, so an error cannot occur here.
        next_param(&mut self.cursor).ok().flatten()
    }
}

/// `gen-value = token / host / quoted-string`; `:` and `[]` cover IPv6 addresses in `received`
/// and `maddr`, which RFC 3261 writes without brackets.
fn is_value_char(b: u8) -> bool {
    VALUE.contains(b)
}

const VALUE: ByteSet = ByteSet::alphanumeric_and(b"-.!%*_+`'~:[]");

/// Reads `SEMI name [EQUAL value]`, or `None` at the end of the value (white space aside).
fn next_param<'a>(
    cursor: &mut Cursor<'a>,
) -> Result<Option<(&'a str, Option<&'a str>)>, ValueError> {
    cursor.skip_lws();
    if cursor.at_end() {
        return Ok(None);
    }
    cursor.expect(b';', "';' before a parameter")?;
    cursor.skip_lws();
    let name = cursor.token("a parameter name")?;
    if !cursor.separator(b'=') {
        return Ok(Some((name, None)));
    }
    let value = if cursor.peek() == Some(b'"') {
        cursor.quoted_string()?
    } else {
        let value = cursor.take_while(is_value_char);
        if value.is_empty() {
            return Err(cursor.unexpected("a parameter value"));
        }
        value
    };
    Ok(Some((name, Some(value))))
}

/// The text inside a quoted string, folds made spaces and escapes removed; any other value as
/// it is.
pub(crate) fn unquote(value: &str) -> Cow<'_, str> {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.into();
    };
    // A CR or LF cannot be escaped (quoted-pair), so any inside the quotes belongs to a fold.
    match unfold(inner) {
        Cow::Borrowed(inner) if !inner.contains('\\') => inner.into(),
        inner => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or(c)
                } else {
                    c
                });
            }
            out.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: &str) -> Result<Params<'_>, ValueError> {
        let mut c = Cursor::new(s);
        Params::parse(&mut c)
    }

    #[test]
    fn white_space_and_folds_around_separators_are_allowed() {
        let p = params(" ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33").unwrap();
        let all: Vec<_> = p.iter().collect();
        assert_eq!(
            all,
            [
                ("newparam", Some("newvalue")),
                ("secondparam", None),
                ("q", Some("0.33"))
            ]
        );
        assert_eq!(p.get("Q"), Some(Some("0.33")));
    }

    #[test]
    fn quoted_values_and_ipv6_values_are_kept() {
        let p = params(r#";x="a \"b\"";received=2001:db8::9"#).unwrap();
        assert_eq!(p.get("x"), Some(Some(r#""a \"b\"""#)));
        assert_eq!(unquote(p.get("x").flatten().unwrap()), r#"a "b""#);
        assert_eq!(p.get("received"), Some(Some("2001:db8::9")));
    }

    #[test]
    fn empty_parameters_are_rejected() {
        assert!(params(";;").is_err());
        assert!(params(";tag=").is_err());
        assert!(params("tag=1").is_err());
    }
}
