//! What a message must satisfy beyond framing before a server acts on it (RFC 3261 §8.2, §16.3,
//! §18.1.2), checked in the order that decides which error a request is answered with.

use super::error::{Error, HeaderError, ValueError};
use super::header::HeaderName;
use super::limits::Limits;
use super::message::{Headers, Request, Response};
use super::uri::Uri;

/// Checks a request; see [`Request::validate`].
pub(crate) fn request(request: &Request, limits: &Limits) -> Result<(), Error> {
    let headers = request.headers();
    transaction_fields(headers, limits)?;
    let cseq = headers.cseq()?;
    if &cseq.method != request.method() {
        return Err(Error::MethodMismatch {
            request: request.method().clone(),
        });
    }
    headers.max_forwards()?;
    match request.uri()? {
        Uri::Other(_) => return Err(Error::UnsupportedUriScheme),
        // RFC 3261 §19.1.1: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
        Uri::Sip(uri) if uri.headers().is_some() => {
            return Err(Error::RequestUri(ValueError::UriHeaders));
        }
        Uri::Sip(_) | Uri::Tel(_) => {}
    }
    headers.contacts().try_for_each(|c| c.map(drop))?;
    headers.routes().try_for_each(|r| r.map(drop))?;
    headers.record_routes().try_for_each(|r| r.map(drop))?;
    Ok(())
}

/// Checks a response; see [`Response::validate`].
pub(crate) fn response(response: &Response, limits: &Limits) -> Result<(), Error> {
    let headers = response.headers();
    transaction_fields(headers, limits)?;
    headers.cseq()?;
    Ok(())
}

/// The fields that identify the transaction and the dialog: every Via value, Call-ID, From and
/// To (CSeq is checked by the caller, a request also against its method).
fn transaction_fields(headers: &Headers, limits: &Limits) -> Result<(), Error> {
    let mut vias = 0;
    for via in headers.vias() {
        vias += 1;
        if vias > limits.max_via {
            return Err(Error::TooManyVias {
                limit: limits.max_via,
            });
        }
        if !via?.is_sip_2_0() {
            return Err(HeaderError::malformed(HeaderName::Via)(ValueError::NotSip2).into());
        }
    }
    if vias == 0 {
        return Err(HeaderError::missing(HeaderName::Via).into());
    }
    headers.call_id()?;
    headers.from()?;
    headers.to()?;
    Ok(())
}
