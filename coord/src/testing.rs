//! Real etcd for tests and benchmarks: `/usr/bin/etcd` from the Debian package `etcd-server`, on
//! 127.0.0.1 with free ports and throwaway data dirs, killed on drop. [`Etcd`] is one member;
//! [`EtcdCluster`] is three, for what a member loss does. Enabled by the `testing` feature.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::store::{EtcdStore, Store};
use tempfile::TempDir;
use tokio::time::{Instant, sleep, timeout};

/// How long etcd may take to answer after starting (a cluster: to elect a leader and serve).
const STARTUP: Duration = Duration::from_secs(20);
/// How long a member may take over a graceful stop before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a launcher looks again at a member that is not serving yet.
const POLL: Duration = Duration::from_millis(50);
/// Raft timings of the single [`Etcd`]: shorter than etcd's defaults, which lowers its minimum
/// lease TTL to 1 s (1.5 × the election timeout), so lease tests can use 1 s leases.
const FAST_RAFT: &[&str] = &["--heartbeat-interval=50", "--election-timeout=500"];
/// The key a cluster member reads to prove it serves linearizable reads (has a leader and has
/// caught up); it is never written.
const PROBE_KEY: &str = "/centrex-testing/probe";

/// A running single-member etcd; stopping and starting it keeps its ports and data.
pub struct Etcd {
    /// Before `_dir`: killed before its directory goes.
    member: Member,
    _dir: TempDir,
}

impl Etcd {
    /// Starts a fresh etcd and waits until it answers.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("create etcd temp dir");
        let [client_port, peer_port] = free_ports();
        let mut etcd = Etcd {
            member: Member::new("test", dir.path().to_owned(), client_port, peer_port),
            _dir: dir,
        };
        // Another test process may take a port between our probe and etcd's bind: retry with
        // new ports (and a clean data dir) when etcd exits early.
        for _ in 0..3 {
            if etcd.launch().await {
                return etcd;
            }
            let [client_port, peer_port] = free_ports();
            etcd.member.forget(client_port, peer_port);
        }
        panic!(
            "etcd failed to start three times; log:\n{}",
            etcd.member.log()
        );
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    /// A store connected to this etcd.
    pub async fn store(&self) -> EtcdStore {
        EtcdStore::connect(&[self.endpoint()])
            .await
            .expect("connect to test etcd")
    }

    /// Kills etcd, keeping its data dir.
    pub fn stop(&mut self) {
        self.member.kill();
    }

    /// Starts etcd again on the same ports and data dir.
    pub async fn restart(&mut self) {
        assert!(
            self.launch().await,
            "etcd failed to restart; log:\n{}",
            self.member.log()
        );
    }

    /// Spawns etcd and waits until it answers; false if it exited (e.g. a port was taken).
    async fn launch(&mut self) -> bool {
        let initial_cluster = self.member.cluster_entry();
        self.member.spawn(&initial_cluster, "test", FAST_RAFT);
        let endpoints = [self.endpoint()];
        wait_serving(std::slice::from_mut(&mut self.member), || {
            let endpoints = endpoints.clone();
            async move { EtcdStore::connect(&endpoints).await.is_ok() }
        })
        .await
    }
}

/// How a cluster member is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL, a crash: its connections drop at once and a leader leaves without handing over.
    Kill,
    /// SIGTERM, a graceful shutdown as in a rolling update; killed after 10 s if still running.
    Terminate,
}

/// A running three-member etcd cluster (static bootstrap, etcd's default raft timings, so a
/// leader loss takes as long as in production); each member can be stopped and started again on
/// its own ports and data dir. All members are killed on drop.
pub struct EtcdCluster {
    /// Before `dir`: members are killed before their directories go.
    members: Vec<Member>,
    dir: TempDir,
}

impl EtcdCluster {
    /// Members in the cluster.
    pub const SIZE: usize = 3;

    /// Starts a fresh cluster and waits until every member serves linearizable reads.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("create etcd cluster temp dir");
        let members = (0..Self::SIZE)
            .map(|index| {
                let path = dir.path().join(format!("member-{index}"));
                std::fs::create_dir_all(&path).expect("create member dir");
                Member::new(&format!("member-{index}"), path, 0, 0)
            })
            .collect();
        let mut cluster = EtcdCluster { members, dir };
        // As for `Etcd`: a port taken between the probe and etcd's bind makes a member exit;
        // start over with new ports for everyone, since the ports are part of the cluster's
        // identity.
        for _ in 0..3 {
            let ports = free_port_array::<{ 2 * Self::SIZE }>();
            for (member, pair) in cluster.members.iter_mut().zip(ports.chunks(2)) {
                member.kill();
                member.forget(pair[0], pair[1]);
            }
            if cluster.launch_all().await {
                return cluster;
            }
        }
        panic!(
            "etcd cluster failed to start three times; logs:\n{}",
            cluster.logs()
        );
    }

    /// The client URLs of all members, in member order (give them all to a store).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// The client URL of one member.
    pub fn endpoint(&self, member: usize) -> String {
        self.members[member].endpoint()
    }

    /// The member listening at `endpoint` (one of [`endpoints`](Self::endpoints)).
    pub fn member_at(&self, endpoint: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.endpoint() == endpoint)
            .unwrap_or_else(|| panic!("{endpoint} is not a member of this cluster"))
    }

    /// A store connected to every member.
    pub async fn store(&self) -> EtcdStore {
        EtcdStore::connect(&self.endpoints())
            .await
            .expect("connect to test etcd cluster")
    }

    /// Whether `member` is running (not stopped).
    pub fn is_running(&self, member: usize) -> bool {
        self.members[member].child.is_some()
    }

    /// The current leader, as the running members report it; waits (bounded) while an election
    /// is in progress.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "the running members agreed on no leader within {STARTUP:?}; logs:\n{}",
                self.logs()
            );
            sleep(POLL).await;
        }
    }

    /// Stops one member, keeping its data dir and ports; returns once the process is gone.
    pub async fn stop(&mut self, member: usize, how: Stop) {
        match how {
            Stop::Kill => self.members[member].kill(),
            Stop::Terminate => self.members[member].terminate().await,
        }
    }

    /// Starts a stopped member again with its data dir and ports, and waits until it has
    /// rejoined: it serves linearizable reads, which needs a leader and its log caught up.
    pub async fn restart(&mut self, member: usize) {
        assert!(!self.is_running(member), "member {member} is running");
        let initial_cluster = self.initial_cluster();
        let token = self.token();
        self.members[member].spawn(&initial_cluster, &token, &[]);
        let endpoint = self.endpoint(member);
        let rejoined = wait_serving(std::slice::from_mut(&mut self.members[member]), || {
            serves_reads(endpoint.clone())
        })
        .await;
        assert!(
            rejoined,
            "member {member} exited on restart; logs:\n{}",
            self.logs()
        );
    }

    /// Every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, m.log()))
            .collect()
    }

    /// Spawns every member and waits until all serve; false if one exited.
    async fn launch_all(&mut self) -> bool {
        let initial_cluster = self.initial_cluster();
        let token = self.token();
        for member in &mut self.members {
            member.spawn(&initial_cluster, &token, &[]);
        }
        let endpoints = self.endpoints();
        wait_serving(&mut self.members, || {
            let endpoints = endpoints.clone();
            async move {
                for endpoint in endpoints {
                    if !serves_reads(endpoint).await {
                        return false;
                    }
                }
                true
            }
        })
        .await
    }

    /// The leader if every running member names the same one.
    async fn agreed_leader(&self) -> Option<usize> {
        let mut leader = None;
        let mut ids = Vec::new();
        for (index, member) in self.members.iter().enumerate() {
            if member.child.is_none() {
                continue;
            }
            let (id, seen) = member_status(member.endpoint()).await?;
            if seen == 0 || leader.is_some_and(|l| l != seen) {
                return None;
            }
            leader = Some(seen);
            ids.push((index, id));
        }
        let leader = leader?;
        ids.into_iter()
            .find(|&(_, id)| id == leader)
            .map(|(index, _)| index)
    }

    /// `--initial-cluster`: every member's name and peer URL.
    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(Member::cluster_entry)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A token unique to this cluster, so a member never joins another test's cluster.
    fn token(&self) -> String {
        let name = self.dir.path().file_name().unwrap_or_default();
        format!("centrex-{}", name.to_string_lossy())
    }
}

/// One etcd process's identity (name, ports, data dir and log); spawned again with the same
/// identity after a stop. [`Etcd`] and [`EtcdCluster`] are made of these.
struct Member {
    name: String,
    /// Holds `data/` and `etcd.log`.
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Member {
    fn new(name: &str, dir: PathBuf, client_port: u16, peer_port: u16) -> Self {
        Member {
            name: name.to_owned(),
            dir,
            client_port,
            peer_port,
            child: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// This member's entry in `--initial-cluster`.
    fn cluster_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Moves to new ports and drops the data, for a fresh start after a failed one.
    fn forget(&mut self, client_port: u16, peer_port: u16) {
        self.client_port = client_port;
        self.peer_port = peer_port;
        let _ = std::fs::remove_dir_all(self.data_dir());
    }

    /// Starts etcd as this member; `extra` are further flags (e.g. raft timings).
    fn spawn(&mut self, initial_cluster: &str, token: &str, extra: &[&str]) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd log");
        let client = self.endpoint();
        let peer = self.peer_url();
        let spawned = Command::new("etcd")
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg(format!("--initial-cluster-token={token}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn();
        self.child = Some(match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                panic!(
                    "the `etcd` binary is not installed; install it with `apt-get install etcd-server`"
                )
            }
            Err(error) => panic!("cannot run etcd: {error}"),
        });
    }

    /// Whether the process has exited by itself (forgetting it if so).
    fn exited(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        if child.try_wait().expect("poll etcd").is_some() {
            self.child = None;
            return true;
        }
        false
    }

    /// SIGKILL, then reaps the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit for at most [`STOP_GRACE`] before killing.
    async fn terminate(&mut self) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        // std sends only SIGKILL; kill(1) sends the rest without unsafe code or a dependency.
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .await
            .is_ok_and(|status| status.success());
        assert!(sent, "cannot send SIGTERM to {}", self.name);
        let deadline = Instant::now() + STOP_GRACE;
        while !self.exited() && Instant::now() < deadline {
            sleep(POLL).await;
        }
        self.kill();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `serving` until it holds, for at most [`STARTUP`]; false as soon as one of `members`
/// exits (e.g. its port was taken), and a panic with the logs at the deadline.
async fn wait_serving<F, Fut>(members: &mut [Member], mut serving: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + STARTUP;
    loop {
        if members.iter_mut().any(Member::exited) {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if timeout(left, serving()).await == Ok(true) {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not serve within {STARTUP:?}; logs:\n{}",
            members
                .iter()
                .map(|m| format!("--- {} ---\n{}", m.name, m.log()))
                .collect::<String>()
        );
        sleep(POLL).await;
    }
}

/// Whether the member at `endpoint` answers a linearizable read.
async fn serves_reads(endpoint: String) -> bool {
    match EtcdStore::connect(&[endpoint]).await {
        Ok(store) => store.get(PROBE_KEY).await.is_ok(),
        Err(_) => false,
    }
}

/// The member's own id and the leader it follows (0: none), from its status.
async fn member_status(endpoint: String) -> Option<(u64, u64)> {
    let ask = async {
        let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
        let status = client.status().await.ok()?;
        Some((status.header()?.member_id(), status.leader()))
    };
    timeout(Duration::from_secs(2), ask).await.ok().flatten()
}

/// Two distinct free ports on 127.0.0.1 (etcd cannot bind port 0 itself).
pub fn free_ports() -> [u16; 2] {
    free_port_array()
}

/// `N` distinct free ports on 127.0.0.1: all probed at once, so none repeats.
fn free_port_array<const N: usize>() -> [u16; N] {
    let listeners = [0; N].map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"));
    listeners.map(|l| l.local_addr().expect("local addr").port())
}

/// How long [`eventually`] waits for a condition.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `probe` until it returns `Some`, for at most [`PATIENCE`]; fails naming `what`
/// otherwise. The one way tests wait for something: on the condition, with a deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}
