//! The platform under test as separate `centrex` processes on 127.0.0.x: the coordination store,
//! two signalling instances and three media nodes of one pool, and the tenant published the way
//! the operator publishes it. The arguments of each kind of process are built in one function
//! ([`signalling_command`], [`media_node_command`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use centrex_coord::snapshot::{self as snap, DigestCredentials, TenantSnapshot};
use centrex_coord::store::EtcdStore;
use centrex_coord::testing::{EtcdCluster, Stop, eventually};
use centrex_coord::{Store, keys};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Namespace of the tenant and the media pool.
pub const NAMESPACE: &str = "default";
/// The one media pool (and signalling pool).
pub const POOL: &str = "default";
/// The tenant's SIP domain, also its digest realm.
pub const DOMAIN: &str = "chaos.example.com";
const TENANT: &str = "chaos";

/// The shared address of the signalling instances when they have `--listen-service` (what a
/// Kubernetes Service gives the phones).
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
/// Signalling instance `i` serves on `127.0.0.(11 + i)`.
const SIGNALLING_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 11), Ipv4Addr::new(127, 0, 0, 12)];
/// Media node `i` relays on `127.0.0.(21 + i)`: the address in an SDP says which node carries it.
const MEDIA_IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 21),
    Ipv4Addr::new(127, 0, 0, 22),
    Ipv4Addr::new(127, 0, 0, 23),
];
/// Relay ports of every node (each on its own address), below the ephemeral range.
const RTP_PORTS: &str = "20000-21999";
/// How long a media node waits for its sessions once draining: short, so the scale-down step ends
/// with calls still on the node, as a StatefulSet does once its grace period is over.
const MEDIA_DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Instance lease of signalling (with `--lease-ttl`): how soon a dead instance's calls are adopted.
const LEASE_TTL: &str = "3s";
/// Registration lease of a media node (with `--registration-ttl`): how soon a dead node is noticed.
const REGISTRATION_TTL: &str = "3s";

/// Password of `user` in the tenant.
pub fn password(user: &str) -> String {
    format!("chaos-{user}-secret")
}

/// The tenant of the run: `users` with their passwords, 8 calls each at most, and limits high
/// enough that only the platform's failures end calls.
pub fn tenant(users: &[String]) -> TenantSnapshot {
    let user = |extension: &String| snap::UserEntry {
        extension: extension.clone(),
        display_name: None,
        credentials: DigestCredentials::derive(extension, DOMAIN, password(extension).as_bytes()),
        max_calls: 8,
        caller_id: snap::CallerId::Extension,
        direct_number: None,
        mobile_number: None,
        forwarding: Default::default(),
    };
    let mut tenant = TenantSnapshot {
        schema: snap::SCHEMA_VERSION,
        source: snap::Source {
            namespace: NAMESPACE.into(),
            name: TENANT.into(),
            uid: "chaos-1".into(),
            generation: 1,
        },
        domain: DOMAIN.into(),
        main_number: None,
        users: users.iter().map(user).collect(),
        hunt_groups: vec![],
        numbers: vec![],
        outbound: None,
        limits: snap::TenantLimits {
            concurrent_calls: 10_000,
            calls_per_second: 1_000,
        },
        signalling_pool: POOL.into(),
        media_pool: POOL.into(),
    };
    tenant.sort_users();
    tenant
}

/// The coordination store: a three-member etcd cluster, as the chart deploys it.
pub struct Coordination {
    cluster: EtcdCluster,
}

impl Coordination {
    /// Starts the members and waits until they serve.
    pub async fn start() -> Self {
        Self {
            cluster: EtcdCluster::start().await,
        }
    }

    /// The client URLs of every member, comma-separated.
    pub fn endpoints(&self) -> String {
        self.cluster.endpoints().join(",")
    }

    /// A client of the store.
    pub async fn store(&self) -> EtcdStore {
        self.cluster.store().await
    }

    /// Kills the leader and starts it again, waiting until it has rejoined (the leader lost and
    /// another elected: the harder case); which member it was.
    pub async fn restart_member(&mut self) -> String {
        let leader = self.cluster.leader().await;
        self.cluster.stop(leader, Stop::Kill).await;
        self.cluster.restart(leader).await;
        format!("{leader} (the leader)")
    }
}

/// A `centrex` process, its output in a log file, killed when dropped.
pub struct Process {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Process {
    fn spawn(name: String, mut command: Command, logs: &Path) -> Self {
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create a process log");
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone a log handle"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name, log, child }
    }

    /// SIGKILL, and reaped.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, as Kubernetes stops a pod.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("a running process has a pid");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "SIGTERM to {} failed", self.name);
    }

    /// Its exit status within `limit`; `None` if it is still running then.
    pub async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Fails the test, pointing at the log, if the process has ended.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its log is {}",
                self.name,
                self.log.display()
            );
        }
    }
}

/// A signalling instance.
pub struct Signalling {
    pub process: Process,
    /// Its own SIP address (UDP and TCP).
    pub sip: SocketAddr,
    /// Metrics, probes and drain.
    pub http: SocketAddr,
}

/// A media node of the pool.
pub struct MediaNode {
    pub process: Process,
    /// Its node id (pod name).
    pub id: String,
    /// The address it relays on.
    pub ip: IpAddr,
}

/// The options of this build of `centrex`: some flags are being added while the harness is
/// written, and only those the binary has are passed.
pub struct Options {
    signalling: String,
    media_node: String,
}

impl Options {
    /// Reads `centrex signalling --help` and `centrex media-node --help`.
    pub fn detect() -> Self {
        let help = |subcommand: &str| {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_centrex"))
                .args([subcommand, "--help"])
                .output()
                .expect("run centrex --help");
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        Self {
            signalling: help("signalling"),
            media_node: help("media-node"),
        }
    }

    fn signalling_has(&self, flag: &str) -> bool {
        has_flag(&self.signalling, flag)
    }

    fn media_node_has(&self, flag: &str) -> bool {
        has_flag(&self.media_node, flag)
    }

    /// Whether the instances can share one service address (both flags are needed).
    fn shared_service(&self) -> bool {
        self.signalling_has("--service-address") && self.signalling_has("--listen-service")
    }

    /// The optional flags this build has, as `name: yes/no` for the report.
    pub fn summary(&self) -> String {
        let signalling = [
            "--service-address",
            "--listen-service",
            "--peer-addr",
            "--lease-ttl",
        ]
        .map(|f| format!("{f} {}", yes_no(self.signalling_has(f))));
        let media = format!(
            "--registration-ttl {}",
            yes_no(self.media_node_has("--registration-ttl"))
        );
        format!("signalling {}; media-node {media}", signalling.join(", "))
    }
}

fn yes_no(present: bool) -> &'static str {
    if present { "yes" } else { "no" }
}

/// Whether `help` lists `flag` as a flag (not merely mentions it in a sentence).
fn has_flag(help: &str, flag: &str) -> bool {
    help.lines().any(|line| {
        line.trim_start()
            .split([' ', ',', '='])
            .any(|word| word == flag)
    })
}

/// Where signalling instance `index` serves.
struct SignallingAddresses {
    ip: Ipv4Addr,
    sip_port: u16,
    http_port: u16,
    peer_port: u16,
    service: Option<SocketAddr>,
}

/// The command line of one signalling instance: what the operator sets on its pods, and the
/// failover flags when this build has them.
fn signalling_command(
    at: &SignallingAddresses,
    etcd: &str,
    instance: usize,
    options: &Options,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_centrex"));
    command
        .args(["signalling", "--pool", POOL])
        .arg(format!("--bind={}", at.ip))
        .arg(format!("--advertise={}", at.ip))
        .arg(format!("--udp-port={}", at.sip_port))
        .arg(format!("--tcp-port={}", at.sip_port))
        .arg(format!("--http-addr={}:{}", at.ip, at.http_port))
        .arg(format!("--etcd-endpoints={etcd}"))
        // The phones of the harness answer MD5 challenges (any RFC 3261 UA does).
        .args(["--digest-algorithms=MD5", "--log-json=false"])
        .env("POD_NAME", format!("signalling-{instance}"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    if let Some(service) = at.service {
        command
            .arg(format!("--service-address={service}"))
            .arg("--listen-service");
    }
    if options.signalling_has("--peer-addr") {
        command.arg(format!("--peer-addr={}:{}", at.ip, at.peer_port));
    }
    if options.signalling_has("--lease-ttl") {
        command.arg(format!("--lease-ttl={LEASE_TTL}"));
    }
    command
}

/// The command line of one media node, as the MediaPool's StatefulSet runs it.
fn media_node_command(
    id: &str,
    ip: Ipv4Addr,
    ports: [u16; 2],
    etcd: &str,
    options: &Options,
) -> Command {
    let [grpc, http] = ports;
    let mut command = Command::new(env!("CARGO_BIN_EXE_centrex"));
    command
        .args(["media-node", "--pool", POOL, "--namespace", NAMESPACE])
        .arg(format!("--node-id={id}"))
        .arg(format!("--etcd-endpoints={etcd}"))
        .arg(format!("--bind={ip}"))
        .arg(format!("--advertise={ip}"))
        // The node registers its advertised address with this port: gRPC is served there.
        .arg(format!("--grpc-addr={ip}:{grpc}"))
        .arg(format!("--http-addr={ip}:{http}"))
        .arg(format!("--rtp-ports={RTP_PORTS}"))
        .args(["--max-sessions=2000", "--workers=1"])
        .arg(format!(
            "--drain-timeout={}s",
            MEDIA_DRAIN_TIMEOUT.as_secs()
        ))
        .env("RUST_LOG", "info");
    if options.media_node_has("--registration-ttl") {
        command.arg(format!("--registration-ttl={REGISTRATION_TTL}"));
    }
    command
}

/// Everything the phones talk to.
pub struct Platform {
    pub coordination: Coordination,
    pub signalling: Vec<Signalling>,
    pub media: Vec<MediaNode>,
    /// The address the instances share (a Kubernetes Service), when they can.
    pub service: Option<SocketAddr>,
}

impl Platform {
    /// Starts the store, publishes `tenant`, starts the media nodes and the signalling instances
    /// and waits until the nodes are registered and the instances ready.
    pub async fn start(tenant: &TenantSnapshot, options: &Options, logs: &Path) -> Self {
        let coordination = Coordination::start().await;
        let etcd = coordination.endpoints();
        let store = coordination.store().await;
        store
            .put(
                &keys::tenant(NAMESPACE, &tenant.source.name),
                serde_json::to_vec(tenant).expect("a snapshot serialises"),
                None,
            )
            .await
            .expect("publish the tenant");

        let mut media: Vec<MediaNode> = MEDIA_IPS
            .iter()
            .enumerate()
            .map(|(i, &ip)| {
                let id = format!("media-{i}");
                let ports = [free_port(ip), free_port(ip)];
                let command = media_node_command(&id, ip, ports, &etcd, options);
                MediaNode {
                    process: Process::spawn(id.clone(), command, logs),
                    id,
                    ip: ip.into(),
                }
            })
            .collect();
        let what = format!("{} media nodes to register in etcd", media.len());
        eventually(&what, || {
            media.iter_mut().for_each(|m| m.process.assert_running());
            let (store, wanted) = (&store, media.len());
            async move {
                let (nodes, _) = store.list(&keys::media_nodes(NAMESPACE, POOL)).await.ok()?;
                (nodes.len() == wanted).then_some(())
            }
        })
        .await;

        let service = options
            .shared_service()
            .then(|| SocketAddr::new(SERVICE_IP.into(), free_port(SERVICE_IP)));
        let mut signalling: Vec<Signalling> = SIGNALLING_IPS
            .iter()
            .enumerate()
            .map(|(i, &ip)| {
                let at = SignallingAddresses {
                    ip,
                    sip_port: free_port(ip),
                    http_port: free_port(ip),
                    peer_port: free_port(ip),
                    service,
                };
                let command = signalling_command(&at, &etcd, i, options);
                Signalling {
                    process: Process::spawn(format!("signalling-{i}"), command, logs),
                    sip: SocketAddr::new(ip.into(), at.sip_port),
                    http: SocketAddr::new(ip.into(), at.http_port),
                }
            })
            .collect();
        for instance in &mut signalling {
            let what = format!("{} to be ready", instance.process.name);
            eventually(&what, || {
                instance.process.assert_running();
                let http = instance.http;
                async move { (http_status(http, "/readyz").await? == 200).then_some(()) }
            })
            .await;
        }
        Self {
            coordination,
            signalling,
            media,
            service,
        }
    }

    /// Where a phone sends a request outside a dialog: the shared service address, else the
    /// instances in turn (`n` picks one), as a Service would spread them.
    pub fn entry(&self, n: usize) -> SocketAddr {
        self.service
            .unwrap_or_else(|| self.signalling[n % self.signalling.len()].sip)
    }

    /// The name of the instance or node at `ip`, for the figures.
    pub fn name_of(&self, ip: IpAddr) -> String {
        let instance = self.signalling.iter().find(|s| s.sip.ip() == ip);
        let node = self.media.iter().find(|m| m.ip == ip);
        match (instance, node) {
            (Some(s), _) => s.process.name.clone(),
            (_, Some(m)) => m.id.clone(),
            _ if Some(ip) == self.service.map(|s| s.ip()) => "service".into(),
            _ => ip.to_string(),
        }
    }

    /// What the StatefulSet does to remove media node `index` once the operator has asked it to
    /// drain: the drain request in the store, then SIGTERM. Returns its exit status, or `None`
    /// when it is still running after its drain timeout and a margin.
    pub async fn scale_down(&mut self, index: usize) -> Option<ExitStatus> {
        let node = &mut self.media[index];
        let store = self.coordination.store().await;
        // The node drains while the key exists; the value is the operator's mark.
        let mark = serde_json::json!({ "markedAt": Time(Timestamp::now()) });
        store
            .put(
                &keys::media_drain(NAMESPACE, POOL, &node.id),
                serde_json::to_vec(&mark).expect("a mark serialises"),
                None,
            )
            .await
            .expect("write the drain request");
        node.process.terminate();
        node.process
            .exit_within(MEDIA_DRAIN_TIMEOUT + Duration::from_secs(5))
            .await
    }
}

/// A port free for both UDP and TCP on `ip` now.
fn free_port(ip: Ipv4Addr) -> u16 {
    for _ in 0..50 {
        let port = UdpSocket::bind((ip, 0))
            .and_then(|s| s.local_addr())
            .expect("bind a UDP port on 127.0.0.x")
            .port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// The status of `GET path` on `addr`, or `None` while nothing answers.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    answer.get(9..12)?.parse().ok()
}
