//! The size limits a message must respect before any of it is trusted; one place for all of them.

/// Size limits applied while parsing and validating. A remote peer controls every byte of what
/// is parsed, so each dimension that costs memory or time is bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message (start line, header fields and body) in bytes. Default 65 535: the
    /// largest UDP payload, which also bounds what a stream connection may buffer for one
    /// message. Beyond it a request is answered with 513 Message Too Large.
    pub max_message_size: usize,
    /// Longest start line or header field (folds included) in bytes. Default 8 192: real
    /// fields, long Identity and Authorization values included, stay well below it.
    pub max_line_length: usize,
    /// Most header fields (lines, not comma-separated values). Default 128: a busy INVITE has
    /// about 20, RFC 4475's long request 45.
    pub max_headers: usize,
    /// Most Via values. Default 70: the default Max-Forwards, so a request that passed more
    /// proxies than that is looping.
    pub max_via: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 65_535,
            max_line_length: 8_192,
            max_headers: 128,
            max_via: 70,
        }
    }
}
