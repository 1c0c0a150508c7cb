//! `centrex`: one binary for every Centrex component.

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
use centrex_signalling::directory::Directory;
use centrex_signalling::server::{Server, TcpLimits};
use clap::{Args, Parser, Subcommand};

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
        /// Digest algorithms offered, most preferred first.
        #[arg(long, value_delimiter = ',', default_value = "SHA-256,MD5")]
        digest_algorithms: Vec<String>,
    },
    /// Writes the CRD YAML into crds/ and the chart.
    Crdgen {
        /// Repository root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

/// Signalling settings (the operator sets them on the pods it creates).
#[derive(Args)]
struct SignallingArgs {
    /// SignallingPool this instance belongs to.
    #[arg(long)]
    pool: String,
    /// SIP over UDP port.
    #[arg(long, default_value_t = 5060)]
    udp_port: u16,
    /// SIP over TCP port.
    #[arg(long, default_value_t = 5060)]
    tcp_port: u16,
    /// Longest wait for transactions to finish on shutdown, e.g. `300s`.
    #[arg(long, default_value = "300s")]
    drain_timeout: String,
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
        } => up(manifests, sip, digest_algorithms).await,
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
    let _telemetry = telemetry::init("centrex-signalling", args.log_json)?;
    let auth = authenticator(&args.digest_algorithms)?;
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&args.etcd_endpoints)
            .await
            .context("connecting to the coordination store")?,
    );
    tracing::info!(
        pool = args.pool,
        drain_timeout = args.drain_timeout,
        "signalling starting"
    );
    let udp = SocketAddr::from(([0, 0, 0, 0], args.udp_port));
    let tcp = SocketAddr::from(([0, 0, 0, 0], args.tcp_port));
    serve_sip(store, udp, tcp, auth, args.advertise).await
}

/// Serves SIP over UDP on `addr` and TCP on `tcp` for the tenants in `store` until SIGTERM or Ctrl-C.
async fn serve_sip(
    store: Arc<dyn Store>,
    addr: SocketAddr,
    tcp: SocketAddr,
    auth: Authenticator,
    advertise: Option<std::net::IpAddr>,
) -> anyhow::Result<()> {
    let directory = Directory::default();
    tokio::spawn({
        let (directory, store) = (directory.clone(), store.clone());
        async move { directory.follow(store).await }
    });
    let socket = tokio::net::UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding SIP on {addr}"))?;
    tracing::info!(%addr, "SIP over UDP");
    let listener = tokio::net::TcpListener::bind(tcp)
        .await
        .with_context(|| format!("binding SIP on {tcp}/tcp"))?;
    tracing::info!(%tcp, "SIP over TCP");
    let mut server = Server::new(store, directory, auth);
    if let Some(address) = advertise {
        server = server.with_advertise(address);
    }
    let server = Arc::new(server);
    tokio::spawn(
        server
            .clone()
            .serve_tcp(listener, TcpLimits::default(), shutdown_signal()),
    );
    server.serve_udp(socket, shutdown_signal()).await;
    Ok(())
}

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

async fn up(path: PathBuf, sip: SocketAddr, digest_algorithms: Vec<String>) -> anyhow::Result<()> {
    let _telemetry = telemetry::init("centrex", false)?;
    let auth = authenticator(&digest_algorithms)?;
    let manifests = Manifests::load(&path)?;
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
    tokio::spawn(local_media_node(store.clone(), sip.ip()));
    tracing::info!(%sip, "local mode: register a softphone as <extension>@<domain> at this address; Ctrl-C stops it");
    serve_sip(store, sip, sip, auth, None).await
}

/// Local mode's media node: relays on the SIP address, registered in the in-memory store.
async fn local_media_node(store: Arc<dyn Store>, address: std::net::IpAddr) {
    let mut config = centrex_media_node::Config::new("local-media-0", "default", address);
    config.bind = address;
    config.grpc_addr = SocketAddr::new(address, 0);
    config.http_addr = SocketAddr::new(address, 0);
    // Nobody waits for calls to end when a developer stops local mode.
    config.drain_timeout = Duration::from_secs(1);
    if let Err(error) = centrex_media_node::run_with_store(config, store, shutdown_signal()).await {
        tracing::error!(%error, "local media node stopped");
    }
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
