//! One call through the B2BUA: the caller's dialog (leg A, where we are the UAS) and ours with
//! the callee (leg B, where we are the UAC), tied together with a relay session on a media node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use centrex_coord::snapshot::{TenantSnapshot, UserEntry};

use super::B2bua;
use crate::media::{Anchor, MediaPool};
use crate::sdp;
use crate::sip::{
    HeaderName, Method, Request, RequestBuilder, Response, ResponseBuilder, StatusCode, Uri,
};
use crate::transaction::client::{Action, ClientTransaction, Kind};
use crate::transaction::timers::TimerValues;
use crate::transport::{Outbound, Peer};

/// How long an ended call is remembered, to absorb retransmissions (64·T1).
const LINGER: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Calling,
    Early,
    Answered,
    Ended,
}

/// One branch of the INVITE to the callee: one of their registered phones.
struct Fork {
    branch: String,
    uri: String,
    destination: Peer,
    invite: Bytes,
    tx: ClientTransaction,
    /// Final status received (or 408 when Timer B fired).
    final_status: Option<u16>,
}

/// A re-INVITE or UPDATE being passed from one party to the other.
struct Pending {
    from_caller: bool,
    original: Request,
    /// Branch of the original, to recognise its retransmissions.
    original_branch: String,
    /// Branch of what we forwarded, to match the answer.
    branch: String,
    forwarded: Bytes,
    destination: Peer,
    cseq: u32,
    /// Our answer to the original, once there is one (sent again on retransmissions).
    answered: Option<Bytes>,
    /// The original sender acknowledged our 2xx (a re-INVITE's): retransmissions stop.
    acked: bool,
}

struct State {
    phase: Phase,
    pending: Option<Pending>,
    forks: Vec<Fork>,
    /// The fork that answered: where in-dialog requests go.
    winner: Option<usize>,
    last_to_caller: Option<Bytes>,
    b_to_tag: Option<String>,
    b_target: Option<String>,
    a_acked: bool,
    cseq_to_a: u32,
    cseq_to_b: u32,
    /// Our BYEs and CANCELs awaiting a final answer, by branch: retransmitted over UDP (Timer E)
    /// until one comes or Timer F gives up.
    requests: HashMap<String, ClientTransaction>,
}

/// A call in progress.
pub struct Call {
    b2bua: Weak<B2bua>,
    out: Arc<Outbound>,
    pool: MediaPool,
    anchor: Anchor,
    a_invite: Request,
    a_source: Peer,
    a_call_id: String,
    a_to_tag: String,
    b_call_id: String,
    b_from: String,
    b_to: String,
    state: Mutex<State>,
}

/// A random token for tags, branches and Call-IDs.
pub fn tag() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

impl Call {
    /// Anchors the media and prepares the INVITE to each of the callee's phones ([`Call::ring`]
    /// sends them); the caller's answer so far is 100 Trying.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        b2bua: Arc<B2bua>,
        a_invite: Request,
        a_source: Peer,
        tenant: &TenantSnapshot,
        caller: &UserEntry,
        targets: &[(String, Peer)],
        pool: MediaPool,
        out: Arc<Outbound>,
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
            .anchor(
                &session_id(&a_call_id),
                &a_call_id,
                &tenant.domain,
                caller_media.rtcp_mux,
            )
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
        let (b_call_id, b_from_tag) = (format!("{}@centrex", tag()), tag());
        let b_from = format!("{b_from};tag={b_from_tag}");
        // One INVITE per registered phone, same dialog identifiers, a branch each (RFC 3261 §16.6).
        let mut forks = Vec::with_capacity(targets.len());
        for (uri, destination) in targets {
            let branch = format!("z9hG4bK{}", tag());
            let invite = RequestBuilder::new(Method::Invite, uri.clone())
                .header(HeaderName::Via, via(&out, *destination, &branch))
                .header(HeaderName::MaxForwards, (hops - 1).to_string())
                .header(HeaderName::From, b_from.clone())
                .header(HeaderName::To, b_to.clone())
                .header(HeaderName::CallId, b_call_id.clone())
                .header(HeaderName::CSeq, "1 INVITE")
                .header(HeaderName::Contact, contact(&out, *destination))
                .body("application/sdp", Bytes::from(offer_to_callee.clone()))
                .build()
                .map_err(|_| StatusCode::SERVER_INTERNAL_ERROR)?;
            let tx = ClientTransaction::start(
                Kind::Invite,
                destination.transport.reliability(),
                TimerValues::default(),
                Instant::now(),
            );
            forks.push(Fork {
                branch,
                uri: uri.clone(),
                destination: *destination,
                invite,
                tx,
                final_status: None,
            });
        }
        let trying = ResponseBuilder::for_request(&a_invite, StatusCode::TRYING)
            .build()
            .ok();
        let call = Arc::new(Self {
            b2bua: Arc::downgrade(&b2bua),
            out,
            pool,
            anchor,
            a_source,
            a_call_id,
            a_to_tag: tag(),
            b_call_id,
            b_from,
            b_to,
            a_invite,
            state: Mutex::new(State {
                phase: Phase::Calling,
                pending: None,
                forks,
                winner: None,
                last_to_caller: trying,
                b_to_tag: None,
                b_target: None,
                a_acked: false,
                cseq_to_a: 1,
                cseq_to_b: 1,
                requests: HashMap::new(),
            }),
        });
        Ok(call)
    }

    /// Sends the INVITE to every phone of the callee. Only once the call can be found by its
    /// Call-IDs: a phone that answers at once must not find it missing.
    pub async fn ring(self: &Arc<Self>) {
        let invites: Vec<(Bytes, Peer)> = {
            let state = self.state.lock().expect("call lock");
            state
                .forks
                .iter()
                .map(|f| (f.invite.clone(), f.destination))
                .collect()
        };
        for (index, (invite, destination)) in invites.into_iter().enumerate() {
            self.send(&invite, destination).await;
            tokio::spawn(self.clone().drive_fork(index));
        }
    }

    /// Ended (lingering only to absorb retransmissions).
    pub fn is_over(&self) -> bool {
        self.state.lock().expect("call lock").phase == Phase::Ended
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

    /// A response from one of the callee's phones.
    pub async fn response(self: &Arc<Self>, response: Response) {
        let headers = response.headers();
        let Ok(cseq) = headers.cseq() else { return };
        let branch = headers
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_string));
        let key = branch.as_deref().map(|b| match cseq.method {
            Method::Cancel => cancel_key(b),
            _ => b.to_string(),
        });
        if let Some(key) = &key
            && let Some(tx) = self.state.lock().expect("call lock").requests.get_mut(key)
        {
            // An answer to our BYE or CANCEL: it stops the retransmissions.
            tx.on_response(response.status().as_u16(), Instant::now());
            return;
        }
        let passed_on = {
            let state = self.state.lock().expect("call lock");
            state
                .pending
                .as_ref()
                .is_some_and(|p| Some(&p.branch) == branch.as_ref() && p.answered.is_none())
        };
        if passed_on {
            self.answer_passed_on(&response).await;
            return;
        }
        let fork = {
            let state = self.state.lock().expect("call lock");
            state
                .forks
                .iter()
                .position(|f| Some(&f.branch) == branch.as_ref())
        };
        // Responses to our BYE or CANCEL need nothing more; neither do strays.
        let (Some(fork), Method::Invite) = (fork, cseq.method) else {
            return;
        };
        let status = response.status().as_u16();
        let (actions, phase, winner) = {
            let mut state = self.state.lock().expect("call lock");
            let actions = state.forks[fork].tx.on_response(status, Instant::now());
            (actions, state.phase, state.winner)
        };
        let answered_before =
            phase == Phase::Answered || (phase == Phase::Ended && winner.is_some());
        if (200..300).contains(&status) && answered_before {
            if winner == Some(fork) {
                // A retransmitted 2xx: our ACK was lost, send it again.
                self.ack_2xx().await;
            } else {
                // Another phone answered too late: acknowledge and hang it up.
                self.ack_and_bye_late_answer(fork, &response).await;
            }
            return;
        }
        if (200..300).contains(&status) && phase == Phase::Ended {
            // The caller gave up (CANCEL, timeout) as this phone answered.
            self.ack_and_bye_late_answer(fork, &response).await;
            return;
        }
        for action in actions {
            match action {
                Action::SendAck => self.ack_failure(fork, &response).await,
                // The caller has its final answer already.
                Action::Deliver(_) if phase == Phase::Ended => {}
                Action::Deliver(status) if status >= 300 => {
                    self.fork_failed(fork, status, &response).await
                }
                Action::Deliver(status) => {
                    if (200..300).contains(&status) {
                        self.state.lock().expect("call lock").winner = Some(fork);
                        self.cancel_other_forks(Some(fork)).await;
                    }
                    self.relay(&response, status).await;
                }
                _ => {}
            }
        }
    }

    /// One phone refused (or timed out): when every phone has, the caller gets the best answer.
    async fn fork_failed(self: &Arc<Self>, fork: usize, status: u16, response: &Response) {
        let best = {
            let mut state = self.state.lock().expect("call lock");
            state.forks[fork].final_status = Some(status);
            if state.phase == Phase::Answered
                || state.forks.iter().any(|f| f.final_status.is_none())
            {
                return;
            }
            best_failure(state.forks.iter().filter_map(|f| f.final_status))
        };
        if best == status {
            self.relay(response, status).await;
        } else if let Some(code) = StatusCode::new(best) {
            self.fail_caller(code).await;
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
            self.unmux_caller_if_refused(media.rtcp_mux).await;
        }
        let mut builder =
            ResponseBuilder::for_request(&self.a_invite, status_code).to_tag(self.a_to_tag.clone());
        if status < 300 {
            builder = builder.header(HeaderName::Contact, contact(&self.out, self.a_source));
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
            // Responses are handled concurrently: a 180 can get here after the 200 sent just
            // behind it. Nothing follows a final answer (RFC 3261 §13.2.2), so it is dropped.
            if state.phase == Phase::Answered || state.phase == Phase::Ended {
                return;
            }
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

    /// The caller offered RTCP multiplexing and the callee's answer refused it: the caller will
    /// send RTCP to the port after RTP, so its leg binds that port too (RFC 5761 §5.1.1).
    async fn unmux_caller_if_refused(&self, answer_muxed: bool) {
        let Ok(offer) = std::str::from_utf8(self.a_invite.body()) else {
            return;
        };
        let Ok(caller) = sdp::audio_endpoint(offer) else {
            return;
        };
        if caller.rtcp_mux && !answer_muxed {
            let rtp = SocketAddr::new(caller.address, caller.port);
            if let Err(error) = self
                .pool
                .point(&self.anchor, "a", rtp, false, &caller.rtpmaps)
                .await
            {
                tracing::warn!(%error, "cannot give the caller's leg an RTCP port");
            }
        }
    }

    /// A request inside this call, from either party.
    pub async fn request(self: &Arc<Self>, request: &Request, _source: Peer) -> Option<Bytes> {
        let from_caller = request.headers().call_id().ok() == Some(self.a_call_id.as_str());
        let respond =
            |status: StatusCode| ResponseBuilder::for_request(request, status).build().ok();
        match (request.method(), from_caller) {
            (Method::Ack, from_caller) => {
                let cseq = request.headers().cseq().ok().map(|c| c.seq);
                let mut state = self.state.lock().expect("call lock");
                if from_caller {
                    state.a_acked = true;
                }
                if let Some(pending) = state.pending.as_mut()
                    && pending.from_caller == from_caller
                    && pending.original.headers().cseq().ok().map(|c| c.seq) == cseq
                {
                    pending.acked = true;
                }
                None
            }
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
                    self.cancel_other_forks(None).await;
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
            (Method::Invite | Method::Update, from_caller) => {
                self.pass_on(request, from_caller).await
            }
            // INFO, MESSAGE, REFER…: not relayed yet (issue #4).
            _ => respond(StatusCode::NOT_IMPLEMENTED),
        }
    }

    /// Passes a re-INVITE or UPDATE of an answered call to the other party, with its SDP pointed
    /// at the relay (and the relay leg pointed at the sender's new address).
    async fn pass_on(self: &Arc<Self>, request: &Request, from_caller: bool) -> Option<Bytes> {
        let respond =
            |status: StatusCode| ResponseBuilder::for_request(request, status).build().ok();
        let branch = request
            .headers()
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_string))?;
        {
            let state = self.state.lock().expect("call lock");
            if state.phase != Phase::Answered {
                return respond(StatusCode::REQUEST_PENDING);
            }
            if let Some(pending) = &state.pending {
                if pending.original_branch == branch {
                    // A retransmission: our answer again, or the request passed on again (it may
                    // have been lost) while we wait for one.
                    if let Some(answer) = &pending.answered {
                        return Some(answer.clone());
                    }
                    let (forwarded, destination) = (pending.forwarded.clone(), pending.destination);
                    drop(state);
                    let out = self.out.clone();
                    tokio::spawn(async move { out.send(&forwarded, destination).await });
                    return None;
                }
                if pending.answered.is_none() {
                    return respond(StatusCode::REQUEST_PENDING);
                }
            }
        }
        let (from_leg, to_leg) = if from_caller {
            ("a", self.anchor.b)
        } else {
            ("b", self.anchor.a)
        };
        let mut body = None;
        if let Ok(offer) = std::str::from_utf8(request.body())
            && let Ok(media) = sdp::audio_endpoint(offer)
        {
            let rtp = SocketAddr::new(media.address, media.port);
            if let Err(error) = self
                .pool
                .point(&self.anchor, from_leg, rtp, media.rtcp_mux, &media.rtpmaps)
                .await
            {
                tracing::warn!(%error, "cannot re-point a relay leg");
            }
            body = Some(sdp::anchor(offer, to_leg.address, to_leg.port));
        }
        let method = request.method().clone();
        let Some((forwarded, sent_branch, cseq, destination)) =
            self.in_dialog(from_caller, method, body)
        else {
            return respond(StatusCode::SERVER_INTERNAL_ERROR);
        };
        self.state.lock().expect("call lock").pending = Some(Pending {
            from_caller,
            original: request.clone(),
            original_branch: branch,
            branch: sent_branch,
            forwarded: forwarded.clone(),
            destination,
            cseq,
            answered: None,
            acked: false,
        });
        self.send(&forwarded, destination).await;
        None
    }

    /// The other party answered a request we passed on: answer the original the same way.
    async fn answer_passed_on(self: &Arc<Self>, response: &Response) {
        let status = response.status();
        if status.is_provisional() {
            return;
        }
        let Some((from_caller, original, cseq, destination, branch)) = self
            .state
            .lock()
            .expect("call lock")
            .pending
            .as_ref()
            .map(|p| {
                (
                    p.from_caller,
                    p.original.clone(),
                    p.cseq,
                    p.destination,
                    p.branch.clone(),
                )
            })
        else {
            return;
        };
        let (answering_leg, original_leg) = if from_caller {
            ("b", self.anchor.a)
        } else {
            ("a", self.anchor.b)
        };
        let mut builder = ResponseBuilder::for_request(&original, status);
        if let Ok(answer) = std::str::from_utf8(response.body())
            && let Ok(media) = sdp::audio_endpoint(answer)
        {
            let rtp = SocketAddr::new(media.address, media.port);
            if let Err(error) = self
                .pool
                .point(
                    &self.anchor,
                    answering_leg,
                    rtp,
                    media.rtcp_mux,
                    &media.rtpmaps,
                )
                .await
            {
                tracing::warn!(%error, "cannot re-point a relay leg");
            }
            builder = builder.body(
                "application/sdp",
                Bytes::from(sdp::anchor(answer, original_leg.address, original_leg.port)),
            );
        }
        if status.is_success() {
            let original_sender = if from_caller {
                Some(self.a_source)
            } else {
                self.callee()
            };
            if let Some(peer) = original_sender {
                builder = builder.header(HeaderName::Contact, contact(&self.out, peer));
            }
        }
        let Ok(answer) = builder.build() else { return };
        if let Some(pending) = self.state.lock().expect("call lock").pending.as_mut() {
            pending.answered = Some(answer.clone());
        }
        self.send_to_party(from_caller, &answer).await;
        if status.is_success() && original.method() == &Method::Invite {
            tokio::spawn(
                self.clone()
                    .retransmit_reinvite_2xx(from_caller, answer.clone()),
            );
        }
        // Our own INVITE transaction with the answering party ends with our ACK.
        if original.method() == &Method::Invite {
            let to = response
                .headers()
                .get(HeaderName::To)
                .unwrap_or_default()
                .to_string();
            let ack_branch = if status.is_success() {
                format!("z9hG4bK{}", tag())
            } else {
                branch
            };
            if let Some(ack) = self.ack_in_dialog(from_caller, &to, cseq, &ack_branch) {
                self.send(&ack, destination).await;
            }
        }
    }

    /// A request in our dialog with the callee (`to_callee`) or the caller, with the next CSeq:
    /// `(bytes, branch, cseq, destination)`.
    fn in_dialog(
        &self,
        to_callee: bool,
        method: Method,
        body: Option<String>,
    ) -> Option<(Bytes, String, u32, Peer)> {
        let branch = format!("z9hG4bK{}", tag());
        let mut state = self.state.lock().expect("call lock");
        let (uri, from, to, call_id, cseq, destination) = if to_callee {
            let winner = state.winner?;
            state.cseq_to_b += 1;
            let to = match &state.b_to_tag {
                Some(tag) => format!("{};tag={tag}", self.b_to),
                None => self.b_to.clone(),
            };
            let uri = state
                .b_target
                .clone()
                .unwrap_or_else(|| state.forks[winner].uri.clone());
            (
                uri,
                self.b_from.clone(),
                to,
                self.b_call_id.clone(),
                state.cseq_to_b,
                state.forks[winner].destination,
            )
        } else {
            state.cseq_to_a += 1;
            let (uri, from) = self.caller_dialog();
            let to = self
                .a_invite
                .headers()
                .get(HeaderName::From)
                .unwrap_or_default()
                .to_string();
            (
                uri,
                from,
                to,
                self.a_call_id.clone(),
                state.cseq_to_a,
                self.a_source,
            )
        };
        drop(state);
        let mut builder = RequestBuilder::new(method.clone(), uri)
            .header(HeaderName::Via, via(&self.out, destination, &branch))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, from)
            .header(HeaderName::To, to)
            .header(HeaderName::CallId, call_id)
            .header(HeaderName::CSeq, format!("{cseq} {method}"))
            .header(HeaderName::Contact, contact(&self.out, destination));
        if let Some(body) = body {
            builder = builder.body("application/sdp", Bytes::from(body));
        }
        Some((builder.build().ok()?, branch, cseq, destination))
    }

    /// The ACK of a re-INVITE we sent (`to_callee` or to the caller), answered with `to`.
    fn ack_in_dialog(&self, to_callee: bool, to: &str, cseq: u32, branch: &str) -> Option<Bytes> {
        let state = self.state.lock().expect("call lock");
        let (uri, from, call_id, peer) = if to_callee {
            let winner = state.winner?;
            let uri = state
                .b_target
                .clone()
                .unwrap_or_else(|| state.forks[winner].uri.clone());
            let peer = state.forks[winner].destination;
            (uri, self.b_from.clone(), self.b_call_id.clone(), peer)
        } else {
            let (uri, from) = self.caller_dialog();
            (uri, from, self.a_call_id.clone(), self.a_source)
        };
        drop(state);
        RequestBuilder::new(Method::Ack, uri)
            .header(HeaderName::Via, via(&self.out, peer, branch))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, from)
            .header(HeaderName::To, to.to_string())
            .header(HeaderName::CallId, call_id)
            .header(HeaderName::CSeq, format!("{cseq} ACK"))
            .build()
            .ok()
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

    /// Drives the client transaction timers (A, B, D) of one fork.
    async fn drive_fork(self: Arc<Self>, fork: usize) {
        loop {
            let Some(deadline) = self.state.lock().expect("call lock").forks[fork]
                .tx
                .next_deadline()
            else {
                return;
            };
            tokio::time::sleep_until(deadline.into()).await;
            let (actions, invite, destination) = {
                let mut state = self.state.lock().expect("call lock");
                let fork = &mut state.forks[fork];
                (
                    fork.tx.on_timer(Instant::now()),
                    fork.invite.clone(),
                    fork.destination,
                )
            };
            for action in actions {
                match action {
                    Action::Retransmit => self.send(&invite, destination).await,
                    Action::TimedOut => {
                        let best = {
                            let mut state = self.state.lock().expect("call lock");
                            state.forks[fork].final_status = Some(408);
                            let pending = state.forks.iter().any(|f| f.final_status.is_none());
                            (state.phase != Phase::Answered && !pending).then(|| {
                                best_failure(state.forks.iter().filter_map(|f| f.final_status))
                            })
                        };
                        if let Some(code) = best.and_then(StatusCode::new) {
                            self.fail_caller(code).await;
                        }
                        return;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Answers the caller's INVITE with a failure and ends the call.
    async fn fail_caller(self: &Arc<Self>, status: StatusCode) {
        if let Ok(failure) = ResponseBuilder::for_request(&self.a_invite, status)
            .to_tag(self.a_to_tag.clone())
            .build()
        {
            self.state.lock().expect("call lock").last_to_caller = Some(failure.clone());
            self.send_to_caller(&failure).await;
        }
        self.end().await;
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

    /// Retransmits our 2xx to a re-INVITE until its sender ACKs it (RFC 3261 §13.3.1.4); a
    /// missing ACK after 64·T1 is only logged: the call itself is fine.
    async fn retransmit_reinvite_2xx(self: Arc<Self>, to_caller: bool, ok: Bytes) {
        let timers = TimerValues::default();
        let (mut interval, started) = (timers.t1, Instant::now());
        loop {
            tokio::time::sleep(interval).await;
            let done = {
                let state = self.state.lock().expect("call lock");
                state.phase == Phase::Ended
                    || state
                        .pending
                        .as_ref()
                        .is_none_or(|p| p.acked || p.answered.as_ref() != Some(&ok))
            };
            if done {
                return;
            }
            if started.elapsed() >= timers.timeout() {
                tracing::debug!(call_id = self.a_call_id, "no ACK for a re-INVITE's 200 OK");
                return;
            }
            self.send_to_party(to_caller, &ok).await;
            interval = timers.backoff(interval, true);
        }
    }

    async fn send_to_party(&self, caller: bool, bytes: &[u8]) {
        if caller {
            self.send_to_caller(bytes).await;
        } else {
            self.send_to_callee(bytes).await;
        }
    }

    /// ACK of a non-2xx final: same branch as the fork's INVITE (RFC 3261 §17.1.1.3).
    async fn ack_failure(&self, fork: usize, response: &Response) {
        let (branch, uri, destination) = {
            let state = self.state.lock().expect("call lock");
            let fork = &state.forks[fork];
            (fork.branch.clone(), fork.uri.clone(), fork.destination)
        };
        let to = response
            .headers()
            .get(HeaderName::To)
            .unwrap_or_default()
            .to_string();
        let ack = RequestBuilder::new(Method::Ack, uri)
            .header(HeaderName::Via, via(&self.out, destination, &branch))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, self.b_from.clone())
            .header(HeaderName::To, to)
            .header(HeaderName::CallId, self.b_call_id.clone())
            .header(HeaderName::CSeq, "1 ACK")
            .build();
        if let Ok(ack) = ack {
            self.send(&ack, destination).await;
        }
    }

    /// A second phone answered after the first: ACK its 2xx, then BYE it (RFC 3261 §13.2.2.4).
    async fn ack_and_bye_late_answer(self: &Arc<Self>, fork: usize, response: &Response) {
        let destination = self.state.lock().expect("call lock").forks[fork].destination;
        let to = response
            .headers()
            .get(HeaderName::To)
            .unwrap_or_default()
            .to_string();
        let target = response
            .headers()
            .contacts()
            .next()
            .and_then(Result::ok)
            .and_then(|c| c.address().map(|a| a.uri().as_str().to_string()))
            .unwrap_or_else(|| {
                self.state.lock().expect("call lock").forks[fork]
                    .uri
                    .clone()
            });
        for (method, cseq) in [(Method::Ack, 1), (Method::Bye, 2)] {
            let branch = format!("z9hG4bK{}", tag());
            let request = RequestBuilder::new(method.clone(), target.clone())
                .header(HeaderName::Via, via(&self.out, destination, &branch))
                .header(HeaderName::MaxForwards, "70")
                .header(HeaderName::From, self.b_from.clone())
                .header(HeaderName::To, to.clone())
                .header(HeaderName::CallId, self.b_call_id.clone())
                .header(HeaderName::CSeq, format!("{cseq} {method}"))
                .build();
            match (request, method) {
                (Ok(bye), Method::Bye) => self.send_reliably(bye, branch, destination).await,
                (Ok(ack), _) => self.send(&ack, destination).await,
                (Err(_), _) => {}
            }
        }
    }

    async fn ack_2xx(&self) {
        if let Some((ack, _)) = self.in_dialog_to_callee(Method::Ack, Some(1)) {
            self.send_to_callee(&ack).await;
        }
    }

    async fn bye_callee(self: &Arc<Self>) {
        let (answered, destination) = {
            let state = self.state.lock().expect("call lock");
            (
                state.phase == Phase::Answered,
                state.winner.map(|w| state.forks[w].destination),
            )
        };
        if answered
            && let Some(destination) = destination
            && let Some((bye, branch)) = self.in_dialog_to_callee(Method::Bye, None)
        {
            self.send_reliably(bye, branch, destination).await;
        }
    }

    /// Sends a BYE or CANCEL and retransmits it (Timer E) until it is answered or Timer F fires
    /// (RFC 3261 §17.1.2).
    async fn send_reliably(self: &Arc<Self>, request: Bytes, branch: String, destination: Peer) {
        let tx = ClientTransaction::start(
            Kind::NonInvite,
            destination.transport.reliability(),
            TimerValues::default(),
            Instant::now(),
        );
        self.state
            .lock()
            .expect("call lock")
            .requests
            .insert(branch.clone(), tx);
        self.send(&request, destination).await;
        let call = self.clone();
        tokio::spawn(async move {
            loop {
                let deadline = call
                    .state
                    .lock()
                    .expect("call lock")
                    .requests
                    .get(&branch)
                    .and_then(ClientTransaction::next_deadline);
                let Some(deadline) = deadline else { break };
                tokio::time::sleep_until(deadline.into()).await;
                let actions = match call
                    .state
                    .lock()
                    .expect("call lock")
                    .requests
                    .get_mut(&branch)
                {
                    Some(tx) => tx.on_timer(Instant::now()),
                    None => break,
                };
                for action in actions {
                    match action {
                        Action::Retransmit => call.send(&request, destination).await,
                        Action::TimedOut => {
                            tracing::debug!(%destination, "no answer to our request (Timer F)");
                        }
                        _ => {}
                    }
                }
            }
            call.state
                .lock()
                .expect("call lock")
                .requests
                .remove(&branch);
        });
    }

    /// CANCELs every fork still without a final answer, except `keep` (RFC 3261 §16.7 step 10).
    async fn cancel_other_forks(self: &Arc<Self>, keep: Option<usize>) {
        let pending: Vec<(String, String, Peer)> = {
            let state = self.state.lock().expect("call lock");
            state
                .forks
                .iter()
                .enumerate()
                .filter(|(i, f)| Some(*i) != keep && f.final_status.is_none())
                .map(|(_, f)| (f.branch.clone(), f.uri.clone(), f.destination))
                .collect()
        };
        for (branch, uri, destination) in pending {
            // A CANCEL shares its INVITE's branch; its own answers are told apart by the method.
            let cancel = RequestBuilder::new(Method::Cancel, uri)
                .header(HeaderName::Via, via(&self.out, destination, &branch))
                .header(HeaderName::MaxForwards, "70")
                .header(HeaderName::From, self.b_from.clone())
                .header(HeaderName::To, self.b_to.clone())
                .header(HeaderName::CallId, self.b_call_id.clone())
                .header(HeaderName::CSeq, "1 CANCEL")
                .build();
            if let Ok(cancel) = cancel {
                self.send_reliably(cancel, cancel_key(&branch), destination)
                    .await;
            }
        }
    }

    /// ACK (with the INVITE's CSeq) or BYE (the next CSeq) in our dialog with the callee, and its
    /// branch.
    fn in_dialog_to_callee(&self, method: Method, cseq: Option<u32>) -> Option<(Bytes, String)> {
        let mut state = self.state.lock().expect("call lock");
        let cseq = cseq.unwrap_or_else(|| {
            state.cseq_to_b += 1;
            state.cseq_to_b
        });
        let winner = state.winner?;
        let callee = state.forks[winner].destination;
        let target = state
            .b_target
            .clone()
            .unwrap_or_else(|| state.forks[winner].uri.clone());
        let to = match &state.b_to_tag {
            Some(tag) => format!("{};tag={tag}", self.b_to),
            None => self.b_to.clone(),
        };
        let branch = format!("z9hG4bK{}", tag());
        let request = RequestBuilder::new(method.clone(), target)
            .header(HeaderName::Via, via(&self.out, callee, &branch))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, self.b_from.clone())
            .header(HeaderName::To, to)
            .header(HeaderName::CallId, self.b_call_id.clone())
            .header(HeaderName::CSeq, format!("{cseq} {method}"))
            .build()
            .ok()?;
        Some((request, branch))
    }

    /// BYE to the caller: we are the UAS of that dialog, so From and To are the INVITE's swapped.
    /// The caller's dialog as we address it: their Contact (the target of our requests) and our
    /// From (their To with our tag — we are the UAS of that dialog).
    fn caller_dialog(&self) -> (String, String) {
        let headers = self.a_invite.headers();
        let target = headers
            .contacts()
            .next()
            .and_then(Result::ok)
            .and_then(|c| c.address().map(|a| a.uri().as_str().to_string()))
            .unwrap_or_else(|| self.a_invite.uri_str().to_string());
        let from = format!(
            "{};tag={}",
            headers.get(HeaderName::To).unwrap_or_default(),
            self.a_to_tag
        );
        (target, from)
    }

    async fn bye_caller(self: &Arc<Self>) {
        let headers = self.a_invite.headers();
        let (target, from) = self.caller_dialog();
        let cseq = {
            let mut state = self.state.lock().expect("call lock");
            state.cseq_to_a += 1;
            state.cseq_to_a
        };
        let branch = format!("z9hG4bK{}", tag());
        let bye = RequestBuilder::new(Method::Bye, target)
            .header(HeaderName::Via, via(&self.out, self.a_source, &branch))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, from)
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
            self.send_reliably(bye, branch, self.a_source).await;
        }
    }

    async fn send_to_caller(&self, bytes: &[u8]) {
        self.send(bytes, self.a_source).await;
    }

    /// The phone that answered.
    fn callee(&self) -> Option<Peer> {
        let state = self.state.lock().expect("call lock");
        state.winner.map(|w| state.forks[w].destination)
    }

    /// Sends to the phone that answered.
    async fn send_to_callee(&self, bytes: &[u8]) {
        if let Some(callee) = self.callee() {
            self.send(bytes, callee).await;
        }
    }

    async fn send(&self, bytes: &[u8], peer: Peer) {
        if let Err(error) = self.out.send(bytes, peer).await {
            tracing::debug!(%error, peer = %peer.addr, "cannot send");
        }
    }
}

/// Our Via towards `peer`: its transport, and our address on it.
fn via(out: &Outbound, peer: Peer, branch: &str) -> String {
    let address = out
        .advertised(peer.transport)
        .map_or_else(String::new, |a| a.to_string());
    format!(
        "SIP/2.0/{} {address};branch={branch};rport",
        peer.transport.via_token()
    )
}

/// Our Contact towards `peer`, so its in-dialog requests come back over the same transport.
fn contact(out: &Outbound, peer: Peer) -> String {
    let address = out
        .advertised(peer.transport)
        .map_or_else(String::new, |a| a.to_string());
    match peer.transport {
        crate::transport::Transport::Udp => format!("<sip:centrex@{address}>"),
        crate::transport::Transport::Tcp => format!("<sip:centrex@{address};transport=tcp>"),
    }
}

/// The key of a CANCEL among our requests: it shares its INVITE's branch (RFC 3261 §9.1).
fn cancel_key(branch: &str) -> String {
    format!("{branch} CANCEL")
}

/// The relay session id of a call: stable for its Call-ID, so a retried allocation is idempotent.
fn session_id(call_id: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(call_id.as_bytes())[..16])
}

/// The answer the caller gets when every phone refused (RFC 3261 §16.7 step 6, simplified): a 6xx
/// wins, then the lowest code; a timeout only when nothing better came back.
fn best_failure(statuses: impl Iterator<Item = u16>) -> u16 {
    let statuses: Vec<u16> = statuses.collect();
    if let Some(global) = statuses.iter().copied().filter(|s| *s >= 600).min() {
        return global;
    }
    statuses
        .iter()
        .copied()
        .filter(|s| *s != 408)
        .min()
        .or(statuses.iter().copied().min())
        .unwrap_or(480)
}

#[cfg(test)]
mod tests {
    use super::best_failure;

    #[test]
    fn the_best_failure_prefers_a_global_refusal_then_the_lowest_code_then_a_timeout() {
        assert_eq!(best_failure([486, 603, 480].into_iter()), 603);
        assert_eq!(best_failure([486, 480].into_iter()), 480);
        assert_eq!(best_failure([408, 486].into_iter()), 486);
        assert_eq!(best_failure([408].into_iter()), 408);
    }
}
