//! The signalling server: transports in, transaction layer, dispatch by method.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use centrex_coord::Store;
use tokio::net::UdpSocket;

use crate::auth::authenticator::Authenticator;
use crate::directory::Directory;
use crate::registrar::Registrar;
use crate::registrar::plan::ExpiryPolicy;
use crate::sip::{
    HeaderName, Limits, Message, Method, Rejection, Request, ResponseBuilder, StatusCode, rejection,
};
use crate::transaction::server::{Arrival, ServerTransactions, TIMER_J_UDP, TransactionKey};

/// Live server transactions kept at most per instance.
const TRANSACTIONS: usize = 200_000;
/// Requests handled at once per transport; datagrams beyond are dropped (the sender retransmits),
/// so a flood cannot grow memory without bound.
const IN_FLIGHT: usize = 10_000;
/// Methods this server answers (advertised in `Allow`).
const ALLOW: &str = "REGISTER, OPTIONS";

/// One signalling instance's request handling.
pub struct Server {
    registrar: Registrar,
    transactions: Mutex<ServerTransactions>,
    limits: Limits,
}

impl Server {
    /// A server for the tenants in `store`, following them through `directory`.
    pub fn new(store: Arc<dyn Store>, directory: Directory, auth: Authenticator) -> Self {
        let registrar = Registrar::new(store, directory, Arc::new(auth), ExpiryPolicy::default());
        Self {
            registrar,
            transactions: Mutex::new(ServerTransactions::new(TRANSACTIONS, TIMER_J_UDP)),
            limits: Limits::default(),
        }
    }

    /// Handles one datagram from `source`; returns what to send back to it, if anything.
    pub async fn handle_datagram(&self, datagram: Bytes, source: SocketAddr) -> Option<Bytes> {
        let message = match Message::parse(datagram.clone(), &self.limits) {
            Ok(message) => message,
            Err(error) => return self.reject(&datagram, &error, source),
        };
        // Responses would belong to client transactions, which this server does not start yet.
        let Message::Request(request) = message else {
            return None;
        };
        if let Err(error) = request.validate(&self.limits) {
            return self.reject(&datagram, &error, source);
        }
        if request.method() == &Method::Ack {
            return None;
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
        let response = self.dispatch(&request, source).await;
        if let Some(response) = &response {
            self.transactions
                .lock()
                .expect("transactions lock")
                .complete(&key, response.clone(), Instant::now());
        }
        response
    }

    async fn dispatch(&self, request: &Request, source: SocketAddr) -> Option<Bytes> {
        match request.method() {
            Method::Register => self.registrar.register(request, source, "udp").await,
            Method::Options => ResponseBuilder::for_request(request, StatusCode::OK)
                .header(HeaderName::Allow, ALLOW)
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
        let socket = Arc::new(socket);
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
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                tracing::debug!(%source, "overloaded: datagram dropped");
                continue;
            };
            let datagram = Bytes::copy_from_slice(&buffer[..len]);
            let (server, socket) = (self.clone(), socket.clone());
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(response) = server.handle_datagram(datagram, source).await
                    && let Err(error) = socket.send_to(&response, source).await
                {
                    tracing::debug!(%error, %source, "cannot send a response");
                }
            });
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
