//! The back-to-back user agent: a call between two users of one tenant becomes two dialogs — the
//! caller's with us (leg A) and ours with the callee (leg B) — with the audio anchored on a media
//! node, so neither party learns the other's address.
//!
//! - [`plan`] decides what rings, stage by stage (users' phones and mobiles, hunt groups,
//!   forwards, trunks), from the pure rules of [`crate::routing`];
//! - [`limits`] admits calls against the cluster-wide counters of users, tenants and trunks;
//! - `call` runs one call: INVITE / 1xx / 2xx / ACK / BYE / CANCEL on both legs, re-INVITE and
//!   UPDATE passed through with their SDP anchored, digest towards carriers, a call record at
//!   the end;
//! - [`dialog`] keeps answered calls' dialog state in the store, so that another instance
//!   carries a call on when the one that set it up dies, and hands requests to a call's owner.

mod call;
pub mod dialog;
pub mod limits;
pub mod plan;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use centrex_coord::Store;
use centrex_coord::lease::KeptLease;
use centrex_coord::media::MediaNodeRegistration;
use centrex_coord::snapshot::TenantSnapshot;

use crate::auth::authenticator::{AuthOutcome, Authenticator};
use crate::cdr::{Direction, LogSink, RecordSink};
use crate::cluster::handoff::Handoff;
use crate::cluster::presence;
use crate::directory::Directory;
use crate::media::{InProcessNode, MediaPool, NodeDirectory, Unreachable, until_unreachable};
use crate::routing::numbers::NumberPlan;
use crate::routing::target::{self, Target};
use crate::sip::{HeaderName, Request, Response, ResponseBuilder, StatusCode, Uri};
use crate::transport::{Outbound, Peer, Transport};
pub use call::tag as random_token;
use call::{Call, Caller, Failover, Origin, Refused, Services};
use dialog::{DialogRecord, Dialogs};
use limits::Limits;
use plan::{Plan, World};

/// Calls one instance holds at most, ended ones lingering aside; more are refused with 503.
const MAX_CALLS: usize = 50_000;
/// Call-IDs of ended calls kept to absorb retransmissions (a call has one per leg): 25 s of
/// 2,000 calls/s. Past it an ended call is forgotten at once, so that lingering, which grows with
/// the call rate, never costs new calls their admission.
const MAX_LINGERING: usize = 100_000;
/// Media pools whose channels are kept; past it they are reconnected (tenants' pools are few).
const MAX_POOLS: usize = 256;
/// Hunt groups whose round-robin position is kept; past it positions start again.
const MAX_ROTATIONS: usize = 65_536;
/// Calls of a gone instance claimed at once.
const TAKEOVERS_AT_ONCE: usize = 32;
/// Calls moved to another media node at once when theirs is gone.
const MOVES_AT_ONCE: usize = 64;
/// TTL of the lease the instance's call counters hang on: a crashed instance's calls stop
/// counting this long after it died.
const COUNTER_LEASE_TTL: Duration = Duration::from_secs(15);

/// Round-robin positions of hunt groups (per instance: the next call starts one further).
#[derive(Default)]
pub struct Rotations {
    positions: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl Rotations {
    /// The position for the next call to `group`, advancing it.
    pub fn next(&self, group: &str) -> usize {
        let mut positions = self.positions.lock().expect("rotations lock");
        if !positions.contains_key(group) && positions.len() >= MAX_ROTATIONS {
            positions.clear();
        }
        let position = positions.entry(group.to_string()).or_default().clone();
        drop(positions);
        position.fetch_add(1, Ordering::Relaxed)
    }
}

/// The B2BUA of one signalling instance.
pub struct B2bua {
    store: Arc<dyn Store>,
    directory: Directory,
    auth: Arc<Authenticator>,
    out: Arc<Outbound>,
    /// The instance's lease: its call counters (and, in a cluster, its presence) hang on it.
    lease: Arc<KeptLease>,
    limits: Arc<Limits>,
    /// In a cluster: dialog records, and requests handed to other instances.
    cluster: Option<Cluster>,
    handoff: Arc<Handoff>,
    records: Arc<dyn RecordSink>,
    rotations: Arc<Rotations>,
    /// Calls by the Call-ID of any of their legs.
    calls: Mutex<HashMap<String, Arc<Call>>>,
    /// How many of `calls`' Call-IDs are of ended calls lingering.
    lingering: AtomicUsize,
    /// Call-IDs of INVITEs being set up (authenticated, media being anchored): their
    /// retransmissions are absorbed instead of being authenticated again.
    starting: Mutex<HashSet<String>>,
    /// Media pools by namespace and name (kept so their gRPC channels are reused).
    pools: Mutex<HashMap<(String, String), MediaPool>>,
    /// Media nodes found unreachable while still registered.
    unreachable: Unreachable,
    /// The media nodes' registrations, as `follow_media_nodes` watches them.
    media_nodes: NodeDirectory,
    /// A media node running in this process (local mode), called without gRPC.
    in_process_media: Option<InProcessNode>,
}

impl B2bua {
    /// A B2BUA for the tenants of `directory`, recording calls to the log.
    pub fn new(
        store: Arc<dyn Store>,
        directory: Directory,
        auth: Arc<Authenticator>,
        out: Arc<Outbound>,
    ) -> Self {
        let lease = KeptLease::new(store.clone(), COUNTER_LEASE_TTL);
        Self {
            limits: Arc::new(Limits::new(store.clone(), lease.clone())),
            lease,
            cluster: None,
            handoff: Arc::default(),
            store,
            directory,
            auth,
            out,
            records: Arc::new(LogSink),
            rotations: Arc::default(),
            calls: Mutex::default(),
            lingering: AtomicUsize::new(0),
            starting: Mutex::default(),
            pools: Mutex::default(),
            unreachable: Unreachable::default(),
            media_nodes: NodeDirectory::default(),
            in_process_media: None,
        }
    }

    /// Calls the media node `node`, which runs in this process, directly instead of over gRPC.
    pub fn set_in_process_media(&mut self, node: InProcessNode) {
        self.in_process_media = Some(node);
    }

    /// Sends call detail records to `records` instead of the log.
    pub fn set_records(&mut self, records: Arc<dyn RecordSink>) {
        self.records = records;
    }

    /// Takes part in a cluster as `instance`, with a lease of `lease_ttl`: answered calls are
    /// recorded in the store, requests for calls of other live instances are handed to them,
    /// and calls of dead ones are taken over.
    pub fn join_cluster(&mut self, instance: &str, lease_ttl: Duration) {
        self.lease = KeptLease::new(self.store.clone(), lease_ttl);
        self.limits = Arc::new(Limits::new(self.store.clone(), self.lease.clone()));
        self.cluster = Some(Cluster {
            failover: Failover {
                instance: instance.into(),
                dialogs: Dialogs::new(self.store.clone()),
            },
            handoff: self.handoff.clone(),
        });
    }

    /// Where requests and messages for other instances go (shared with the transport's relay).
    pub fn handoff(&self) -> Arc<Handoff> {
        self.handoff.clone()
    }

    /// The instance's lease.
    pub fn lease(&self) -> Arc<KeptLease> {
        self.lease.clone()
    }

    /// A new INVITE (no To tag) from `caller`; returns the immediate answer.
    pub async fn invite(self: &Arc<Self>, request: Request, caller: Peer) -> Option<Bytes> {
        let call_id = request.headers().call_id().ok()?.to_string();
        // A retransmission gets the latest answer again, or nothing while the call is set up.
        let _starting = Starting::claim(&self.starting, call_id.clone())?;
        if let Some(call) = self.find(&call_id) {
            return call.last_answer_to_caller();
        }
        let refuse = |refused: Refused| answer(&request, refused);
        let respond = |status: StatusCode| refuse(status.into());
        let ours = [Transport::Udp, Transport::Tcp].map(|t| self.out.advertised(t));
        if looped(&request, ours.iter().flatten()) {
            return respond(StatusCode::LOOP_DETECTED);
        }
        let entries = self.calls.lock().expect("calls lock").len();
        if at_capacity(entries, self.lingering.load(Ordering::Relaxed)) {
            tracing::debug!(calls = MAX_CALLS, "at capacity: INVITE refused");
            return refuse(Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: Some("signalling instance at its call capacity".into()),
            });
        }
        let Some(domain) = request_domain(&request) else {
            return respond(StatusCode::NOT_FOUND);
        };
        let routed = match self.directory.tenant(&domain) {
            Some(tenant) => self.user_call(&request, caller, tenant).await,
            // Not addressed to a tenant's domain: only a trunk's carrier may do that.
            None => self.trunk_call(&request, caller),
        };
        let (tenant, origin, target) = match routed {
            Ok(routed) => routed,
            Err(answer) => return answer,
        };
        let started = SystemTime::now();
        let caller_user = match &origin.caller {
            Caller::User(user) => Some(user.as_ref()),
            Caller::External { .. } => None,
        };
        let held = match self.limits.admit(&tenant, caller_user, &call_id).await {
            Ok(held) => held,
            Err(refusal) => {
                tracing::info!(call_id, %refusal, domain = tenant.domain, "call not admitted");
                let record =
                    call::refusal_record(&tenant, &origin, &call_id, started, refusal.status());
                self.records.record(&record);
                let mut builder = ResponseBuilder::for_request(&request, refusal.status())
                    .to_tag(call::tag())
                    .reason(refusal.to_string());
                if let Some(seconds) = refusal.retry_after() {
                    builder = builder.header(HeaderName::RetryAfter, seconds.to_string());
                }
                return builder.build().ok();
            }
        };
        let world = World {
            store: self.store.clone(),
            directory: self.directory.clone(),
            limits: self.limits.clone(),
            rotations: self.rotations.clone(),
        };
        let plan = Plan::new(world, tenant.clone(), call_id.clone(), target);
        let services = self.services(&tenant);
        let outcome = Call::start(
            self.clone(),
            request.clone(),
            caller,
            tenant.clone(),
            origin.clone(),
            plan,
            held,
            services,
        )
        .await;
        let call = match outcome {
            Ok(call) => call,
            Err(refused) => {
                let record =
                    call::refusal_record(&tenant, &origin, &call_id, started, refused.status);
                self.records.record(&record);
                return refuse(refused);
            }
        };
        self.adopt(&call);
        call.ring();
        call.last_answer_to_caller()
    }

    /// A call from a user of `tenant`: authenticated, and what they dialled resolved in their
    /// tenant; or the answer to give instead (none for a throttled source).
    async fn user_call(
        &self,
        request: &Request,
        caller: Peer,
        tenant: Arc<TenantSnapshot>,
    ) -> Result<(Arc<TenantSnapshot>, Origin, Target), Option<Bytes>> {
        let refuse = |status: StatusCode| Err(answer(request, status.into()));
        let Some(caller_user) = from_user(request, &tenant.domain) else {
            return refuse(StatusCode::FORBIDDEN);
        };
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let authorization = request.headers().get(HeaderName::Authorization);
        let user = match self.auth.authenticate(
            "INVITE",
            authorization,
            &tenant,
            &caller_user,
            caller.addr.ip(),
            unix_now,
            Instant::now(),
        ) {
            AuthOutcome::Authenticated(user) => user.clone(),
            AuthOutcome::Challenge { stale } => {
                let challenges = self.auth.challenge(&tenant, stale, unix_now);
                let challenge = challenges.into_iter().fold(
                    ResponseBuilder::for_request(request, StatusCode::UNAUTHORIZED)
                        .to_tag(call::tag()),
                    |b, c| b.header(HeaderName::WwwAuthenticate, c),
                );
                return Err(challenge.build().ok());
            }
            AuthOutcome::Forbidden => return refuse(StatusCode::FORBIDDEN),
            AuthOutcome::Throttled => return Err(None),
        };
        let Some(dialled) = request_user(request) else {
            return refuse(StatusCode::NOT_FOUND);
        };
        let number_plan = self.number_plan(&tenant);
        let Some(target) = target::resolve(&tenant, number_plan.as_ref(), &dialled) else {
            return refuse(StatusCode::NOT_FOUND);
        };
        let direction = match target {
            Target::External(_) => Direction::Outbound,
            _ => Direction::Internal,
        };
        let origin = Origin {
            caller: Caller::User(Box::new(user)),
            dialled,
            direction,
        };
        Ok((tenant, origin, target))
    }

    /// A call from a trunk's carrier to one of the numbers it delivers (RFC 3261 has no
    /// authentication for it: the carrier is trusted by its source address alone).
    fn trunk_call(
        &self,
        request: &Request,
        caller: Peer,
    ) -> Result<(Arc<TenantSnapshot>, Origin, Target), Option<Bytes>> {
        let Some(trunk) = self.directory.trunk_for_source(caller.addr.ip()) else {
            tracing::info!(source = %caller.addr, "INVITE for no tenant from an untrusted source");
            let refused = Refused {
                status: StatusCode::FORBIDDEN,
                reason: Some("untrusted source".into()),
            };
            return Err(answer(request, refused));
        };
        let not_found = || Err(answer(request, StatusCode::NOT_FOUND.into()));
        let Some(dialled) = request_user(request) else {
            return not_found();
        };
        let plan = NumberPlan::from_trunk(&trunk);
        let Ok(number) = plan.normalise(&dialled) else {
            return not_found();
        };
        let (namespace, name) = (&trunk.source.namespace, &trunk.source.name);
        let Some((tenant, entry)) = self.directory.number(namespace, name, &number) else {
            return not_found();
        };
        let Some(target) = target::parse_forward_target(&tenant, &entry.target) else {
            return not_found();
        };
        let from = request
            .headers()
            .from()
            .ok()
            .and_then(|from| match from.uri() {
                Uri::Sip(uri) => uri
                    .user()
                    .map(|u| plan.normalise(u).unwrap_or(u.to_string())),
                _ => None,
            })
            .unwrap_or_else(|| "anonymous".into());
        let origin = Origin {
            caller: Caller::External {
                number: from,
                trunk: name.clone(),
            },
            dialled: number,
            direction: Direction::Inbound,
        };
        Ok((tenant, origin, target))
    }

    /// The number plan of `tenant`'s first outbound trunk, if it has one.
    fn number_plan(&self, tenant: &TenantSnapshot) -> Option<NumberPlan> {
        let policy = tenant.outbound.as_ref()?;
        policy
            .trunks
            .iter()
            .find_map(|name| self.directory.trunk(&tenant.source.namespace, name))
            .map(|trunk| NumberPlan::from_trunk(&trunk))
    }

    /// What a call of `tenant` needs from this instance.
    fn services(&self, tenant: &TenantSnapshot) -> Services {
        Services {
            out: self.out.clone(),
            pool: self.media_pool(&tenant.source.namespace, &tenant.media_pool),
            limits: self.limits.clone(),
            records: self.records.clone(),
            failover: self.cluster.as_ref().map(|c| c.failover.clone()),
        }
    }

    /// Makes a call findable by every Call-ID it has (new branches add new ones); returns the
    /// call held under its caller's Call-ID (an earlier one, when the call was there already).
    fn adopt(&self, call: &Arc<Call>) -> Arc<Call> {
        let mut calls = self.calls.lock().expect("calls lock");
        for call_id in call.call_ids() {
            calls.entry(call_id).or_insert_with(|| call.clone());
        }
        calls
            .get(call.a_call_id())
            .cloned()
            .unwrap_or_else(|| call.clone())
    }

    /// A request of a dialog this instance does not hold in memory, when it is in a cluster:
    /// handed to the live instance that holds the call (unless it was handed to us, `handed`),
    /// or the call taken over when its owner is gone. `None`: no such call anywhere.
    pub async fn elsewhere(
        self: &Arc<Self>,
        request: &Request,
        source: Peer,
        handed: bool,
    ) -> Option<Option<Bytes>> {
        let cluster = self.cluster.as_ref()?;
        let call_id = request.headers().call_id().ok()?;
        let record = match cluster.failover.dialogs.find(call_id).await {
            Ok(record) => record?,
            Err(error) => {
                // The sender retransmits; by then the store may answer.
                tracing::warn!(%error, call_id, "dialog lookup failed: request dropped");
                return Some(None);
            }
        };
        let mine = *record.owner == *cluster.failover.instance;
        if !mine {
            match presence::find(self.store.as_ref(), &record.owner).await {
                Ok(Some(_)) if handed => {
                    tracing::debug!(
                        call_id,
                        owner = record.owner,
                        "handed a call another instance holds"
                    );
                    return Some(None);
                }
                Ok(Some(owner)) => {
                    let message = request.as_bytes();
                    return Some(
                        match cluster.handoff.deliver(owner.peer, message, source).await {
                            Ok(answer) => answer,
                            Err(status) => {
                                tracing::warn!(%status, call_id, owner = record.owner, "cannot hand a request to its call's owner");
                                None
                            }
                        },
                    );
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, call_id, "presence lookup failed: request dropped");
                    return Some(None);
                }
            }
        }
        let Some(call) = self.take_over(record).await else {
            return Some(None);
        };
        Some(call.request(request, source).await)
    }

    /// Carries on the call of `record`, claiming it first unless it is ours already; `None` when
    /// another instance claimed it first or it cannot be restored.
    async fn take_over(self: &Arc<Self>, record: DialogRecord) -> Option<Arc<Call>> {
        let cluster = self.cluster.as_ref()?;
        let instance = &cluster.failover.instance;
        if let Some(call) = self.find(&record.a_call_id) {
            return Some(call);
        }
        let record = if *record.owner == **instance {
            record
        } else {
            let previous = record.owner.clone();
            match cluster.failover.dialogs.claim(&record, instance).await {
                Ok(Some(claimed)) => {
                    tracing::info!(call_id = claimed.a_call_id, previous, "call taken over");
                    claimed
                }
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, call_id = record.a_call_id, "cannot claim a call");
                    return None;
                }
            }
        };
        let Some(tenant) = self.directory.tenant(&record.domain) else {
            tracing::warn!(
                domain = record.domain,
                "call of an unknown tenant not taken over"
            );
            return None;
        };
        let held = self
            .limits
            .hold_again(&record.slots, &record.a_call_id)
            .await;
        let services = self.services(&tenant);
        let call = Call::restore(self, &record, tenant, services, held)?;
        let call = self.adopt(&call);
        // Its media node may have gone, or stopped answering, while nobody held the call.
        let node = call.anchor().node_key;
        let unreachable = self
            .unreachable
            .lock()
            .expect("unreachable lock")
            .contains(&node);
        if !node.is_empty() && (unreachable || matches!(self.store.get(&node).await, Ok(None))) {
            let moving = call.clone();
            tokio::spawn(async move { moving.re_anchor().await });
        }
        Some(call)
    }

    /// Takes over the calls of instances that are gone: now, and whenever one's presence
    /// expires. Runs until the task is dropped.
    pub async fn take_over_orphans(self: Arc<Self>) {
        let Some(cluster) = self.cluster.as_ref() else {
            return;
        };
        let prefix = centrex_coord::keys::signalling_instances();
        loop {
            self.adopt_orphans().await;
            let watch = self.store.watch(&prefix, 0).await;
            let Ok(mut events) = watch else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            while let Some(event) = futures::StreamExt::next(&mut events).await {
                match event {
                    Ok(centrex_coord::WatchEvent::Delete { key, .. }) => {
                        let gone = key.strip_prefix(&prefix).unwrap_or(&key);
                        if *gone != *cluster.failover.instance {
                            tracing::info!(
                                instance = gone,
                                "signalling instance gone: taking its calls over"
                            );
                            self.adopt_orphans().await;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "watch of signalling instances ended");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Moves calls off media nodes that are gone (their registration expired, or was withdrawn
    /// when the node stopped, or the node stopped answering before that) to live ones. Runs
    /// until the task is dropped.
    pub async fn follow_media_nodes(self: Arc<Self>) {
        let prefix = centrex_coord::keys::all_media_nodes();
        let mut probes = NodeProbes::default();
        loop {
            // Nodes that went while nobody watched (before, or between two watches).
            let Ok((nodes, revision)) = self.store.list(&prefix).await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let live: HashSet<&str> = nodes.iter().map(|kv| kv.key.as_str()).collect();
            probes.keep_only(&live);
            for kv in &nodes {
                self.probe(&mut probes, kv);
            }
            self.move_calls_off(|key| !live.contains(key)).await;
            let Ok(mut events) = self.store.watch(&prefix, revision + 1).await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            self.media_nodes.replace(&nodes);
            while let Some(event) = futures::StreamExt::next(&mut events).await {
                match event {
                    Ok(centrex_coord::WatchEvent::Delete { key, .. }) => {
                        self.media_nodes.delete(&key);
                        probes.forget(&key);
                        self.unreachable
                            .lock()
                            .expect("unreachable lock")
                            .remove(&key);
                        tracing::info!(node = key, "media node gone: moving its calls");
                        self.move_calls_off(|node| node == key).await;
                    }
                    Ok(centrex_coord::WatchEvent::Put(kv)) => {
                        self.media_nodes.put(&kv);
                        self.probe(&mut probes, &kv);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "watch of media nodes ended");
                        break;
                    }
                }
            }
            self.media_nodes.lost();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Watches the health of the node registered as `kv`, once per registration: when it stops
    /// answering, its calls move without waiting for its lease to expire.
    fn probe(self: &Arc<Self>, probes: &mut NodeProbes, kv: &centrex_coord::KeyValue) {
        let Ok(node) = serde_json::from_slice::<MediaNodeRegistration>(&kv.value) else {
            return;
        };
        if !probes.start(&kv.key, kv.create_revision) {
            return;
        }
        // A node registering anew (restarted) is reachable again.
        self.unreachable
            .lock()
            .expect("unreachable lock")
            .remove(&kv.key);
        let (b2bua, key) = (Arc::downgrade(self), kv.key.clone());
        let task = tokio::spawn(async move {
            until_unreachable(node.grpc_address).await;
            let Some(b2bua) = b2bua.upgrade() else { return };
            tracing::warn!(node = key, "media node not answering: moving its calls");
            b2bua
                .unreachable
                .lock()
                .expect("unreachable lock")
                .insert(key.clone());
            b2bua.move_calls_off(|node| node == key).await;
        });
        probes.insert(kv.key.clone(), kv.create_revision, task);
    }

    /// Re-anchors the answered calls whose node's registration key `gone` selects.
    async fn move_calls_off(&self, gone: impl Fn(&str) -> bool) {
        let calls: Vec<Arc<Call>> = {
            let calls = self.calls.lock().expect("calls lock");
            calls
                .iter()
                .filter(|(id, call)| *id == call.a_call_id() && !call.is_over())
                .map(|(_, call)| call.clone())
                .filter(|call| {
                    let node = call.anchor().node_key;
                    !node.is_empty() && gone(&node)
                })
                .collect()
        };
        if calls.is_empty() {
            return;
        }
        tracing::info!(calls = calls.len(), "moving calls to other media nodes");
        futures::StreamExt::for_each_concurrent(
            futures::stream::iter(calls),
            MOVES_AT_ONCE,
            |call| async move { call.re_anchor().await },
        )
        .await;
    }

    /// Claims every call whose owner is not a live instance (other survivors compete for them:
    /// each goes to one).
    async fn adopt_orphans(self: &Arc<Self>) {
        let Some(cluster) = self.cluster.as_ref() else {
            return;
        };
        let alive = match presence::live(self.store.as_ref()).await {
            Ok(alive) => alive,
            Err(error) => {
                tracing::warn!(%error, "cannot list signalling instances");
                return;
            }
        };
        let mut alive: Vec<String> = alive.into_keys().collect();
        alive.push(cluster.failover.instance.to_string());
        let orphans = match cluster.failover.dialogs.orphans(&alive).await {
            Ok(orphans) => orphans,
            Err(error) => {
                tracing::warn!(%error, "cannot list dialog records");
                return;
            }
        };
        use futures::StreamExt as _;
        let taken = futures::stream::iter(orphans)
            .map(|record| self.take_over(record))
            .buffer_unordered(TAKEOVERS_AT_ONCE)
            .fold(0, |taken, call| async move {
                taken + usize::from(call.is_some())
            })
            .await;
        if taken > 0 {
            tracing::info!(calls = taken, "calls of gone instances taken over");
        }
    }

    /// A request inside an existing call (ACK, BYE, CANCEL, re-INVITE); `None` when unknown.
    pub async fn in_call(&self, request: &Request, source: Peer) -> Option<Option<Bytes>> {
        let call_id = request.headers().call_id().ok()?;
        let call = self.find(call_id)?;
        Some(call.request(request, source).await)
    }

    /// A response to one of our requests; given back when no call here has it.
    pub async fn response(&self, response: Response) -> Option<Response> {
        let Ok(call_id) = response.headers().call_id() else {
            return None;
        };
        match self.find(call_id) {
            Some(call) => {
                call.response(response).await;
                None
            }
            None => Some(response),
        }
    }

    /// A response that came back here (on a TCP connection this instance holds) to a request
    /// another instance sent, as its Via says: handed to that instance.
    pub async fn response_elsewhere(&self, response: &Response, source: Peer) {
        let Some(cluster) = &self.cluster else { return };
        let Ok(via) = response.headers().top_via() else {
            return;
        };
        let Some(Some(instance)) = via.params().get("cx") else {
            return;
        };
        if *instance == *cluster.failover.instance {
            return;
        }
        match presence::find(self.store.as_ref(), instance).await {
            Ok(Some(owner)) => {
                let message = response.as_bytes();
                if let Err(status) = cluster.handoff.deliver(owner.peer, message, source).await {
                    tracing::debug!(%status, instance, "cannot hand a response over");
                }
            }
            Ok(None) => tracing::debug!(instance, "response for an instance that is gone"),
            Err(error) => tracing::debug!(%error, "presence lookup failed"),
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
            .or_insert_with(|| {
                MediaPool::new(self.store.clone(), namespace, name)
                    .with_unreachable(self.unreachable.clone())
                    .with_directory(self.media_nodes.clone())
                    .with_in_process(self.in_process_media.clone())
            })
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

    /// Counts an ended call's `ids` Call-IDs as lingering; false (nothing counted) when
    /// [`MAX_LINGERING`] already linger.
    fn begin_lingering(&self, ids: usize) -> bool {
        self.lingering
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                may_linger(now, ids).then_some(now + ids)
            })
            .is_ok()
    }

    /// Forgets a call that ended, `lingered` of whose Call-IDs were counted as lingering
    /// (a Call-ID held by another call, one that won a race to it, stays).
    fn forget(&self, call: &Call, lingered: usize) {
        let mut calls = self.calls.lock().expect("calls lock");
        for call_id in call.call_ids() {
            if calls
                .get(&call_id)
                .is_some_and(|held| std::ptr::eq(Arc::as_ptr(held), call))
            {
                calls.remove(&call_id);
            }
        }
        self.lingering.fetch_sub(lingered, Ordering::Relaxed);
    }

    /// Calls still ringing: not answered yet, not ended.
    pub fn calls_being_set_up(&self) -> usize {
        let calls = self.calls.lock().expect("calls lock");
        calls
            .iter()
            .filter(|(id, call)| *id == call.a_call_id() && call.is_being_set_up())
            .count()
    }

    /// Calls in progress (ended ones linger a while to absorb retransmissions; they don't count).
    pub fn active_calls(&self) -> usize {
        let calls = self.calls.lock().expect("calls lock");
        // Each call is held under all its legs' Call-IDs: count it under the caller's.
        calls
            .iter()
            .filter(|(id, call)| *id == call.a_call_id() && !call.is_over())
            .count()
    }
}

/// The health probes of the registered media nodes, one per registration (key and the revision
/// that created it).
#[derive(Default)]
struct NodeProbes {
    running: HashMap<String, (i64, tokio::task::JoinHandle<()>)>,
}

impl NodeProbes {
    /// Whether registration `key` created at `created` needs a probe started.
    fn start(&self, key: &str, created: i64) -> bool {
        self.running.get(key).is_none_or(|(at, _)| *at != created)
    }

    fn insert(&mut self, key: String, created: i64, task: tokio::task::JoinHandle<()>) {
        if let Some((_, old)) = self.running.insert(key, (created, task)) {
            old.abort();
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some((_, task)) = self.running.remove(key) {
            task.abort();
        }
    }

    /// Stops the probes of nodes no longer registered.
    fn keep_only(&mut self, live: &HashSet<&str>) {
        self.running.retain(|key, (_, task)| {
            let keep = live.contains(key.as_str());
            if !keep {
                task.abort();
            }
            keep
        });
    }
}

impl Drop for NodeProbes {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

/// This instance's part in a cluster.
struct Cluster {
    failover: Failover,
    handoff: Arc<Handoff>,
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

/// Whether an instance holding `entries` Call-IDs, `lingering` of them of ended calls, takes
/// no new call (each call in progress is held under the Call-IDs of both its legs).
fn at_capacity(entries: usize, lingering: usize) -> bool {
    entries.saturating_sub(lingering) >= MAX_CALLS * 2
}

/// Whether an ended call's `ids` Call-IDs may linger beside the `lingering` ones.
fn may_linger(lingering: usize, ids: usize) -> bool {
    lingering + ids <= MAX_LINGERING
}

/// The final answer to `request` for `refused`, with its reason phrase.
fn answer(request: &Request, refused: Refused) -> Option<Bytes> {
    let mut builder = ResponseBuilder::for_request(request, refused.status).to_tag(call::tag());
    if let Some(reason) = refused.reason {
        builder = builder.reason(reason);
    }
    builder.build().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_calls_lingering_do_not_count_against_the_capacity() {
        // 2,000 calls/s for 25 s of linger: 50,000 ended calls under both legs' Call-IDs.
        assert!(!at_capacity(MAX_CALLS * 2 + 10, MAX_CALLS * 2));
        assert!(at_capacity(MAX_CALLS * 2 + 10, 10));
        assert!(!at_capacity(3, 5), "counts that race never underflow");
    }

    #[test]
    fn lingering_stops_at_its_bound() {
        assert!(may_linger(MAX_LINGERING - 2, 2));
        assert!(!may_linger(MAX_LINGERING - 1, 2));
    }
}
