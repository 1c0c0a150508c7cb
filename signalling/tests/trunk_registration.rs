//! Trunk registration with a carrier: real UDP on 127.0.0.1 between signalling servers and a
//! small fake carrier that challenges with 401 and checks the digest answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use centrex_coord::snapshot::{self as snap, DigestCredentials, TrunkSnapshot};
use centrex_coord::store::MemoryStore;
use centrex_coord::testing::{Etcd, eventually};
use centrex_coord::trunk::TrunkRegistrationState;
use centrex_coord::{Store, keys};
use centrex_signalling::auth::authenticator::Authenticator;
use centrex_signalling::auth::digest::{Algorithm, Credentials};
use centrex_signalling::directory::Directory;
use centrex_signalling::server::Server;
use centrex_signalling::sip::{HeaderName, Limits, Message, ResponseBuilder, StatusCode};
use centrex_signalling::trunk::registration::TrunkRegistrationConfig;
use tokio::net::UdpSocket;
use tokio::sync::watch;

const NAMESPACE: &str = "default";
const TRUNK: &str = "carrier";
const REALM: &str = "carrier.example";
const USERNAME: &str = "acme-trunk";
const PASSWORD: &[u8] = b"s3cret";

/// How the fake carrier answers an authenticated REGISTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// 200 with this many seconds when the digest is right, 403 otherwise.
    Accept(u32),
    /// 403 whatever the digest.
    Forbid,
}

/// One REGISTER the carrier received.
#[derive(Debug, Clone)]
struct Seen {
    source: SocketAddr,
    contact: String,
    expires: u32,
    /// The request carried a digest answer that verified.
    verified: bool,
}

/// A carrier's registrar on 127.0.0.1 that challenges every unauthenticated REGISTER.
struct Carrier {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Carrier {
    async fn start(policy: Policy) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(serve_carrier(socket, policy, seen.clone()));
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The verified REGISTERs that bound a contact (Expires > 0), by source.
    fn bound_from(&self) -> Vec<SocketAddr> {
        self.seen()
            .iter()
            .filter(|s| s.verified && s.expires > 0)
            .map(|s| s.source)
            .collect()
    }
}

async fn serve_carrier(socket: UdpSocket, policy: Policy, seen: Arc<Mutex<Vec<Seen>>>) {
    let credentials = DigestCredentials::derive(USERNAME, REALM, PASSWORD);
    let mut buffer = vec![0u8; 65_536];
    let mut nonce = 0u32;
    loop {
        let (len, source) = socket.recv_from(&mut buffer).await.unwrap();
        let datagram = Bytes::copy_from_slice(&buffer[..len]);
        let Ok(Message::Request(request)) = Message::parse(datagram, &Limits::default()) else {
            continue;
        };
        let headers = request.headers();
        let authorization = headers.get(HeaderName::Authorization);
        let verified = authorization
            .and_then(|value| Credentials::parse(value).ok())
            .is_some_and(|answer| {
                let ha1 = match answer.algorithm {
                    Algorithm::Md5 => &credentials.ha1_md5,
                    Algorithm::Sha256 => &credentials.ha1_sha256,
                };
                answer.username == USERNAME
                    && answer.uri == request.uri_str()
                    && answer.verify("REGISTER", ha1)
            });
        let expires = headers.expires().and_then(Result::ok).unwrap_or(3600);
        let contact = headers
            .get(HeaderName::Contact)
            .unwrap_or_default()
            .to_string();
        seen.lock().unwrap().push(Seen {
            source,
            contact: contact.clone(),
            expires,
            verified,
        });
        let response = match (authorization, policy) {
            (None, _) => {
                nonce += 1;
                ResponseBuilder::for_request(&request, StatusCode::UNAUTHORIZED).header(
                    HeaderName::WwwAuthenticate,
                    format!(
                        "Digest realm=\"{REALM}\", nonce=\"n{nonce}\", algorithm=MD5, qop=\"auth\""
                    ),
                )
            }
            (Some(_), Policy::Accept(granted)) if verified => {
                let granted = granted.min(expires);
                ResponseBuilder::for_request(&request, StatusCode::OK)
                    .header(HeaderName::Contact, format!("{contact};expires={granted}"))
            }
            _ => ResponseBuilder::for_request(&request, StatusCode::FORBIDDEN),
        };
        let response = response.to_tag("carrier").build().unwrap();
        socket.send_to(&response, source).await.unwrap();
    }
}

/// The trunk towards `carrier`, registering for `expiry` seconds.
fn trunk(carrier: SocketAddr, expiry: u32) -> TrunkSnapshot {
    TrunkSnapshot {
        schema: snap::SCHEMA_VERSION,
        source: snap::Source {
            namespace: NAMESPACE.into(),
            name: TRUNK.into(),
            uid: "t1".into(),
            generation: 4,
        },
        host: carrier.ip().to_string(),
        port: carrier.port(),
        transport: snap::Transport::Udp,
        registration: Some(snap::TrunkRegistration {
            credentials: DigestCredentials::derive(USERNAME, REALM, PASSWORD),
            expiry_seconds: expiry,
        }),
        inbound_sources: vec![],
        number_prefixes: vec![],
        max_channels: 10,
        calls_per_second: 5,
        country_code: "1".into(),
        national_prefix: "1".into(),
        international_prefix: "011".into(),
    }
}

async fn publish_trunk(store: &dyn Store, trunk: &TrunkSnapshot) {
    store
        .put(
            &keys::trunk(NAMESPACE, TRUNK),
            serde_json::to_vec(trunk).unwrap(),
            None,
        )
        .await
        .unwrap();
}

/// Fast settings, so takeovers and retries happen within a test's patience.
fn fast() -> TrunkRegistrationConfig {
    TrunkRegistrationConfig {
        lease_ttl: Duration::from_secs(2),
        poll: Duration::from_millis(50),
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        unregister_timeout: Duration::from_secs(1),
        ..TrunkRegistrationConfig::default()
    }
}

/// One signalling instance on 127.0.0.1 keeping trunk registrations, until stopped.
struct Instance {
    sip: SocketAddr,
    /// Stops keeping trunk registrations.
    stop: watch::Sender<bool>,
    /// Stops serving UDP.
    stop_udp: watch::Sender<bool>,
    keeping: tokio::task::JoinHandle<()>,
}

impl Instance {
    async fn start(store: Arc<dyn Store>, id: &str) -> Self {
        Self::start_with(store, id, fast()).await
    }

    async fn start_with(store: Arc<dyn Store>, id: &str, config: TrunkRegistrationConfig) -> Self {
        let directory = Directory::default();
        tokio::spawn({
            let (directory, store) = (directory.clone(), store.clone());
            async move { directory.follow(store).await }
        });
        eventually("the trunk to reach the directory", || async {
            directory.trunk(NAMESPACE, TRUNK).map(|_| ())
        })
        .await;
        let server = Arc::new(
            Server::new(store, directory, Authenticator::new())
                .with_instance_id(id)
                .with_trunk_registration(config),
        );
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sip = socket.local_addr().unwrap();
        let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let (stop_udp, udp_stopped) = watch::channel(false);
        tokio::spawn(server.clone().serve_udp(socket, until_stopped(udp_stopped)));
        let (stop, stopped) = watch::channel(false);
        let keeping = tokio::spawn(server.keep_trunks_registered(until_stopped(stopped)));
        Self {
            sip,
            stop,
            stop_udp,
            keeping,
        }
    }

    /// Stops the instance as a shutdown does: its trunks are released (un-registered, which
    /// needs the carrier's answers) before the transport stops.
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.keeping)
            .await
            .expect("trunk registrations released in time")
            .unwrap();
        let _ = self.stop_udp.send(true);
    }
}

async fn state(store: &dyn Store) -> Option<TrunkRegistrationState> {
    let kv = store
        .get(&keys::trunk_registration(NAMESPACE, TRUNK))
        .await
        .unwrap()?;
    Some(serde_json::from_slice(&kv.value).unwrap())
}

/// Waits until the published state satisfies `accept`.
async fn state_where(
    store: &dyn Store,
    what: &str,
    accept: impl Fn(&TrunkRegistrationState) -> bool,
) -> TrunkRegistrationState {
    eventually(what, || async { state(store).await.filter(|s| accept(s)) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_answers_the_challenge_and_publishes_the_trunk_registered() {
    let carrier = Carrier::start(Policy::Accept(120)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    publish_trunk(store.as_ref(), &trunk(carrier.addr, 600)).await;
    let instance = Instance::start(store.clone(), "sig-a").await;
    let state = state_where(store.as_ref(), "the trunk registered", |s| s.registered).await;
    assert_eq!(state.owner, "sig-a");
    assert_eq!(state.generation, 4);
    assert_eq!(state.last_error, None);
    let expires_at = state.expires_at.expect("registered until");
    assert!(
        (115..=125).contains(&(expires_at - state.attempted_at)),
        "the carrier's 120 s are published: {state:?}"
    );
    let seen = carrier.seen();
    assert!(
        !seen[0].verified,
        "the first REGISTER is sent without credentials"
    );
    let answered = seen.iter().find(|s| s.verified).expect("a verified answer");
    assert_eq!(answered.source, instance.sip, "sent from the SIP socket");
    assert_eq!(
        answered.contact,
        format!("<sip:{USERNAME}@{}>", instance.sip)
    );
    assert_eq!(answered.expires, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_refusing_with_403_is_published_as_the_last_error() {
    let carrier = Carrier::start(Policy::Forbid).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    publish_trunk(store.as_ref(), &trunk(carrier.addr, 600)).await;
    let _instance = Instance::start(store.clone(), "sig-a").await;
    let state = state_where(store.as_ref(), "the refusal published", |s| {
        s.last_error.is_some()
    })
    .await;
    assert!(!state.registered);
    assert_eq!(state.owner, "sig-a");
    assert_eq!(state.last_error.as_deref(), Some("403 Forbidden"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_carrier_is_published_as_no_answer() {
    // Bound, so nothing answers: Timer F ends each attempt.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    publish_trunk(store.as_ref(), &trunk(silent.local_addr().unwrap(), 600)).await;
    let config = TrunkRegistrationConfig {
        timers: centrex_signalling::transaction::timers::TimerValues {
            t1: Duration::from_millis(20),
            t2: Duration::from_millis(80),
            t4: Duration::from_millis(100),
        },
        ..fast()
    };
    let instance = Instance::start_with(store.clone(), "sig-a", config).await;
    let state = state_where(store.as_ref(), "the timeout published", |s| {
        s.last_error.is_some()
    })
    .await;
    assert_eq!(state.last_error.as_deref(), Some("no answer"));
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_registration_is_unregistered_and_its_state_withdrawn() {
    let carrier = Carrier::start(Policy::Accept(120)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut snapshot = trunk(carrier.addr, 600);
    publish_trunk(store.as_ref(), &snapshot).await;
    let instance = Instance::start(store.clone(), "sig-a").await;
    state_where(store.as_ref(), "the trunk registered", |s| s.registered).await;
    snapshot.registration = None;
    snapshot.source.generation += 1;
    publish_trunk(store.as_ref(), &snapshot).await;
    eventually("the carrier to see Expires: 0", || async {
        carrier
            .seen()
            .iter()
            .any(|s| s.verified && s.expires == 0 && s.source == instance.sip)
            .then_some(())
    })
    .await;
    eventually("the state and the election to go", || async {
        let election = keys::election(&format!("trunk/{NAMESPACE}/{TRUNK}"));
        let gone =
            state(store.as_ref()).await.is_none() && store.get(&election).await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
}

/// Two instances on one store: exactly one registers; stopping it hands the trunk to the other.
async fn one_instance_registers_and_the_other_takes_over(store: Arc<dyn Store>) {
    let carrier = Carrier::start(Policy::Accept(120)).await;
    publish_trunk(store.as_ref(), &trunk(carrier.addr, 600)).await;
    let a = Instance::start(store.clone(), "sig-a").await;
    let b = Instance::start(store.clone(), "sig-b").await;
    let first = state_where(store.as_ref(), "the trunk registered", |s| s.registered).await;
    let (holder, other) = if first.owner == "sig-a" {
        (a, b)
    } else {
        (b, a)
    };
    let election = keys::election(&format!("trunk/{NAMESPACE}/{TRUNK}"));
    let held_by = store
        .get(&election)
        .await
        .unwrap()
        .expect("an election key");
    assert_eq!(String::from_utf8(held_by.value).unwrap(), first.owner);
    assert!(
        carrier
            .bound_from()
            .iter()
            .all(|source| *source == holder.sip),
        "only the holder registers: {:?}",
        carrier.seen()
    );
    let holder_sip = holder.sip;
    holder.stop().await;
    assert!(
        carrier
            .seen()
            .iter()
            .any(|s| s.source == holder_sip && s.verified && s.expires == 0),
        "the stopping holder un-registers"
    );
    let next = state_where(store.as_ref(), "the other instance to register", |s| {
        s.registered && s.owner != first.owner
    })
    .await;
    assert_ne!(next.owner, first.owner);
    assert_eq!(carrier.bound_from().last(), Some(&other.sip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_instance_registers_and_the_other_takes_over_when_it_stops() {
    one_instance_registers_and_the_other_takes_over(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_instance_registers_and_the_other_takes_over_on_etcd() {
    let etcd = Etcd::start().await;
    one_instance_registers_and_the_other_takes_over(Arc::new(etcd.store().await)).await;
}
