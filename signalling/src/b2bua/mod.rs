//! The back-to-back user agent: a call between two users of one tenant becomes two dialogs — the
//! caller's with us (leg A) and ours with the callee (leg B) — with the audio anchored on a media
//! node, so neither party learns the other's address.
//!
//! Scope so far: UDP, forking to every binding of the callee, INVITE / 1xx / 2xx / ACK / BYE / CANCEL,
//! re-INVITE and UPDATE passed through with their SDP anchored, failures relayed; dialog state in memory (the store holds it from issue #6 on).

mod call;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use centrex_coord::Store;

use crate::auth::authenticator::{AuthOutcome, Authenticator};
use crate::directory::Directory;
use crate::media::MediaPool;
use crate::registrar::bindings;
use crate::sip::{HeaderName, Request, Response, ResponseBuilder, StatusCode, Uri};
use crate::transport::{Outbound, Peer, Transport};
use call::Call;

/// Calls one instance holds at most; more are refused with 503.
const MAX_CALLS: usize = 50_000;
/// Media pools whose channels are kept; past it they are reconnected (tenants' pools are few).
const MAX_POOLS: usize = 256;

/// The B2BUA of one signalling instance.
pub struct B2bua {
    store: Arc<dyn Store>,
    directory: Directory,
    auth: Arc<Authenticator>,
    out: Arc<Outbound>,
    /// Calls by the Call-ID of either leg.
    calls: Mutex<HashMap<String, Arc<Call>>>,
    /// Call-IDs of INVITEs being set up (authenticated, media being anchored): their
    /// retransmissions are absorbed instead of being authenticated again.
    starting: Mutex<HashSet<String>>,
    /// Media pools by namespace and name (kept so their gRPC channels are reused).
    pools: Mutex<HashMap<(String, String), MediaPool>>,
}

impl B2bua {
    /// A B2BUA for the tenants of `directory`.
    pub fn new(
        store: Arc<dyn Store>,
        directory: Directory,
        auth: Arc<Authenticator>,
        out: Arc<Outbound>,
    ) -> Self {
        Self {
            store,
            directory,
            auth,
            out,
            calls: Mutex::default(),
            starting: Mutex::default(),
            pools: Mutex::default(),
        }
    }

    /// A new INVITE (no To tag) from `caller`; returns the immediate answer.
    pub async fn invite(self: &Arc<Self>, request: Request, caller: Peer) -> Option<Bytes> {
        let call_id = request.headers().call_id().ok()?.to_string();
        // A retransmission gets the latest answer again, or nothing while the call is set up.
        let _starting = Starting::claim(&self.starting, call_id.clone())?;
        if let Some(call) = self.find(&call_id) {
            return call.last_answer_to_caller();
        }
        let source = caller.addr;
        let respond = |status: StatusCode| {
            ResponseBuilder::for_request(&request, status)
                .to_tag(call::tag())
                .build()
                .ok()
        };
        let ours = [Transport::Udp, Transport::Tcp].map(|t| self.out.advertised(t));
        if looped(&request, ours.iter().flatten()) {
            return respond(StatusCode::LOOP_DETECTED);
        }

        let Some(domain) = request_domain(&request) else {
            return respond(StatusCode::NOT_FOUND);
        };
        let Some(tenant) = self.directory.tenant(&domain) else {
            return respond(StatusCode::NOT_FOUND);
        };
        let Some(caller_user) = from_user(&request, &domain) else {
            return respond(StatusCode::FORBIDDEN);
        };
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let authorization = request.headers().get(HeaderName::Authorization);
        let caller_user = match self.auth.authenticate(
            "INVITE",
            authorization,
            &tenant,
            &caller_user,
            source.ip(),
            unix_now,
            Instant::now(),
        ) {
            AuthOutcome::Authenticated(user) => user.clone(),
            AuthOutcome::Challenge { stale } => {
                let challenges = self.auth.challenge(&tenant, stale, unix_now);
                let builder = challenges.into_iter().fold(
                    ResponseBuilder::for_request(&request, StatusCode::UNAUTHORIZED)
                        .to_tag(call::tag()),
                    |b, c| b.header(HeaderName::WwwAuthenticate, c),
                );
                return builder.build().ok();
            }
            AuthOutcome::Forbidden => return respond(StatusCode::FORBIDDEN),
            AuthOutcome::Throttled => return None,
        };
        let Some(callee) = request_user(&request) else {
            return respond(StatusCode::NOT_FOUND);
        };
        if !tenant.users.iter().any(|u| u.extension == callee) {
            return respond(StatusCode::NOT_FOUND);
        }
        if self.calls.lock().expect("calls lock").len() >= MAX_CALLS {
            return respond(StatusCode::SERVICE_UNAVAILABLE);
        }
        let contacts = match bindings::list(self.store.as_ref(), &domain, &callee).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "bindings unavailable");
                return respond(StatusCode::SERVICE_UNAVAILABLE);
            }
        };
        // Every registered phone rings (bounded by the registrar's contacts per user).
        let targets: Vec<(String, Peer)> = contacts
            .into_iter()
            .filter_map(|(b, _)| {
                let peer = Peer {
                    addr: b.source.parse().ok()?,
                    transport: Transport::parse(&b.transport)?,
                };
                Some((b.contact, peer))
            })
            .collect();
        if targets.is_empty() {
            return respond(StatusCode::TEMPORARILY_UNAVAILABLE);
        }
        let pool = self.media_pool(&tenant.source.namespace, &tenant.media_pool);
        let call = match Call::start(
            self.clone(),
            request.clone(),
            caller,
            &tenant,
            &caller_user,
            &targets,
            pool,
            self.out.clone(),
        )
        .await
        {
            Ok(call) => call,
            Err(status) => return respond(status),
        };
        {
            let mut calls = self.calls.lock().expect("calls lock");
            calls.insert(call.a_call_id().to_string(), call.clone());
            calls.insert(call.b_call_id().to_string(), call.clone());
        }
        call.ring().await;
        call.last_answer_to_caller()
    }

    /// A request inside an existing call (ACK, BYE, CANCEL, re-INVITE); `None` when unknown.
    pub async fn in_call(&self, request: &Request, source: Peer) -> Option<Option<Bytes>> {
        let call_id = request.headers().call_id().ok()?;
        let call = self.find(call_id)?;
        Some(call.request(request, source).await)
    }

    /// A response to one of our requests.
    pub async fn response(&self, response: Response) {
        let Ok(call_id) = response.headers().call_id() else {
            return;
        };
        if let Some(call) = self.find(call_id) {
            call.response(response).await;
        }
    }

    /// The media pool `namespace/name`, whose gRPC channels every call shares.
    fn media_pool(&self, namespace: &str, name: &str) -> MediaPool {
        let mut pools = self.pools.lock().expect("pools lock");
        let key = (namespace.to_string(), name.to_string());
        if !pools.contains_key(&key) && pools.len() >= MAX_POOLS {
            pools.clear();
        }
        pools
            .entry(key)
            .or_insert_with(|| MediaPool::new(self.store.clone(), namespace, name))
            .clone()
    }

    /// Whether `request` belongs to a call this instance holds or is setting up.
    pub fn holds(&self, request: &Request) -> bool {
        request.headers().call_id().is_ok_and(|id| {
            self.find(id).is_some() || self.starting.lock().expect("starting lock").contains(id)
        })
    }

    fn find(&self, call_id: &str) -> Option<Arc<Call>> {
        self.calls.lock().expect("calls lock").get(call_id).cloned()
    }

    /// Forgets a call that ended.
    fn forget(&self, call: &Call) {
        let mut calls = self.calls.lock().expect("calls lock");
        calls.remove(call.a_call_id());
        calls.remove(call.b_call_id());
    }

    /// Calls in progress (ended ones linger a while to absorb retransmissions; they don't count).
    pub fn active_calls(&self) -> usize {
        let calls = self.calls.lock().expect("calls lock");
        // Each call is held under both legs' Call-IDs.
        calls.values().filter(|call| !call.is_over()).count() / 2
    }
}

/// Marks a Call-ID as being set up for as long as it lives.
struct Starting<'a> {
    set: &'a Mutex<HashSet<String>>,
    call_id: String,
}

impl<'a> Starting<'a> {
    /// `None` when the Call-ID is already being set up.
    fn claim(set: &'a Mutex<HashSet<String>>, call_id: String) -> Option<Self> {
        let claimed = set.lock().expect("starting lock").insert(call_id.clone());
        claimed.then_some(Self { set, call_id })
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .expect("starting lock")
            .remove(&self.call_id);
    }
}

/// Whether `request` has been through us already: one of its Vias is our own address (a binding
/// that points back at this server, or forwards that come round), RFC 3261 §16.3 item 4.
fn looped<'a>(request: &Request, ours: impl Iterator<Item = &'a SocketAddr> + Clone) -> bool {
    request.headers().vias().filter_map(Result::ok).any(|via| {
        let (host, port) = (via.host().to_string(), via.port().unwrap_or(5060));
        ours.clone()
            .any(|address| address.port() == port && address.ip().to_string() == host)
    })
}

fn request_domain(request: &Request) -> Option<String> {
    match request.uri().ok()? {
        Uri::Sip(uri) => Some(uri.host().to_string().to_ascii_lowercase()),
        _ => None,
    }
}

fn request_user(request: &Request) -> Option<String> {
    match request.uri().ok()? {
        Uri::Sip(uri) => uri.user().map(str::to_string),
        _ => None,
    }
}

/// The caller's user, when From is an address of `domain`.
fn from_user(request: &Request, domain: &str) -> Option<String> {
    let from = request.headers().from().ok()?;
    let Uri::Sip(uri) = from.uri() else {
        return None;
    };
    uri.host()
        .to_string()
        .eq_ignore_ascii_case(domain)
        .then_some(())?;
    uri.user().map(str::to_string)
}
