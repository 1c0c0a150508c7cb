//! Phones played by the test process over real UDP on 127.0.0.1, where a test needs to read the
//! exact requests a phone receives (caller ID, forwarding, limits): a [`Phone`] registers with
//! digest and answers INVITEs the way its [`Behaviour`] says; a [`Dialer`] places calls with
//! digest. sipp plays the phones where audio matters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centrex_coord::testing::eventually;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::{DOMAIN, authorization, header, nonce_of, respond};

/// How long a test waits for any one message.
const WAIT: Duration = Duration::from_secs(10);

/// What a phone does with an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Rings (180), then answers (200 with SDP).
    Answer,
    /// Refuses with 486 Busy Here.
    Busy,
    /// Rings until the call is cancelled.
    Ring,
    /// Says nothing at all (a phone that lost its network).
    Silent,
}

/// A registered phone answering on its own socket.
pub struct Phone {
    pub user: String,
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Phone {
    /// Registers `user` (password `secret-<user>`) at `sip` and starts answering as `behaviour`.
    pub async fn register(sip: SocketAddr, user: &str, behaviour: Behaviour) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let uri = format!("sip:{DOMAIN}");
        let register = |cseq: u32, auth: &str| {
            format!(
                "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKreg{cseq}{port}\r\n\
                 From: <sip:{user}@{DOMAIN}>;tag=r{port}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
                 Call-ID: reg-{user}-{port}@test\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{addr}>\r\n\
                 Expires: 600\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n",
                port = addr.port()
            )
        };
        socket
            .send_to(register(1, "").as_bytes(), sip)
            .await
            .unwrap();
        let challenge = receive(&socket).await;
        assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
        let password = format!("secret-{user}");
        let auth = authorization(user, &password, "REGISTER", &uri, &nonce_of(&challenge), 1);
        socket
            .send_to(register(2, &auth).as_bytes(), sip)
            .await
            .unwrap();
        let ok = receive(&socket).await;
        assert!(ok.starts_with("SIP/2.0 200"), "{user} not registered: {ok}");
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(answer(socket, behaviour, received.clone()));
        Self {
            user: user.into(),
            addr,
            received,
            task,
        }
    }

    /// A carrier (or any peer that does not register) answering as `behaviour` on `ip`, an
    /// address of 127.0.0.0/8 apart from the phones'.
    pub async fn unregistered(ip: &str, behaviour: Behaviour) -> Self {
        let socket = UdpSocket::bind((ip, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(answer(socket, behaviour, received.clone()));
        Self {
            user: format!("peer at {addr}"),
            addr,
            received,
            task,
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// INVITEs received so far (retransmissions included).
    pub fn invites(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|r| r.starts_with("INVITE "))
            .collect()
    }

    /// The first INVITE, waiting for it.
    pub async fn invite(&self) -> String {
        self.request("INVITE").await
    }

    /// The first request of `method`, waiting for it.
    pub async fn request(&self, method: &str) -> String {
        let prefix = format!("{method} ");
        let what = format!("{} to receive a {method}", self.user);
        eventually(&what, || async {
            self.received().into_iter().find(|r| r.starts_with(&prefix))
        })
        .await
    }
}

/// Answers requests as `behaviour` until aborted, recording them.
async fn answer(socket: UdpSocket, behaviour: Behaviour, received: Arc<Mutex<Vec<String>>>) {
    let mut buffer = vec![0u8; 65_536];
    // INVITEs by Call-ID, to answer a CANCEL's 487 and retransmissions.
    let mut invites: HashMap<String, (String, String)> = HashMap::new();
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
            return;
        };
        let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if text.starts_with("SIP/2.0") {
            continue;
        }
        received.lock().unwrap().push(text.clone());
        let call_id = header(&text, "Call-ID").to_string();
        let method = text.split(' ').next().unwrap_or_default().to_string();
        let mut replies = Vec::new();
        match method.as_str() {
            "INVITE" => {
                let tag = format!("ph{}", invites.len());
                invites.insert(call_id, (text.clone(), tag.clone()));
                match behaviour {
                    Behaviour::Silent => {}
                    Behaviour::Busy => replies.push(respond(&text, "486 Busy Here", &tag, "")),
                    Behaviour::Ring => replies.push(respond(&text, "180 Ringing", &tag, "")),
                    Behaviour::Answer => {
                        let port = socket.local_addr().unwrap().port();
                        let sdp = format!(
                            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
                        );
                        replies.push(respond(&text, "180 Ringing", &tag, ""));
                        replies.push(respond(&text, "200 OK", &tag, &sdp));
                    }
                }
            }
            "CANCEL" => {
                replies.push(respond(&text, "200 OK", "c", ""));
                if let Some((invite, tag)) = invites.get(&call_id) {
                    replies.push(respond(invite, "487 Request Terminated", tag, ""));
                }
            }
            "ACK" => {}
            _ => replies.push(respond(&text, "200 OK", "x", "")),
        }
        for reply in replies {
            let _ = socket.send_to(reply.as_bytes(), from).await;
        }
    }
}

/// A user placing calls from a socket of its own.
pub struct Dialer {
    pub user: String,
    socket: UdpSocket,
    sip: SocketAddr,
}

/// A call placed by a [`Dialer`].
pub struct Dialled {
    /// The authenticated INVITE as sent.
    pub invite: String,
    /// The last response read.
    pub response: String,
}

impl Dialled {
    /// Status code of the last response read.
    pub fn status(&self) -> u16 {
        status(&self.response)
    }
}

impl Dialer {
    /// `user` (password `secret-<user>`) ready to call through `sip`.
    pub async fn new(sip: SocketAddr, user: &str) -> Self {
        Self {
            user: user.into(),
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            sip,
        }
    }

    /// Calls `target`, answering the digest challenge; returns at the first response from 180
    /// on (ringing or final).
    pub async fn dial(&self, target: &str) -> Dialled {
        let addr = self.socket.local_addr().unwrap();
        let id = centrex_signalling::b2bua::random_token();
        let uri = format!("sip:{target}@{DOMAIN}");
        let user = &self.user;
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let invite = |cseq: u32, auth: &str| {
            format!(
                "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK{id}{cseq};rport\r\n\
                 From: <sip:{user}@{DOMAIN}>;tag=d{id}\r\nTo: <sip:{target}@{DOMAIN}>\r\nCall-ID: {id}@dialer\r\n\
                 CSeq: {cseq} INVITE\r\nContact: <sip:{user}@{addr}>\r\nMax-Forwards: 70\r\n{auth}\
                 Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )
        };
        self.send(&invite(1, "")).await;
        let challenge = self.next_response(401).await;
        assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
        let ack = format!(
            "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK{id}1;rport\r\n\
             From: <sip:{user}@{DOMAIN}>;tag=d{id}\r\nTo: {}\r\nCall-ID: {id}@dialer\r\nCSeq: 1 ACK\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            header(&challenge, "To")
        );
        self.send(&ack).await;
        let password = format!("secret-{user}");
        let auth = authorization(user, &password, "INVITE", &uri, &nonce_of(&challenge), 1);
        let invite = invite(2, &auth);
        self.send(&invite).await;
        let response = self.next_response(180).await;
        Dialled { invite, response }
    }

    /// Calls `target` and waits for the final answer.
    pub async fn call(&self, target: &str) -> Dialled {
        let mut dialled = self.dial(target).await;
        if dialled.status() < 200 {
            dialled.response = self.next_response(200).await;
        }
        dialled
    }

    /// Hangs up an answered call (BYE in its dialog); returns the status of the answer.
    pub async fn hang_up(&self, dialled: &Dialled) -> u16 {
        self.hang_up_through(dialled, self.sip).await
    }

    /// Sends a re-INVITE (no offer) in an answered call to `sip`; returns the final answer.
    pub async fn reinvite_through(&self, dialled: &Dialled, sip: SocketAddr) -> String {
        let reinvite = self.in_dialog(dialled, "INVITE", 3);
        self.socket.send_to(reinvite.as_bytes(), sip).await.unwrap();
        self.next_response(200).await
    }

    /// Hangs up an answered call with a BYE sent to `sip` (another instance of the pool).
    pub async fn hang_up_through(&self, dialled: &Dialled, sip: SocketAddr) -> u16 {
        // After a re-INVITE (CSeq 3), if there was one.
        let bye = self.in_dialog(dialled, "BYE", 4);
        self.socket.send_to(bye.as_bytes(), sip).await.unwrap();
        status(&self.next_response(200).await)
    }

    /// Acknowledges a 2xx answer (a new transaction, RFC 3261 §13.2.2.4).
    pub async fn ack(&self, dialled: &Dialled) {
        self.send(&self.in_dialog(dialled, "ACK", 2)).await;
    }

    /// A request of the answered call's dialog.
    fn in_dialog(&self, dialled: &Dialled, method: &str, cseq: u32) -> String {
        let addr = self.socket.local_addr().unwrap();
        let invite = &dialled.invite;
        let uri = invite.split(' ').nth(1).unwrap();
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK{};rport\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            centrex_signalling::b2bua::random_token(),
            header(invite, "From"),
            header(&dialled.response, "To"),
            header(invite, "Call-ID"),
        )
    }

    /// The next request of `method` the platform sends this user (responses are skipped).
    pub async fn next_request(&self, method: &str) -> String {
        let mut buffer = vec![0u8; 65_536];
        let prefix = format!("{method} ");
        loop {
            let (len, _) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("{} got no {method}", self.user))
                .unwrap();
            let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
            if text.starts_with(&prefix) {
                return text;
            }
        }
    }

    /// Answers `request` (one the platform sent) with `status` and `sdp`.
    pub async fn answer(&self, request: &str, status: &str, sdp: &str) {
        self.send(&respond(request, status, "unused", sdp)).await;
    }

    /// The next response with a status of `min` or more.
    pub async fn next_response(&self, min: u16) -> String {
        let mut buffer = vec![0u8; 65_536];
        loop {
            let (len, _) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("{} got no response ≥ {min}", self.user))
                .unwrap();
            let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
            if text.starts_with("SIP/2.0") && status(&text) >= min {
                return text;
            }
        }
    }

    async fn send(&self, text: &str) {
        self.socket
            .send_to(text.as_bytes(), self.sip)
            .await
            .unwrap();
    }
}

/// The status code of a response.
pub fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

async fn receive(socket: &UdpSocket) -> String {
    let mut buffer = vec![0u8; 65_536];
    let len = tokio::time::timeout(WAIT, socket.recv(&mut buffer))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&buffer[..len]).into_owned()
}
