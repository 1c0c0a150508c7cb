//! Running a media node: the data plane, MediaControl, the HTTP endpoints, the registration and
//! the housekeeping (idle sessions, packet rate), until it has drained.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use centrex_coord::store::EtcdStore;
use centrex_coord::{Store, keys};
use centrex_proto::media::media_control_server::MediaControlServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::args::{MediaNodeAction, MediaNodeArgs};
use crate::config::{Config, ConfigError};
use crate::control::MediaControlService;
use crate::membership::{self, MediaNodeRegistration, Registration};
use crate::metrics::Metrics;
use crate::node::Node;

/// Server-side deadline of every MediaControl call (a client's shorter `grpc-timeout` wins).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between idle-session sweeps and packet-rate samples.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Longest wait, once the registration is withdrawn at the end of a drain, for signalling to move
/// the calls still here to other nodes.
const HANDOVER: Duration = Duration::from_secs(5);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen for {service} on {address}: {source}")]
    Listen {
        service: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the relay workers: {0}")]
    Relay(std::io::Error),
}

/// A media node whose listeners are bound and whose data plane runs; [`MediaNode::run`] serves.
pub struct MediaNode {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    grpc: TcpListener,
    http: TcpListener,
    /// Turns true when the node stops: the servers close and the stats streams end.
    stop: watch::Sender<bool>,
}

impl MediaNode {
    /// Validates `config`, binds the gRPC and HTTP listeners and starts the relay workers.
    pub async fn start(config: Config, store: Arc<dyn Store>) -> Result<Self, StartError> {
        config.validate()?;
        let listen = |service, address| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Listen {
                    service,
                    address,
                    source,
                })
        };
        let grpc = listen("MediaControl (gRPC)", config.grpc_addr).await?;
        let http = listen("HTTP", config.http_addr).await?;
        let metrics = Arc::new(Metrics::new(config.max_sessions));
        let node = Arc::new(Node::new(config, metrics.clone()).map_err(StartError::Relay)?);
        Ok(Self {
            node,
            metrics,
            store,
            grpc,
            http,
            stop: watch::channel(false).0,
        })
    }

    /// Where MediaControl listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The node's control-plane core.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The MediaControl service that [`MediaNode::run`] serves over gRPC, for a caller in the
    /// same process (local mode's signalling) to call directly.
    pub fn in_process_control(&self) -> MediaControlService {
        MediaControlService::new(self.node.clone(), self.stop.subscribe())
    }

    /// Serves until the node has drained: after a Drain call or `shutdown` (SIGTERM), once its
    /// sessions have ended or the drain timeout passed. Then deregisters and returns. A drain the
    /// operator requests through the store (a scale-down is coming) does not end it.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            node,
            metrics,
            store,
            grpc,
            http,
            stop,
        } = self;
        let config = node.config().clone();
        let grpc_addr = grpc.local_addr()?;
        let stopping = stop.subscribe();
        let stopped = |mut stopping: watch::Receiver<bool>| async move {
            let _ = stopping.wait_for(|&s| s).await;
        };

        let service = MediaControlService::new(node.clone(), stopping.clone());
        let grpc_server = tokio::spawn(
            tonic::transport::Server::builder()
                .timeout(CALL_TIMEOUT)
                .add_service(MediaControlServer::new(service))
                .serve_with_incoming_shutdown(TcpIncoming::from(grpc), stopped(stopping.clone())),
        );
        let http_server = tokio::spawn(crate::http::serve(
            http,
            node.clone(),
            metrics,
            stopped(stopping.clone()),
        ));
        let registration = Registration {
            key: keys::media_node(&config.namespace, &config.pool, &config.node_id),
            ttl: config.registration_ttl,
            refresh: config.registration_refresh,
        };
        let advertised_grpc = SocketAddr::new(config.advertise, grpc_addr.port());
        let describe = {
            let node = node.clone();
            move || {
                let stats = node.stats();
                let config = node.config();
                MediaNodeRegistration {
                    node_id: config.node_id.clone(),
                    address: config.advertise,
                    grpc_address: advertised_grpc,
                    rtp_ports: config.rtp_ports,
                    capacity: stats.capacity,
                    active_sessions: stats.active_sessions,
                    packets_per_second: stats.packets_per_second.round(),
                    draining: stats.draining,
                }
            }
        };
        // The registration is withdrawn before the node stops relaying (see below).
        let (leave, leaving) = watch::channel(false);
        let membership = tokio::spawn(membership::maintain(
            store.clone(),
            registration,
            describe,
            node.drain_changes(),
            leaving,
        ));
        let drain_request = tokio::spawn(crate::drain_request::follow(
            store.clone(),
            keys::media_drain(&config.namespace, &config.pool, &config.node_id),
            node.clone(),
            stopping.clone(),
        ));
        let housekeeping = tokio::spawn(housekeeping(node.clone(), stopping));
        tracing::info!(
            node = %config.node_id,
            pool = %config.pool,
            grpc = %grpc_addr,
            advertise = %config.advertise,
            rtp_ports = %config.rtp_ports,
            workers = config.workers,
            "media node running"
        );

        tokio::select! {
            _ = shutdown => {
                node.drain();
            }
            _ = node.drained() => {}
        }
        node.drained().await;
        // Make before break: calls still here when the drain ends are moved by signalling to
        // other nodes as soon as the registration goes (a re-INVITE to each party), while this
        // node still relays them; signalling then deletes their sessions here.
        leave.send_replace(true);
        let _ = membership.await;
        let left = node.stats().active_sessions;
        if left > 0 {
            tracing::info!(
                sessions = left,
                "registration withdrawn: waiting for the calls to move"
            );
            if tokio::time::timeout(HANDOVER, node.emptied())
                .await
                .is_err()
            {
                tracing::warn!(
                    sessions = node.stats().active_sessions,
                    "calls not moved in time"
                );
            }
        }
        node.end_all().await;
        stop.send_replace(true);
        let (grpc_result, http_result, _, _) =
            tokio::join!(grpc_server, http_server, drain_request, housekeeping);
        grpc_result?.context("MediaControl server")?;
        http_result?.context("HTTP server")?;
        tracing::info!(node = %config.node_id, "media node stopped");
        Ok(())
    }
}

/// Ends idle sessions and samples the packet rate until `stopping`.
async fn housekeeping(node: Arc<Node>, mut stopping: watch::Receiver<bool>) {
    let period = (node.config().idle_timeout / 4).clamp(Duration::from_millis(10), HOUSEKEEPING);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopping.wait_for(|&s| s) => return,
        }
        node.sample_rate();
        if let Err(error) = node.reap_idle().await {
            tracing::error!(%error, "idle sweep failed");
        }
    }
}

/// Runs a node on `store` until it has drained (see [`MediaNode::run`]); local mode passes an
/// in-memory store.
pub async fn run_with_store(
    config: Config,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    MediaNode::start(config, store).await?.run(shutdown).await
}

/// `centrex media-node [drain]`: runs a node registered in etcd, or drains the local one.
pub async fn run(
    args: MediaNodeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Some(MediaNodeAction::Drain(drain)) = args.action {
        return crate::drain::drain_node(drain.grpc, drain.timeout).await;
    }
    let config = args.config()?;
    let store = EtcdStore::connect(&args.etcd_endpoints)
        .await
        .context("connecting to the coordination store")?;
    run_with_store(config, Arc::new(store), shutdown).await
}
