//! The phones: a compact SIP user agent in the test process that plays every user over a few UDP
//! sockets on 127.0.0.1 (one socket carries many users' SIP). Callees register with digest and
//! answer INVITEs at once; callers place calls, answer the 401 with digest, ACK and, at the end,
//! hang up. Both sides answer the platform's re-INVITEs with their own SDP and send their audio
//! where the new offer points: that is how the platform moves a call to another media node.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use centrex_coord::snapshot::DigestCredentials;
use centrex_signalling::auth::client::ServerChallenge;
use centrex_signalling::b2bua::random_token;
use centrex_signalling::sdp;
use centrex_signalling::sip::{
    HeaderName, Limits, Message, Method, Request, RequestBuilder, Response, ResponseBuilder,
    StatusCode,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::audio::{Audio, Stream};
use crate::platform::{DOMAIN, password};

/// SIP sockets of the phones. Several, because instances that share an address through
/// SO_REUSEPORT pick one by the source address: one socket would reach only one of them.
const SOCKETS: usize = 8;
/// First retransmission interval of a request (RFC 3261 T1), doubled up to T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// How long a request waits for its final answer: RFC 3261's 32 s shortened, all peers are local.
const TRANSACTION: Duration = Duration::from_secs(8);
/// Answers kept for a request being retransmitted.
const ANSWERS_QUEUED: usize = 8;

/// Why a request did not get the answer wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No final answer within [`TRANSACTION`].
    NoAnswer { method: Method, to: SocketAddr },
    /// A final answer other than the one wanted.
    Refused {
        method: Method,
        status: u16,
        reason: String,
    },
    /// An answer the phone cannot use.
    Unusable {
        method: Method,
        lacking: &'static str,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAnswer { method, to } => write!(f, "{method} to {to} unanswered"),
            Self::Refused {
                method,
                status,
                reason,
            } => write!(f, "{method} answered {status} {reason}"),
            Self::Unusable { method, lacking } => write!(f, "answer to {method} without {lacking}"),
        }
    }
}

/// One party's side of a call: its audio and what the platform did to it.
pub struct Leg {
    pub stream: Arc<Stream>,
    /// Our tag in the dialog.
    tag: String,
    /// Our Contact.
    contact: String,
    /// Where the platform's last SDP asked for our audio: a media node's relay port.
    relay: Mutex<Option<SocketAddr>>,
    /// The re-INVITEs received (retransmissions counted once) and the last one's CSeq.
    reinvites: Mutex<(usize, Option<u32>)>,
    /// When the platform sent this leg a BYE.
    bye_at: Mutex<Option<Instant>>,
    /// Where the platform's first INVITE to a callee came from: the instance that set it up.
    called_from: Mutex<Option<SocketAddr>>,
}

impl Leg {
    fn new(user: &str, stream: Arc<Stream>, sip: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            stream,
            tag: random_token(),
            contact: format!("<sip:{user}@{sip}>"),
            relay: Mutex::default(),
            reinvites: Mutex::default(),
            bye_at: Mutex::default(),
            called_from: Mutex::default(),
        })
    }

    /// Where the audio goes now.
    pub fn relay(&self) -> Option<SocketAddr> {
        *self.relay.lock().unwrap()
    }

    /// How many re-INVITEs the platform sent.
    pub fn reinvites(&self) -> usize {
        self.reinvites.lock().unwrap().0
    }

    /// The instance that set this callee's call up (its address), once it has called.
    pub fn called_from(&self) -> Option<SocketAddr> {
        *self.called_from.lock().unwrap()
    }

    /// When the platform hung this leg up, if it did.
    pub fn hung_up_by_platform(&self) -> Option<Instant> {
        *self.bye_at.lock().unwrap()
    }

    /// Sends the audio where the SDP `body` (an offer or an answer of the platform) says.
    fn follow(&self, body: &[u8]) -> bool {
        let Some(media) = std::str::from_utf8(body)
            .ok()
            .and_then(|text| sdp::audio_endpoint(text).ok())
        else {
            return false;
        };
        let relay = SocketAddr::new(media.address, media.port);
        *self.relay.lock().unwrap() = Some(relay);
        self.stream.send_to(relay);
        true
    }

    /// Our SDP: PCMU at our stream's address.
    fn sdp(&self) -> Bytes {
        let local = self.stream.local_addr();
        Bytes::from(format!(
            "v=0\r\no=chaos {port} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
            ip = local.ip(),
            port = local.port()
        ))
    }

    /// Takes the platform's BYE: the leg is over.
    fn hung_up(&self) {
        self.bye_at.lock().unwrap().get_or_insert_with(Instant::now);
        self.stream.stop();
    }
}

/// A call placed and answered.
pub struct Call {
    /// The caller's side.
    pub leg: Arc<Leg>,
    socket: Arc<UdpSocket>,
    call_id: String,
    /// From with our tag, To with the platform's.
    from: String,
    to: String,
    /// The Contact of the 2xx: where in-dialog requests go.
    target_uri: String,
    pub target: SocketAddr,
}

/// State shared by the sockets' receiving tasks and the requests in progress.
struct Shared {
    audio: Arc<Audio>,
    /// Requests waiting for their answers, by Call-ID and CSeq number.
    waiting: Mutex<HashMap<(String, u32), mpsc::Sender<Response>>>,
    /// The ACK of each answered INVITE and where it went, sent again when the 2xx is.
    acks: Mutex<HashMap<(String, u32), (Bytes, SocketAddr)>>,
    /// Legs by Call-ID: where the platform's in-dialog requests land.
    legs: Mutex<HashMap<String, Arc<Leg>>>,
    /// Callees' legs by user (each callee has one call).
    callees: Mutex<HashMap<String, Arc<Leg>>>,
}

/// Every user of the run, on [`SOCKETS`] sockets.
pub struct Phones {
    sockets: Vec<Arc<UdpSocket>>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Phones {
    /// Binds the sockets and starts answering on them; the calls' audio goes through `audio`.
    pub async fn bind(audio: Arc<Audio>) -> Self {
        let shared = Arc::new(Shared {
            audio,
            waiting: Mutex::default(),
            acks: Mutex::default(),
            legs: Mutex::default(),
            callees: Mutex::default(),
        });
        let (stop, _) = watch::channel(false);
        let mut sockets = Vec::with_capacity(SOCKETS);
        for _ in 0..SOCKETS {
            let socket = Arc::new(
                UdpSocket::bind("127.0.0.1:0")
                    .await
                    .expect("bind a SIP socket"),
            );
            tokio::spawn(receive(socket.clone(), shared.clone(), stop.subscribe()));
            sockets.push(socket);
        }
        Self {
            sockets,
            shared,
            stop,
        }
    }

    /// The socket of user number `n`.
    fn socket(&self, n: usize) -> &Arc<UdpSocket> {
        &self.sockets[n % self.sockets.len()]
    }

    /// The leg of callee `user`, once the platform has called it.
    pub fn callee_leg(&self, user: &str) -> Option<Arc<Leg>> {
        self.shared.callees.lock().unwrap().get(user).cloned()
    }

    /// Registers `user` (user number `n`) at `registrar`, answering the digest challenge.
    pub async fn register(
        &self,
        user: &str,
        n: usize,
        registrar: SocketAddr,
    ) -> Result<(), Failure> {
        let socket = self.socket(n);
        let local = socket.local_addr().expect("a bound socket");
        let uri = format!("sip:{DOMAIN}");
        let call_id = format!("reg-{}@chaos", random_token());
        let from = format!("<sip:{user}@{DOMAIN}>;tag={}", random_token());
        let to = format!("<sip:{user}@{DOMAIN}>");
        let register = |cseq: u32, authorization: Option<&(HeaderName, String)>| {
            let mut builder = RequestBuilder::new(Method::Register, uri.as_str())
                .header(HeaderName::Via, via(local))
                .header(HeaderName::MaxForwards, "70")
                .header(HeaderName::From, from.as_str())
                .header(HeaderName::To, to.as_str())
                .header(HeaderName::CallId, call_id.as_str())
                .header(HeaderName::CSeq, format!("{cseq} REGISTER"))
                .header(HeaderName::Contact, format!("<sip:{user}@{local}>"))
                .header(HeaderName::Expires, "600");
            if let Some((name, value)) = authorization {
                builder = builder.header(*name, value.as_str());
            }
            builder.build().expect("a REGISTER builds")
        };
        let key = |cseq| (call_id.clone(), cseq);
        let challenge = self
            .transact(
                socket,
                register(1, None),
                key(1),
                registrar,
                Method::Register,
            )
            .await?;
        let authorization = authorization(&challenge, user, Method::Register, &uri)?;
        let answer = self
            .transact(
                socket,
                register(2, Some(&authorization)),
                key(2),
                registrar,
                Method::Register,
            )
            .await?;
        expect_success(&answer, Method::Register)
    }

    /// `caller` (user number `n`) calls `callee` through `entry`: INVITE, 401, INVITE with
    /// credentials, 200, ACK; the caller's audio starts with the answer's SDP.
    pub async fn call(
        &self,
        caller: &str,
        n: usize,
        callee: &str,
        entry: SocketAddr,
    ) -> Result<Call, Failure> {
        let socket = self.socket(n).clone();
        let local = socket.local_addr().expect("a bound socket");
        let leg = Leg::new(caller, self.shared.audio.stream(), local);
        let call_id = format!("{}@chaos", random_token());
        self.shared
            .legs
            .lock()
            .unwrap()
            .insert(call_id.clone(), leg.clone());
        let uri = format!("sip:{callee}@{DOMAIN}");
        let from = format!("<sip:{caller}@{DOMAIN}>;tag={}", leg.tag);
        let to = format!("<sip:{callee}@{DOMAIN}>");
        let invite = |cseq: u32, branch: &str, authorization: Option<&(HeaderName, String)>| {
            let mut builder = RequestBuilder::new(Method::Invite, uri.as_str())
                .header(HeaderName::Via, via_with(local, branch))
                .header(HeaderName::MaxForwards, "70")
                .header(HeaderName::From, from.as_str())
                .header(HeaderName::To, to.as_str())
                .header(HeaderName::CallId, call_id.as_str())
                .header(HeaderName::CSeq, format!("{cseq} INVITE"))
                .header(HeaderName::Contact, leg.contact.as_str());
            if let Some((name, value)) = authorization {
                builder = builder.header(*name, value.as_str());
            }
            builder
                .body("application/sdp", leg.sdp())
                .build()
                .expect("an INVITE builds")
        };
        let key = |cseq| (call_id.clone(), cseq);

        let first = branch();
        let challenge = self
            .transact(
                &socket,
                invite(1, &first, None),
                key(1),
                entry,
                Method::Invite,
            )
            .await?;
        self.ack_failure(&socket, &uri, &first, &from, &call_id, &challenge, entry)
            .await;
        let authorization = authorization(&challenge, caller, Method::Invite, &uri)?;
        let second = branch();
        let answer = self
            .transact(
                &socket,
                invite(2, &second, Some(&authorization)),
                key(2),
                entry,
                Method::Invite,
            )
            .await?;
        if !answer.status().is_success() {
            self.ack_failure(&socket, &uri, &second, &from, &call_id, &answer, entry)
                .await;
        }
        expect_success(&answer, Method::Invite)?;
        let unusable = |lacking| Failure::Unusable {
            method: Method::Invite,
            lacking,
        };
        let to = answer
            .headers()
            .get(HeaderName::To)
            .ok_or(unusable("To"))?
            .to_string();
        let (target_uri, target) = contact(&answer).ok_or(unusable("a Contact address"))?;
        if !leg.follow(answer.body()) {
            return Err(unusable("an SDP with audio"));
        }
        let ack_key = key(2);
        let call = Call {
            leg,
            socket,
            call_id,
            from,
            to,
            target_uri,
            target,
        };
        let ack = self.in_dialog(&call, Method::Ack, 2);
        self.shared
            .acks
            .lock()
            .unwrap()
            .insert(ack_key, (ack.clone(), target));
        let _ = call.socket.send_to(&ack, target).await;
        Ok(call)
    }

    /// Hangs `call` up: BYE in its dialog; the status of the answer.
    pub async fn hang_up(&self, call: &Call) -> Result<u16, Failure> {
        let bye = self.in_dialog(call, Method::Bye, 3);
        let key = (call.call_id.clone(), 3);
        let answer = self
            .transact(&call.socket, bye, key, call.target, Method::Bye)
            .await?;
        Ok(answer.status().as_u16())
    }

    /// Stops the receiving tasks.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// A request of `call`'s dialog.
    fn in_dialog(&self, call: &Call, method: Method, cseq: u32) -> Bytes {
        let local = call.socket.local_addr().expect("a bound socket");
        RequestBuilder::new(method.clone(), call.target_uri.as_str())
            .header(HeaderName::Via, via(local))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, call.from.as_str())
            .header(HeaderName::To, call.to.as_str())
            .header(HeaderName::CallId, call.call_id.as_str())
            .header(HeaderName::CSeq, format!("{cseq} {method}"))
            .build()
            .expect("an in-dialog request builds")
    }

    /// The ACK of a final answer other than 2xx: part of the INVITE's transaction (same branch,
    /// the answer's To), sent where the INVITE went (RFC 3261 §17.1.1.3).
    #[allow(clippy::too_many_arguments)]
    async fn ack_failure(
        &self,
        socket: &UdpSocket,
        uri: &str,
        branch: &str,
        from: &str,
        call_id: &str,
        answer: &Response,
        to: SocketAddr,
    ) {
        let local = socket.local_addr().expect("a bound socket");
        let cseq = answer.headers().cseq().map_or(1, |c| c.seq);
        let ack = RequestBuilder::new(Method::Ack, uri)
            .header(HeaderName::Via, via_with(local, branch))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, from)
            .header(
                HeaderName::To,
                answer.headers().get(HeaderName::To).unwrap_or_default(),
            )
            .header(HeaderName::CallId, call_id)
            .header(HeaderName::CSeq, format!("{cseq} ACK"))
            .build()
            .expect("an ACK builds");
        let _ = socket.send_to(&ack, to).await;
    }

    /// Sends `request` to `to` and retransmits it (T1 doubling to T2, until a provisional
    /// answer) until its final answer comes or [`TRANSACTION`] passes.
    async fn transact(
        &self,
        socket: &UdpSocket,
        request: Bytes,
        key: (String, u32),
        to: SocketAddr,
        method: Method,
    ) -> Result<Response, Failure> {
        let (sender, mut answers) = mpsc::channel(ANSWERS_QUEUED);
        self.shared
            .waiting
            .lock()
            .unwrap()
            .insert(key.clone(), sender);
        let deadline = Instant::now() + TRANSACTION;
        let mut interval = T1;
        let mut retransmit = Some(Instant::now() + interval);
        let _ = socket.send_to(&request, to).await;
        let outcome = loop {
            let wake = retransmit.map_or(deadline, |at| at.min(deadline));
            match tokio::time::timeout_at(wake, answers.recv()).await {
                Ok(Some(answer)) if answer.status().is_provisional() => retransmit = None,
                Ok(Some(answer)) => break Ok(answer),
                Ok(None) => unreachable!("the sender is in the waiting map until we remove it"),
                Err(_) if Instant::now() >= deadline => {
                    break Err(Failure::NoAnswer {
                        method: method.clone(),
                        to,
                    });
                }
                Err(_) => {
                    let _ = socket.send_to(&request, to).await;
                    interval = (interval * 2).min(T2);
                    retransmit = Some(Instant::now() + interval);
                }
            }
        };
        self.shared.waiting.lock().unwrap().remove(&key);
        outcome
    }
}

impl Drop for Phones {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads `socket` until `stop`: answers go to the requests waiting for them, requests of the
/// platform are answered.
async fn receive(socket: Arc<UdpSocket>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 65_535];
    let local = socket.local_addr().expect("a bound socket");
    loop {
        let received = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            received = socket.recv_from(&mut buffer) => received,
        };
        let Ok((len, from)) = received else { return };
        let bytes = Bytes::copy_from_slice(&buffer[..len]);
        // Keep-alives and anything else that is not SIP are ignored.
        let Ok(message) = Message::parse(bytes, &Limits::default()) else {
            continue;
        };
        let reply = match message {
            Message::Response(answer) => shared.answered(answer),
            Message::Request(request) => shared.respond(&request, local, from),
        };
        if let Some((bytes, to)) = reply {
            let _ = socket.send_to(&bytes, to.unwrap_or(from)).await;
        }
    }
}

impl Shared {
    /// Hands `answer` to its request; a retransmitted 2xx of an INVITE gets its ACK again.
    fn answered(&self, answer: Response) -> Option<(Bytes, Option<SocketAddr>)> {
        let headers = answer.headers();
        let key = (
            headers.call_id().ok()?.to_string(),
            headers.cseq().ok()?.seq,
        );
        if let Some(waiting) = self.waiting.lock().unwrap().get(&key) {
            let _ = waiting.try_send(answer);
            return None;
        }
        if !answer.status().is_success() {
            return None;
        }
        let (ack, to) = self.acks.lock().unwrap().get(&key).cloned()?;
        Some((ack, Some(to)))
    }

    /// The phones' answer to a request of the platform (sent back where it came from).
    fn respond(
        &self,
        request: &Request,
        local: SocketAddr,
        from: SocketAddr,
    ) -> Option<(Bytes, Option<SocketAddr>)> {
        let headers = request.headers();
        let call_id = headers.call_id().ok()?.to_string();
        let new_call = *request.method() == Method::Invite && headers.to().ok()?.tag().is_none();
        if new_call {
            return Some((self.ring(request, &call_id, local, from)?, None));
        }
        let leg = self.legs.lock().unwrap().get(&call_id).cloned();
        let answer = match (request.method(), leg) {
            (Method::Ack, _) => return None,
            (Method::Invite | Method::Update, Some(leg)) => {
                if *request.method() == Method::Invite
                    && let Ok(cseq) = headers.cseq()
                {
                    let mut seen = leg.reinvites.lock().unwrap();
                    if seen.1 != Some(cseq.seq) {
                        *seen = (seen.0 + 1, Some(cseq.seq));
                    }
                }
                if !request.body().is_empty() {
                    leg.follow(request.body());
                }
                ResponseBuilder::for_request(request, StatusCode::OK)
                    .header(HeaderName::Contact, leg.contact.as_str())
                    .body("application/sdp", leg.sdp())
                    .build()
                    .ok()?
            }
            (Method::Bye, Some(leg)) => {
                leg.hung_up();
                ResponseBuilder::for_request(request, StatusCode::OK)
                    .build()
                    .ok()?
            }
            (Method::Invite | Method::Update | Method::Bye, None) => ResponseBuilder::for_request(
                request,
                StatusCode::CALL_OR_TRANSACTION_DOES_NOT_EXIST,
            )
            .to_tag(random_token())
            .build()
            .ok()?,
            _ => ResponseBuilder::for_request(request, StatusCode::OK)
                .to_tag(random_token())
                .build()
                .ok()?,
        };
        Some((answer, None))
    }

    /// A new call to a callee: answered at once, its audio sent where the offer says. A callee
    /// called again (a new dialog for the same call) keeps its leg.
    fn ring(
        &self,
        invite: &Request,
        call_id: &str,
        local: SocketAddr,
        from: SocketAddr,
    ) -> Option<Bytes> {
        let user = invite.uri().ok()?.as_sip()?.user()?.to_string();
        let leg = self
            .callees
            .lock()
            .unwrap()
            .entry(user.clone())
            .or_insert_with(|| Leg::new(&user, self.audio.stream(), local))
            .clone();
        self.legs
            .lock()
            .unwrap()
            .insert(call_id.to_string(), leg.clone());
        leg.called_from.lock().unwrap().get_or_insert(from);
        leg.follow(invite.body());
        ResponseBuilder::for_request(invite, StatusCode::OK)
            .to_tag(leg.tag.as_str())
            .header(HeaderName::Contact, leg.contact.as_str())
            .body("application/sdp", leg.sdp())
            .build()
            .ok()
    }
}

/// The `Authorization` (or `Proxy-Authorization`) answering the digest challenge in `challenge`.
fn authorization(
    challenge: &Response,
    user: &str,
    method: Method,
    uri: &str,
) -> Result<(HeaderName, String), Failure> {
    let (asked, answered) = match challenge.status() {
        StatusCode::UNAUTHORIZED => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
        StatusCode::PROXY_AUTHENTICATION_REQUIRED => (
            HeaderName::ProxyAuthenticate,
            HeaderName::ProxyAuthorization,
        ),
        _ => return Err(refused(challenge, method)),
    };
    let unusable = Failure::Unusable {
        method: method.clone(),
        lacking: "a digest challenge it can answer",
    };
    let credentials = DigestCredentials::derive(user, DOMAIN, password(user).as_bytes());
    let value = ServerChallenge::best(challenge.headers().get_all(asked))
        .and_then(|c| c.answer(&credentials, method.as_str(), uri, 1, &random_token()))
        .map_err(|_| unusable)?;
    Ok((answered, value))
}

/// `Ok` for a 2xx, the status otherwise.
fn expect_success(answer: &Response, method: Method) -> Result<(), Failure> {
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(refused(answer, method))
    }
}

/// The failure of a request answered `answer`.
fn refused(answer: &Response, method: Method) -> Failure {
    Failure::Refused {
        method,
        status: answer.status().as_u16(),
        reason: answer.reason().to_string(),
    }
}

/// The URI and address of the first Contact of `answer`.
fn contact(answer: &Response) -> Option<(String, SocketAddr)> {
    let contact = answer.headers().contacts().next()?.ok()?;
    let uri = contact.address()?.uri();
    let sip = uri.as_sip()?;
    let address = SocketAddr::new(sip.host().ip()?, sip.port().unwrap_or(5060));
    Some((uri.as_str().to_string(), address))
}

/// A new client transaction's branch.
fn branch() -> String {
    format!("z9hG4bK{}", random_token())
}

/// Our Via with a new branch.
fn via(local: SocketAddr) -> String {
    via_with(local, &branch())
}

/// Our Via with `branch`.
fn via_with(local: SocketAddr, branch: &str) -> String {
    format!("SIP/2.0/UDP {local};branch={branch};rport")
}
