//! `centrex signalling drain`, the signalling pod's preStop hook: asks the local instance to
//! drain over its HTTP port and waits until its calls have ended (or its drain timeout passed),
//! so Kubernetes sends SIGTERM only then. Plain HTTP/1.1 on loopback: no client library needed.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use centrex_signalling::http::DrainStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How often progress is asked for.
const POLL: Duration = Duration::from_secs(1);

/// Drains the instance at `http_addr`; returns once it reports done.
pub async fn drain_signalling(http_addr: SocketAddr) -> anyhow::Result<()> {
    let mut status = request(http_addr, "POST").await?;
    loop {
        eprintln!("{status}");
        if is_done(&status)? {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
        status = request(http_addr, "GET").await?;
    }
}

/// Whether a `/drain` status body says the drain is over.
fn is_done(body: &str) -> anyhow::Result<bool> {
    let status =
        DrainStatus::parse(body).with_context(|| format!("unexpected /drain answer {body:?}"))?;
    Ok(status.done)
}

/// `method /drain` on `addr`; returns the body of a 200 answer.
async fn request(addr: SocketAddr, method: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the signalling instance at {addr}"))?;
    stream
        .write_all(
            format!(
                "{method} /drain HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr}: not an HTTP answer"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{addr}: {}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::is_done;

    #[test]
    fn the_drain_is_over_only_when_the_instance_says_so() {
        assert!(is_done(r#"{"draining":true,"activeCalls":0,"done":true}"#).unwrap());
        assert!(!is_done(r#"{"draining":true,"activeCalls":3,"done":false}"#).unwrap());
        assert!(is_done("not json").is_err());
    }
}
