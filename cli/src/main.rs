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
    /// Runs the platform in one process from manifest files (local mode, in-memory store).
    Up {
        /// Directory (or file) of Tenant, Trunk, pool and Secret manifests.
        #[arg(default_value = "examples/quickstart")]
        manifests: PathBuf,
    },
    /// Writes the CRD YAML into crds/ and the chart.
    Crdgen {
        /// Repository root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
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
        Command::Up { manifests } => up(manifests).await,
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
    tokio::spawn(serve_http(
        config.metrics_addr,
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

async fn up(path: PathBuf) -> anyhow::Result<()> {
    let _telemetry = telemetry::init("centrex", false)?;
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
    tracing::info!("local mode running with an in-memory store; Ctrl-C stops it");
    shutdown_signal().await;
    Ok(())
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
