//! RFC 3261 §25.1 basic rules shared by the value parsers: character classes, linear white space,
//! tokens, quoted strings, numbers and comma-separated lists.

use super::error::ValueError;

/// A set of bytes, as a lookup table: the parsers test every byte of every value.
pub(crate) struct ByteSet([bool; 256]);

impl ByteSet {
    /// The set of alphanumerics and `extra`.
    pub(crate) const fn alphanumeric_and(extra: &[u8]) -> Self {
        let mut set = [false; 256];
        let mut b = 0;
        while b < 256 {
            set[b] = (b as u8).is_ascii_alphanumeric();
            b += 1;
        }
        let mut i = 0;
        while i < extra.len() {
            set[extra[i] as usize] = true;
            i += 1;
        }
        Self(set)
    }

    /// Whether `b` is in the set.
    pub(crate) const fn contains(&self, b: u8) -> bool {
        self.0[b as usize]
    }
}

const TOKEN: ByteSet = ByteSet::alphanumeric_and(b"-.!%*_+`'~");
const WORD: ByteSet = ByteSet::alphanumeric_and(b"-.!%*_+`'~()<>:\\\"/[]?{}");

/// `token` characters: alphanum and `-.!%*_+`'~`.
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN.contains(b)
}

/// `word` characters (Call-ID): token characters plus `()<>:\"/[]?{}`.
pub(crate) fn is_word(b: u8) -> bool {
    WORD.contains(b)
}

/// White space inside a header value; CR and LF only occur there as part of a fold.
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Whether `s` is a non-empty `token`.
pub(crate) fn is_token_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token)
}

/// `s` without leading and trailing linear white space (including folds).
pub(crate) fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// The position of the ASCII byte `b` in `s`; values are short, so a plain scan beats the
/// set-up of a vectorised search.
pub(crate) fn find_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|c| c == b)
}

/// `s` split at every ASCII byte `b`.
pub(crate) fn split_byte(s: &str, b: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let current = rest?;
        match find_byte(current, b) {
            Some(i) => {
                rest = Some(&current[i + 1..]);
                Some(&current[..i])
            }
            None => rest.take(),
        }
    })
}

/// Parses `1*DIGIT` (leading zeros allowed) into an integer no larger than `max`.
pub(crate) fn parse_decimal(s: &str, max: u64) -> Result<u64, ValueError> {
    if s.is_empty() {
        return Err(ValueError::Empty);
    }
    s.bytes().try_fold(0u64, |acc, b| {
        if !b.is_ascii_digit() {
            return Err(ValueError::NotANumber);
        }
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .filter(|v| *v <= max)
            .ok_or(ValueError::TooLarge { max })
    })
}

/// A cursor over a header field value (or part of one).
///
/// Every position it stops at is an ASCII delimiter or the end, so slicing the `&str` at those
/// positions never splits a UTF-8 sequence.
#[derive(Clone, Debug)]
pub(crate) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `s`.
    pub(crate) fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }

    /// The unread rest.
    pub(crate) fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    /// The text consumed since `mark`, an earlier [`Cursor::rest`] of this cursor.
    pub(crate) fn since(&self, mark: &'a str) -> &'a str {
        &mark[..mark.len() - self.rest().len()]
    }

    /// Whether everything has been read.
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// The next byte, unread.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// Skips linear white space; tells whether there was any.
    pub(crate) fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Consumes `b` if it is next.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.pos += 1;
        }
        found
    }

    /// Consumes `b`, or fails naming what was expected.
    pub(crate) fn expect(&mut self, b: u8, expected: &'static str) -> Result<(), ValueError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// Consumes a separator with optional white space around it (`SEMI`, `COLON`, `SLASH`…).
    pub(crate) fn separator(&mut self, b: u8) -> bool {
        let start = self.pos;
        self.skip_lws();
        if self.eat(b) {
            self.skip_lws();
            true
        } else {
            self.pos = start;
            false
        }
    }

    /// Consumes the longest run of bytes satisfying `pred` (which must treat all non-ASCII bytes
    /// alike, so that the run ends on a character boundary).
    pub(crate) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        let rest = &self.s.as_bytes()[start..];
        self.pos += rest.iter().position(|&b| !pred(b)).unwrap_or(rest.len());
        &self.s[start..self.pos]
    }

    /// Consumes everything up to (not including) the first byte satisfying `stop`.
    pub(crate) fn take_until(&mut self, stop: impl Fn(u8) -> bool) -> &'a str {
        self.take_while(|b| !stop(b))
    }

    /// Consumes a non-empty `token`.
    pub(crate) fn token(&mut self, expected: &'static str) -> Result<&'a str, ValueError> {
        let token = self.take_while(is_token);
        if token.is_empty() {
            Err(self.unexpected(expected))
        } else {
            Ok(token)
        }
    }

    /// Consumes a `quoted-string` starting at the opening quote; returns it with its quotes.
    pub(crate) fn quoted_string(&mut self) -> Result<&'a str, ValueError> {
        let start = self.pos;
        self.expect(b'"', "'\"'")?;
        let bytes = self.s.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(&self.s[start..self.pos]);
                }
                // quoted-pair: any octet but CR and LF may be escaped, NUL included.
                b'\\' => match bytes.get(self.pos + 1) {
                    Some(b'\r' | b'\n') | None => return Err(ValueError::UnterminatedQuote),
                    Some(escaped) if *escaped >= 0x80 => {
                        return Err(self.unexpected("ASCII after '\\'"));
                    }
                    Some(_) => self.pos += 2,
                },
                // qdtext excludes control characters other than the white space of a fold.
                b if (b < 0x20 && !is_lws(b)) || b == 0x7f => {
                    return Err(self.unexpected("text inside quotes"));
                }
                _ => self.pos += 1,
            }
        }
        Err(ValueError::UnterminatedQuote)
    }

    /// An error saying what was expected at the current position and what was found.
    pub(crate) fn unexpected(&self, expected: &'static str) -> ValueError {
        ValueError::Unexpected {
            expected,
            found: self.rest().chars().next(),
        }
    }

    /// Fails unless only white space is left.
    pub(crate) fn finish(&mut self, expected: &'static str) -> Result<(), ValueError> {
        self.skip_lws();
        if self.at_end() {
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }
}

/// Splits a header value on the commas that separate list elements, leaving alone the commas
/// inside quoted strings and inside `<…>`; yields every element trimmed, empty ones included.
pub(crate) fn split_list(value: &str) -> ListIter<'_> {
    ListIter { rest: Some(value) }
}

/// Iterator returned by [`split_list`].
#[derive(Clone, Debug)]
pub(crate) struct ListIter<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let bytes = rest.as_bytes();
        let (mut quoted, mut escaped, mut angle) = (false, false, false);
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                b',' if !quoted && !angle => {
                    self.rest = Some(&rest[i + 1..]);
                    return Some(trim_lws(&rest[..i]));
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(trim_lws(rest))
    }
}

/// `s` with each fold (CRLF or LF followed by white space) replaced by one space.
pub(crate) fn unfold(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\n') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                while chars.next_if(|c| matches!(c, ' ' | '\t')).is_some() {}
                out.push(' ');
            }
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_split_respects_quotes_and_angle_brackets() {
        let items: Vec<_> = split_list(r#""a, \"b" <sip:x;p=1,2>;q=1 , <sip:y> ,"#).collect();
        assert_eq!(items, [r#""a, \"b" <sip:x;p=1,2>;q=1"#, "<sip:y>", ""]);
    }

    #[test]
    fn decimal_rejects_overflow_and_signs() {
        assert_eq!(parse_decimal("0068", 255), Ok(68));
        assert_eq!(
            parse_decimal("256", 255),
            Err(ValueError::TooLarge { max: 255 })
        );
        assert_eq!(parse_decimal("-1", 255), Err(ValueError::NotANumber));
        assert!(parse_decimal("36893488147419103232", u64::from(u32::MAX)).is_err());
    }

    #[test]
    fn quoted_string_keeps_escapes_and_rejects_unterminated() {
        let mut c = Cursor::new(r#""J Rosenberg \\\"" <sip"#);
        assert_eq!(c.quoted_string(), Ok(r#""J Rosenberg \\\"""#));
        assert_eq!(
            Cursor::new("\"Mr. J. User <sip:j@x>").quoted_string(),
            Err(ValueError::UnterminatedQuote)
        );
    }

    #[test]
    fn unfold_replaces_folds_with_one_space() {
        assert_eq!(unfold("a\r\n  b\n\tc"), "a b c");
    }
}
