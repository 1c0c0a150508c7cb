//! Test support: a media node on 127.0.0.1 with a MediaControl client, RTP peers, polling with
//! a deadline, and a real etcd (`/usr/bin/etcd`, Debian `etcd-server`).

#![allow(dead_code)]

pub mod outage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use centrex_coord::Store;
use centrex_media_node::node::Node;
use centrex_media_node::{Config, MediaNode, PortRange};
use centrex_proto::media as pb;
use centrex_proto::media::media_control_client::MediaControlClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic::transport::Channel;

/// A configuration on 127.0.0.1 with `ports`, ephemeral gRPC/HTTP ports and one worker; the
/// relay backend is the default (auto) unless `CENTREX_TEST_RELAY_BACKEND` names one, so the
/// whole suite can run on each.
pub fn config(ports: (u16, u16)) -> Config {
    let localhost = "127.0.0.1".parse().unwrap();
    let mut config = Config::new("media-test-0", "test", localhost);
    config.namespace = "centrex-test".into();
    config.bind = localhost;
    config.rtp_ports = PortRange {
        min: ports.0,
        max: ports.1,
    };
    config.workers = 1;
    config.max_sessions = 100;
    config.drain_timeout = PATIENCE * 3;
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.registration_ttl = Duration::from_secs(2);
    config.registration_refresh = Duration::from_millis(200);
    if let Ok(backend) = std::env::var("CENTREX_TEST_RELAY_BACKEND") {
        config.relay_backend = backend.parse().expect("CENTREX_TEST_RELAY_BACKEND");
    }
    config
}

/// A running node and a client of it.
pub struct TestNode {
    pub client: MediaControlClient<Channel>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub node: Arc<Node>,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestNode {
    /// Starts a node of `config` on `store`.
    pub async fn start(config: Config, store: Arc<dyn Store>) -> Self {
        let media = MediaNode::start(config, store)
            .await
            .expect("start the node");
        let (grpc, http, node) = (media.grpc_addr(), media.http_addr(), media.node().clone());
        let (shutdown, signal) = oneshot::channel::<()>();
        let running = tokio::spawn(media.run(async move {
            let _ = signal.await;
        }));
        let client = MediaControlClient::connect(format!("http://{grpc}"))
            .await
            .expect("connect to MediaControl");
        Self {
            client,
            grpc,
            http,
            node,
            shutdown: Some(shutdown),
            running: Some(running),
        }
    }

    /// Starts a node of `config` on a fresh in-memory store.
    pub async fn memory(config: Config) -> Self {
        Self::start(config, Arc::new(centrex_coord::store::MemoryStore::new())).await
    }

    /// Sends SIGTERM's equivalent: the node drains and stops.
    pub fn terminate(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits until the node's run returns, and returns its result.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        let running = self.running.take().expect("the node is running");
        timeout(PATIENCE, running)
            .await
            .expect("the node stops in time")
            .expect("the node task does not panic")
    }

    /// Creates a session with legs A and B expecting peers at `a` and `b`.
    pub async fn create(
        &self,
        id: &str,
        a: Option<SocketAddr>,
        b: Option<SocketAddr>,
    ) -> Result<pb::Session, tonic::Status> {
        let request = create_request(id, [leg("a", a, true), leg("b", b, true)]);
        let mut client = self.client.clone();
        client.create_session(request).await.map(|r| r.into_inner())
    }

    /// One session's current state.
    pub async fn get(&self, id: &str) -> Result<pb::Session, tonic::Status> {
        let request = pb::GetSessionRequest {
            session_id: id.into(),
        };
        let mut client = self.client.clone();
        client.get_session(request).await.map(|r| r.into_inner())
    }

    /// The HTTP status code of `GET path`.
    pub async fn http_status(&self, path: &str) -> u16 {
        let mut stream = TcpStream::connect(self.http)
            .await
            .expect("connect to HTTP");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response[9..12].parse().expect("an HTTP status line")
    }

    /// The body of `GET path`.
    pub async fn http_body(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.http)
            .await
            .expect("connect to HTTP");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.abort();
        }
    }
}

/// A leg spec.
pub fn leg(id: &str, remote: Option<SocketAddr>, rtcp_mux: bool) -> pb::LegSpec {
    pb::LegSpec {
        leg_id: id.into(),
        rtcp_mux,
        remote: remote.map(endpoint),
        payload_types: vec![],
    }
}

/// A CreateSession of two legs.
pub fn create_request(id: &str, legs: [pb::LegSpec; 2]) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        session_id: id.into(),
        call_id: format!("call-{id}"),
        tenant: "acme.example".into(),
        legs: legs.into(),
    }
}

/// An address on the wire.
pub fn endpoint(address: SocketAddr) -> pb::Endpoint {
    pb::Endpoint {
        address: address.ip().to_string(),
        port: u32::from(address.port()),
    }
}

/// Where a leg of `session` receives RTP.
pub fn local_rtp(session: &pb::Session, leg: usize) -> SocketAddr {
    addr(session.legs[leg].local_rtp.as_ref().expect("local_rtp"))
}

/// Where a leg of `session` receives RTCP.
pub fn local_rtcp(session: &pb::Session, leg: usize) -> SocketAddr {
    addr(session.legs[leg].local_rtcp.as_ref().expect("local_rtcp"))
}

/// An endpoint as a socket address.
pub fn addr(endpoint: &pb::Endpoint) -> SocketAddr {
    SocketAddr::new(endpoint.address.parse().unwrap(), endpoint.port as u16)
}

/// A leg's counters.
pub fn counters(session: &pb::Session, leg: usize) -> pb::LegCounters {
    session.legs[leg].counters.expect("counters")
}

/// A phone's media socket on 127.0.0.1.
pub struct Peer {
    pub socket: UdpSocket,
    pub ssrc: u32,
}

impl Peer {
    /// Binds a peer sending with `ssrc`.
    pub async fn bind(ssrc: u32) -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            ssrc,
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Sends an RTP packet (PCMU, 160 bytes of payload) with sequence number `seq`.
    pub async fn send_rtp(&self, to: SocketAddr, seq: u16) {
        self.socket.send_to(&rtp(seq, self.ssrc), to).await.unwrap();
    }

    /// Sends an RTCP receiver report.
    pub async fn send_rtcp(&self, to: SocketAddr) {
        let mut report = vec![0x80, 201, 0, 1];
        report.extend(self.ssrc.to_be_bytes());
        self.socket.send_to(&report, to).await.unwrap();
    }

    /// The next datagram and its source; fails the test when none comes in time.
    pub async fn receive(&self) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0; 2048];
        let (len, from) = timeout(PATIENCE, self.socket.recv_from(&mut buf))
            .await
            .expect("a datagram arrives in time")
            .unwrap();
        buf.truncate(len);
        (buf, from)
    }
}

/// An RTP packet.
pub fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut packet = vec![0x80, 0];
    packet.extend(seq.to_be_bytes());
    packet.extend((u32::from(seq) * 160).to_be_bytes());
    packet.extend(ssrc.to_be_bytes());
    packet.extend([0xff; 160]);
    packet
}

/// The sequence number of an RTP packet.
pub fn seq_of(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[2], packet[3]])
}

// Not every test binary waits on a condition.
#[allow(unused_imports)]
pub use centrex_coord::testing::{PATIENCE, eventually};
