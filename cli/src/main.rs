//! `centrex`: one binary for every Centrex component.

mod drain;
mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use centrex_coord::Store;
use centrex_coord::store::{EtcdStore, MemoryStore};
use centrex_operator::config::OperatorConfig;
use centrex_operator::context::Context;
use centrex_operator::manifests::Manifests;
use centrex_operator::metrics::Metrics;
use centrex_operator::run::{Health, lead, serve_http};
use centrex_signalling::auth::authenticator::Authenticator;
use centrex_signalling::auth::digest::Algorithm;
use centrex_signalling::cdr::{Fanout, JsonLinesSink, LogSink};
use centrex_signalling::cluster::ClusterConfig;
use centrex_signalling::cluster::handoff::HandoffService;
use centrex_signalling::directory::Directory;
use centrex_signalling::media::InProcessNode;
use centrex_signalling::server::{Server, TcpLimits};
use clap::{Args, Parser, Subcommand};
use tonic::transport::server::TcpIncoming;

/// Signalling allocates and frees small buffers for every message from many threads; glibc's
/// allocator spent about a quarter of a loaded `centrex up` in malloc/free (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Centrex: a multi-tenant hosted PBX on Kubernetes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the Kubernetes operator.
    Operator(OperatorArgs),
    /// Runs a SIP signalling instance.
    Signalling(SignallingArgs),
    /// Runs an RTP media relay node, or drains the local one (`centrex media-node drain`).
    MediaNode(centrex_media_node::MediaNodeArgs),
    /// Runs the platform in one process from manifest files (local mode, in-memory store).
    Up {
        /// Directory (or file) of Tenant, Trunk, pool and Secret manifests.
        #[arg(default_value = "examples/quickstart")]
        manifests: PathBuf,
        /// Where SIP is served (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: SocketAddr,
        /// Digest algorithms offered, most preferred first; default: the SignallingPool
        /// manifest's `digestAlgorithms`, else SHA-256,MD5.
        #[arg(long, value_delimiter = ',')]
        digest_algorithms: Option<Vec<String>>,
        /// Also append call detail records to this JSON-lines file.
        #[arg(long, env = "CENTREX_CDR_FILE")]
        cdr_file: Option<PathBuf>,
    },
    /// Writes the CRD YAML into crds/ and the chart.
    Crdgen {
        /// Repository root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

/// Signalling settings (the operator sets them on the pods it creates), or `signalling drain`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SignallingArgs {
    #[command(subcommand)]
    action: Option<SignallingAction>,
    /// SignallingPool this instance belongs to.
    #[arg(long, required = true)]
    pool: Option<String>,
    /// Local address of the SIP sockets.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// SIP over UDP port.
    #[arg(long, default_value_t = 5060)]
    udp_port: u16,
    /// SIP over TCP port.
    #[arg(long, default_value_t = 5060)]
    tcp_port: u16,
    /// Address of /metrics, /healthz, /readyz and /drain.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Longest wait for calls to end once draining (e.g. 300s, 5m).
    #[arg(long, default_value = "300s", value_parser = centrex_media_node::args::parse_duration)]
    drain_timeout: Duration,
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        env = "CENTREX_ETCD_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    etcd_endpoints: Vec<String>,
    /// Digest algorithms offered, most preferred first (RFC 8760: SHA-256, then MD5).
    #[arg(long, value_delimiter = ',', default_value = "SHA-256,MD5")]
    digest_algorithms: Vec<String>,
    /// Address written into Via and Contact (the pod's IP).
    #[arg(long, env = "POD_IP")]
    advertise: Option<std::net::IpAddr>,
    /// Logs as JSON lines (the default in a cluster).
    #[arg(long, env = "CENTREX_LOG_JSON", default_value_t = true, action = clap::ArgAction::Set)]
    log_json: bool,
    /// Also append call detail records to this JSON-lines file (they always go to the log).
    #[arg(long, env = "CENTREX_CDR_FILE")]
    cdr_file: Option<PathBuf>,
    /// Address of the SignallingPeer gRPC service, through which the other instances hand this
    /// one requests for the calls it holds (the pod's `grpc` port).
    #[arg(long, default_value = "0.0.0.0:9090")]
    peer_addr: SocketAddr,
    /// The address phones reach the pool at (its Service), written into Contact so that a
    /// call's requests reach whichever instance is alive.
    #[arg(long, env = "CENTREX_SERVICE_ADDRESS")]
    service_address: Option<SocketAddr>,
    /// Also receive SIP over UDP on --service-address, shared with the other instances on this
    /// host through SO_REUSEPORT (the kernel spreads phones over them, as a Service would).
    #[arg(long, requires = "service_address")]
    listen_service: bool,
    /// TTL of the instance's lease: a dead instance's calls are taken over this long after it
    /// died (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = centrex_media_node::args::parse_duration)]
    lease_ttl: Duration,
}

/// What `signalling` does besides running an instance.
#[derive(Subcommand)]
enum SignallingAction {
    /// Asks the local instance to drain and waits until its calls end or its drain timeout
    /// passes (the pod's preStop hook).
    Drain {
        /// Address of the instance's HTTP endpoints.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http_addr: SocketAddr,
    },
}

/// Operator settings; every flag can come from its environment variable.
#[derive(Args)]
struct OperatorArgs {
    /// Image of the pods the operator creates.
    #[arg(long, env = "CENTREX_IMAGE")]
    image: String,
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        env = "CENTREX_ETCD_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    etcd_endpoints: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "CENTREX_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Identity in the leader election.
    #[arg(long, env = "POD_NAME")]
    identity: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "centrex-operator")]
    lease_name: String,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Logs as JSON lines (the default in a cluster).
    #[arg(long, env = "CENTREX_LOG_JSON", default_value_t = true, action = clap::ArgAction::Set)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Operator(args) => operator(args).await,
        Command::Signalling(args) => signalling(args).await,
        Command::MediaNode(args) => {
            let _telemetry = telemetry::init("centrex-media-node", true)?;
            centrex_media_node::run(args, shutdown_signal()).await
        }
        Command::Up {
            manifests,
            sip,
            digest_algorithms,
            cdr_file,
        } => up(manifests, sip, digest_algorithms, cdr_file).await,
        Command::Crdgen { root } => {
            for path in centrex_operator::crdgen::write(&root)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

async fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    let _telemetry = telemetry::init("centrex-operator", args.log_json)?;
    let config = OperatorConfig {
        image: args.image,
        etcd_endpoints: args.etcd_endpoints,
        metrics_addr: args.metrics_addr,
        namespace: args.namespace,
        identity: args.identity,
        lease_name: args.lease_name,
        lease_duration: Duration::from_secs(args.lease_seconds),
        census_period: centrex_operator::census::PERIOD,
    };
    let metrics = Arc::new(Metrics::default());
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding {}", config.metrics_addr))?;
    tokio::spawn(serve_http(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown_signal(),
    ));
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&config.etcd_endpoints)
            .await
            .context("connecting to the coordination store")?,
    );
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    health.set_ready(true);
    let ctx = Arc::new(Context::new(client.clone(), store, config, metrics));
    lead(ctx, client, shutdown_signal()).await
}

async fn signalling(args: SignallingArgs) -> anyhow::Result<()> {
    if let Some(SignallingAction::Drain { http_addr }) = args.action {
        return drain::drain_signalling(http_addr).await;
    }
    let _telemetry = telemetry::init("centrex-signalling", args.log_json)?;
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&args.etcd_endpoints)
            .await
            .context("connecting to the coordination store")?,
    );
    let pool = args.pool.clone().unwrap_or_default();
    let nonce_key = centrex_signalling::cluster::nonce_key::shared(store.as_ref(), &pool)
        .await
        .context("reading the pool's nonce key from the coordination store")?;
    let auth = authenticator(&args.digest_algorithms)?.with_nonce_key(nonce_key);
    tracing::info!(
        pool = args.pool,
        drain_timeout = ?args.drain_timeout,
        "signalling starting"
    );
    let advertised_ip = args.advertise.unwrap_or(args.bind);
    let peer_ip = if args.peer_addr.ip().is_unspecified() {
        advertised_ip
    } else {
        args.peer_addr.ip()
    };
    let sip = Sip {
        udp: SocketAddr::new(args.bind, args.udp_port),
        tcp: SocketAddr::new(args.bind, args.tcp_port),
        http: Some(args.http_addr),
        advertise: args.advertise,
        drain_timeout: args.drain_timeout,
        cdr_file: args.cdr_file,
        in_process_media: None,
        cluster: Some(Clustered {
            config: ClusterConfig {
                lease_ttl: args.lease_ttl,
                peer_address: SocketAddr::new(peer_ip, args.peer_addr.port()),
                service_address: args.service_address,
            },
            peer_bind: args.peer_addr,
            listen_service: args.listen_service,
        }),
    };
    serve_sip(store, sip, auth).await
}

/// How an instance of a pool shares the store with the others.
struct Clustered {
    config: ClusterConfig,
    /// Where the SignallingPeer gRPC service listens.
    peer_bind: SocketAddr,
    /// Also receive on the service address (SO_REUSEPORT).
    listen_service: bool,
}

/// Where and how one instance serves SIP.
struct Sip {
    udp: SocketAddr,
    tcp: SocketAddr,
    /// Metrics, probes and drain; none in local mode.
    http: Option<SocketAddr>,
    advertise: Option<std::net::IpAddr>,
    drain_timeout: Duration,
    /// JSON-lines file of call records, besides the log.
    cdr_file: Option<PathBuf>,
    /// One of several instances sharing the store; none in local mode.
    cluster: Option<Clustered>,
    /// The media node running in this process (local mode).
    in_process_media: Option<InProcessNode>,
}

/// Serves SIP for the tenants in `store` until SIGTERM or Ctrl-C, then drains: new calls are
/// refused while those in progress finish (or the drain timeout passes).
async fn serve_sip(store: Arc<dyn Store>, sip: Sip, auth: Authenticator) -> anyhow::Result<()> {
    let directory = Directory::default();
    tokio::spawn({
        let (directory, store) = (directory.clone(), store.clone());
        async move { directory.follow(store).await }
    });
    let socket = tokio::net::UdpSocket::bind(sip.udp)
        .await
        .with_context(|| format!("binding SIP on {}", sip.udp))?;
    tracing::info!(addr = %sip.udp, "SIP over UDP");
    let listener = tokio::net::TcpListener::bind(sip.tcp)
        .await
        .with_context(|| format!("binding SIP on {}/tcp", sip.tcp))?;
    tracing::info!(addr = %sip.tcp, "SIP over TCP");
    let mut server = Server::new(store, directory, auth)
        .with_drain_timeout(sip.drain_timeout)
        .with_instance_id(centrex_signalling::server::default_instance_id());
    if let Some(address) = sip.advertise {
        server = server.with_advertise(address);
    }
    if let Some(cluster) = &sip.cluster {
        server = server.with_cluster(cluster.config);
    }
    if let Some(node) = sip.in_process_media.clone() {
        server = server.with_in_process_media(node);
    }
    if let Some(path) = &sip.cdr_file {
        let file = JsonLinesSink::open(path, JsonLinesSink::DEFAULT_CAPACITY)?;
        tracing::info!(path = %path.display(), "call records also go to a JSON-lines file");
        server = server.with_records(Arc::new(Fanout::new(vec![
            Box::new(LogSink),
            Box::new(file),
        ])));
    }
    let server = Arc::new(server);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    if let Some(http) = sip.http {
        let listener = tokio::net::TcpListener::bind(http)
            .await
            .with_context(|| format!("binding HTTP on {http}"))?;
        tokio::spawn(centrex_signalling::http::serve(
            listener,
            server.clone(),
            stopped(),
        ));
    }
    tokio::spawn(
        server
            .clone()
            .serve_tcp(listener, TcpLimits::default(), stopped()),
    );
    tokio::spawn(server.clone().serve_udp(socket, stopped()));
    if let Some(cluster) = &sip.cluster {
        join_cluster(&server, cluster, stopped()).await?;
    }
    tracing::info!(
        instance = server.instance_id(),
        "keeping trunk registrations"
    );
    // Stopped before the transports: un-registering needs the carriers' answers.
    let (release_trunks, trunks_released) = tokio::sync::watch::channel(false);
    let trunks = tokio::spawn(server.clone().keep_trunks_registered(async move {
        let mut released = trunks_released;
        let _ = released.wait_for(|release| *release).await;
    }));
    shutdown_signal().await;
    server.drain();
    while !server.is_drained() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::info!(active_calls = server.active_calls(), "drained: stopping");
    // Trunks are un-registered and their elections resigned, so another instance takes over.
    let _ = release_trunks.send(true);
    if tokio::time::timeout(TRUNKS_RELEASE, trunks).await.is_err() {
        tracing::warn!("trunk registrations not released in time");
    }
    // The calls still up are taken over by the other instances now.
    server.leave_cluster().await;
    let _ = stop.send(true);
    Ok(())
}

/// Serves the SignallingPeer gRPC service and, when asked, SIP on the shared service address;
/// keeps the instance's presence and takes over the calls of instances that are gone.
async fn join_cluster(
    server: &Arc<Server>,
    cluster: &Clustered,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let peer = tokio::net::TcpListener::bind(cluster.peer_bind)
        .await
        .with_context(|| format!("binding SignallingPeer gRPC on {}", cluster.peer_bind))?;
    tracing::info!(addr = %cluster.peer_bind, "SignallingPeer gRPC");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HandoffService::new(server.clone()))
            .serve_with_incoming_shutdown(TcpIncoming::from(peer), stopped),
    );
    if cluster.listen_service
        && let Some(service) = cluster.config.service_address
    {
        let socket = shared_udp_socket(service)
            .with_context(|| format!("binding SIP on the service address {service}"))?;
        tracing::info!(addr = %service, "SIP over UDP on the shared service address");
        tokio::spawn(server.clone().serve_shared_udp(socket));
    }
    tokio::spawn(server.clone().run_failover());
    Ok(())
}

/// A UDP socket on `address` that other processes of this host may bind too (SO_REUSEPORT).
fn shared_udp_socket(address: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// How long stopping waits for the trunk registrations to be un-registered and resigned.
const TRUNKS_RELEASE: Duration = Duration::from_secs(5);

/// An authenticator offering `algorithms` (`SHA-256`, `MD5`) in that order.
fn authenticator(algorithms: &[String]) -> anyhow::Result<Authenticator> {
    let algorithms = algorithms
        .iter()
        .map(|a| {
            Algorithm::parse(a).ok_or_else(|| {
                anyhow::anyhow!("--digest-algorithms: unknown algorithm {a:?} (SHA-256 or MD5)")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Authenticator::new().with_algorithms(algorithms))
}

async fn up(
    path: PathBuf,
    sip: SocketAddr,
    digest_algorithms: Option<Vec<String>>,
    cdr_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let _telemetry = telemetry::init("centrex", false)?;
    let manifests = Manifests::load(&path)?;
    let digest_algorithms = digest_algorithms.unwrap_or_else(|| {
        let pool = manifests.signalling_pools.first().map(|p| &p.spec);
        pool.map_or_else(
            || vec!["SHA-256".into(), "MD5".into()],
            |spec| {
                spec.digest_algorithms
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect()
            },
        )
    });
    let auth = authenticator(&digest_algorithms)?;
    let store = MemoryStore::new();
    let report = centrex_operator::local::publish_all(&manifests, &store).await?;
    for (domain, users) in &report.tenants {
        tracing::info!(domain, users, "tenant in service");
    }
    for trunk in &report.trunks {
        tracing::info!(trunk, "trunk in service");
    }
    for refused in &report.refused {
        tracing::error!("refused {refused}");
    }
    if report.tenants.is_empty() {
        anyhow::bail!("no tenant could be put in service from {}", path.display());
    }
    let store: Arc<dyn Store> = Arc::new(store);
    let mut media = centrex_media_node::Config::new("local-media-0", "default", sip.ip());
    if let Some(pool) = manifests.media_pools.first() {
        size_like(&mut media, pool)?;
    }
    let media = local_media_node(store.clone(), media).await?;
    let in_process_media = InProcessNode {
        grpc: media.grpc_addr(),
        control: Arc::new(media.in_process_control()),
    };
    tokio::spawn(async move {
        if let Err(error) = media.run(shutdown_signal()).await {
            tracing::error!(%error, "local media node stopped");
        }
    });
    tracing::info!(%sip, "local mode: register a softphone as <extension>@<domain> at this address; Ctrl-C stops it");
    let sip = Sip {
        udp: sip,
        tcp: sip,
        http: None,
        advertise: None,
        // Nobody waits for calls to end when a developer stops local mode.
        drain_timeout: Duration::from_secs(1),
        cdr_file,
        cluster: None,
        in_process_media: Some(in_process_media),
    };
    serve_sip(store, sip, auth).await
}

/// Local mode's one media node takes the name, ports and capacity of the first MediaPool
/// manifest.
fn size_like(
    config: &mut centrex_media_node::Config,
    pool: &centrex_operator::crd::MediaPool,
) -> anyhow::Result<()> {
    use kube::ResourceExt as _;
    config.pool = pool.name_any();
    config.namespace = pool.namespace().unwrap_or_else(|| "default".into());
    let spec = &pool.spec;
    let port = |p: i32| u16::try_from(p).context("MediaPool spec.rtpPorts: not a UDP port");
    config.rtp_ports = centrex_media_node::PortRange {
        min: port(spec.rtp_ports.min)?,
        max: port(spec.rtp_ports.max)?,
    };
    config.max_sessions =
        u32::try_from(spec.sessions_per_node).context("MediaPool spec.sessionsPerNode")?;
    Ok(())
}

/// Local mode's media node, started: relays on the SIP address, registered in the in-memory
/// store once it runs.
async fn local_media_node(
    store: Arc<dyn Store>,
    mut config: centrex_media_node::Config,
) -> anyhow::Result<centrex_media_node::MediaNode> {
    let address = config.advertise;
    config.bind = address;
    config.grpc_addr = SocketAddr::new(address, 0);
    config.http_addr = SocketAddr::new(address, 0);
    // Nobody waits for calls to end when a developer stops local mode.
    config.drain_timeout = Duration::from_secs(1);
    centrex_media_node::MediaNode::start(config, store)
        .await
        .context("starting the local media node")
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
