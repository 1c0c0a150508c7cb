//! Our own requests over UDP survive loss: a BYE the callee does not answer is sent again
//! (Timer E, same branch) until it is answered, and then no more. The phones are raw sockets, so
//! the test decides exactly which datagram is "lost".

mod peers;

use std::net::SocketAddr;
use std::time::Duration;

use peers::{Platform, free_udp_port, header, invite, register_scenario, respond, sipp};
use tokio::net::UdpSocket;

/// The next datagram on `socket` whose first line starts with `start`, and where it came from.
async fn expect(socket: &UdpSocket, start: &str) -> (String, SocketAddr) {
    let mut buffer = vec![0u8; 65_536];
    let mut skipped = Vec::new();
    loop {
        let received =
            tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer)).await;
        let Ok(received) = received else {
            panic!("no {start} within 5 s; received instead: {skipped:#?}");
        };
        let (len, from) = received.unwrap();
        let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if text.starts_with(start) {
            return (text, from);
        }
        skipped.push(text.lines().next().unwrap_or_default().to_string());
    }
}

/// A call from 100 to 101 through the platform, answered, with both phones as raw sockets.
struct AnsweredCall {
    sip: SocketAddr,
    caller: UdpSocket,
    callee: UdpSocket,
    /// The B2BUA's request to the callee that set up its dialog (the INVITE).
    callee_invite: String,
    /// The To (with our tag) and Call-ID of the caller's dialog.
    to: String,
    call_id: String,
}

impl AnsweredCall {
    async fn start(platform: &Platform) -> Self {
        // The callee registers with sipp, then answers on that port itself.
        let callee_port = free_udp_port();
        let sip = platform.sip;
        let registered = tokio::task::spawn_blocking(move || {
            sipp(
                sip,
                &register_scenario("101", 200),
                &[
                    "-au",
                    "101",
                    "-ap",
                    "secret-101",
                    "-p",
                    &callee_port.to_string(),
                ],
            )
        })
        .await
        .unwrap();
        assert!(registered.status.success(), "101 could not register");
        let callee = UdpSocket::bind(("127.0.0.1", callee_port)).await.unwrap();
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        caller
            .send_to(invite("100", "secret-100", "101", None, 1).as_bytes(), sip)
            .await
            .unwrap();
        let (challenge, _) = expect(&caller, "SIP/2.0 401").await;
        let nonce = peers::nonce_of(&challenge);
        caller
            .send_to(
                invite("100", "secret-100", "101", Some(&nonce), 2).as_bytes(),
                sip,
            )
            .await
            .unwrap();
        let (offer, server) = expect(&callee, "INVITE").await;
        let ok = respond(&offer, "200 OK", "callee", SDP);
        callee.send_to(ok.as_bytes(), server).await.unwrap();
        let (answer, _) = expect(&caller, "SIP/2.0 200").await;
        let call = Self {
            sip,
            to: header(&answer, "To").to_string(),
            call_id: header(&answer, "Call-ID").to_string(),
            caller,
            callee,
            callee_invite: offer,
        };
        call.caller
            .send_to(call.caller_request("ACK", 2, "").as_bytes(), sip)
            .await
            .unwrap();
        call
    }

    /// A request of the caller in its dialog.
    fn caller_request(&self, method: &str, cseq: u32, body: &str) -> String {
        format!(
            "{method} sip:centrex@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5998;branch=z9hG4bK{method}{cseq}\r\n\
             From: <sip:100@{domain}>;tag=a\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\nContact: <sip:100@127.0.0.1:5998>\r\n{body}",
            sip = self.sip,
            domain = peers::DOMAIN,
            to = self.to,
            call_id = self.call_id,
            body = body_part(body),
        )
    }

    /// A request of the callee in its dialog (From and To of the B2BUA's INVITE swapped).
    fn callee_request(&self, method: &str, cseq: u32, body: &str) -> String {
        let invite = &self.callee_invite;
        format!(
            "{method} sip:centrex@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5997;branch=z9hG4bKb{method}{cseq}\r\n\
             From: {from};tag=callee\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\nContact: <sip:101@127.0.0.1>\r\n{body}",
            sip = self.sip,
            from = header(invite, "To"),
            to = header(invite, "From"),
            call_id = header(invite, "Call-ID"),
            body = body_part(body),
        )
    }
}

const SDP: &str = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";

fn body_part(body: &str) -> String {
    if body.is_empty() {
        "Content-Length: 0\r\n\r\n".into()
    } else {
        format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// Asserts nothing arrives on `socket` for `window`.
async fn silence(socket: &UdpSocket, window: Duration, what: &str) {
    let mut buffer = vec![0u8; 65_536];
    let more = tokio::time::timeout(window, socket.recv(&mut buffer)).await;
    assert!(
        more.is_err(),
        "{what}: {}",
        String::from_utf8_lossy(&buffer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_bye_is_retransmitted_until_answered() {
    let platform = Platform::start().await;
    let call = AnsweredCall::start(&platform).await;

    // 100 hangs up; 101 "loses" the first BYE and answers the second.
    call.caller
        .send_to(call.caller_request("BYE", 3, "").as_bytes(), call.sip)
        .await
        .unwrap();
    let (first, _) = expect(&call.callee, "BYE").await;
    let (again, server) = expect(&call.callee, "BYE").await;
    assert_eq!(
        header(&first, "Via"),
        header(&again, "Via"),
        "a retransmission keeps its branch"
    );
    call.callee
        .send_to(respond(&again, "200 OK", "callee", "").as_bytes(), server)
        .await
        .unwrap();
    // The next retransmission would have come 1 s (2·T1) after the second.
    silence(
        &call.callee,
        Duration::from_secs(2),
        "an answered BYE is not sent again",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_ok_to_a_re_invite_is_retransmitted_until_acknowledged() {
    let platform = Platform::start().await;
    let call = AnsweredCall::start(&platform).await;

    // 101 puts the call on hold; the re-INVITE reaches 100, who accepts.
    let hold = SDP.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    call.callee
        .send_to(call.callee_request("INVITE", 1, &hold).as_bytes(), call.sip)
        .await
        .unwrap();
    let (reinvite, server) = expect(&call.caller, "INVITE").await;
    assert!(reinvite.contains("a=sendonly"), "{reinvite}");
    call.caller
        .send_to(respond(&reinvite, "200 OK", "a", SDP).as_bytes(), server)
        .await
        .unwrap();

    // 101 gets our 200 OK, and again while it does not ACK; after its ACK, no more.
    let (first, _) = expect(&call.callee, "SIP/2.0 200").await;
    let (again, _) = expect(&call.callee, "SIP/2.0 200").await;
    assert_eq!(first, again, "the same answer is retransmitted");
    call.callee
        .send_to(call.callee_request("ACK", 1, "").as_bytes(), call.sip)
        .await
        .unwrap();
    silence(
        &call.callee,
        Duration::from_secs(2),
        "an acknowledged 200 is not sent again",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisional_answer_arriving_after_the_final_one_is_not_relayed() {
    let platform = Platform::start().await;
    let call = AnsweredCall::start(&platform).await;
    // The callee's 180 overtaken by its 200 (or handled after it): the caller must not see it.
    let late = respond(&call.callee_invite, "180 Ringing", "callee", "");
    call.callee
        .send_to(late.as_bytes(), call.sip)
        .await
        .unwrap();
    silence(
        &call.caller,
        Duration::from_secs(1),
        "nothing may follow the final answer",
    )
    .await;
}
