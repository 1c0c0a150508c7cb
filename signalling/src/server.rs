//! The signalling server: transports in, transaction layer, dispatch by method.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use centrex_coord::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::auth::authenticator::Authenticator;
use crate::b2bua::B2bua;
use crate::cluster::ClusterConfig;
use crate::cluster::handoff::HandoffRelay;
use crate::cluster::presence::{self, Presence};
use crate::directory::Directory;
use crate::edge::rate::{RateLimits, SourceLimiter};
use crate::metrics::Metrics;
use crate::registrar::Registrar;
use crate::registrar::plan::ExpiryPolicy;
use crate::sip::{
    Frame, HeaderName, Limits, Message, Method, Rejection, Request, ResponseBuilder, StatusCode,
    frame_length, rejection,
};
use crate::transaction::server::{Arrival, ServerTransactions, TIMER_J_UDP, TransactionKey};
use crate::transport::{CONNECTION_QUEUE, Outbound, Peer, Transport};
use crate::trunk::registration::{TrunkRegistrationConfig, TrunkRegistrations};

/// Live server transactions kept at most per instance.
const TRANSACTIONS: usize = 200_000;
/// Requests handled at once per transport; datagrams beyond are dropped (the sender retransmits),
/// so a flood cannot grow memory without bound.
const IN_FLIGHT: usize = 10_000;
/// Receive buffer asked for the SIP UDP socket.
const RECEIVE_BUFFER: usize = 8 * 1024 * 1024;
/// How long a closing connection gets to flush what is queued for it.
const FLUSH: Duration = Duration::from_secs(1);
/// Methods this server answers (advertised in `Allow`).
const ALLOW: &str = "REGISTER, OPTIONS, INVITE, ACK, BYE, CANCEL";

/// One signalling instance's request handling.
pub struct Server {
    registrar: Registrar,
    b2bua: Arc<B2bua>,
    out: Arc<Outbound>,
    store: Arc<dyn Store>,
    directory: Directory,
    /// The trunk registrations this instance competes for and keeps.
    trunks: Arc<TrunkRegistrations>,
    trunk_config: TrunkRegistrationConfig,
    /// Requests per source IP, checked before a request is parsed.
    limiter: Mutex<SourceLimiter>,
    /// Address written into Via and Contact when the socket is bound to a wildcard address.
    advertise: Option<std::net::IpAddr>,
    transactions: Mutex<ServerTransactions>,
    limits: Limits,
    metrics: Metrics,
    draining: AtomicBool,
    /// When a drain gives up waiting for calls; set when draining starts.
    drain_deadline: Mutex<Option<Instant>>,
    drain_timeout: Duration,
    /// Set when the instance is one of several sharing the store.
    cluster: Option<ClusterConfig>,
    /// The instance left its cluster: its presence is not published again.
    left: Arc<AtomicBool>,
}

impl Server {
    /// A server for the tenants in `store`, following them through `directory`.
    pub fn new(store: Arc<dyn Store>, directory: Directory, auth: Authenticator) -> Self {
        let auth = Arc::new(auth);
        let out = Arc::new(Outbound::default());
        let b2bua = Arc::new(B2bua::new(
            store.clone(),
            directory.clone(),
            auth.clone(),
            out.clone(),
        ));
        let registrar = Registrar::new(
            store.clone(),
            directory.clone(),
            auth,
            ExpiryPolicy::default(),
        );
        let trunk_config = TrunkRegistrationConfig::default();
        let trunks = Arc::new(TrunkRegistrations::new(
            random_instance_id(),
            store.clone(),
            directory.clone(),
            out.clone(),
            trunk_config,
        ));
        Self {
            registrar,
            b2bua,
            out,
            store,
            directory,
            trunks,
            trunk_config,
            limiter: Mutex::new(SourceLimiter::new(RateLimits::default())),
            advertise: None,
            transactions: Mutex::new(ServerTransactions::new(TRANSACTIONS, TIMER_J_UDP)),
            limits: Limits::default(),
            metrics: Metrics::default(),
            draining: AtomicBool::new(false),
            drain_deadline: Mutex::new(None),
            drain_timeout: Duration::from_secs(300),
            cluster: None,
            left: Arc::default(),
        }
    }

    /// Anchors media on `node`, a media node in this process (local mode), by direct calls
    /// instead of gRPC; nodes elsewhere are still reached over gRPC.
    pub fn with_in_process_media(mut self, node: crate::media::InProcessNode) -> Self {
        Arc::get_mut(&mut self.b2bua)
            .expect("media is set before the server is shared")
            .set_in_process_media(node);
        self
    }

    /// Sends call detail records to `records` (by default they go to the log).
    pub fn with_records(mut self, records: Arc<dyn crate::cdr::RecordSink>) -> Self {
        Arc::get_mut(&mut self.b2bua)
            .expect("records are set before the server is shared")
            .set_records(records);
        self
    }

    /// Names this instance `id` (its pod name in a cluster): the holder it writes into trunk
    /// registration elections and states. [`Server::new`] picks a random one.
    pub fn with_instance_id(self, id: impl Into<String>) -> Self {
        let config = self.trunk_config;
        self.rebuild_trunks(id.into(), config)
    }

    /// How trunk registrations are kept (lease TTL, polling, retries).
    pub fn with_trunk_registration(self, config: TrunkRegistrationConfig) -> Self {
        let id = self.trunks.instance_id().to_string();
        self.rebuild_trunks(id, config)
    }

    fn rebuild_trunks(mut self, id: String, config: TrunkRegistrationConfig) -> Self {
        self.trunk_config = config;
        self.trunks = Arc::new(TrunkRegistrations::new(
            id,
            self.store.clone(),
            self.directory.clone(),
            self.out.clone(),
            config,
        ));
        self
    }

    /// The per-source request-rate limit (default: [`RateLimits::default`]).
    pub fn with_rate_limits(self, limits: RateLimits) -> Self {
        *self.limiter.lock().expect("limiter lock") = SourceLimiter::new(limits);
        self
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        self.trunks.instance_id()
    }

    /// Competes for the registration of every trunk that has one and keeps the trunks it wins
    /// registered with their carriers, until `shutdown`; then un-registers them and resigns, so
    /// another instance takes over at once. Start it with the UDP transport.
    pub async fn keep_trunks_registered(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        self.trunks.clone().run(shutdown).await;
    }

    /// How long a drain waits for calls to end.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Stops taking new calls (they get 503, so phones try another instance); calls in progress,
    /// registrations and everything else keep being served. Idempotent.
    pub fn drain(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            *self.drain_deadline.lock().expect("drain lock") =
                Some(Instant::now() + self.drain_timeout);
            tracing::info!(
                active_calls = self.active_calls(),
                timeout = ?self.drain_timeout,
                "draining: new calls refused"
            );
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Draining, and no call is left or the drain timeout has passed. In a cluster only calls
    /// being set up hold the instance: the answered ones are taken over by the others once it
    /// has left (see [`Server::leave_cluster`]).
    pub fn is_drained(&self) -> bool {
        let deadline = *self.drain_deadline.lock().expect("drain lock");
        let waiting_for = if self.cluster.is_some() {
            self.b2bua.calls_being_set_up()
        } else {
            self.active_calls()
        };
        deadline.is_some_and(|deadline| waiting_for == 0 || Instant::now() >= deadline)
    }

    /// Sends `message` over the TCP connection this instance holds with `peer`, for another
    /// instance of the cluster.
    pub fn send_on_own_connection(
        &self,
        message: Bytes,
        peer: SocketAddr,
    ) -> Result<(), crate::transport::SendError> {
        self.out.send_on_own_connection(message, peer)
    }

    /// Leaves the cluster at once (its lease revoked, so its presence and counters go now and
    /// the other instances take its calls over) rather than when its lease would expire.
    pub async fn leave_cluster(&self) {
        if self.cluster.is_some() {
            self.left.store(true, Ordering::SeqCst);
            self.b2bua.lease().revoke().await;
        }
    }

    /// `/metrics` text.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(self.active_calls(), self.is_draining())
    }

    /// Takes part in a cluster of instances sharing the store (see [`crate::cluster`]): call
    /// with the instance's final id, before the server is shared; then run
    /// [`Server::run_failover`].
    pub fn with_cluster(mut self, config: ClusterConfig) -> Self {
        let instance = self.instance_id().to_string();
        Arc::get_mut(&mut self.b2bua)
            .expect("the cluster is joined before the server is shared")
            .join_cluster(&instance, config.lease_ttl);
        if let Some(service) = config.service_address {
            self.out.set_service_address(service);
        }
        let relay = HandoffRelay::new(self.store.clone(), self.b2bua.handoff());
        self.out.join_cluster(&instance, Arc::new(relay));
        self.cluster = Some(config);
        self
    }

    /// Keeps calls up when what they depend on goes, until the task is dropped: moves calls off
    /// media nodes that are gone and, in a cluster, keeps this instance's presence in the store
    /// and takes over the calls of instances that are gone.
    pub async fn run_failover(self: Arc<Self>) {
        let media = self.b2bua.clone().follow_media_nodes();
        let Some(config) = self.cluster else {
            return media.await;
        };
        let presence = presence::keep(
            self.store.clone(),
            self.b2bua.lease(),
            self.instance_id().to_string(),
            Presence {
                peer: config.peer_address,
            },
            config.lease_ttl / 3,
            self.left.clone(),
        );
        tokio::join!(presence, self.b2bua.clone().take_over_orphans(), media);
    }

    /// Writes `address` into Via and Contact when the UDP socket is bound to a wildcard address
    /// (a pod's own IP).
    pub fn with_advertise(mut self, address: std::net::IpAddr) -> Self {
        self.advertise = Some(address);
        self
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.b2bua.active_calls()
    }

    /// `local` as peers should address it: the advertised IP when bound to a wildcard address.
    fn advertised(&self, local: SocketAddr) -> SocketAddr {
        let ip = if local.ip().is_unspecified() {
            self.advertise.unwrap_or(local.ip())
        } else {
            local.ip()
        };
        SocketAddr::new(ip, local.port())
    }

    /// Handles one datagram from `source`; returns what to send back to it, if anything.
    pub async fn handle_datagram(&self, datagram: Bytes, source: SocketAddr) -> Option<Bytes> {
        self.handle(datagram, source, Transport::Udp).await
    }

    /// Handles one message received on `link` from `source` within its source's request rate;
    /// returns the response to send back.
    async fn handle(&self, datagram: Bytes, source: SocketAddr, link: Transport) -> Option<Bytes> {
        if !self.admit(&datagram, source) {
            return None;
        }
        self.process(datagram, source, link).await
    }

    /// Whether `message` from `source` is within the source's request rate. Responses (answers
    /// of carriers and phones to our requests) are never limited; a carrier's requests are not
    /// either when the limits exempt carriers (looked up only once a source is over its rate).
    fn admit(&self, message: &[u8], source: SocketAddr) -> bool {
        if message.starts_with(b"SIP/") {
            return true;
        }
        let (admitted, exempt_carriers) = {
            let mut limiter = self.limiter.lock().expect("limiter lock");
            let admitted = limiter.admit(source.ip(), Instant::now());
            (admitted, limiter.limits().exempt_carriers)
        };
        if admitted || (exempt_carriers && self.directory.trunk_for_source(source.ip()).is_some()) {
            return true;
        }
        tracing::trace!(%source, "over its request rate: dropped");
        self.metrics.rate_limited();
        false
    }

    /// Handles one message already admitted.
    async fn process(&self, datagram: Bytes, source: SocketAddr, link: Transport) -> Option<Bytes> {
        self.process_as(datagram, source, link, false).await
    }

    /// Handles a request another instance received for a call this one holds (`SignallingPeer`
    /// hand-off); returns the answer for that instance to send back.
    pub async fn handed_over(&self, message: Bytes, source: Peer) -> Option<Bytes> {
        self.process_as(message, source.addr, source.transport, true)
            .await
    }

    /// Handles one message; `handed`: another instance received it and passed it on, so it is
    /// not passed on again.
    async fn process_as(
        &self,
        datagram: Bytes,
        source: SocketAddr,
        link: Transport,
        handed: bool,
    ) -> Option<Bytes> {
        let message = match Message::parse(datagram.clone(), &self.limits) {
            Ok(message) => message,
            Err(error) => {
                self.metrics.malformed();
                return self.reject(&datagram, &error, source);
            }
        };
        let request = match message {
            Message::Request(request) => request,
            Message::Response(response) => {
                // Answers to REGISTER belong to trunk registrations (the B2BUA never registers);
                // every other response to the B2BUA's client transactions.
                let register = response
                    .headers()
                    .cseq()
                    .is_ok_and(|cseq| cseq.method == Method::Register);
                if register {
                    self.trunks.response(response);
                } else if let Some(stray) = Box::pin(self.b2bua.response(response)).await
                    && !handed
                {
                    let peer = Peer {
                        addr: source,
                        transport: link,
                    };
                    Box::pin(self.b2bua.response_elsewhere(&stray, peer)).await;
                }
                return None;
            }
        };
        if let Err(error) = request.validate(&self.limits) {
            self.metrics.malformed();
            return self.reject(&datagram, &error, source);
        }
        let method = request.method().clone();
        self.metrics.request(&method);
        let response = self.route(request, source, link, handed).await;
        if let Some(response) = &response {
            self.metrics.response(&method, response);
        }
        response
    }

    /// Routes a valid request to the B2BUA, the absorbing transaction table, or `dispatch`.
    async fn route(
        &self,
        request: Request,
        source: SocketAddr,
        link: Transport,
        handed: bool,
    ) -> Option<Bytes> {
        let in_dialog = request
            .headers()
            .to()
            .ok()
            .and_then(|to| to.tag().map(|_| ()))
            .is_some();
        let peer = Peer {
            addr: source,
            transport: link,
        };
        if request.method() == &Method::Invite && !in_dialog {
            if self.is_draining() && !self.b2bua.holds(&request) {
                return ResponseBuilder::for_request(&request, StatusCode::SERVICE_UNAVAILABLE)
                    .header(HeaderName::RetryAfter, "5")
                    .build()
                    .ok();
            }
            // INVITE server transactions live in their call (provisional and final answers).
            // Boxed: setting a call up is by far the largest future, and every datagram's task
            // would otherwise be allocated (and moved) at its size.
            return Box::pin(self.b2bua.invite(request, peer)).await;
        }
        if let Some(answer) = Box::pin(self.b2bua.in_call(&request, peer)).await {
            return answer;
        }
        // A dialog's request for a call this instance does not hold: another instance set it up.
        if in_dialog
            && let Some(answer) = Box::pin(self.b2bua.elsewhere(&request, peer, handed)).await
        {
            return answer;
        }
        if request.method() == &Method::Ack {
            return None;
        }
        // A reliable transport does not retransmit: only UDP needs the absorbing table.
        if link == Transport::Tcp {
            return self.dispatch(&request, source, link).await;
        }
        let key = transaction_key(&request)?;
        match self
            .transactions
            .lock()
            .expect("transactions lock")
            .arrive(key.clone(), Instant::now())
        {
            Arrival::New => {}
            Arrival::InProgress => return None,
            Arrival::Retransmit(response) => return Some(response),
        }
        let response = self.dispatch(&request, source, link).await;
        if let Some(response) = &response {
            self.transactions
                .lock()
                .expect("transactions lock")
                .complete(&key, response.clone(), Instant::now());
        }
        response
    }

    async fn dispatch(
        &self,
        request: &Request,
        source: SocketAddr,
        link: Transport,
    ) -> Option<Bytes> {
        match request.method() {
            Method::Register => {
                Box::pin(self.registrar.register(request, source, link.as_str())).await
            }
            Method::Options => ResponseBuilder::for_request(request, StatusCode::OK)
                .header(HeaderName::Allow, ALLOW)
                .build()
                .ok(),
            // Requests of dialogs and transactions we do not know (RFC 3261 §12.2.2, §9.2).
            Method::Bye | Method::Cancel => ResponseBuilder::for_request(
                request,
                StatusCode::CALL_OR_TRANSACTION_DOES_NOT_EXIST,
            )
            .build()
            .ok(),
            _ => ResponseBuilder::for_request(request, StatusCode::METHOD_NOT_ALLOWED)
                .header(HeaderName::Allow, ALLOW)
                .build()
                .ok(),
        }
    }

    fn reject(
        &self,
        datagram: &[u8],
        error: &crate::sip::Error,
        source: SocketAddr,
    ) -> Option<Bytes> {
        match rejection(datagram, error, &self.limits) {
            Rejection::Respond(response) => {
                tracing::debug!(%source, %error, "malformed request answered");
                Some(response.as_bytes())
            }
            Rejection::Drop(reason) => {
                tracing::debug!(%source, ?reason, "malformed message dropped");
                None
            }
        }
    }

    /// Serves SIP over UDP on `socket` until `shutdown`. Responses go back to the datagram's
    /// source (symmetric response routing, RFC 3581), which is what NATed phones need.
    pub async fn serve_udp(
        self: Arc<Self>,
        socket: UdpSocket,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        // The default receive buffer (about 200 KB) overflows in bursts of a few thousand
        // requests a second; the kernel caps what is asked at net.core.rmem_max.
        if let Err(error) = socket2::SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER) {
            tracing::warn!(%error, "cannot enlarge the SIP socket's receive buffer");
        }
        let socket = Arc::new(socket);
        if let Ok(local) = socket.local_addr() {
            self.out.attach_udp(socket.clone(), self.advertised(local));
        }
        self.receive_udp(socket, shutdown).await;
    }

    /// Serves SIP over UDP on the pool's shared address (bound with SO_REUSEPORT by every
    /// instance of the host), until the task is dropped. Answers go out from it; our own requests
    /// keep leaving from the instance's own socket, whose address is in their Via.
    pub async fn serve_shared_udp(self: Arc<Self>, socket: UdpSocket) {
        if let Err(error) = socket2::SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER) {
            tracing::warn!(%error, "cannot enlarge the shared SIP socket's receive buffer");
        }
        self.receive_udp(Arc::new(socket), std::future::pending())
            .await;
    }

    /// Receives datagrams on `socket` and answers each from it, until `shutdown`.
    async fn receive_udp(
        self: Arc<Self>,
        socket: Arc<UdpSocket>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut buffer = vec![0u8; 65_536];
        tokio::pin!(shutdown);
        loop {
            let (len, source) = tokio::select! {
                _ = &mut shutdown => return,
                received = socket.recv_from(&mut buffer) => match received {
                    Ok(received) => received,
                    Err(error) => {
                        tracing::warn!(%error, "UDP receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            // A flooding source is cut off before its datagram is copied or a task spawned.
            if !self.admit(&buffer[..len], source) {
                continue;
            }
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                tracing::debug!(%source, "overloaded: datagram dropped");
                self.metrics.overload_dropped();
                continue;
            };
            let datagram = Bytes::copy_from_slice(&buffer[..len]);
            let (server, socket) = (self.clone(), socket.clone());
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(response) = server.process(datagram, source, Transport::Udp).await
                    && let Err(error) = socket.send_to(&response, source).await
                {
                    tracing::debug!(%error, %source, "cannot send a response");
                }
            });
        }
    }
}

/// Limits of SIP over TCP.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Connections open at once; more are refused (closed at once).
    pub max_connections: usize,
    /// A connection silent this long is closed (phones keep theirs alive with CRLF pings).
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

impl Server {
    /// Serves SIP over TCP (RFC 3261 §18.3: Content-Length framing) on `listener` until
    /// `shutdown`; responses go back on the connection the request came on.
    pub async fn serve_tcp(
        self: Arc<Self>,
        listener: TcpListener,
        limits: TcpLimits,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        if let Ok(local) = listener.local_addr() {
            self.out.attach_tcp(self.advertised(local));
        }
        let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many SIP connections: refused");
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(error) = server.connection(stream, peer, limits.idle_timeout).await {
                    tracing::debug!(%peer, %error, "SIP connection closed");
                }
            });
        }
    }

    /// Serves one connection: what we send the peer (answers, and requests of its calls) is
    /// queued to a writer, so it reaches the phone on the connection it opened.
    async fn connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        idle: Duration,
    ) -> std::io::Result<()> {
        let (reader, mut writer) = stream.into_split();
        let (queue, mut outgoing) = tokio::sync::mpsc::channel::<Bytes>(CONNECTION_QUEUE);
        self.out.connected(peer, queue.clone());
        self.announce_connection(peer, true);
        let writing = tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if writer.write_all(&message).await.is_err() {
                    return;
                }
            }
        });
        let read = self.read_connection(reader, peer, idle, &queue).await;
        // The writer ends once every sender is gone, after flushing what is queued (a last
        // answer to a message that could not be framed, say).
        self.out.disconnected(peer);
        self.announce_connection(peer, false);
        drop(queue);
        if tokio::time::timeout(FLUSH, writing).await.is_err() {
            tracing::debug!(%peer, "connection closed with answers unsent");
        }
        read
    }

    /// In a cluster, tells the other instances that this one holds (`open`) or no longer holds
    /// the TCP connection from `peer`, under the instance's lease (in the background).
    fn announce_connection(&self, peer: SocketAddr, open: bool) {
        if self.cluster.is_none() {
            return;
        }
        let (store, lease) = (self.store.clone(), self.b2bua.lease());
        let key = centrex_coord::keys::connection(&peer.to_string());
        let instance = self.instance_id().as_bytes().to_vec();
        tokio::spawn(async move {
            let written = if open {
                match lease.get().await {
                    Ok(lease) => store.put(&key, instance, Some(lease)).await.map(drop),
                    Err(error) => Err(error),
                }
            } else {
                store.delete(&key).await.map(drop)
            };
            if let Err(error) = written {
                tracing::warn!(%error, %peer, "cannot announce a TCP connection to the cluster");
            }
        });
    }

    /// Reads framed messages from one connection and queues each answer on it.
    async fn read_connection(
        &self,
        mut reader: tokio::net::tcp::OwnedReadHalf,
        peer: SocketAddr,
        idle: Duration,
        queue: &tokio::sync::mpsc::Sender<Bytes>,
    ) -> std::io::Result<()> {
        let send = |message: Bytes| {
            queue
                .try_send(message)
                .map_err(|_| std::io::Error::other("peer not reading its answers"))
        };
        let mut buffer = BytesMut::with_capacity(4096);
        loop {
            match frame_length(&buffer, &self.limits) {
                Ok(Frame::Complete(length)) => {
                    let message = buffer.split_to(length).freeze();
                    if let Some(response) = self.handle(message, peer, Transport::Tcp).await {
                        send(response)?;
                    }
                    continue;
                }
                Ok(Frame::KeepAlive(length)) => {
                    // RFC 5626 §3.5.1: a double-CRLF ping is answered with a single-CRLF pong.
                    let ping = &buffer[..length];
                    let pong = ping.windows(4).any(|w| w == b"\r\n\r\n");
                    buffer.advance(length);
                    if pong {
                        send(Bytes::from_static(b"\r\n"))?;
                    }
                    continue;
                }
                Ok(Frame::Incomplete) => {}
                Err(error) => {
                    // The stream cannot be framed any more: answer if possible, then close.
                    if let Some(response) = self.reject(&buffer, &error, peer) {
                        send(response)?;
                    }
                    return Ok(());
                }
            }
            if buffer.len() >= self.limits.max_message_size {
                return Ok(());
            }
            let read = tokio::time::timeout(idle, reader.read_buf(&mut buffer)).await;
            match read {
                Ok(Ok(0)) | Err(_) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error),
            }
        }
    }
}

/// The server transaction a request belongs to (ACK's INVITE transaction is not ours to match).
fn transaction_key(request: &Request) -> Option<TransactionKey> {
    let via = request.headers().top_via().ok()?;
    let port = via.port().unwrap_or(5060);
    Some(TransactionKey {
        branch: via.branch()?.to_string(),
        sent_by: format!("{}:{port}", via.host()),
        method: request.method().to_string(),
    })
}

/// A random instance id (`signalling-<hex>`), for servers not given one.
fn random_instance_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("signalling-{}", hex::encode(bytes))
}

/// This process's instance id: `POD_NAME` in a cluster, else `<hostname>-<pid>`, else random.
pub fn default_instance_id() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.trim().is_empty()
    {
        return pod.trim().to_string();
    }
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    match hostname {
        Some(hostname) => format!("{hostname}-{}", std::process::id()),
        None => random_instance_id(),
    }
}
