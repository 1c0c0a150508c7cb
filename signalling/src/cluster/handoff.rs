//! Requests handed between signalling instances: an instance that receives a request for a
//! dialog another live instance holds passes it on over gRPC (`SignallingPeer.Deliver`); the
//! owner handles it as if it had received it, and returns its answer for the receiving instance
//! to send back on the socket or connection the request came in on. Responses to an instance's
//! requests that come back on another's connection are handed over the same way, and a message
//! for a phone whose TCP connection another instance holds is sent through it
//! (`SignallingPeer.Transmit`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use centrex_coord::{Store, keys};
use centrex_proto::signalling::signalling_peer_client::SignallingPeerClient;
use centrex_proto::signalling::signalling_peer_server::{SignallingPeer, SignallingPeerServer};
use centrex_proto::signalling::{DeliverReply, DeliverRequest, TransmitReply, TransmitRequest};
use futures::future::BoxFuture;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::presence;
use crate::server::Server;
use crate::transport::{ConnectionRelay, Peer, SendError, Transport};

/// Every hand-off gets this deadline: the sender of the request retransmits meanwhile.
pub const DEADLINE: Duration = Duration::from_millis(500);
/// Channels to other instances kept at most (a pool has a handful of instances).
const MAX_CHANNELS: usize = 256;
/// Largest message handed over: a SIP message is far smaller.
const MAX_MESSAGE: usize = 256 * 1024;

/// The `SignallingPeer` service of this instance.
pub struct HandoffService {
    server: Arc<Server>,
}

impl HandoffService {
    /// The gRPC service handing requests to `server`.
    pub fn new(server: Arc<Server>) -> SignallingPeerServer<Self> {
        SignallingPeerServer::new(Self { server })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

#[tonic::async_trait]
impl SignallingPeer for HandoffService {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverReply>, Status> {
        let request = request.into_inner();
        let addr: SocketAddr = request
            .source
            .parse()
            .map_err(|_| Status::invalid_argument("source: not an ip:port"))?;
        let transport = Transport::parse(&request.transport)
            .ok_or_else(|| Status::invalid_argument("transport: not udp or tcp"))?;
        let response = self
            .server
            .handed_over(Bytes::from(request.message), Peer { addr, transport })
            .await;
        Ok(Response::new(DeliverReply {
            response: response.map(|r| r.to_vec()),
        }))
    }

    async fn transmit(
        &self,
        request: Request<TransmitRequest>,
    ) -> Result<Response<TransmitReply>, Status> {
        let request = request.into_inner();
        let destination: SocketAddr = request
            .destination
            .parse()
            .map_err(|_| Status::invalid_argument("destination: not an ip:port"))?;
        self.server
            .send_on_own_connection(Bytes::from(request.message), destination)
            .map_err(|error| match error {
                SendError::NoConnection(_) => Status::not_found(error.to_string()),
                SendError::Congested(_) => Status::resource_exhausted(error.to_string()),
                other => Status::internal(other.to_string()),
            })?;
        Ok(Response::new(TransmitReply {}))
    }
}

/// Clients of the other instances' `SignallingPeer` services.
#[derive(Default)]
pub struct Handoff {
    channels: Mutex<HashMap<SocketAddr, Channel>>,
}

impl Handoff {
    /// Hands `message`, received from `source`, to the instance at `peer`; returns its answer.
    pub async fn deliver(
        &self,
        peer: SocketAddr,
        message: Bytes,
        source: Peer,
    ) -> Result<Option<Bytes>, Status> {
        let mut client = SignallingPeerClient::new(self.channel(peer)?);
        let mut request = Request::new(DeliverRequest {
            message: message.to_vec(),
            source: source.addr.to_string(),
            transport: source.transport.as_str().into(),
        });
        request.set_timeout(DEADLINE);
        let reply = client.deliver(request).await?.into_inner();
        Ok(reply.response.map(Bytes::from))
    }

    /// Sends `message` to `destination` over the TCP connection the instance at `peer` holds.
    pub async fn transmit(
        &self,
        peer: SocketAddr,
        destination: SocketAddr,
        message: Bytes,
    ) -> Result<(), Status> {
        let mut client = SignallingPeerClient::new(self.channel(peer)?);
        let mut request = Request::new(TransmitRequest {
            message: message.to_vec(),
            destination: destination.to_string(),
        });
        request.set_timeout(DEADLINE);
        client.transmit(request).await?;
        Ok(())
    }

    fn channel(&self, peer: SocketAddr) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(channel) = channels.get(&peer) {
            return Ok(channel.clone());
        }
        let channel = Channel::from_shared(format!("http://{peer}"))
            .map_err(|_| Status::invalid_argument("peer: not a valid address"))?
            .connect_timeout(DEADLINE)
            .timeout(DEADLINE)
            .connect_lazy();
        // Instances come and go with their pods: past a plausible pool size, start again.
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(peer, channel.clone());
        Ok(channel)
    }
}

/// Reaches the TCP connections other instances hold: the store says which instance holds the
/// connection from a phone, its presence where to reach it.
pub struct HandoffRelay {
    store: Arc<dyn Store>,
    handoff: Arc<Handoff>,
}

impl HandoffRelay {
    pub fn new(store: Arc<dyn Store>, handoff: Arc<Handoff>) -> Self {
        Self { store, handoff }
    }

    async fn transmit_to(&self, peer: SocketAddr, message: Bytes) -> Result<(), SendError> {
        let relay_error = |reason: String| SendError::Relay { peer, reason };
        let holder = self
            .store
            .get(&keys::connection(&peer.to_string()))
            .await
            .map_err(|e| relay_error(e.to_string()))?
            .ok_or(SendError::NoConnection(peer))?;
        let instance = String::from_utf8_lossy(&holder.value).into_owned();
        let presence = presence::find(self.store.as_ref(), &instance)
            .await
            .map_err(|e| relay_error(e.to_string()))?
            .ok_or(SendError::NoConnection(peer))?;
        self.handoff
            .transmit(presence.peer, peer, message)
            .await
            .map_err(|status| relay_error(format!("{instance}: {}", status.message())))
    }
}

impl ConnectionRelay for HandoffRelay {
    fn transmit(
        &self,
        peer: SocketAddr,
        message: Bytes,
    ) -> BoxFuture<'static, Result<(), SendError>> {
        let relay = Self {
            store: self.store.clone(),
            handoff: self.handoff.clone(),
        };
        Box::pin(async move { relay.transmit_to(peer, message).await })
    }
}
