//! Keeping trunks registered with their carriers, by exactly one signalling instance per trunk.
//!
//! Every instance runs [`TrunkRegistrations::run`]: for each trunk of the directory that has a
//! `registration`, it competes in the election `keys::election("trunk/<ns>/<name>")` under the
//! instance's lease. The holder sends REGISTER to the carrier (UDP, RFC 3261 non-INVITE client
//! transaction with retransmissions), answers its digest challenge from the snapshot's HA1
//! hashes, refreshes at half the granted time, retries with backoff after a failure, and
//! publishes a [`TrunkRegistrationState`] under its lease at every attempt. The others wait for
//! the election key to disappear (the holder stopped and resigned, or its lease expired) and
//! compete again. On stop, or when the trunk or its `registration` goes away, the holder
//! un-registers (Expires: 0, best effort) and resigns, so another instance takes over at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use centrex_coord::lease::KeptLease;
use centrex_coord::random::token as random_token;
use centrex_coord::snapshot::{self as snap, TrunkSnapshot};
use centrex_coord::trunk::TrunkRegistrationState;
use centrex_coord::{Store, keys};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::election::Election;
use super::register::{
    Answer, RegisterRequest, Session, contact_uri, read_answer, refresh_after, registrar_uri,
    retry_after, status_line,
};
use crate::auth::client::ChallengeError;
use crate::directory::Directory;
use crate::sip::{BuildError, HeaderName, MAGIC_COOKIE, Response};
use crate::transaction::client::{Action, ClientTransaction, Kind};
use crate::transaction::timers::{Reliability, TimerValues};
use crate::transport::{Outbound, Peer, SendError, Transport};

/// Responses queued per registration; more are dropped (the transaction retransmits).
const INBOX: usize = 16;
/// Requests per attempt: the first, its answer to a challenge, and one more for a stale nonce
/// or a 423.
const ROUNDS: usize = 3;

/// How trunk registrations are kept; the defaults are the documented ones.
#[derive(Debug, Clone, Copy)]
pub struct TrunkRegistrationConfig {
    /// TTL of the instance's lease, which its election keys and states hang on: how long a dead
    /// holder keeps a trunk before another instance takes over (default 10 s).
    pub lease_ttl: Duration,
    /// How often the directory is re-read for new trunks, a holder checks its trunk and its
    /// election, and a waiting instance re-checks an election it watches (default 1 s).
    pub poll: Duration,
    /// First wait after a failed attempt, doubled per failure (default 2 s).
    pub retry_min: Duration,
    /// Longest wait between failed attempts (default 300 s).
    pub retry_max: Duration,
    /// How long un-registering on stop may take (default 2 s).
    pub unregister_timeout: Duration,
    /// RFC 3261 timers of the REGISTER transactions (T1 500 ms: Timer F gives up after 32 s).
    pub timers: TimerValues,
}

impl Default for TrunkRegistrationConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            unregister_timeout: Duration::from_secs(2),
            timers: TimerValues::default(),
        }
    }
}

/// Why one registration attempt failed; the message is what `last_error` shows.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("no answer")]
    NoAnswer,
    /// The carrier's final answer: its status line.
    #[error("{0}")]
    Refused(String),
    #[error("cannot answer the challenge: {0}")]
    Challenge(#[from] ChallengeError),
    #[error("{0}")]
    Unanswerable(String),
    #[error("transport {0} is not supported for trunk registration yet: use udp")]
    Transport(&'static str),
    #[error("SIP over UDP is not served yet")]
    NotServing,
    #[error("cannot resolve the carrier host {host:?}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot build the REGISTER: {0}")]
    Build(#[from] BuildError),
    #[error("cannot send the REGISTER: {0}")]
    Send(#[from] SendError),
}

/// A trunk, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TrunkId {
    namespace: String,
    name: String,
}

impl TrunkId {
    fn of(trunk: &TrunkSnapshot) -> Self {
        Self {
            namespace: trunk.source.namespace.clone(),
            name: trunk.source.name.clone(),
        }
    }

    fn election_key(&self) -> String {
        keys::election(&format!("trunk/{}/{}", self.namespace, self.name))
    }

    fn state_key(&self) -> String {
        keys::trunk_registration(&self.namespace, &self.name)
    }
}

impl std::fmt::Display for TrunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why an instance stopped holding a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The instance stops.
    Stopped,
    /// The trunk, or its registration, is gone.
    Gone,
    /// The election key is no longer ours (the lease was lost).
    Lost,
}

/// The trunk registrations of one instance.
pub struct TrunkRegistrations {
    instance: String,
    store: Arc<dyn Store>,
    directory: Directory,
    out: Arc<Outbound>,
    config: TrunkRegistrationConfig,
    lease: Arc<KeptLease>,
    /// Where the answers to each registration's requests go, by Call-ID.
    inboxes: Mutex<HashMap<String, mpsc::Sender<Response>>>,
}

impl TrunkRegistrations {
    /// Registrations kept by instance `instance`, sending through `out`.
    pub fn new(
        instance: impl Into<String>,
        store: Arc<dyn Store>,
        directory: Directory,
        out: Arc<Outbound>,
        config: TrunkRegistrationConfig,
    ) -> Self {
        let lease = KeptLease::new(store.clone(), config.lease_ttl);
        Self {
            instance: instance.into(),
            store,
            directory,
            out,
            config,
            lease,
            inboxes: Mutex::new(HashMap::new()),
        }
    }

    /// The instance id written as election holder and state owner.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Hands a response to the registration whose Call-ID it carries; false if none has it.
    pub fn response(&self, response: Response) -> bool {
        let Ok(call_id) = response.headers().call_id() else {
            return false;
        };
        let inbox = self
            .inboxes
            .lock()
            .expect("inboxes lock")
            .get(call_id)
            .cloned();
        match inbox {
            Some(inbox) => {
                let _ = inbox.try_send(response);
                true
            }
            None => false,
        }
    }

    /// Competes for every trunk with a registration and keeps those it wins registered, until
    /// `shutdown`; then un-registers and resigns them before returning.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let (stop, stopping) = watch::channel(false);
        let mut keepers: HashMap<TrunkId, JoinHandle<()>> = HashMap::new();
        tokio::pin!(shutdown);
        loop {
            keepers.retain(|_, keeper| !keeper.is_finished());
            // Without a socket a holder could not register: compete only once UDP is served.
            if self.out.advertised(Transport::Udp).is_some() {
                for trunk in self.directory.trunks() {
                    let id = TrunkId::of(&trunk);
                    if trunk.registration.is_some() && !keepers.contains_key(&id) {
                        let keeper = self.clone().keep(id.clone(), stopping.clone());
                        keepers.insert(id, tokio::spawn(keeper));
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
        let _ = stop.send(true);
        for (_, keeper) in keepers {
            let _ = keeper.await;
        }
    }

    /// The trunk `id`, if it is still there and still has a registration.
    fn registered_trunk(&self, id: &TrunkId) -> Option<Arc<TrunkSnapshot>> {
        self.directory
            .trunk(&id.namespace, &id.name)
            .filter(|trunk| trunk.registration.is_some())
    }

    /// Competes for trunk `id` for as long as it has a registration and the instance runs.
    async fn keep(self: Arc<Self>, id: TrunkId, mut stop: watch::Receiver<bool>) {
        let election = Election::new(
            self.store.clone(),
            id.election_key(),
            self.instance.clone(),
            self.lease.clone(),
        );
        loop {
            if *stop.borrow() || self.registered_trunk(&id).is_none() {
                return;
            }
            let won = tokio::select! {
                won = election.campaign() => won,
                _ = stopped(&mut stop) => return,
            };
            let waited = match won {
                Ok(true) => {
                    tracing::info!(trunk = %id, instance = %self.instance, "keeping the trunk registered");
                    match self.hold(&id, &election, &mut stop).await {
                        Ended::Lost => {
                            tracing::warn!(trunk = %id, "trunk registration election lost");
                            continue;
                        }
                        Ended::Stopped | Ended::Gone => {
                            // The state first: once resigned, the next holder's state is not ours
                            // to delete.
                            if let Err(error) = self.store.delete(&id.state_key()).await {
                                tracing::warn!(trunk = %id, %error, "cannot delete the trunk registration state");
                            }
                            if let Err(error) = election.resign().await {
                                tracing::warn!(trunk = %id, %error, "cannot resign the trunk registration");
                            }
                            return;
                        }
                    }
                }
                Ok(false) => {
                    tokio::select! {
                        waited = election.vacated(self.config.poll) => waited,
                        _ = stopped(&mut stop) => return,
                    }
                }
                Err(error) => Err(error),
            };
            if let Err(error) = waited {
                tracing::warn!(trunk = %id, %error, "trunk registration election unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(self.config.poll) => {}
                    _ = stopped(&mut stop) => return,
                }
            }
        }
    }

    /// Keeps trunk `id` registered while this instance holds its election.
    async fn hold(
        &self,
        id: &TrunkId,
        election: &Election,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let Some(mut trunk) = self.registered_trunk(id) else {
            return Ended::Gone;
        };
        let mut client = Client::new(self);
        let mut failures = 0u32;
        // The trunk as last registered with: what to un-register when we let go.
        let mut bound: Option<Arc<TrunkSnapshot>> = None;
        let ended = 'holding: loop {
            let requested = trunk
                .registration
                .as_ref()
                .map_or(0, |registration| registration.expiry_seconds);
            let attempted_at = unix_now();
            let result = tokio::select! {
                result = client.attempt(&trunk, requested) => result,
                _ = stopped(stop) => break 'holding Ended::Stopped,
            };
            let mut state = TrunkRegistrationState {
                owner: self.instance.clone(),
                registered: false,
                last_error: None,
                expires_at: None,
                attempted_at,
                generation: trunk.source.generation,
            };
            let wait = match result {
                Ok(granted) => {
                    failures = 0;
                    bound = Some(trunk.clone());
                    state.registered = true;
                    state.expires_at = Some(attempted_at + u64::from(granted));
                    tracing::debug!(trunk = %id, granted, "trunk registered");
                    refresh_after(granted)
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(trunk = %id, %error, failures, "trunk registration failed");
                    state.last_error = Some(error.to_string());
                    retry_after(failures, self.config.retry_min, self.config.retry_max)
                }
            };
            self.publish(id, &state).await;
            let due = Instant::now() + wait;
            loop {
                let nap = self
                    .config
                    .poll
                    .min(due.saturating_duration_since(Instant::now()));
                tokio::select! {
                    _ = tokio::time::sleep(nap) => {}
                    _ = stopped(stop) => break 'holding Ended::Stopped,
                }
                match self.registered_trunk(id) {
                    None => break 'holding Ended::Gone,
                    Some(current) if current != trunk => {
                        if let Some(old) = bound.take_if(|old| !same_binding(old, &current)) {
                            client.unregister(&old).await;
                        }
                        trunk = current;
                        failures = 0;
                        continue 'holding;
                    }
                    Some(_) => {}
                }
                if let Ok(false) = election.holds().await {
                    break 'holding Ended::Lost;
                }
                if Instant::now() >= due {
                    break;
                }
            }
        };
        if ended != Ended::Lost
            && let Some(bound) = bound
        {
            client.unregister(&bound).await;
        }
        ended
    }

    /// Writes `state` under the instance's lease.
    async fn publish(&self, id: &TrunkId, state: &TrunkRegistrationState) {
        let lease = match self.lease.get().await {
            Ok(lease) => lease,
            Err(error) => {
                tracing::warn!(trunk = %id, %error, "cannot publish the trunk registration state");
                return;
            }
        };
        let value = serde_json::to_vec(state).expect("the state serialises");
        if let Err(error) = self.store.put(&id.state_key(), value, Some(lease)).await {
            tracing::warn!(trunk = %id, %error, "cannot publish the trunk registration state");
        }
    }
}

/// Whether two versions of a trunk register the same binding (same carrier and user).
fn same_binding(a: &TrunkSnapshot, b: &TrunkSnapshot) -> bool {
    let user = |t: &TrunkSnapshot| {
        t.registration
            .as_ref()
            .map(|r| r.credentials.username.clone())
    };
    (&a.host, a.port, a.transport, user(a)) == (&b.host, b.port, b.transport, user(b))
}

/// The REGISTER client of one held trunk: its session and the answers routed to it.
struct Client<'a> {
    owner: &'a TrunkRegistrations,
    session: Session,
    inbox: mpsc::Receiver<Response>,
    /// Nonce count per nonce: a carrier may challenge with the same nonce again.
    nonce_count: (String, u32),
}

impl<'a> Client<'a> {
    fn new(owner: &'a TrunkRegistrations) -> Self {
        let session = Session {
            call_id: format!("{}@centrex", random_token()),
            from_tag: random_token(),
            cseq: 0,
        };
        let (route, inbox) = mpsc::channel(INBOX);
        owner
            .inboxes
            .lock()
            .expect("inboxes lock")
            .insert(session.call_id.clone(), route);
        Self {
            owner,
            session,
            inbox,
            nonce_count: (String::new(), 0),
        }
    }

    /// Registers with `trunk` for `expires` seconds (0: un-registers); the granted seconds.
    async fn attempt(
        &mut self,
        trunk: &TrunkSnapshot,
        expires: u32,
    ) -> Result<u32, RegistrationError> {
        let Some(registration) = &trunk.registration else {
            return Ok(0);
        };
        match trunk.transport {
            snap::Transport::Udp => {}
            snap::Transport::Tcp => return Err(RegistrationError::Transport("tcp")),
            snap::Transport::Tls => return Err(RegistrationError::Transport("tls")),
        }
        let contact = self
            .owner
            .out
            .advertised(Transport::Udp)
            .ok_or(RegistrationError::NotServing)?;
        let carrier = resolve(&trunk.host, trunk.port, contact).await?;
        let username = &registration.credentials.username;
        let contact_uri = contact_uri(username, contact);
        let uri = registrar_uri(trunk);
        let mut expires = expires;
        let mut authorization: Option<(HeaderName, String)> = None;
        let mut last = RegistrationError::NoAnswer;
        for _ in 0..ROUNDS {
            self.session.cseq += 1;
            let branch = format!("{MAGIC_COOKIE}{}", random_token());
            let request = RegisterRequest {
                trunk,
                username,
                contact,
                session: &self.session,
                branch: &branch,
                expires,
                authorization: authorization
                    .as_ref()
                    .map(|(name, value)| (*name, value.as_str())),
            }
            .build()?;
            let response = self.transact(request, carrier).await?;
            match read_answer(&response, &contact_uri, expires) {
                Answer::Registered { granted } => return Ok(granted),
                Answer::Challenged { challenge, header } => {
                    let nc = self.next_nonce_count(&challenge.nonce);
                    let value = challenge.answer(
                        &registration.credentials,
                        "REGISTER",
                        &uri,
                        nc,
                        &random_token(),
                    )?;
                    authorization = Some((header, value));
                    last = RegistrationError::Refused(status_line(&response));
                }
                Answer::Unanswerable(error) => return Err(RegistrationError::Unanswerable(error)),
                Answer::TooBrief { min_expires } => {
                    expires = expires.max(min_expires);
                    last = RegistrationError::Refused(status_line(&response));
                }
                Answer::Refused(line) => return Err(RegistrationError::Refused(line)),
            }
        }
        // Challenged again after answering: the carrier does not accept the credentials.
        Err(last)
    }

    /// Un-registers from `trunk`, best effort and bounded in time.
    async fn unregister(&mut self, trunk: &TrunkSnapshot) {
        let timeout = self.owner.config.unregister_timeout;
        match tokio::time::timeout(timeout, self.attempt(trunk, 0)).await {
            Ok(Ok(_)) => tracing::debug!(host = %trunk.host, "trunk un-registered"),
            Ok(Err(error)) => {
                tracing::warn!(host = %trunk.host, %error, "cannot un-register the trunk")
            }
            Err(_) => tracing::warn!(host = %trunk.host, "cannot un-register the trunk: no answer"),
        }
    }

    fn next_nonce_count(&mut self, nonce: &str) -> u32 {
        if self.nonce_count.0 == nonce {
            self.nonce_count.1 += 1;
        } else {
            self.nonce_count = (nonce.to_string(), 1);
        }
        self.nonce_count.1
    }

    /// Sends `request` to `carrier` as a non-INVITE client transaction over UDP; its final
    /// answer.
    async fn transact(
        &mut self,
        request: Bytes,
        carrier: SocketAddr,
    ) -> Result<Response, RegistrationError> {
        let peer = Peer::udp(carrier);
        self.owner.out.send(&request, peer).await?;
        let mut transaction = ClientTransaction::start(
            Kind::NonInvite,
            Reliability::Unreliable,
            self.owner.config.timers,
            Instant::now(),
        );
        let cseq = self.session.cseq;
        loop {
            let Some(deadline) = transaction.next_deadline() else {
                return Err(RegistrationError::NoAnswer);
            };
            tokio::select! {
                received = self.inbox.recv() => {
                    let Some(response) = received else {
                        return Err(RegistrationError::NoAnswer);
                    };
                    // A late answer to an earlier request of the session.
                    if response.headers().cseq().map(|c| c.seq).ok() != Some(cseq) {
                        continue;
                    }
                    let status = response.status().as_u16();
                    for action in transaction.on_response(status, Instant::now()) {
                        if matches!(action, Action::Deliver(code) if code >= 200) {
                            return Ok(response);
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    for action in transaction.on_timer(Instant::now()) {
                        match action {
                            Action::Retransmit => {
                                if let Err(error) = self.owner.out.send(&request, peer).await {
                                    tracing::debug!(%error, %carrier, "cannot retransmit the REGISTER");
                                }
                            }
                            Action::TimedOut => return Err(RegistrationError::NoAnswer),
                            Action::Deliver(_) | Action::SendAck => {}
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Client<'_> {
    fn drop(&mut self) {
        self.owner
            .inboxes
            .lock()
            .expect("inboxes lock")
            .remove(&self.session.call_id);
    }
}

/// The carrier's address, of the same family as our socket's when it has several.
async fn resolve(
    host: &str,
    port: u16,
    local: SocketAddr,
) -> Result<SocketAddr, RegistrationError> {
    let error = |reason: String| RegistrationError::Resolve {
        host: host.to_string(),
        reason,
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| error(e.to_string()))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| error("no address".into()))
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
