//! `centrex signalling` as the operator runs it, against a real etcd: its probes and metrics,
//! `centrex signalling drain` (the preStop hook) turning it unready, and SIGTERM ending it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use centrex_coord::testing::{Etcd, PATIENCE, eventually, free_ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on `addr`: the status code and body, or `None` while nothing listens.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_stop_drain_turns_the_instance_unready_and_sigterm_ends_it() {
    let etcd = Etcd::start().await;
    let [sip_port, http_port] = free_ports();
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let mut instance = Running(
        Command::new(env!("CARGO_BIN_EXE_centrex"))
            .args(["signalling", "--pool=default", "--bind=127.0.0.1"])
            .args(["--advertise=127.0.0.1", "--log-json=false"])
            .arg(format!("--udp-port={sip_port}"))
            .arg(format!("--tcp-port={sip_port}"))
            .arg(format!("--http-addr={http}"))
            .arg(format!("--etcd-endpoints={}", etcd.endpoint()))
            .stdin(Stdio::null())
            .spawn()
            .expect("start centrex signalling"),
    );

    let (_, ready) = eventually("the instance to be ready", || async {
        get(http, "/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(ready, "ready");
    let (_, metrics) = get(http, "/metrics").await.unwrap();
    assert!(metrics.contains("centrex_sip_draining 0"), "{metrics}");
    assert!(metrics.contains("centrex_sip_active_calls 0"), "{metrics}");

    let drain = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_centrex"))
            .args(["signalling", "drain"])
            .arg(format!("--http-addr={http}"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        drain.status.success(),
        "the drain with no call should end at once: {}",
        String::from_utf8_lossy(&drain.stderr)
    );
    let (status, body) = get(http, "/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "draining"));

    let pid = instance.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(
        PATIENCE,
        tokio::task::spawn_blocking(move || instance.0.wait().unwrap()),
    )
    .await
    .ok()
    .map(Result::unwrap);
    let Some(exit) = exit else {
        // Free the blocked waiter, then fail.
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!("a drained instance exits promptly on SIGTERM");
    };
    assert!(exit.success(), "exit status {exit}");
}
