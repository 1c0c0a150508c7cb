//! Anchoring a call's audio on a media node: pick a lightly loaded node of the tenant's pool (the
//! less loaded of two drawn at random) from the registrations in the store, as watched; allocate a
//! two-leg relay session over gRPC (with a deadline, trying the next node when one is full or
//! draining), point legs at the parties, release the session.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centrex_coord::media::{MediaNodeRegistration, choose_node};
use centrex_coord::{KeyValue, Store, StoreError, keys};
use centrex_proto::media::media_control_client::MediaControlClient;
use centrex_proto::media::media_control_server::MediaControl;
use centrex_proto::media::{
    CreateSessionRequest, DeleteSessionRequest, Endpoint, LegSpec, PayloadType, Session,
    UpdateLegRequest, WatchNodeStatsRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Every MediaControl call gets this deadline.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Nodes tried for one allocation before giving up.
const ATTEMPTS: usize = 3;

/// Where one leg of an anchored call receives: what goes into that party's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegAddress {
    pub address: IpAddr,
    pub port: u16,
}

/// A relay session on one node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    pub session_id: String,
    pub node: SocketAddr,
    /// The node's registration key: the call moves to another node when it is deleted.
    #[serde(default)]
    pub node_key: String,
    /// The caller's side: the caller sends here.
    pub a: LegAddress,
    /// The callee's side: the callee sends here.
    pub b: LegAddress,
}

/// Why media could not be anchored.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("no media node of pool {pool} can take a session")]
    NoNode { pool: String },
    #[error("coordination store: {0}")]
    Store(#[from] StoreError),
    #[error("media node {node}: {status}")]
    Node {
        node: SocketAddr,
        status: tonic::Status,
    },
    #[error("media node {node} answered without {what}")]
    Incomplete {
        node: SocketAddr,
        what: &'static str,
    },
}

/// How often a watched node reports its figures.
const PROBE_INTERVAL: Duration = Duration::from_millis(300);
/// Attempts in a row that get nothing from a node before it counts as unreachable.
const PROBE_MISSES: u32 = 3;

/// Media nodes found unreachable before their registration expired (by registration key): no
/// new session goes there.
pub type Unreachable = Arc<Mutex<HashSet<String>>>;

/// The media nodes' registrations as the store's watch last showed them (kept up to date by
/// `B2bua::follow_media_nodes`), so that anchoring a call does not read the store. It answers
/// only while that watch runs; before the first listing and whenever the watch is down,
/// [`MediaPool::nodes`] reads the store instead.
#[derive(Clone, Default)]
pub struct NodeDirectory(Arc<Mutex<Directory>>);

#[derive(Default)]
struct Directory {
    live: bool,
    nodes: BTreeMap<String, MediaNodeRegistration>,
}

impl NodeDirectory {
    /// Everything registered, from a listing the watch follows on from: live from now.
    pub fn replace(&self, listed: &[KeyValue]) {
        let mut directory = self.lock();
        directory.nodes = listed.iter().filter_map(registration).collect();
        directory.live = true;
    }

    /// A registration written (new, or its figures refreshed).
    pub fn put(&self, kv: &KeyValue) {
        let mut directory = self.lock();
        match registration(kv) {
            Some((key, node)) => directory.nodes.insert(key, node),
            // Unreadable: better no entry than a stale one.
            None => directory.nodes.remove(&kv.key),
        };
    }

    pub fn delete(&self, key: &str) {
        self.lock().nodes.remove(key);
    }

    /// The watch is down: the store must be read until the next listing.
    pub fn lost(&self) {
        self.lock().live = false;
    }

    /// The registrations under `prefix`, or `None` while the directory is not live.
    fn under(&self, prefix: &str) -> Option<Vec<MediaNodeRegistration>> {
        let directory = self.lock();
        directory.live.then(|| {
            directory
                .nodes
                .range(prefix.to_string()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(_, node)| node.clone())
                .collect()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.0.lock().expect("node directory lock")
    }
}

fn registration(kv: &KeyValue) -> Option<(String, MediaNodeRegistration)> {
    Some((kv.key.clone(), serde_json::from_slice(&kv.value).ok()?))
}

/// Resolves once the media node whose MediaControl service is at `grpc` stops answering: its
/// stats stream broke or stalled and [`PROBE_MISSES`] attempts in a row got nothing from it. A
/// crashed node (connections refused at once) is found within about a second, long before its
/// registration lease expires.
pub async fn until_unreachable(grpc: SocketAddr) {
    let mut misses = 0;
    while misses < PROBE_MISSES {
        if stats_received(grpc).await > 0 {
            misses = 0;
        } else {
            misses += 1;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Follows the node's stats stream until it ends or stalls; returns how many reports came.
async fn stats_received(grpc: SocketAddr) -> usize {
    let Ok(endpoint) = Channel::from_shared(format!("http://{grpc}")) else {
        return 0;
    };
    let connected = endpoint
        .connect_timeout(PROBE_INTERVAL * PROBE_MISSES)
        .connect()
        .await;
    let Ok(channel) = connected else { return 0 };
    let request = WatchNodeStatsRequest {
        interval_ms: PROBE_INTERVAL.as_millis() as u32,
    };
    let stream = MediaControlClient::new(channel)
        .watch_node_stats(request)
        .await;
    let Ok(stream) = stream else { return 0 };
    let mut stream = stream.into_inner();
    let mut received = 0;
    let stall = PROBE_INTERVAL * PROBE_MISSES;
    while let Ok(Ok(Some(_))) = tokio::time::timeout(stall, stream.message()).await {
        received += 1;
    }
    received
}

/// The calls signalling makes on a media node, answered in this process: local mode runs its
/// media node beside signalling, and calling its MediaControl service directly saves an HTTP/2
/// round trip through both ends of gRPC (about a quarter of a loaded `centrex up`).
#[tonic::async_trait]
pub trait InProcessControl: Send + Sync + 'static {
    async fn create_session(&self, request: CreateSessionRequest) -> Result<Session, Status>;
    async fn update_leg(&self, request: UpdateLegRequest) -> Result<(), Status>;
    async fn delete_session(&self, request: DeleteSessionRequest) -> Result<(), Status>;
}

#[tonic::async_trait]
impl<T: MediaControl> InProcessControl for T {
    async fn create_session(&self, request: CreateSessionRequest) -> Result<Session, Status> {
        let response = MediaControl::create_session(self, Request::new(request)).await?;
        Ok(response.into_inner())
    }

    async fn update_leg(&self, request: UpdateLegRequest) -> Result<(), Status> {
        MediaControl::update_leg(self, Request::new(request)).await?;
        Ok(())
    }

    async fn delete_session(&self, request: DeleteSessionRequest) -> Result<(), Status> {
        MediaControl::delete_session(self, Request::new(request)).await?;
        Ok(())
    }
}

/// A media node of this process: its registered gRPC address, and its service.
#[derive(Clone)]
pub struct InProcessNode {
    pub grpc: SocketAddr,
    pub control: Arc<dyn InProcessControl>,
}

/// How a node is reached: over gRPC, or by a direct call when it runs in this process.
enum Control {
    Grpc(MediaControlClient<Channel>),
    InProcess(Arc<dyn InProcessControl>),
}

impl Control {
    async fn create_session(&mut self, request: CreateSessionRequest) -> Result<Session, Status> {
        match self {
            Control::Grpc(client) => Ok(client
                .create_session(with_deadline(request))
                .await?
                .into_inner()),
            Control::InProcess(control) => within_deadline(control.create_session(request)).await,
        }
    }

    async fn update_leg(&mut self, request: UpdateLegRequest) -> Result<(), Status> {
        match self {
            Control::Grpc(client) => client.update_leg(with_deadline(request)).await.map(drop),
            Control::InProcess(control) => within_deadline(control.update_leg(request)).await,
        }
    }

    async fn delete_session(&mut self, request: DeleteSessionRequest) -> Result<(), Status> {
        match self {
            Control::Grpc(client) => client
                .delete_session(with_deadline(request))
                .await
                .map(drop),
            Control::InProcess(control) => within_deadline(control.delete_session(request)).await,
        }
    }
}

/// A direct call held to the same [`DEADLINE`] as a gRPC one.
async fn within_deadline<T>(
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(DEADLINE, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("the media node did not answer")))
}

/// The media nodes of one pool, and gRPC channels to them.
#[derive(Clone)]
pub struct MediaPool {
    store: Arc<dyn Store>,
    namespace: String,
    pool: String,
    channels: Arc<Mutex<HashMap<SocketAddr, Channel>>>,
    unreachable: Unreachable,
    directory: NodeDirectory,
    in_process: Option<InProcessNode>,
}

impl MediaPool {
    /// The pool `namespace/pool` as registered in `store`.
    pub fn new(store: Arc<dyn Store>, namespace: &str, pool: &str) -> Self {
        Self {
            store,
            namespace: namespace.into(),
            pool: pool.into(),
            channels: Arc::default(),
            unreachable: Arc::default(),
            directory: NodeDirectory::default(),
            in_process: None,
        }
    }

    /// Reads the registrations from `directory` while it is live rather than from the store.
    pub fn with_directory(mut self, directory: NodeDirectory) -> Self {
        self.directory = directory;
        self
    }

    /// Calls `node` directly rather than over gRPC (local mode's media node).
    pub fn with_in_process(mut self, node: Option<InProcessNode>) -> Self {
        self.in_process = node;
        self
    }

    /// Skips the nodes in `unreachable` (shared with whoever watches the nodes' health).
    pub fn with_unreachable(mut self, unreachable: Unreachable) -> Self {
        self.unreachable = unreachable;
        self
    }

    /// The nodes registered now.
    pub async fn nodes(&self) -> Result<Vec<MediaNodeRegistration>, StoreError> {
        let prefix = keys::media_nodes(&self.namespace, &self.pool);
        if let Some(nodes) = self.directory.under(&prefix) {
            return Ok(nodes);
        }
        let (items, _) = self.store.list(&prefix).await?;
        Ok(items
            .iter()
            .filter_map(registration)
            .map(|(_, node)| node)
            .collect())
    }

    /// Allocates session `session_id` (idempotent: a retry returns the same session) on the
    /// less loaded of two random open nodes, trying others when a node is full, draining or
    /// unreachable. With `rtcp_mux` (the caller offered it) each leg binds one port instead of an
    /// RTP/RTCP pair.
    pub async fn anchor(
        &self,
        session_id: &str,
        call_id: &str,
        tenant: &str,
        caller: &Remote,
    ) -> Result<Anchor, MediaError> {
        self.anchor_between(session_id, call_id, tenant, caller, None)
            .await
    }

    /// As [`MediaPool::anchor`], with the callee's side known too (`callee`): a call moved to
    /// another node relays both ways at once.
    pub async fn anchor_between(
        &self,
        session_id: &str,
        call_id: &str,
        tenant: &str,
        caller: &Remote,
        callee: Option<&Remote>,
    ) -> Result<Anchor, MediaError> {
        let mut nodes = self.nodes().await?;
        {
            let unreachable = self.unreachable.lock().expect("unreachable lock");
            nodes.retain(|n| {
                !unreachable.contains(&keys::media_node(&self.namespace, &self.pool, &n.node_id))
            });
        }
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let Some(node) = choose_node(&nodes).cloned() else {
                break;
            };
            nodes.retain(|n| n.node_id != node.node_id);
            match self
                .create(&node, session_id, call_id, tenant, caller, callee)
                .await
            {
                Ok(anchor) => return Ok(anchor),
                Err(MediaError::Node { status, node })
                    if matches!(
                        status.code(),
                        Code::ResourceExhausted
                            | Code::FailedPrecondition
                            | Code::Unavailable
                            | Code::DeadlineExceeded
                    ) =>
                {
                    tracing::warn!(%node, %status, "media node refused a session; trying another");
                    last = Some(MediaError::Node { status, node });
                }
                Err(other) => return Err(other),
            }
        }
        Err(last.unwrap_or(MediaError::NoNode {
            pool: self.pool.clone(),
        }))
    }

    /// Points `leg` ("a" or "b") of the session at the party's `remote` address from its SDP.
    pub async fn point(
        &self,
        anchor: &Anchor,
        leg: &str,
        remote: SocketAddr,
        rtcp_mux: bool,
        payload_types: &[(u8, String, u32)],
    ) -> Result<(), MediaError> {
        let request = UpdateLegRequest {
            session_id: anchor.session_id.clone(),
            leg_id: leg.into(),
            remote: Some(endpoint(remote)),
            rtcp_mux,
            payload_types: wire_payload_types(payload_types),
        };
        self.control(anchor.node)?
            .update_leg(request)
            .await
            .map_err(|status| MediaError::Node {
                node: anchor.node,
                status,
            })?;
        Ok(())
    }

    /// Ends the session; an unknown session is not an error (it may have timed out already).
    pub async fn release(&self, anchor: &Anchor) -> Result<(), MediaError> {
        let request = DeleteSessionRequest {
            session_id: anchor.session_id.clone(),
        };
        self.control(anchor.node)?
            .delete_session(request)
            .await
            .map_err(|status| MediaError::Node {
                node: anchor.node,
                status,
            })?;
        Ok(())
    }

    async fn create(
        &self,
        node: &MediaNodeRegistration,
        session_id: &str,
        call_id: &str,
        tenant: &str,
        caller: &Remote,
        callee: Option<&Remote>,
    ) -> Result<Anchor, MediaError> {
        let address = node.grpc_address;
        // Leg A is ready at once (the caller's offer says where it listens); leg B waits for
        // the answer. Both bind one port each when the caller offered rtcp-mux.
        let a = LegSpec {
            leg_id: "a".into(),
            rtcp_mux: caller.rtcp_mux,
            remote: Some(endpoint(caller.rtp)),
            payload_types: wire_payload_types(&caller.payload_types),
        };
        let b = LegSpec {
            leg_id: "b".into(),
            rtcp_mux: callee.map_or(caller.rtcp_mux, |c| c.rtcp_mux),
            remote: callee.map(|c| endpoint(c.rtp)),
            payload_types: callee.map_or_else(Vec::new, |c| wire_payload_types(&c.payload_types)),
        };
        let request = CreateSessionRequest {
            session_id: session_id.into(),
            call_id: call_id.into(),
            tenant: tenant.into(),
            legs: vec![a, b],
        };
        let session = self
            .control(address)?
            .create_session(request)
            .await
            .map_err(|status| MediaError::Node {
                node: address,
                status,
            })?;
        let local = |id: &str| -> Result<LegAddress, MediaError> {
            let leg =
                session
                    .legs
                    .iter()
                    .find(|l| l.leg_id == id)
                    .ok_or(MediaError::Incomplete {
                        node: address,
                        what: "both legs",
                    })?;
            let rtp = leg.local_rtp.as_ref().ok_or(MediaError::Incomplete {
                node: address,
                what: "a local RTP address",
            })?;
            Ok(LegAddress {
                address: rtp.address.parse().map_err(|_| MediaError::Incomplete {
                    node: address,
                    what: "a valid address",
                })?,
                port: u16::try_from(rtp.port).map_err(|_| MediaError::Incomplete {
                    node: address,
                    what: "a valid port",
                })?,
            })
        };
        Ok(Anchor {
            session_id: session_id.into(),
            node: address,
            node_key: keys::media_node(&self.namespace, &self.pool, &node.node_id),
            a: local("a")?,
            b: local("b")?,
        })
    }

    fn control(&self, node: SocketAddr) -> Result<Control, MediaError> {
        match &self.in_process {
            Some(local) if local.grpc == node => Ok(Control::InProcess(local.control.clone())),
            _ => self.client(node).map(Control::Grpc),
        }
    }

    fn client(&self, node: SocketAddr) -> Result<MediaControlClient<Channel>, MediaError> {
        let mut channels = self.channels.lock().expect("channels lock");
        if !channels.contains_key(&node) {
            let endpoint = Channel::from_shared(format!("http://{node}"))
                .map_err(|_| MediaError::Incomplete {
                    node,
                    what: "a valid gRPC address",
                })?
                .connect_timeout(DEADLINE)
                .timeout(DEADLINE);
            // Channels to nodes that left the pool are dropped with the map when it grows past
            // the pool's plausible size, so a churning pool cannot grow it without bound.
            if channels.len() >= 1024 {
                channels.clear();
            }
            channels.insert(node, endpoint.connect_lazy());
        }
        Ok(MediaControlClient::new(channels[&node].clone()))
    }
}

/// Where a party listens and what it offered, from its SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub rtp: SocketAddr,
    pub rtcp_mux: bool,
    /// `(payload type, encoding, clock rate)` of each `a=rtpmap`.
    pub payload_types: Vec<(u8, String, u32)>,
}

fn endpoint(address: SocketAddr) -> Endpoint {
    Endpoint {
        address: address.ip().to_string(),
        port: address.port().into(),
    }
}

fn wire_payload_types(payload_types: &[(u8, String, u32)]) -> Vec<PayloadType> {
    payload_types
        .iter()
        .map(|(id, encoding, clock_rate)| PayloadType {
            id: (*id).into(),
            encoding: encoding.clone(),
            clock_rate: *clock_rate,
        })
        .collect()
}

fn with_deadline<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(DEADLINE);
    request
}

#[cfg(test)]
mod tests {
    use centrex_coord::media::PortRange;

    use super::*;

    fn registered(namespace: &str, pool: &str, node: &str, sessions: u32) -> KeyValue {
        let registration = MediaNodeRegistration {
            node_id: node.into(),
            address: "127.0.0.1".parse().unwrap(),
            grpc_address: "127.0.0.1:9000".parse().unwrap(),
            rtp_ports: PortRange {
                min: 20_000,
                max: 20_999,
            },
            capacity: 100,
            active_sessions: sessions,
            packets_per_second: 0.0,
            draining: false,
        };
        KeyValue {
            key: keys::media_node(namespace, pool, node),
            value: serde_json::to_vec(&registration).unwrap(),
            create_revision: 1,
            mod_revision: 1,
            lease: None,
        }
    }

    fn sessions(nodes: Option<Vec<MediaNodeRegistration>>) -> Option<Vec<(String, u32)>> {
        nodes.map(|n| {
            n.into_iter()
                .map(|n| (n.node_id, n.active_sessions))
                .collect()
        })
    }

    #[test]
    fn the_directory_answers_for_one_pool_only_while_its_watch_runs() {
        let directory = NodeDirectory::default();
        let pool = keys::media_nodes("default", "main");
        assert_eq!(
            directory.under(&pool).map(|n| n.len()),
            None,
            "not listed yet"
        );
        directory.replace(&[
            registered("default", "main", "a", 1),
            registered("default", "main-2", "x", 0),
            registered("other", "main", "y", 0),
        ]);
        assert_eq!(
            sessions(directory.under(&pool)),
            Some(vec![("a".into(), 1)])
        );
        directory.put(&registered("default", "main", "b", 0));
        directory.put(&registered("default", "main", "a", 7));
        assert_eq!(
            sessions(directory.under(&pool)),
            Some(vec![("a".into(), 7), ("b".into(), 0)])
        );
        directory.delete(&keys::media_node("default", "main", "a"));
        let mut garbled = registered("default", "main", "b", 0);
        garbled.value = b"{".to_vec();
        directory.put(&garbled);
        assert_eq!(sessions(directory.under(&pool)), Some(vec![]));
        directory.lost();
        assert_eq!(sessions(directory.under(&pool)), None, "the store is read");
    }
}
