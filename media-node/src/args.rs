//! Command-line flags of `centrex media-node` (as the operator's StatefulSet passes them) and of
//! its `drain` action (the preStop hook).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{Config, ConfigError, PortRange};
use crate::relay::Backend;

/// `media-node`: runs an RTP relay node; `media-node drain` drains the local one.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MediaNodeArgs {
    #[command(subcommand)]
    pub action: Option<MediaNodeAction>,
    /// MediaPool this node belongs to.
    #[arg(long, required = true)]
    pub pool: Option<String>,
    /// UDP ports of the RTP/RTCP pairs, MIN-MAX.
    #[arg(long, default_value = "20000-29999")]
    pub rtp_ports: PortRange,
    /// Sessions accepted at once.
    #[arg(long, default_value_t = 2000)]
    pub max_sessions: u32,
    /// Longest wait for sessions to end once draining (e.g. 3600s, 5m).
    #[arg(long, default_value = "3600s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// A session without packets for this long ends.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Address peers send media to; default: the pod's IP.
    #[arg(long)]
    pub advertise: Option<IpAddr>,
    /// The pod's IP (set by the operator), the default advertised address.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<IpAddr>,
    /// Local address of the RTP sockets.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Address of the MediaControl gRPC service.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub grpc_addr: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// How long a data-plane thread polls after a packet before sleeping (e.g. 50us); lowers
    /// latency under heavy load at the cost of showing the core busy.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub busy_poll: Duration,
    /// Data-plane I/O: auto (io_uring where the kernel allows it, else epoll), epoll or
    /// io-uring.
    #[arg(long, default_value = "auto")]
    pub relay_backend: Backend,
    /// Data-plane threads; default: one per core.
    #[arg(long)]
    pub workers: Option<usize>,
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        env = "CENTREX_ETCD_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    pub etcd_endpoints: Vec<String>,
    /// This node's identity (its pod name).
    #[arg(long, env = "POD_NAME", required = true)]
    pub node_id: Option<String>,
    /// Namespace of the MediaPool (the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

/// What `media-node` does besides running a node.
#[derive(Debug, clap::Subcommand)]
pub enum MediaNodeAction {
    /// Asks the local node to drain and waits until its sessions end or its drain timeout passes
    /// (the pod's preStop hook).
    Drain(DrainArgs),
}

/// Flags of `media-node drain`.
#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// MediaControl endpoint of the node to drain.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub grpc: String,
    /// Longest wait; default: until the node's drain deadline.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

impl MediaNodeArgs {
    /// The node's configuration from the flags.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let missing = |field: &'static str, reason: &str| ConfigError::Invalid {
            field,
            reason: reason.into(),
        };
        let advertise = self
            .advertise
            .or(self.pod_ip)
            .or((!self.bind.is_unspecified()).then_some(self.bind))
            .ok_or_else(|| {
                missing(
                    "advertise",
                    "needed (or POD_IP, or a specific --bind address) to tell peers where to send media",
                )
            })?;
        let mut config = Config::new(
            self.node_id
                .clone()
                .ok_or_else(|| missing("node-id", "needed (or POD_NAME)"))?,
            self.pool.clone().ok_or_else(|| missing("pool", "needed"))?,
            advertise,
        );
        config.namespace = self.namespace.clone();
        config.bind = self.bind;
        config.rtp_ports = self.rtp_ports;
        config.max_sessions = self.max_sessions;
        config.drain_timeout = self.drain_timeout;
        config.idle_timeout = self.idle_timeout;
        config.busy_poll = self.busy_poll;
        config.relay_backend = self.relay_backend;
        config.grpc_addr = self.grpc_addr;
        config.http_addr = self.http_addr;
        if let Some(workers) = self.workers {
            config.workers = workers;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Reads a duration: a number with `us`, `ms`, `s`, `m` or `h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms, 50us, 5m or 1h"))?;
    match unit {
        "us" | "µs" => Ok(Duration::from_micros(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        _ => Err(format!(
            "{text:?}: unknown unit {unit:?}; use ms, s, m or h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MediaNodeArgs,
    }

    fn parse(args: &[&str]) -> Result<MediaNodeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("media-node").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    #[test]
    fn the_operator_s_arguments_make_a_config() {
        let args = parse(&[
            "--pool=default",
            "--rtp-ports=30000-30999",
            "--max-sessions=250",
            "--drain-timeout=120s",
            "--advertise=192.0.2.10",
            "--node-id=default-media-0",
            "--etcd-endpoints=http://etcd-0:2379,http://etcd-1:2379",
        ])
        .unwrap();
        let config = args.config().unwrap();
        assert_eq!(
            config.rtp_ports,
            PortRange {
                min: 30000,
                max: 30999
            }
        );
        assert_eq!(config.max_sessions, 250);
        assert_eq!(config.drain_timeout, Duration::from_secs(120));
        assert_eq!(config.advertise, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(args.etcd_endpoints.len(), 2);
    }

    #[test]
    fn drain_needs_none_of_the_node_flags() {
        let args = parse(&["drain"]).unwrap();
        assert!(
            matches!(args.action, Some(MediaNodeAction::Drain(ref d)) if d.grpc == "http://127.0.0.1:9090")
        );
    }

    #[test]
    fn without_an_address_to_advertise_the_config_says_which_flag() {
        let args = parse(&["--pool=p", "--node-id=n", "--etcd-endpoints=http://e:2379"]).unwrap();
        let error = args.config().unwrap_err().to_string();
        assert!(error.starts_with("--advertise"), "{error}");
    }

    #[test]
    fn the_relay_backend_is_auto_unless_a_flag_names_one() {
        let base = [
            "--pool=p",
            "--node-id=n",
            "--etcd-endpoints=http://e:2379",
            "--advertise=192.0.2.1",
        ];
        let config = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            parse(&args).map(|a| a.config().unwrap().relay_backend)
        };
        assert_eq!(config(&[]).unwrap(), Backend::Auto);
        assert_eq!(config(&["--relay-backend=epoll"]).unwrap(), Backend::Epoll);
        assert_eq!(
            config(&["--relay-backend=io-uring"]).unwrap(),
            Backend::IoUring
        );
        assert!(config(&["--relay-backend=dpdk"]).is_err());
    }

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_duration("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
