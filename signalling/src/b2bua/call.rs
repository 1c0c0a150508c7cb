//! One call through the B2BUA: the caller's dialog (leg A, where we are the UAS) and ours with
//! the callee (leg B, where we are the UAC), tied together with a relay session on a media node.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use centrex_coord::snapshot::{TenantSnapshot, UserEntry};
use tokio::net::UdpSocket;

use super::B2bua;
use crate::media::{Anchor, MediaPool};
use crate::sdp;
use crate::sip::{
    HeaderName, Method, Request, RequestBuilder, Response, ResponseBuilder, StatusCode, Uri,
};
use crate::transaction::client::{Action, ClientTransaction, Kind};
use crate::transaction::timers::{Reliability, TimerValues};

/// How long an ended call is remembered, to absorb retransmissions (64·T1).
const LINGER: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Calling,
    Early,
    Answered,
    Ended,
}

struct State {
    phase: Phase,
    tx: ClientTransaction,
    last_to_caller: Option<Bytes>,
    b_to_tag: Option<String>,
    b_target: Option<String>,
    a_acked: bool,
    cseq_to_a: u32,
    cseq_to_b: u32,
}

/// A call in progress.
pub struct Call {
    b2bua: Weak<B2bua>,
    socket: Arc<UdpSocket>,
    advertise: SocketAddr,
    pool: MediaPool,
    anchor: Anchor,
    a_invite: Request,
    a_source: SocketAddr,
    a_call_id: String,
    a_to_tag: String,
    b_call_id: String,
    b_from: String,
    b_to: String,
    b_branch: String,
    b_uri: String,
    b_destination: SocketAddr,
    b_invite: Bytes,
    state: Mutex<State>,
}

/// A random token for tags, branches and Call-IDs.
pub fn tag() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

impl Call {
    /// Anchors the media, sends the INVITE to the callee, and answers the caller 100 Trying.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        b2bua: Arc<B2bua>,
        a_invite: Request,
        a_source: SocketAddr,
        tenant: &TenantSnapshot,
        caller: &UserEntry,
        callee_contact: &str,
        b_destination: SocketAddr,
        pool: MediaPool,
        socket: Arc<UdpSocket>,
        advertise: SocketAddr,
    ) -> Result<Arc<Self>, StatusCode> {
        let headers = a_invite.headers();
        let a_call_id = headers
            .call_id()
            .map_err(|_| StatusCode::BAD_REQUEST)?
            .to_string();
        let hops = headers.max_forwards().ok().flatten().unwrap_or(70);
        if hops == 0 {
            return Err(StatusCode::TOO_MANY_HOPS);
        }
        let offer =
            std::str::from_utf8(a_invite.body()).map_err(|_| StatusCode::NOT_ACCEPTABLE_HERE)?;
        let caller_media =
            sdp::audio_endpoint(offer).map_err(|_| StatusCode::NOT_ACCEPTABLE_HERE)?;
        let anchor = pool
            .anchor(&session_id(&a_call_id), &a_call_id, &tenant.domain)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "cannot anchor media");
                StatusCode::SERVICE_UNAVAILABLE
            })?;
        let caller_rtp = SocketAddr::new(caller_media.address, caller_media.port);
        if let Err(error) = pool
            .point(
                &anchor,
                "a",
                caller_rtp,
                caller_media.rtcp_mux,
                &caller_media.rtpmaps,
            )
            .await
        {
            tracing::warn!(%error, "cannot point the caller's leg");
            let _ = pool.release(&anchor).await;
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        let offer_to_callee = sdp::anchor(offer, anchor.b.address, anchor.b.port);

        let callee = headers.to().ok().and_then(|to| match to.uri() {
            Uri::Sip(uri) => uri.user().map(str::to_string),
            _ => None,
        });
        let display = caller
            .display_name
            .as_deref()
            .map(|n| format!("\"{}\" ", n.replace('"', "")))
            .unwrap_or_default();
        let b_from = format!("{display}<sip:{}@{}>", caller.extension, tenant.domain);
        let b_to = format!("<sip:{}@{}>", callee.unwrap_or_default(), tenant.domain);
        let (b_call_id, b_branch, b_from_tag) = (
            format!("{}@centrex", tag()),
            format!("z9hG4bK{}", tag()),
            tag(),
        );
        let b_from = format!("{b_from};tag={b_from_tag}");
        let b_invite = RequestBuilder::new(Method::Invite, callee_contact)
            .header(
                HeaderName::Via,
                format!("SIP/2.0/UDP {advertise};branch={b_branch};rport"),
            )
            .header(HeaderName::MaxForwards, (hops - 1).to_string())
            .header(HeaderName::From, b_from.clone())
            .header(HeaderName::To, b_to.clone())
            .header(HeaderName::CallId, b_call_id.clone())
            .header(HeaderName::CSeq, "1 INVITE")
            .header(HeaderName::Contact, format!("<sip:centrex@{advertise}>"))
            .body("application/sdp", Bytes::from(offer_to_callee))
            .build()
            .map_err(|_| StatusCode::SERVER_INTERNAL_ERROR)?;
        let trying = ResponseBuilder::for_request(&a_invite, StatusCode::TRYING)
            .build()
            .ok();
        let call = Arc::new(Self {
            b2bua: Arc::downgrade(&b2bua),
            socket,
            advertise,
            pool,
            anchor,
            a_source,
            a_call_id,
            a_to_tag: tag(),
            b_call_id,
            b_from,
            b_to,
            b_branch,
            b_uri: callee_contact.to_string(),
            b_destination,
            b_invite: b_invite.clone(),
            a_invite,
            state: Mutex::new(State {
                phase: Phase::Calling,
                tx: ClientTransaction::start(
                    Kind::Invite,
                    Reliability::Unreliable,
                    TimerValues::default(),
                    Instant::now(),
                ),
                last_to_caller: trying,
                b_to_tag: None,
                b_target: None,
                a_acked: false,
                cseq_to_a: 1,
                cseq_to_b: 1,
            }),
        });
        call.send_to_callee(&b_invite).await;
        tokio::spawn(call.clone().drive_invite());
        Ok(call)
    }

    pub fn a_call_id(&self) -> &str {
        &self.a_call_id
    }

    pub fn b_call_id(&self) -> &str {
        &self.b_call_id
    }

    /// The latest response to the caller's INVITE (what a retransmitted INVITE gets again).
    pub fn last_answer_to_caller(&self) -> Option<Bytes> {
        self.state.lock().expect("call lock").last_to_caller.clone()
    }

    /// A response from the callee.
    pub async fn response(self: &Arc<Self>, response: Response) {
        let headers = response.headers();
        let Ok(cseq) = headers.cseq() else { return };
        if cseq.method != Method::Invite
            || headers.top_via().ok().and_then(|v| v.branch()) != Some(self.b_branch.as_str())
        {
            return; // a response to our BYE or CANCEL: nothing more to do over it
        }
        let status = response.status().as_u16();
        let actions = self
            .state
            .lock()
            .expect("call lock")
            .tx
            .on_response(status, Instant::now());
        let answered_again = (200..300).contains(&status)
            && self.state.lock().expect("call lock").phase == Phase::Answered;
        if answered_again {
            // A retransmitted 2xx: our ACK was lost, send it again.
            self.ack_2xx().await;
            return;
        }
        for action in actions {
            match action {
                Action::SendAck => self.ack_failure(&response).await,
                Action::Deliver(status) => self.relay(&response, status).await,
                _ => {}
            }
        }
    }

    /// Relays a response of the callee's INVITE to the caller.
    async fn relay(self: &Arc<Self>, response: &Response, status: u16) {
        if status == 100 {
            return;
        }
        let status_code = response.status();
        let answer = std::str::from_utf8(response.body())
            .ok()
            .filter(|b| !b.is_empty())
            .map(str::to_string);
        if let Some(answer) = &answer
            && let Ok(media) = sdp::audio_endpoint(answer)
        {
            let rtp = SocketAddr::new(media.address, media.port);
            if let Err(error) = self
                .pool
                .point(&self.anchor, "b", rtp, media.rtcp_mux, &media.rtpmaps)
                .await
            {
                tracing::warn!(%error, "cannot point the callee's leg");
            }
        }
        let mut builder =
            ResponseBuilder::for_request(&self.a_invite, status_code).to_tag(self.a_to_tag.clone());
        if status < 300 {
            builder = builder.header(
                HeaderName::Contact,
                format!("<sip:centrex@{}>", self.advertise),
            );
        }
        if let Some(answer) = &answer {
            builder = builder.body(
                "application/sdp",
                Bytes::from(sdp::anchor(
                    answer,
                    self.anchor.a.address,
                    self.anchor.a.port,
                )),
            );
        }
        let Ok(bytes) = builder.build() else { return };
        {
            let mut state = self.state.lock().expect("call lock");
            state.last_to_caller = Some(bytes.clone());
            match status {
                101..=199 => state.phase = Phase::Early,
                200..=299 => {
                    state.phase = Phase::Answered;
                    state.b_to_tag = response
                        .headers()
                        .to()
                        .ok()
                        .and_then(|t| t.tag().map(str::to_string));
                    state.b_target = response
                        .headers()
                        .contacts()
                        .next()
                        .and_then(Result::ok)
                        .and_then(|c| c.address().map(|a| a.uri().as_str().to_string()));
                }
                _ => state.phase = Phase::Ended,
            }
        }
        self.send_to_caller(&bytes).await;
        match status {
            200..=299 => {
                self.ack_2xx().await;
                tokio::spawn(self.clone().retransmit_2xx(bytes));
            }
            300.. => self.end().await,
            _ => {}
        }
    }

    /// A request inside this call, from either party.
    pub async fn request(
        self: &Arc<Self>,
        request: &Request,
        _source: SocketAddr,
    ) -> Option<Bytes> {
        let from_caller = request.headers().call_id().ok() == Some(self.a_call_id.as_str());
        let respond =
            |status: StatusCode| ResponseBuilder::for_request(request, status).build().ok();
        match (request.method(), from_caller) {
            (Method::Ack, true) => {
                self.state.lock().expect("call lock").a_acked = true;
                None
            }
            (Method::Ack, false) => None,
            (Method::Bye, true) => {
                self.bye_callee().await;
                self.end().await;
                respond(StatusCode::OK)
            }
            (Method::Bye, false) => {
                self.bye_caller().await;
                self.end().await;
                respond(StatusCode::OK)
            }
            (Method::Cancel, true) => {
                let phase = self.state.lock().expect("call lock").phase;
                if matches!(phase, Phase::Calling | Phase::Early) {
                    self.cancel_callee().await;
                    if let Ok(terminated) =
                        ResponseBuilder::for_request(&self.a_invite, StatusCode::REQUEST_TERMINATED)
                            .to_tag(self.a_to_tag.clone())
                            .build()
                    {
                        self.state.lock().expect("call lock").last_to_caller =
                            Some(terminated.clone());
                        self.send_to_caller(&terminated).await;
                    }
                    self.end().await;
                }
                respond(StatusCode::OK)
            }
            // re-INVITE, UPDATE, INFO…: relayed in a later step of issue #4.
            _ => respond(StatusCode::NOT_IMPLEMENTED),
        }
    }

    /// Ends the call: media released, the call forgotten after absorbing retransmissions.
    async fn end(self: &Arc<Self>) {
        self.state.lock().expect("call lock").phase = Phase::Ended;
        if let Err(error) = self.pool.release(&self.anchor).await {
            tracing::warn!(%error, session = self.anchor.session_id, "media session not released; its idle timeout will");
        }
        let call = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            if let Some(b2bua) = call.b2bua.upgrade() {
                b2bua.forget(&call);
            }
        });
    }

    /// Drives the callee INVITE's client transaction timers (A, B, D).
    async fn drive_invite(self: Arc<Self>) {
        loop {
            let Some(deadline) = self.state.lock().expect("call lock").tx.next_deadline() else {
                return;
            };
            tokio::time::sleep_until(deadline.into()).await;
            let actions = self
                .state
                .lock()
                .expect("call lock")
                .tx
                .on_timer(Instant::now());
            for action in actions {
                match action {
                    Action::Retransmit => self.send_to_callee(&self.b_invite).await,
                    Action::TimedOut => {
                        if let Ok(timeout) = ResponseBuilder::for_request(
                            &self.a_invite,
                            StatusCode::REQUEST_TIMEOUT,
                        )
                        .to_tag(self.a_to_tag.clone())
                        .build()
                        {
                            self.state.lock().expect("call lock").last_to_caller =
                                Some(timeout.clone());
                            self.send_to_caller(&timeout).await;
                        }
                        self.end().await;
                        return;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Retransmits the 2xx to the caller until its ACK (RFC 3261 §13.3.1.4); without one, hangs up.
    async fn retransmit_2xx(self: Arc<Self>, ok: Bytes) {
        let timers = TimerValues::default();
        let (mut interval, started) = (timers.t1, Instant::now());
        loop {
            tokio::time::sleep(interval).await;
            if self.state.lock().expect("call lock").a_acked {
                return;
            }
            if self.state.lock().expect("call lock").phase == Phase::Ended {
                return;
            }
            if started.elapsed() >= timers.timeout() {
                tracing::warn!(call_id = self.a_call_id, "no ACK for 200 OK: hanging up");
                self.bye_callee().await;
                self.end().await;
                return;
            }
            self.send_to_caller(&ok).await;
            interval = timers.backoff(interval, true);
        }
    }

    async fn ack_failure(&self, response: &Response) {
        let to = response
            .headers()
            .get(HeaderName::To)
            .unwrap_or_default()
            .to_string();
        let ack = RequestBuilder::new(Method::Ack, self.b_uri.clone())
            .header(
                HeaderName::Via,
                format!(
                    "SIP/2.0/UDP {};branch={};rport",
                    self.advertise, self.b_branch
                ),
            )
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, self.b_from.clone())
            .header(HeaderName::To, to)
            .header(HeaderName::CallId, self.b_call_id.clone())
            .header(HeaderName::CSeq, "1 ACK")
            .build();
        if let Ok(ack) = ack {
            self.send_to_callee(&ack).await;
        }
    }

    async fn ack_2xx(&self) {
        if let Some(ack) = self.in_dialog_to_callee(Method::Ack, Some(1)) {
            self.send_to_callee(&ack).await;
        }
    }

    async fn bye_callee(&self) {
        let answered = self.state.lock().expect("call lock").phase == Phase::Answered;
        if answered && let Some(bye) = self.in_dialog_to_callee(Method::Bye, None) {
            self.send_to_callee(&bye).await;
        }
    }

    async fn cancel_callee(&self) {
        let cancel = RequestBuilder::new(Method::Cancel, self.b_uri.clone())
            .header(
                HeaderName::Via,
                format!(
                    "SIP/2.0/UDP {};branch={};rport",
                    self.advertise, self.b_branch
                ),
            )
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, self.b_from.clone())
            .header(HeaderName::To, self.b_to.clone())
            .header(HeaderName::CallId, self.b_call_id.clone())
            .header(HeaderName::CSeq, "1 CANCEL")
            .build();
        if let Ok(cancel) = cancel {
            self.send_to_callee(&cancel).await;
        }
    }

    /// ACK (with the INVITE's CSeq) or BYE (the next CSeq) in our dialog with the callee.
    fn in_dialog_to_callee(&self, method: Method, cseq: Option<u32>) -> Option<Bytes> {
        let mut state = self.state.lock().expect("call lock");
        let cseq = cseq.unwrap_or_else(|| {
            state.cseq_to_b += 1;
            state.cseq_to_b
        });
        let target = state.b_target.clone().unwrap_or_else(|| self.b_uri.clone());
        let to = match &state.b_to_tag {
            Some(tag) => format!("{};tag={tag}", self.b_to),
            None => self.b_to.clone(),
        };
        RequestBuilder::new(method.clone(), target)
            .header(
                HeaderName::Via,
                format!(
                    "SIP/2.0/UDP {};branch=z9hG4bK{};rport",
                    self.advertise,
                    tag()
                ),
            )
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, self.b_from.clone())
            .header(HeaderName::To, to)
            .header(HeaderName::CallId, self.b_call_id.clone())
            .header(HeaderName::CSeq, format!("{cseq} {method}"))
            .build()
            .ok()
    }

    /// BYE to the caller: we are the UAS of that dialog, so From and To are the INVITE's swapped.
    async fn bye_caller(&self) {
        let headers = self.a_invite.headers();
        let target = headers
            .contacts()
            .next()
            .and_then(Result::ok)
            .and_then(|c| c.address().map(|a| a.uri().as_str().to_string()))
            .unwrap_or_else(|| self.a_invite.uri_str().to_string());
        let cseq = {
            let mut state = self.state.lock().expect("call lock");
            state.cseq_to_a += 1;
            state.cseq_to_a
        };
        let bye = RequestBuilder::new(Method::Bye, target)
            .header(
                HeaderName::Via,
                format!(
                    "SIP/2.0/UDP {};branch=z9hG4bK{};rport",
                    self.advertise,
                    tag()
                ),
            )
            .header(HeaderName::MaxForwards, "70")
            .header(
                HeaderName::From,
                format!(
                    "{};tag={}",
                    headers.get(HeaderName::To).unwrap_or_default(),
                    self.a_to_tag
                ),
            )
            .header(
                HeaderName::To,
                headers
                    .get(HeaderName::From)
                    .unwrap_or_default()
                    .to_string(),
            )
            .header(HeaderName::CallId, self.a_call_id.clone())
            .header(HeaderName::CSeq, format!("{cseq} BYE"))
            .build();
        if let Ok(bye) = bye {
            self.send_to_caller(&bye).await;
        }
    }

    async fn send_to_caller(&self, bytes: &[u8]) {
        if let Err(error) = self.socket.send_to(bytes, self.a_source).await {
            tracing::debug!(%error, "cannot send to the caller");
        }
    }

    async fn send_to_callee(&self, bytes: &[u8]) {
        if let Err(error) = self.socket.send_to(bytes, self.b_destination).await {
            tracing::debug!(%error, "cannot send to the callee");
        }
    }
}

/// The relay session id of a call: stable for its Call-ID, so a retried allocation is idempotent.
fn session_id(call_id: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(call_id.as_bytes())[..16])
}
