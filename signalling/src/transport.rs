//! Where messages go out: over UDP from the server's socket, or over TCP on the connection the
//! peer opened (a phone behind NAT can only be reached on the connection it registered over).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::transaction::timers::Reliability;

/// Messages queued per TCP connection; a peer that stops reading loses its connection rather
/// than growing the queue.
pub const CONNECTION_QUEUE: usize = 256;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// As in a binding (`udp`, `tcp`) or a `transport=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }

    /// `udp`/`tcp` in any case; anything else is not ours to use.
    pub fn parse(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if token.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else {
            None
        }
    }

    /// The Via protocol token.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Whether the transport retransmits for us (no Timer A/E on TCP).
    pub fn reliability(self) -> Reliability {
        match self {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp => Reliability::Reliable,
        }
    }
}

/// A party we talk to: its address, and the transport that reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.transport.as_str())
    }
}

impl Peer {
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            addr,
            transport: Transport::Udp,
        }
    }
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("UDP is not served yet")]
    NoSocket,
    #[error("no TCP connection with {0}")]
    NoConnection(SocketAddr),
    #[error("the TCP connection with {0} is not keeping up")]
    Congested(SocketAddr),
    #[error("the instance holding the connection with {peer}: {reason}")]
    Relay { peer: SocketAddr, reason: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Sends over a TCP connection another instance of the pool holds (a phone keeps one connection,
/// to whichever instance it reached).
pub trait ConnectionRelay: Send + Sync {
    /// Sends `message` to `peer` through the instance holding its connection.
    fn transmit(
        &self,
        peer: SocketAddr,
        message: Bytes,
    ) -> BoxFuture<'static, Result<(), SendError>>;
}

/// The instance's ways out, and the addresses it writes into Via and Contact for each.
#[derive(Default)]
pub struct Outbound {
    udp: OnceLock<(Arc<UdpSocket>, SocketAddr)>,
    tcp_address: OnceLock<SocketAddr>,
    /// The pool's shared address (its Service), when it has one: our Contact over UDP.
    service: OnceLock<SocketAddr>,
    /// This instance's id, written into our Vias in a cluster: a response that comes back on
    /// another instance's connection is handed to us by it.
    instance: OnceLock<String>,
    /// Sends over the TCP connections other instances hold.
    relay: OnceLock<Arc<dyn ConnectionRelay>>,
    connections: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
}

impl Outbound {
    /// Sets the UDP socket and the address advertised for it.
    pub fn attach_udp(&self, socket: Arc<UdpSocket>, advertise: SocketAddr) {
        let _ = self.udp.set((socket, advertise));
    }

    /// Sets the address advertised for TCP (the listener's).
    pub fn attach_tcp(&self, advertise: SocketAddr) {
        let _ = self.tcp_address.set(advertise);
    }

    /// Joins a cluster as `instance`, reaching the other instances' TCP connections through
    /// `relay`.
    pub fn join_cluster(&self, instance: &str, relay: Arc<dyn ConnectionRelay>) {
        let _ = self.instance.set(instance.into());
        let _ = self.relay.set(relay);
    }

    /// The instance id written into our Vias (`cx` parameter), in a cluster.
    pub fn instance(&self) -> Option<&str> {
        self.instance.get().map(String::as_str)
    }

    /// Whether this instance holds a TCP connection with `peer`.
    pub fn holds_connection(&self, peer: SocketAddr) -> bool {
        self.connections
            .lock()
            .expect("connections lock")
            .contains_key(&peer)
    }

    /// Sets the pool's shared address, written into Contact over UDP instead of our own: a
    /// dialog's requests then reach whichever instance is alive.
    pub fn set_service_address(&self, address: SocketAddr) {
        let _ = self.service.set(address);
    }

    /// The address to write into Contact for `transport`: the pool's shared address over UDP
    /// when it has one, else ours. (A TCP dialog stays on its connection.)
    pub fn contact_address(&self, transport: Transport) -> Option<SocketAddr> {
        match (transport, self.service.get()) {
            (Transport::Udp, Some(service)) => Some(*service),
            _ => self.advertised(transport),
        }
    }

    /// The address to write into Via (and Contact, without a shared address) for `transport`,
    /// once it is served.
    pub fn advertised(&self, transport: Transport) -> Option<SocketAddr> {
        match transport {
            Transport::Udp => self.udp.get().map(|(_, address)| *address),
            Transport::Tcp => self.tcp_address.get().copied(),
        }
    }

    /// A TCP connection with `peer` opened: what is sent to it goes into `queue`.
    pub fn connected(&self, peer: SocketAddr, queue: mpsc::Sender<Bytes>) {
        self.connections
            .lock()
            .expect("connections lock")
            .insert(peer, queue);
    }

    /// The TCP connection with `peer` closed.
    pub fn disconnected(&self, peer: SocketAddr) {
        self.connections
            .lock()
            .expect("connections lock")
            .remove(&peer);
    }

    /// Sends `message` to `peer`.
    pub async fn send(&self, message: &[u8], peer: Peer) -> Result<(), SendError> {
        match peer.transport {
            Transport::Udp => {
                let (socket, _) = self.udp.get().ok_or(SendError::NoSocket)?;
                socket.send_to(message, peer.addr).await?;
            }
            Transport::Tcp => {
                let queue = self
                    .connections
                    .lock()
                    .expect("connections lock")
                    .get(&peer.addr)
                    .cloned();
                match (queue, self.relay.get()) {
                    (Some(queue), _) => queue
                        .try_send(Bytes::copy_from_slice(message))
                        .map_err(|_| SendError::Congested(peer.addr))?,
                    (None, Some(relay)) => {
                        relay
                            .transmit(peer.addr, Bytes::copy_from_slice(message))
                            .await?;
                    }
                    (None, None) => return Err(SendError::NoConnection(peer.addr)),
                }
            }
        }
        Ok(())
    }

    /// Sends `message` over a TCP connection this instance holds (for another instance).
    pub fn send_on_own_connection(
        &self,
        message: Bytes,
        peer: SocketAddr,
    ) -> Result<(), SendError> {
        let queue = self
            .connections
            .lock()
            .expect("connections lock")
            .get(&peer)
            .cloned()
            .ok_or(SendError::NoConnection(peer))?;
        queue
            .try_send(message)
            .map_err(|_| SendError::Congested(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_goes_to_the_peers_connection_and_nowhere_else() {
        let out = Outbound::default();
        let (peer, other): (SocketAddr, SocketAddr) = (
            "127.0.0.1:5070".parse().unwrap(),
            "127.0.0.1:5071".parse().unwrap(),
        );
        let (queue, mut received) = mpsc::channel(1);
        out.connected(peer, queue);
        let tcp = |addr| Peer {
            addr,
            transport: Transport::Tcp,
        };
        out.send(b"OPTIONS", tcp(peer)).await.unwrap();
        assert_eq!(
            received.recv().await.unwrap(),
            Bytes::from_static(b"OPTIONS")
        );
        assert!(matches!(
            out.send(b"x", tcp(other)).await,
            Err(SendError::NoConnection(_))
        ));
        out.send(b"1", tcp(peer)).await.unwrap();
        assert!(
            matches!(
                out.send(b"2", tcp(peer)).await,
                Err(SendError::Congested(_))
            ),
            "a full queue refuses instead of growing"
        );
        out.disconnected(peer);
        assert!(out.send(b"x", tcp(peer)).await.is_err());
    }
}
