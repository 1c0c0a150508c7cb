//! Requests handed between signalling instances: an instance that receives a request for a
//! dialog another live instance holds passes it on over gRPC (`SignallingPeer.Deliver`); the
//! owner handles it as if it had received it, and returns its answer for the receiving instance
//! to send back on the socket or connection the request came in on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use centrex_proto::signalling::signalling_peer_client::SignallingPeerClient;
use centrex_proto::signalling::signalling_peer_server::{SignallingPeer, SignallingPeerServer};
use centrex_proto::signalling::{DeliverReply, DeliverRequest};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::server::Server;
use crate::transport::{Peer, Transport};

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
