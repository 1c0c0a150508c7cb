//! A real etcd for tests and benchmarks: `/usr/bin/etcd` from the Debian package `etcd-server`,
//! on 127.0.0.1 with free ports and a throwaway data dir, killed on drop. Enabled by the
//! `testing` feature.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::store::EtcdStore;
use tempfile::TempDir;
use tokio::time::{Instant, sleep};

/// How long etcd may take to answer after starting.
const STARTUP: Duration = Duration::from_secs(20);

/// A running single-member etcd; stopping and starting it keeps its ports and data.
pub struct Etcd {
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Etcd {
    /// Starts a fresh etcd and waits until it answers.
    pub async fn start() -> Self {
        let [client_port, peer_port] = free_ports();
        let dir = tempfile::tempdir().expect("create etcd temp dir");
        let mut etcd = Etcd {
            client_port,
            peer_port,
            dir,
            child: None,
        };
        // Another test process may take a port between our probe and etcd's bind: retry with
        // new ports (and a clean data dir) when etcd exits early.
        for _ in 0..3 {
            if etcd.launch().await {
                return etcd;
            }
            [etcd.client_port, etcd.peer_port] = free_ports();
            let _ = std::fs::remove_dir_all(etcd.data_dir());
        }
        panic!("etcd failed to start three times; log:\n{}", etcd.log());
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A store connected to this etcd.
    pub async fn store(&self) -> EtcdStore {
        EtcdStore::connect(&[self.endpoint()])
            .await
            .expect("connect to test etcd")
    }

    /// Kills etcd, keeping its data dir.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data dir.
    pub async fn restart(&mut self) {
        assert!(
            self.launch().await,
            "etcd failed to restart; log:\n{}",
            self.log()
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Spawns etcd and waits until it answers; false if it exited (e.g. a port was taken).
    async fn launch(&mut self) -> bool {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd log");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let spawned = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            // Shorter raft timings lower etcd's minimum lease TTL to 1 s (it is 1.5 × the
            // election timeout), so lease tests can use 1 s leases.
            .args(["--heartbeat-interval=50", "--election-timeout=500"])
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
        let endpoints = [self.endpoint()];
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().expect("poll etcd").is_some()
            {
                self.child = None;
                return false;
            }
            if EtcdStore::connect(&endpoints).await.is_ok() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within {STARTUP:?}; log:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two distinct free ports on 127.0.0.1 (etcd cannot bind port 0 itself).
pub fn free_ports() -> [u16; 2] {
    let listeners = [0; 2].map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"));
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
