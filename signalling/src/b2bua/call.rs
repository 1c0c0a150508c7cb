//! One call through the B2BUA: the caller's dialog (leg A, where we are the UAS) and ours with
//! whoever answers (leg B, where we are the UAC), tied together with a relay session on a media
//! node. Leg B rings in stages (see [`super::plan`]): each stage INVITEs some phones or a
//! carrier, each branch in a dialog of its own; when nobody there answers, the plan says what
//! rings next, and the caller keeps hearing ringing throughout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use centrex_coord::snapshot::{TenantSnapshot, TrunkSnapshot, UserEntry};

use super::B2bua;
use super::dialog::{self, CalleeDialog, CallerRecord, DialogRecord, Dialogs};
use super::limits::{Held, Limits};
use super::plan::{Branch, Exhausted, Outcome, Plan, Stage};
use crate::auth::client::ServerChallenge;
use crate::cdr::{self, CallRecord, CallResult, CallTimes, Direction, RecordSink};
use crate::media::{Anchor, MediaPool, Remote};
use crate::routing::presentation;
use crate::sdp;
use crate::sip::{
    HeaderName, Message, Method, Request, RequestBuilder, Response, ResponseBuilder, StatusCode,
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

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A user of the tenant, authenticated.
    User(Box<UserEntry>),
    /// A number outside the tenant, delivered by the trunk `trunk`.
    External { number: String, trunk: String },
}

/// Who calls, what they dialled, and the call's direction: what the call record says.
#[derive(Debug, Clone)]
pub struct Origin {
    pub caller: Caller,
    pub dialled: String,
    pub direction: Direction,
}

/// What a call needs from its instance.
#[derive(Clone)]
pub struct Services {
    pub out: Arc<Outbound>,
    pub pool: MediaPool,
    pub limits: Arc<Limits>,
    pub records: Arc<dyn RecordSink>,
    /// Where answered calls are recorded for failover, with this instance's id (in a cluster).
    pub failover: Option<Failover>,
}

/// This instance's part in failover: its id, and the dialog records it writes.
#[derive(Clone)]
pub struct Failover {
    pub instance: Arc<str>,
    pub dialogs: Dialogs,
}

/// Why a call could not start: the caller's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: Option<String>,
}

impl From<StatusCode> for Refused {
    fn from(status: StatusCode) -> Self {
        Self {
            status,
            reason: None,
        }
    }
}

/// One branch of leg B: a phone or a carrier, in a dialog of its own.
struct Fork {
    /// The stage it was rung in.
    stage: usize,
    branch: String,
    call_id: String,
    /// Our From, with tag.
    from: String,
    /// Its To, without tag.
    to: String,
    uri: String,
    destination: Peer,
    party: String,
    trunk: Option<Arc<TrunkSnapshot>>,
    /// Headers of the caller's identity besides From (P-Asserted-Identity, Privacy).
    identity: Vec<(HeaderName, String)>,
    /// CSeq of the INVITE in flight.
    cseq: u32,
    invite: Bytes,
    tx: ClientTransaction,
    /// Bumped when the INVITE is sent again with credentials: the old timer task stops.
    generation: u32,
    /// Final status received (or 408 when Timer B fired).
    final_status: Option<u16>,
    auth_tried: bool,
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
    /// Index of the stage ringing now.
    stage: usize,
    stage_ring: Option<Duration>,
    /// Counters of the parties of the stage ringing now, by party.
    stage_held: Vec<(String, Held)>,
    /// Counters held until the call ends (admission, the answering party's).
    held: Held,
    hunt_group: Option<String>,
    forwarded_from: Option<String>,
    /// The caller's answer when the last stage ends without one from the plan.
    last_failure: Option<StatusCode>,
    answered_at: Option<SystemTime>,
    /// Final answer the caller got, for the call record.
    final_status: Option<StatusCode>,
    recorded: bool,
    /// Where each party receives audio, from its latest SDP: where the relay's legs point.
    a_media: Option<Remote>,
    b_media: Option<Remote>,
    /// Each party's latest SDP, offered again (re-anchored) when the call moves to another node.
    a_sdp: Option<String>,
    b_sdp: Option<String>,
    /// Our own re-INVITEs (moving the call to another media node), by branch.
    own_invites: HashMap<String, OwnInvite>,
}

/// A re-INVITE of ours to one party.
struct OwnInvite {
    to_callee: bool,
    cseq: u32,
    destination: Peer,
    /// A final answer came (retransmissions stop; a repeated 2xx is ACKed again).
    answered: bool,
}

/// A call in progress.
pub struct Call {
    b2bua: Weak<B2bua>,
    services: Services,
    /// The relay session; replaced when its node dies.
    anchor: Mutex<Anchor>,
    tenant: Arc<TenantSnapshot>,
    origin: Origin,
    /// Max-Forwards of what we send on leg B.
    hops: u8,
    /// The caller's offer with the relay's leg-B address: every branch gets it.
    offer_to_callee: String,
    /// What rings next; none for a call taken over from another instance (it was answered).
    plan: tokio::sync::Mutex<Option<Plan>>,
    started_at: SystemTime,
    a_invite: Request,
    a_source: Peer,
    a_call_id: String,
    a_to_tag: String,
    /// Held from the phase check to the send of each response relayed to the caller: the
    /// callee's 180 and 200 are handled concurrently, and a 180 must not leave after the 200.
    relay_order: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

/// The record of a call refused before anything rang (a limit, a policy, nobody to ring).
pub fn refusal_record(
    tenant: &TenantSnapshot,
    origin: &Origin,
    call_id: &str,
    started: SystemTime,
    status: StatusCode,
) -> CallRecord {
    let (from, trunk) = match &origin.caller {
        Caller::User(user) => (user.extension.clone(), None),
        Caller::External { number, trunk } => (number.clone(), Some(trunk.clone())),
    };
    CallRecord {
        schema: cdr::SCHEMA_VERSION,
        call_id: call_id.into(),
        tenant: (&tenant.source).into(),
        domain: tenant.domain.clone(),
        from,
        to: origin.dialled.clone(),
        direction: origin.direction,
        times: CallTimes {
            started,
            answered: None,
            ended: SystemTime::now(),
        },
        result: CallResult::from_final_status(status),
        sip_status: status,
        hunt_group: None,
        answered_by: None,
        trunk,
        forwarded_from: None,
    }
}

/// A random token for tags, branches and Call-IDs.
pub use centrex_coord::random::token as tag;

impl Call {
    /// Anchors the media and prepares the first stage of INVITEs ([`Call::ring`] sends them);
    /// the caller's answer so far is 100 Trying. `held` (the admission's counters) is the
    /// call's from now on, and released whatever happens.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        b2bua: Arc<B2bua>,
        a_invite: Request,
        a_source: Peer,
        tenant: Arc<TenantSnapshot>,
        origin: Origin,
        mut plan: Plan,
        held: Held,
        services: Services,
    ) -> Result<Arc<Self>, Refused> {
        let limits = services.limits.clone();
        let prepared = Self::prepare(&a_invite, &tenant, &mut plan, &services).await;
        let (anchor, stage, hops, a_media) = match prepared {
            Ok(prepared) => prepared,
            Err(refused) => {
                limits.release(held).await;
                return Err(refused);
            }
        };
        let a_call_id = a_invite
            .headers()
            .call_id()
            .map_err(|_| StatusCode::BAD_REQUEST)?
            .to_string();
        let offer = std::str::from_utf8(a_invite.body()).unwrap_or_default();
        let offer_to_callee = sdp::anchor(offer, anchor.b.address, anchor.b.port);
        let a_sdp = offer.to_string();
        let trying = ResponseBuilder::for_request(&a_invite, StatusCode::TRYING)
            .build()
            .ok();
        let call = Arc::new(Self {
            b2bua: Arc::downgrade(&b2bua),
            services,
            anchor: Mutex::new(anchor),
            tenant,
            origin,
            hops,
            offer_to_callee,
            plan: tokio::sync::Mutex::new(Some(plan)),
            started_at: SystemTime::now(),
            a_source,
            a_call_id,
            a_to_tag: tag(),
            a_invite,
            relay_order: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                phase: Phase::Calling,
                pending: None,
                forks: Vec::new(),
                winner: None,
                last_to_caller: trying,
                b_to_tag: None,
                b_target: None,
                a_acked: false,
                cseq_to_a: 1,
                cseq_to_b: 1,
                requests: HashMap::new(),
                stage: 0,
                stage_ring: None,
                stage_held: Vec::new(),
                held,
                hunt_group: None,
                forwarded_from: None,
                last_failure: None,
                answered_at: None,
                final_status: None,
                recorded: false,
                a_media: Some(a_media),
                b_media: None,
                a_sdp: Some(a_sdp),
                b_sdp: None,
                own_invites: HashMap::new(),
            }),
        });
        call.add_stage(stage);
        Ok(call)
    }

    /// Checks the offer, anchors its media and expands the plan's first stage.
    async fn prepare(
        a_invite: &Request,
        tenant: &TenantSnapshot,
        plan: &mut Plan,
        services: &Services,
    ) -> Result<(Anchor, Stage, u8, Remote), Refused> {
        let headers = a_invite.headers();
        let a_call_id = headers.call_id().map_err(|_| StatusCode::BAD_REQUEST)?;
        let hops = headers.max_forwards().ok().flatten().unwrap_or(70);
        if hops == 0 {
            return Err(StatusCode::TOO_MANY_HOPS.into());
        }
        let offer =
            std::str::from_utf8(a_invite.body()).map_err(|_| StatusCode::NOT_ACCEPTABLE_HERE)?;
        let caller_media =
            sdp::audio_endpoint(offer).map_err(|_| StatusCode::NOT_ACCEPTABLE_HERE)?;
        let pool = &services.pool;
        let caller = Remote {
            rtp: SocketAddr::new(caller_media.address, caller_media.port),
            rtcp_mux: caller_media.rtcp_mux,
            payload_types: caller_media.rtpmaps,
        };
        let anchor = pool
            .anchor(&session_id(a_call_id), a_call_id, &tenant.domain, &caller)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "cannot anchor media");
                StatusCode::SERVICE_UNAVAILABLE
            })?;
        let stage = plan.first().await.map_err(|Exhausted(refusal)| {
            let (status, reason) =
                refusal.unwrap_or((StatusCode::TEMPORARILY_UNAVAILABLE, "nobody to ring".into()));
            Refused {
                status,
                reason: Some(reason),
            }
        });
        match stage {
            Ok(stage) => Ok((anchor, stage, hops - 1, caller)),
            Err(refused) => {
                let _ = pool.release(&anchor).await;
                Err(refused)
            }
        }
    }

    /// Adds a stage's branches as forks (not sent yet: [`Call::launch`]); returns the index of
    /// its first fork.
    fn add_stage(&self, stage: Stage) -> usize {
        let mut state = self.state.lock().expect("call lock");
        let index = state.stage;
        let first = state.forks.len();
        for branch in stage.branches {
            if let Some(fork) = self.fork(index, branch) {
                state.forks.push(fork);
            }
        }
        state.stage_ring = stage.ring;
        state.stage_held = stage.held;
        if stage.hunt_group.is_some() {
            state.hunt_group = stage.hunt_group;
        }
        if stage.forwarded_from.is_some() {
            state.forwarded_from = stage.forwarded_from;
        }
        first
    }

    /// The fork that rings `branch`: a dialog of its own, presenting the caller as the
    /// destination may see them.
    fn fork(&self, stage: usize, branch: Branch) -> Option<Fork> {
        let from_tag = tag();
        let (from, identity) = self.identity(&branch, &from_tag);
        let mut fork = Fork {
            stage,
            branch: format!("z9hG4bK{}", tag()),
            call_id: format!("{}@centrex", tag()),
            from,
            to: branch.to,
            uri: branch.uri,
            destination: branch.destination,
            party: branch.party,
            trunk: branch.trunk,
            identity,
            cseq: 1,
            invite: Bytes::new(),
            tx: ClientTransaction::start(
                Kind::Invite,
                branch.destination.transport.reliability(),
                TimerValues::default(),
                Instant::now(),
            ),
            generation: 0,
            final_status: None,
            auth_tried: false,
        };
        fork.invite = self.invite(&fork, None)?;
        Some(fork)
    }

    /// The From of a branch and the other identity headers (RFC 3323, RFC 3325: the asserted
    /// identity only towards a trunk, which is trusted).
    fn identity(&self, branch: &Branch, tag: &str) -> (String, Vec<(HeaderName, String)>) {
        let domain = branch
            .trunk
            .as_ref()
            .map_or(self.tenant.domain.as_str(), |t| t.host.as_str());
        match &self.origin.caller {
            Caller::User(user) => {
                let towards_trunk = branch.trunk.is_some();
                let shown = presentation::presentation(&self.tenant, user, towards_trunk);
                let mut headers = Vec::new();
                if let Some(asserted) =
                    presentation::asserted_identity(&self.tenant, user, towards_trunk)
                {
                    headers.push((HeaderName::PAssertedIdentity, asserted));
                }
                if let Some(privacy) = presentation::privacy_header(&shown) {
                    headers.push((HeaderName::Privacy, privacy.to_string()));
                }
                (presentation::from_header(&shown, domain, tag), headers)
            }
            Caller::External { number, .. } => {
                (format!("<sip:{number}@{domain}>;tag={tag}"), Vec::new())
            }
        }
    }

    /// The INVITE of `fork` at its CSeq, with credentials when answering a challenge.
    fn invite(&self, fork: &Fork, credentials: Option<(HeaderName, String)>) -> Option<Bytes> {
        let mut builder = RequestBuilder::new(Method::Invite, fork.uri.clone())
            .header(
                HeaderName::Via,
                via(&self.services.out, fork.destination, &fork.branch),
            )
            .header(HeaderName::MaxForwards, self.hops.to_string())
            .header(HeaderName::From, fork.from.clone())
            .header(HeaderName::To, fork.to.clone())
            .header(HeaderName::CallId, fork.call_id.clone())
            .header(HeaderName::CSeq, format!("{} INVITE", fork.cseq))
            .header(
                HeaderName::Contact,
                contact(&self.services.out, fork.destination),
            );
        for (name, value) in fork.identity.iter().cloned().chain(credentials) {
            builder = builder.header(name, value);
        }
        builder
            .body("application/sdp", Bytes::from(self.offer_to_callee.clone()))
            .build()
            .ok()
    }

    /// Sends the first stage's INVITEs. Only once the call can be found by its Call-IDs: a
    /// phone that answers at once must not find it missing.
    pub fn ring(self: &Arc<Self>) {
        self.launch(0);
    }

    /// Sends the INVITEs of the forks from `first` on (each from a task of its own, which then
    /// drives its timers), and starts the stage's ring timer. Not async: a stage that fails
    /// launches the next from those very tasks.
    fn launch(self: &Arc<Self>, first: usize) {
        let (invites, stage, ring, ringback) = {
            let mut state = self.state.lock().expect("call lock");
            let invites: Vec<(usize, Bytes, Peer, u32)> = state.forks[first..]
                .iter()
                .enumerate()
                .map(|(i, f)| (first + i, f.invite.clone(), f.destination, f.generation))
                .collect();
            // A later stage (a forward, the next hunt member) while the caller has heard
            // nothing but 100 Trying: tell them it rings, as a PBX does.
            let ringback = (state.stage > 0 && state.phase == Phase::Calling)
                .then(|| {
                    ResponseBuilder::for_request(&self.a_invite, StatusCode::RINGING)
                        .to_tag(self.a_to_tag.clone())
                        .build()
                        .ok()
                })
                .flatten();
            if let Some(ringing) = &ringback {
                state.phase = Phase::Early;
                state.last_to_caller = Some(ringing.clone());
            }
            (invites, state.stage, state.stage_ring, ringback)
        };
        if let Some(ringing) = ringback {
            let call = self.clone();
            tokio::spawn(async move { call.send_to_caller(&ringing).await });
        }
        for (index, invite, destination, generation) in invites {
            let call = self.clone();
            tokio::spawn(async move {
                call.send(&invite, destination).await;
                call.drive_fork(index, generation).await;
            });
        }
        if let Some(ring) = ring {
            tokio::spawn(self.clone().ring_timer(stage, ring));
        }
    }

    /// Every Call-ID the call is known by: the caller's and each branch's.
    pub fn call_ids(&self) -> Vec<String> {
        let state = self.state.lock().expect("call lock");
        std::iter::once(self.a_call_id.clone())
            .chain(state.forks.iter().map(|f| f.call_id.clone()))
            .collect()
    }

    /// Ended (lingering only to absorb retransmissions).
    pub fn is_over(&self) -> bool {
        self.state.lock().expect("call lock").phase == Phase::Ended
    }

    /// The relay session the call's audio goes through now.
    pub fn anchor(&self) -> Anchor {
        self.anchor.lock().expect("anchor lock").clone()
    }

    /// Not answered yet, and not ended.
    pub fn is_being_set_up(&self) -> bool {
        matches!(
            self.state.lock().expect("call lock").phase,
            Phase::Calling | Phase::Early
        )
    }

    /// The caller's Call-ID.
    pub fn a_call_id(&self) -> &str {
        &self.a_call_id
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
        if cseq.method == Method::Invite
            && let Some(branch) = &branch
            && self.own_reinvite_answered(branch, &response).await
        {
            return;
        }
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
        let (actions, phase, winner, challenged) = {
            let mut state = self.state.lock().expect("call lock");
            let actions = state.forks[fork].tx.on_response(status, Instant::now());
            let f = &state.forks[fork];
            // A carrier's challenge is answered once, from the trunk's digest hashes.
            let challenged = matches!(status, 401 | 407)
                && !f.auth_tried
                && f.trunk.as_ref().is_some_and(|t| t.registration.is_some());
            (actions, state.phase, state.winner, challenged)
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
                Action::Deliver(_) if challenged => self.answer_challenge(fork, &response).await,
                Action::Deliver(status) if status >= 300 => self.fork_failed(fork, status).await,
                Action::Deliver(status) => {
                    if (200..300).contains(&status) {
                        self.answered(fork).await;
                        self.cancel_other_forks(Some(fork)).await;
                    }
                    self.relay(&response, status).await;
                }
                _ => {}
            }
        }
    }

    /// A carrier challenged our INVITE: send it again with credentials computed from the
    /// trunk's HA1 hashes (RFC 3261 §22.2), in a new transaction with the next CSeq.
    async fn answer_challenge(self: &Arc<Self>, fork: usize, response: &Response) {
        let proxy = response.status().as_u16() == 407;
        let (challenge_header, credentials_header) = if proxy {
            (
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            )
        } else {
            (HeaderName::WwwAuthenticate, HeaderName::Authorization)
        };
        let challenge = ServerChallenge::best(response.headers().get_all(challenge_header));
        let resent = {
            let mut state = self.state.lock().expect("call lock");
            let f = &mut state.forks[fork];
            f.auth_tried = true;
            let credentials = f
                .trunk
                .as_ref()
                .and_then(|t| t.registration.as_ref())
                .map(|r| r.credentials.clone());
            let answer = match (challenge, credentials) {
                (Ok(challenge), Some(credentials)) => challenge
                    .answer(&credentials, "INVITE", &f.uri, 1, &tag())
                    .map_err(|e| e.to_string()),
                (Err(error), _) => Err(error.to_string()),
                (_, None) => Err("the trunk has no credentials".into()),
            };
            match answer {
                Ok(value) => {
                    f.cseq += 1;
                    f.branch = format!("z9hG4bK{}", tag());
                    f.generation += 1;
                    f.tx = ClientTransaction::start(
                        Kind::Invite,
                        f.destination.transport.reliability(),
                        TimerValues::default(),
                        Instant::now(),
                    );
                    let f = &state.forks[fork];
                    let invite = self.invite(f, Some((credentials_header, value)));
                    invite.map(|invite| (invite, f.destination, f.generation))
                }
                Err(error) => {
                    let trunk = f.trunk.as_ref().map(|t| t.source.name.clone());
                    tracing::warn!(?trunk, %error, "cannot answer the carrier's challenge");
                    None
                }
            }
        };
        match resent {
            Some((invite, destination, generation)) => {
                if let Some(f) = self.state.lock().expect("call lock").forks.get_mut(fork) {
                    f.invite = invite.clone();
                }
                self.send(&invite, destination).await;
                tokio::spawn(self.clone().drive_fork(fork, generation));
            }
            None => self.fork_failed(fork, 503).await,
        }
    }

    /// A branch answered: its party's counters stay with the call, the other parties' go.
    async fn answered(self: &Arc<Self>, fork: usize) {
        let released = {
            let mut state = self.state.lock().expect("call lock");
            state.winner = Some(fork);
            state.answered_at = Some(SystemTime::now());
            state.cseq_to_b = state.forks[fork].cseq;
            let party = state.forks[fork].party.clone();
            let (winner, others): (Vec<_>, Vec<_>) = std::mem::take(&mut state.stage_held)
                .into_iter()
                .partition(|(p, _)| *p == party);
            for (_, held) in winner {
                state.held.absorb(held);
            }
            others
        };
        let limits = self.services.limits.clone();
        tokio::spawn(async move {
            for (_, held) in released {
                limits.release(held).await;
            }
        });
    }

    /// One branch refused (or timed out): when every branch of the stage has, the plan says
    /// what rings next.
    async fn fork_failed(self: &Arc<Self>, fork: usize, status: u16) {
        let finished = {
            let mut state = self.state.lock().expect("call lock");
            let f = &mut state.forks[fork];
            // A carrier refusing our credentials is our failure, not the caller's to see.
            let status = if f.trunk.is_some() && matches!(status, 401 | 407) {
                503
            } else {
                status
            };
            f.final_status = Some(status);
            stage_over(&state)
        };
        if let Some((stage, outcome)) = finished {
            self.advance(stage, outcome).await;
        }
    }

    /// The stage `finished` ended without an answer: the next one rings, or the caller gets
    /// the final answer.
    async fn advance(self: &Arc<Self>, finished: usize, outcome: Outcome) {
        let released = {
            let mut state = self.state.lock().expect("call lock");
            if state.stage != finished
                || state.winner.is_some()
                || matches!(state.phase, Phase::Answered | Phase::Ended)
            {
                return;
            }
            state.stage += 1;
            let statuses = state
                .forks
                .iter()
                .filter(|f| f.stage == finished)
                .filter_map(|f| f.final_status);
            // Branches we cancelled because the ring time passed: nobody answered.
            let best = match best_failure(statuses) {
                487 => StatusCode::TEMPORARILY_UNAVAILABLE,
                code => StatusCode::new(code).unwrap_or(StatusCode::TEMPORARILY_UNAVAILABLE),
            };
            state.last_failure = Some(best);
            std::mem::take(&mut state.stage_held)
        };
        for (_, held) in released {
            self.services.limits.release(held).await;
        }
        let next = match self.plan.lock().await.as_mut() {
            Some(plan) => plan.next(outcome).await,
            None => Err(Exhausted(None)),
        };
        let ended = self.state.lock().expect("call lock").phase == Phase::Ended;
        match next {
            Ok(stage) if ended => {
                for (_, held) in stage.held {
                    self.services.limits.release(held).await;
                }
            }
            Ok(stage) => {
                let first = self.add_stage(stage);
                if let Some(b2bua) = self.b2bua.upgrade() {
                    b2bua.adopt(self);
                }
                self.launch(first);
            }
            Err(_) if ended => {}
            Err(Exhausted(Some((status, reason)))) => self.fail_caller(status, Some(&reason)).await,
            Err(Exhausted(None)) => {
                let status = self
                    .state
                    .lock()
                    .expect("call lock")
                    .last_failure
                    .unwrap_or(StatusCode::TEMPORARILY_UNAVAILABLE);
                self.fail_caller(status, None).await;
            }
        }
    }

    /// Rings the stage `stage` for `ring`, then CANCELs it and moves on.
    async fn ring_timer(self: Arc<Self>, stage: usize, ring: Duration) {
        tokio::time::sleep(ring).await;
        {
            let state = self.state.lock().expect("call lock");
            if state.stage != stage
                || state.winner.is_some()
                || matches!(state.phase, Phase::Answered | Phase::Ended)
            {
                return;
            }
        }
        self.cancel_forks(|f| f.stage == stage).await;
        for f in self
            .state
            .lock()
            .expect("call lock")
            .forks
            .iter_mut()
            .filter(|f| f.stage == stage)
        {
            f.final_status.get_or_insert(487);
        }
        self.advance(stage, Outcome::NoAnswer).await;
    }

    /// Relays a provisional or 2xx response of a branch to the caller.
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
                .services
                .pool
                .point(&self.anchor(), "b", rtp, media.rtcp_mux, &media.rtpmaps)
                .await
            {
                tracing::warn!(%error, "cannot point the callee's leg");
            }
            self.remember_media("b", rtp, media.rtcp_mux, &media.rtpmaps, Some(answer));
            self.unmux_caller_if_refused(media.rtcp_mux).await;
        }
        let mut builder =
            ResponseBuilder::for_request(&self.a_invite, status_code).to_tag(self.a_to_tag.clone());
        if status < 300 {
            builder = builder.header(
                HeaderName::Contact,
                contact(&self.services.out, self.a_source),
            );
        }
        if let Some(answer) = &answer {
            builder = builder.body(
                "application/sdp",
                Bytes::from(sdp::anchor(
                    answer,
                    self.anchor().a.address,
                    self.anchor().a.port,
                )),
            );
        }
        let Ok(bytes) = builder.build() else { return };
        let order = self.relay_order.lock().await;
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
                _ => {
                    state.phase = Phase::Answered;
                    state.final_status = Some(status_code);
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
            }
        }
        self.send_to_caller(&bytes).await;
        drop(order);
        if (200..300).contains(&status) {
            self.ack_2xx().await;
            tokio::spawn(self.clone().retransmit_2xx(bytes));
            self.save_for_failover();
        }
    }

    /// Writes the answered call's dialog record, so that another instance can carry it on
    /// (in the background: the store must not delay the call).
    fn save_for_failover(self: &Arc<Self>) {
        let Some(failover) = self.services.failover.clone() else {
            return;
        };
        let Some(record) = self.dialog_record(&failover.instance) else {
            return;
        };
        tokio::spawn(async move {
            if let Err(error) = failover.dialogs.save(&record).await {
                tracing::warn!(%error, call_id = record.a_call_id, "dialog record not written: the call cannot fail over");
            }
        });
    }

    /// The failover record of the answered call, held by `owner`.
    fn dialog_record(&self, owner: &str) -> Option<DialogRecord> {
        let state = self.state.lock().expect("call lock");
        let winner = &state.forks[state.winner?];
        let caller = match &self.origin.caller {
            Caller::User(user) => CallerRecord::User {
                extension: user.extension.clone(),
            },
            Caller::External { number, trunk } => CallerRecord::External {
                number: number.clone(),
                trunk: trunk.clone(),
            },
        };
        Some(DialogRecord {
            owner: owner.into(),
            leg: dialog::Leg::A,
            domain: self.tenant.domain.clone(),
            caller_invite: String::from_utf8_lossy(&self.a_invite.as_bytes()).into_owned(),
            caller: self.a_source,
            a_call_id: self.a_call_id.clone(),
            a_to_tag: self.a_to_tag.clone(),
            cseq_to_a: state.cseq_to_a,
            callee: CalleeDialog {
                call_id: winner.call_id.clone(),
                from: winner.from.clone(),
                to: winner.to.clone(),
                to_tag: state.b_to_tag.clone(),
                uri: winner.uri.clone(),
                target: state.b_target.clone(),
                destination: winner.destination,
                party: winner.party.clone(),
                trunk: winner.trunk.as_ref().map(|t| t.source.name.clone()),
                invite_cseq: winner.cseq,
                cseq: state.cseq_to_b,
            },
            anchor: self.anchor(),
            caller_media: state.a_media.as_ref()?.into(),
            callee_media: state.b_media.as_ref().map(Into::into),
            caller_sdp: state.a_sdp.clone(),
            callee_sdp: state.b_sdp.clone(),
            slots: state.held.keys(),
            origin: caller,
            dialled: self.origin.dialled.clone(),
            direction: self.origin.direction,
            started_ms: dialog::unix_ms(self.started_at),
            answered_ms: state.answered_at.map(dialog::unix_ms),
            hunt_group: state.hunt_group.clone(),
            forwarded_from: state.forwarded_from.clone(),
        })
    }

    /// A call carried on from `record`, written by the instance that set it up (and then died,
    /// or handed one of its requests over): answered, with the counters of `held`.
    pub fn restore(
        b2bua: &Arc<B2bua>,
        record: &DialogRecord,
        tenant: Arc<TenantSnapshot>,
        services: Services,
        held: Held,
    ) -> Option<Arc<Self>> {
        let bytes = Bytes::from(record.caller_invite.clone().into_bytes());
        let Ok(Message::Request(a_invite)) = Message::parse(bytes, &crate::sip::Limits::default())
        else {
            tracing::warn!(
                call_id = record.a_call_id,
                "dialog record without a readable INVITE"
            );
            return None;
        };
        let caller = match &record.origin {
            CallerRecord::User { extension } => match tenant.user(extension) {
                Some(user) => Caller::User(Box::new(user.clone())),
                None => Caller::External {
                    number: extension.clone(),
                    trunk: String::new(),
                },
            },
            CallerRecord::External { number, trunk } => Caller::External {
                number: number.clone(),
                trunk: trunk.clone(),
            },
        };
        let callee = &record.callee;
        let trunk = callee
            .trunk
            .as_ref()
            .and_then(|name| b2bua.directory.trunk(&tenant.source.namespace, name));
        let winner = Fork {
            stage: 0,
            branch: String::new(),
            call_id: callee.call_id.clone(),
            from: callee.from.clone(),
            to: callee.to.clone(),
            uri: callee.uri.clone(),
            destination: callee.destination,
            party: callee.party.clone(),
            trunk,
            identity: Vec::new(),
            cseq: callee.invite_cseq,
            invite: Bytes::new(),
            tx: ClientTransaction::start(
                Kind::Invite,
                callee.destination.transport.reliability(),
                TimerValues::default(),
                Instant::now(),
            ),
            generation: 0,
            final_status: Some(200),
            auth_tried: true,
        };
        Some(Arc::new(Self {
            b2bua: Arc::downgrade(b2bua),
            services,
            anchor: Mutex::new(record.anchor.clone()),
            tenant,
            origin: Origin {
                caller,
                dialled: record.dialled.clone(),
                direction: record.direction,
            },
            hops: 70,
            offer_to_callee: String::new(),
            plan: tokio::sync::Mutex::new(None),
            started_at: dialog::from_unix_ms(record.started_ms),
            a_invite,
            a_source: record.caller,
            a_call_id: record.a_call_id.clone(),
            a_to_tag: record.a_to_tag.clone(),
            relay_order: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                phase: Phase::Answered,
                pending: None,
                forks: vec![winner],
                winner: Some(0),
                last_to_caller: None,
                b_to_tag: callee.to_tag.clone(),
                b_target: callee.target.clone(),
                a_acked: true,
                cseq_to_a: record.cseq_to_a,
                cseq_to_b: callee.cseq,
                requests: HashMap::new(),
                stage: 0,
                stage_ring: None,
                stage_held: Vec::new(),
                held,
                hunt_group: record.hunt_group.clone(),
                forwarded_from: record.forwarded_from.clone(),
                last_failure: None,
                answered_at: record.answered_ms.map(dialog::from_unix_ms),
                final_status: Some(StatusCode::OK),
                recorded: false,
                a_media: Some((&record.caller_media).into()),
                b_media: record.callee_media.as_ref().map(Into::into),
                a_sdp: record.caller_sdp.clone(),
                b_sdp: record.callee_sdp.clone(),
                own_invites: HashMap::new(),
            }),
        }))
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
                .services
                .pool
                .point(&self.anchor(), "a", rtp, false, &caller.rtpmaps)
                .await
            {
                tracing::warn!(%error, "cannot give the caller's leg an RTCP port");
            }
            self.remember_media("a", rtp, false, &caller.rtpmaps, None);
        }
    }

    /// Where the party of `leg` ("a": the caller, "b": the callee) now receives audio, and its
    /// SDP saying so (`None`: unchanged).
    fn remember_media(
        &self,
        leg: &str,
        rtp: SocketAddr,
        rtcp_mux: bool,
        types: &[(u8, String, u32)],
        sdp: Option<&str>,
    ) {
        let remote = Some(Remote {
            rtp,
            rtcp_mux,
            payload_types: types.to_vec(),
        });
        let mut state = self.state.lock().expect("call lock");
        let state = &mut *state;
        let (media, last_sdp) = if leg == "a" {
            (&mut state.a_media, &mut state.a_sdp)
        } else {
            (&mut state.b_media, &mut state.b_sdp)
        };
        *media = remote;
        if let Some(sdp) = sdp {
            *last_sdp = Some(sdp.to_string());
        }
    }

    /// Moves the call's audio to another media node (its node is gone): a new relay session
    /// between the parties' last known addresses, then a re-INVITE to each party offering its
    /// side of it.
    pub async fn re_anchor(self: &Arc<Self>) {
        let known = {
            let state = self.state.lock().expect("call lock");
            match (&state.a_media, &state.b_media, &state.a_sdp, &state.b_sdp) {
                (Some(a), Some(b), Some(a_sdp), Some(b_sdp)) if state.phase == Phase::Answered => {
                    Some((a.clone(), b.clone(), a_sdp.clone(), b_sdp.clone()))
                }
                _ => None,
            }
        };
        let Some((a_media, b_media, a_sdp, b_sdp)) = known else {
            return;
        };
        let old = self.anchor();
        let session = format!("{}-{}", session_id(&self.a_call_id), tag());
        let moved = self
            .services
            .pool
            .anchor_between(
                &session,
                &self.a_call_id,
                &self.tenant.domain,
                &a_media,
                Some(&b_media),
            )
            .await;
        let anchor = match moved {
            Ok(anchor) => anchor,
            Err(error) => {
                tracing::warn!(%error, call_id = self.a_call_id, "cannot move the call to another media node");
                return;
            }
        };
        *self.anchor.lock().expect("anchor lock") = anchor.clone();
        tracing::info!(
            call_id = self.a_call_id,
            from = old.node_key,
            to = anchor.node_key,
            "call moved to another media node"
        );
        // A node that left on purpose still relays until its sessions are gone: free it.
        let pool = self.services.pool.clone();
        tokio::spawn(async move {
            if let Err(error) = pool.release(&old).await {
                tracing::debug!(%error, "the old relay session was not released (its node is gone)");
            }
        });
        let to_caller = sdp::next_version(&sdp::anchor(&b_sdp, anchor.a.address, anchor.a.port));
        let to_callee = sdp::next_version(&sdp::anchor(&a_sdp, anchor.b.address, anchor.b.port));
        self.own_reinvite(false, to_caller).await;
        self.own_reinvite(true, to_callee).await;
        self.save_for_failover();
    }

    /// Sends a re-INVITE of ours with `sdp` to the callee (`to_callee`) or the caller, and
    /// retransmits it over UDP until it is answered (RFC 3261 §17.1.1.2, Timers A and B).
    async fn own_reinvite(self: &Arc<Self>, to_callee: bool, sdp: String) {
        let Some((invite, branch, cseq, destination)) =
            self.in_dialog(to_callee, Method::Invite, Some(sdp))
        else {
            return;
        };
        self.state.lock().expect("call lock").own_invites.insert(
            branch.clone(),
            OwnInvite {
                to_callee,
                cseq,
                destination,
                answered: false,
            },
        );
        self.send(&invite, destination).await;
        if destination.transport == crate::transport::Transport::Tcp {
            return;
        }
        let call = self.clone();
        tokio::spawn(async move {
            let timers = TimerValues::default();
            let (mut interval, started) = (timers.t1, Instant::now());
            while started.elapsed() < timers.timeout() {
                tokio::time::sleep(interval).await;
                let waiting = {
                    let state = call.state.lock().expect("call lock");
                    state.phase != Phase::Ended
                        && state.own_invites.get(&branch).is_some_and(|o| !o.answered)
                };
                if !waiting {
                    return;
                }
                call.send(&invite, destination).await;
                interval *= 2;
            }
            tracing::warn!(
                call_id = call.a_call_id,
                to_callee,
                "no answer to our re-INVITE"
            );
        });
    }

    /// A party answered one of our re-INVITEs: ACK it, and point its relay leg where its answer
    /// says. `true` when `response` was one.
    async fn own_reinvite_answered(&self, branch: &str, response: &Response) -> bool {
        let status = response.status();
        let own = {
            let mut state = self.state.lock().expect("call lock");
            let Some(own) = state.own_invites.get_mut(branch) else {
                return false;
            };
            let first = !own.answered && !status.is_provisional();
            own.answered |= !status.is_provisional();
            (own.to_callee, own.cseq, own.destination, first)
        };
        let (to_callee, cseq, destination, first) = own;
        if status.is_provisional() {
            return true;
        }
        self.ack_our_reinvite(to_callee, response, cseq, branch, destination)
            .await;
        if !status.is_success() {
            tracing::warn!(call_id = self.a_call_id, to_callee, %status, "a party refused the re-INVITE moving its audio");
            return true;
        }
        if first
            && let Ok(answer) = std::str::from_utf8(response.body())
            && let Ok(media) = sdp::audio_endpoint(answer)
        {
            let leg = if to_callee { "b" } else { "a" };
            let rtp = SocketAddr::new(media.address, media.port);
            if let Err(error) = self
                .services
                .pool
                .point(&self.anchor(), leg, rtp, media.rtcp_mux, &media.rtpmaps)
                .await
            {
                tracing::warn!(%error, "cannot point a moved relay leg");
            }
            self.remember_media(leg, rtp, media.rtcp_mux, &media.rtpmaps, Some(answer));
        }
        true
    }

    /// A request inside this call, from either party.
    pub async fn request(self: &Arc<Self>, request: &Request, _source: Peer) -> Option<Bytes> {
        let call_id = request.headers().call_id().ok();
        let from_caller = call_id == Some(self.a_call_id.as_str());
        let respond =
            |status: StatusCode| ResponseBuilder::for_request(request, status).build().ok();
        if !from_caller && request.method() != &Method::Ack {
            // Only the branch that answered has a dialog with us.
            let state = self.state.lock().expect("call lock");
            let winner = state.winner.map(|w| state.forks[w].call_id.as_str());
            if winner != call_id {
                return respond(StatusCode::CALL_OR_TRANSACTION_DOES_NOT_EXIST);
            }
        }
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
                        {
                            let mut state = self.state.lock().expect("call lock");
                            state.last_to_caller = Some(terminated.clone());
                            state.final_status = Some(StatusCode::REQUEST_TERMINATED);
                        }
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
                    let out = self.services.out.clone();
                    tokio::spawn(async move { out.send(&forwarded, destination).await });
                    return None;
                }
                if pending.answered.is_none() {
                    return respond(StatusCode::REQUEST_PENDING);
                }
            }
        }
        let (from_leg, to_leg) = if from_caller {
            ("a", self.anchor().b)
        } else {
            ("b", self.anchor().a)
        };
        let mut body = None;
        if let Ok(offer) = std::str::from_utf8(request.body())
            && let Ok(media) = sdp::audio_endpoint(offer)
        {
            let rtp = SocketAddr::new(media.address, media.port);
            if let Err(error) = self
                .services
                .pool
                .point(
                    &self.anchor(),
                    from_leg,
                    rtp,
                    media.rtcp_mux,
                    &media.rtpmaps,
                )
                .await
            {
                tracing::warn!(%error, "cannot re-point a relay leg");
            }
            self.remember_media(from_leg, rtp, media.rtcp_mux, &media.rtpmaps, Some(offer));
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
            ("b", self.anchor().a)
        } else {
            ("a", self.anchor().b)
        };
        let mut builder = ResponseBuilder::for_request(&original, status);
        if let Ok(answer) = std::str::from_utf8(response.body())
            && let Ok(media) = sdp::audio_endpoint(answer)
        {
            let rtp = SocketAddr::new(media.address, media.port);
            if let Err(error) = self
                .services
                .pool
                .point(
                    &self.anchor(),
                    answering_leg,
                    rtp,
                    media.rtcp_mux,
                    &media.rtpmaps,
                )
                .await
            {
                tracing::warn!(%error, "cannot re-point a relay leg");
            }
            self.remember_media(
                answering_leg,
                rtp,
                media.rtcp_mux,
                &media.rtpmaps,
                Some(answer),
            );
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
                builder = builder.header(HeaderName::Contact, contact(&self.services.out, peer));
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
            self.ack_our_reinvite(from_caller, response, cseq, &branch, destination)
                .await;
        }
    }

    /// ACKs the final `response` to a re-INVITE we sent (`to_callee`, or to the caller) at
    /// `cseq` on `branch`: a 2xx in a transaction of its own, a failure with the INVITE's branch
    /// (RFC 3261 §17.1.1.3).
    async fn ack_our_reinvite(
        &self,
        to_callee: bool,
        response: &Response,
        cseq: u32,
        branch: &str,
        destination: Peer,
    ) {
        let to = response
            .headers()
            .get(HeaderName::To)
            .unwrap_or_default()
            .to_string();
        let ack_branch = if response.status().is_success() {
            format!("z9hG4bK{}", tag())
        } else {
            branch.to_string()
        };
        if let Some(ack) = self.ack_in_dialog(to_callee, &to, cseq, &ack_branch) {
            self.send(&ack, destination).await;
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
            let to = winner_to(&state, winner);
            let uri = winner_target(&state, winner);
            let fork = &state.forks[winner];
            (
                uri,
                fork.from.clone(),
                to,
                fork.call_id.clone(),
                state.cseq_to_b,
                fork.destination,
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
            .header(
                HeaderName::Via,
                via(&self.services.out, destination, &branch),
            )
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, from)
            .header(HeaderName::To, to)
            .header(HeaderName::CallId, call_id)
            .header(HeaderName::CSeq, format!("{cseq} {method}"))
            .header(
                HeaderName::Contact,
                contact(&self.services.out, destination),
            );
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
            let uri = winner_target(&state, winner);
            let fork = &state.forks[winner];
            (
                uri,
                fork.from.clone(),
                fork.call_id.clone(),
                fork.destination,
            )
        } else {
            let (uri, from) = self.caller_dialog();
            (uri, from, self.a_call_id.clone(), self.a_source)
        };
        drop(state);
        RequestBuilder::new(Method::Ack, uri)
            .header(HeaderName::Via, via(&self.services.out, peer, branch))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, from)
            .header(HeaderName::To, to.to_string())
            .header(HeaderName::CallId, call_id)
            .header(HeaderName::CSeq, format!("{cseq} ACK"))
            .build()
            .ok()
    }

    /// Ends the call: media and counters released, the call recorded, and forgotten after
    /// absorbing retransmissions. Only the first ending counts.
    async fn end(self: &Arc<Self>) {
        let (held, record, answered_leg) = {
            let mut state = self.state.lock().expect("call lock");
            state.phase = Phase::Ended;
            if state.recorded {
                return;
            }
            state.recorded = true;
            let mut held = std::mem::take(&mut state.held);
            for (_, stage) in std::mem::take(&mut state.stage_held) {
                held.absorb(stage);
            }
            let answered_leg = state.winner.map(|w| state.forks[w].call_id.clone());
            (held, self.record(&state), answered_leg)
        };
        self.services.records.record(&record);
        // Counters and the relay session are released in the background: the answer to the
        // BYE or CANCEL that ended the call must not wait on a store or a media node that is
        // slow or unreachable (the counters' lease and the session's idle timeout cover a
        // release that never happens).
        let call = self.clone();
        let b_call_id = answered_leg;
        // Counted as lingering at once: an ended call must not hold capacity while its
        // counters and media are released.
        let lingering = self.begin_lingering();
        tokio::spawn(async move {
            let records = match (&call.services.failover, b_call_id) {
                (Some(_), Some(b_call_id)) => Dialogs::keys(&call.a_call_id, &b_call_id),
                _ => Vec::new(),
            };
            // Boxed: a task keeps the size of its largest state for as long as it lives, and
            // this one lives on through the linger, one per ended call (the store and media
            // futures would make each several kilobytes for those 32 s).
            Box::pin(call.services.limits.release_with(held, records)).await;
            let anchor = call.anchor();
            if let Err(error) = Box::pin(call.services.pool.release(&anchor)).await {
                tracing::warn!(%error, session = anchor.session_id, "media session not released; its idle timeout will");
            }
            call.linger(lingering).await;
        });
    }

    /// Counts the ended call's Call-IDs as lingering; how many (0 when too many ended calls
    /// linger already, and it is forgotten once released).
    fn begin_lingering(&self) -> usize {
        let ids = self.call_ids().len();
        match self.b2bua.upgrade() {
            Some(b2bua) if b2bua.begin_lingering(ids) => ids,
            _ => 0,
        }
    }

    /// Stays findable for [`LINGER`] after ending, to absorb retransmissions, when its
    /// `lingering` Call-IDs were counted; then forgotten.
    async fn linger(self: &Arc<Self>, lingering: usize) {
        if lingering > 0 {
            tokio::time::sleep(LINGER).await;
        }
        if let Some(b2bua) = self.b2bua.upgrade() {
            b2bua.forget(self, lingering);
        }
    }

    /// The call detail record of the call as it ends.
    fn record(&self, state: &State) -> CallRecord {
        let winner = state.winner.map(|w| &state.forks[w]);
        let status = match (winner, state.final_status) {
            (Some(_), _) => StatusCode::OK,
            (None, Some(status)) => status,
            (None, None) => StatusCode::REQUEST_TERMINATED,
        };
        let (from, inbound_trunk) = match &self.origin.caller {
            Caller::User(user) => (user.extension.clone(), None),
            Caller::External { number, trunk } => (number.clone(), Some(trunk.clone())),
        };
        let trunk = inbound_trunk.or_else(|| {
            winner
                .or(state.forks.last())
                .and_then(|f| f.trunk.as_ref())
                .map(|t| t.source.name.clone())
        });
        CallRecord {
            schema: cdr::SCHEMA_VERSION,
            call_id: self.a_call_id.clone(),
            tenant: (&self.tenant.source).into(),
            domain: self.tenant.domain.clone(),
            from,
            to: self.origin.dialled.clone(),
            direction: self.origin.direction,
            times: CallTimes {
                started: self.started_at,
                answered: state.answered_at,
                ended: SystemTime::now(),
            },
            result: CallResult::from_final_status(status),
            sip_status: status,
            hunt_group: state.hunt_group.clone(),
            answered_by: winner.map(|f| f.party.clone()),
            trunk,
            forwarded_from: state.forwarded_from.clone(),
        }
    }

    /// Drives the client transaction timers (A, B, D) of one fork's INVITE `generation`.
    async fn drive_fork(self: Arc<Self>, fork: usize, generation: u32) {
        loop {
            let deadline = {
                let state = self.state.lock().expect("call lock");
                let f = &state.forks[fork];
                if f.generation != generation {
                    return;
                }
                f.tx.next_deadline()
            };
            let Some(deadline) = deadline else { return };
            tokio::time::sleep_until(deadline.into()).await;
            let (actions, invite, destination) = {
                let mut state = self.state.lock().expect("call lock");
                let f = &mut state.forks[fork];
                if f.generation != generation {
                    return;
                }
                (
                    f.tx.on_timer(Instant::now()),
                    f.invite.clone(),
                    f.destination,
                )
            };
            for action in actions {
                match action {
                    Action::Retransmit => self.send(&invite, destination).await,
                    Action::TimedOut => {
                        self.fork_failed(fork, 408).await;
                        return;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Answers the caller's INVITE with a failure (and a reason phrase that says why, when
    /// there is one) and ends the call.
    async fn fail_caller(self: &Arc<Self>, status: StatusCode, reason: Option<&str>) {
        let mut builder =
            ResponseBuilder::for_request(&self.a_invite, status).to_tag(self.a_to_tag.clone());
        if let Some(reason) = reason {
            builder = builder.reason(reason);
        }
        if let Ok(failure) = builder.build() {
            {
                let mut state = self.state.lock().expect("call lock");
                state.last_to_caller = Some(failure.clone());
                state.final_status = Some(status);
            }
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
        let (branch, uri, destination, from, call_id, cseq) = {
            let state = self.state.lock().expect("call lock");
            let f = &state.forks[fork];
            (
                f.branch.clone(),
                f.uri.clone(),
                f.destination,
                f.from.clone(),
                f.call_id.clone(),
                f.cseq,
            )
        };
        let to = response
            .headers()
            .get(HeaderName::To)
            .unwrap_or_default()
            .to_string();
        let ack = RequestBuilder::new(Method::Ack, uri)
            .header(
                HeaderName::Via,
                via(&self.services.out, destination, &branch),
            )
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, from)
            .header(HeaderName::To, to)
            .header(HeaderName::CallId, call_id)
            .header(HeaderName::CSeq, format!("{cseq} ACK"))
            .build();
        if let Ok(ack) = ack {
            self.send(&ack, destination).await;
        }
    }

    /// A second phone answered after the first: ACK its 2xx, then BYE it (RFC 3261 §13.2.2.4).
    async fn ack_and_bye_late_answer(self: &Arc<Self>, fork: usize, response: &Response) {
        let (destination, from, call_id, invite_cseq) = {
            let state = self.state.lock().expect("call lock");
            let f = &state.forks[fork];
            (f.destination, f.from.clone(), f.call_id.clone(), f.cseq)
        };
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
        for (method, cseq) in [(Method::Ack, invite_cseq), (Method::Bye, invite_cseq + 1)] {
            let branch = format!("z9hG4bK{}", tag());
            let request = RequestBuilder::new(method.clone(), target.clone())
                .header(
                    HeaderName::Via,
                    via(&self.services.out, destination, &branch),
                )
                .header(HeaderName::MaxForwards, "70")
                .header(HeaderName::From, from.clone())
                .header(HeaderName::To, to.clone())
                .header(HeaderName::CallId, call_id.clone())
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
        let cseq = {
            let state = self.state.lock().expect("call lock");
            state.winner.map(|w| state.forks[w].cseq)
        };
        if let Some(cseq) = cseq
            && let Some((ack, _)) = self.in_dialog_to_callee(Method::Ack, Some(cseq))
        {
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
        let keep = keep.map(|k| {
            self.state.lock().expect("call lock").forks[k]
                .branch
                .clone()
        });
        self.cancel_forks(|f| Some(&f.branch) != keep.as_ref())
            .await;
    }

    /// CANCELs the forks without a final answer that `which` selects.
    async fn cancel_forks(self: &Arc<Self>, which: impl Fn(&Fork) -> bool) {
        let pending: Vec<(Bytes, String, Peer)> = {
            let state = self.state.lock().expect("call lock");
            state
                .forks
                .iter()
                .filter(|f| f.final_status.is_none() && which(f))
                .filter_map(|f| {
                    // A CANCEL shares its INVITE's branch and CSeq number; its own answers are
                    // told apart by the method.
                    let cancel = RequestBuilder::new(Method::Cancel, f.uri.clone())
                        .header(
                            HeaderName::Via,
                            via(&self.services.out, f.destination, &f.branch),
                        )
                        .header(HeaderName::MaxForwards, "70")
                        .header(HeaderName::From, f.from.clone())
                        .header(HeaderName::To, f.to.clone())
                        .header(HeaderName::CallId, f.call_id.clone())
                        .header(HeaderName::CSeq, format!("{} CANCEL", f.cseq))
                        .build()
                        .ok()?;
                    Some((cancel, f.branch.clone(), f.destination))
                })
                .collect()
        };
        for (cancel, branch, destination) in pending {
            self.send_reliably(cancel, cancel_key(&branch), destination)
                .await;
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
        let target = winner_target(&state, winner);
        let to = winner_to(&state, winner);
        let fork = &state.forks[winner];
        let branch = format!("z9hG4bK{}", tag());
        let request = RequestBuilder::new(method.clone(), target)
            .header(
                HeaderName::Via,
                via(&self.services.out, fork.destination, &branch),
            )
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, fork.from.clone())
            .header(HeaderName::To, to)
            .header(HeaderName::CallId, fork.call_id.clone())
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
            .header(
                HeaderName::Via,
                via(&self.services.out, self.a_source, &branch),
            )
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
        if let Err(error) = self.services.out.send(bytes, peer).await {
            tracing::debug!(%error, peer = %peer.addr, "cannot send");
        }
    }
}

/// The To of our dialog with the branch that answered, with its tag.
fn winner_to(state: &State, winner: usize) -> String {
    let to = &state.forks[winner].to;
    match &state.b_to_tag {
        Some(tag) => format!("{to};tag={tag}"),
        None => to.clone(),
    }
}

/// Where our in-dialog requests to the branch that answered go: its Contact, else its URI.
fn winner_target(state: &State, winner: usize) -> String {
    state
        .b_target
        .clone()
        .unwrap_or_else(|| state.forks[winner].uri.clone())
}

/// The stage ringing now ended without an answer, and how: every branch of it has a final
/// status and none answered.
fn stage_over(state: &State) -> Option<(usize, Outcome)> {
    if state.winner.is_some() || matches!(state.phase, Phase::Answered | Phase::Ended) {
        return None;
    }
    let mut current = state
        .forks
        .iter()
        .filter(|f| f.stage == state.stage)
        .peekable();
    current.peek()?;
    let mut busy = true;
    for fork in current {
        let status = fork.final_status?;
        busy &= matches!(status, 486 | 600 | 603);
    }
    Some((
        state.stage,
        if busy {
            Outcome::Busy
        } else {
            Outcome::NoAnswer
        },
    ))
}

/// Our Via towards `peer`: its transport, our address on it and, in a cluster, our instance
/// (`cx`): a response that comes back on another instance's TCP connection is handed to us.
fn via(out: &Outbound, peer: Peer, branch: &str) -> String {
    let address = out
        .advertised(peer.transport)
        .map_or_else(String::new, |a| a.to_string());
    let transport = peer.transport.via_token();
    match out.instance() {
        Some(instance) => {
            format!("SIP/2.0/{transport} {address};branch={branch};rport;cx={instance}")
        }
        None => format!("SIP/2.0/{transport} {address};branch={branch};rport"),
    }
}

/// Our Contact towards `peer`, so its in-dialog requests come back over the same transport.
fn contact(out: &Outbound, peer: Peer) -> String {
    let address = out
        .contact_address(peer.transport)
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
