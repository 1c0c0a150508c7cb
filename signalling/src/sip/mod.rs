//! The SIP message layer (RFC 3261 §7, §20, §25): a zero-copy, lazily parsed view of a message,
//! stream framing, size limits, validation, the stateless answer to a malformed request, and
//! builders that serialise messages back to bytes.
//!
//! Parsing is two-staged, as in Kamailio and OpenSIPS: [`Message::parse`] finds the start line,
//! the header field boundaries and names, and the body, once, without copying the buffer; the
//! structured value of a header field (Via, From, CSeq, Contact…) is parsed only when it is asked
//! for, and borrows from the buffer. [`Request::validate`] runs the RFC 3261 checks a server makes
//! before it processes a request; [`rejection`] turns a failure of either stage into the response
//! the sender is owed, or tells that the message has to be dropped.
//!
//! ```
//! use bytes::Bytes;
//! use centrex_signalling::sip::{Limits, Message, Method};
//!
//! let raw = Bytes::from_static(
//!     b"OPTIONS sip:alice@example.com SIP/2.0\r\n\
//!       v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
//!       f: <sip:bob@example.com>;tag=1\r\nt: sip:alice@example.com\r\n\
//!       i: abc@192.0.2.1\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n",
//! );
//! let Message::Request(request) = Message::parse(raw, &Limits::default())? else { panic!() };
//! request.validate(&Limits::default())?;
//! assert_eq!(request.method(), &Method::Options);
//! assert_eq!(request.headers().top_via()?.branch(), Some("z9hG4bK1"));
//! # Ok::<(), centrex_signalling::sip::Error>(())
//! ```

#![warn(missing_docs)]

mod builder;
mod cseq;
mod error;
mod framing;
mod grammar;
mod header;
mod host;
mod limits;
mod message;
mod method;
mod name_addr;
mod params;
mod parser;
mod reject;
mod serialize;
mod status;
mod uri;
mod validate;
mod via;

pub use builder::{BuildError, RequestBuilder, ResponseBuilder};
pub use cseq::CSeq;
pub use error::{Error, HeaderError, HeaderErrorKind, ValueError};
pub use framing::{Frame, frame_length};
pub use header::{Header, HeaderName};
pub use host::Host;
pub use limits::Limits;
pub use message::{Headers, Message, Request, Response};
pub use method::{ExtensionMethod, Method};
pub use name_addr::{Contact, DisplayName, NameAddr};
pub use params::{ParamIter, Params};
pub use reject::{DropReason, Rejection, rejection};
pub use serialize::canonical;
pub use status::{StatusClass, StatusCode};
pub use uri::{OtherUri, Scheme, SipUri, TelUri, Uri, UriParams, percent_decode};
pub use via::{MAGIC_COOKIE, Transport, Via};
