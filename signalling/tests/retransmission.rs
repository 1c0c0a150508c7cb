//! Our own requests over UDP survive loss: a BYE the callee does not answer is sent again
//! (Timer E, same branch) until it is answered, and then no more. The phones are raw sockets, so
//! the test decides exactly which datagram is "lost".

mod peers;

use std::net::SocketAddr;
use std::time::Duration;

use peers::{Platform, free_udp_port, invite, register_scenario, sipp};
use tokio::net::UdpSocket;

/// The value of header `name` in `message`.
fn header<'m>(message: &'m str, name: &str) -> &'m str {
    message
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

/// The next datagram on `socket` whose first line starts with `start`, and where it came from.
async fn expect(socket: &UdpSocket, start: &str) -> (String, SocketAddr) {
    let mut buffer = vec![0u8; 65_536];
    loop {
        let (len, from) =
            tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("no {start} within 5 s"))
                .unwrap();
        let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if text.starts_with(start) {
            return (text, from);
        }
    }
}

/// A response to `request` with `status`, as the phone that received it.
fn respond(request: &str, status: &str, to_tag: &str, body: &str) -> String {
    let mut response = format!("SIP/2.0 {status}\r\n");
    for line in request.lines().filter(|l| l.starts_with("Via:")) {
        response.push_str(line);
        response.push_str("\r\n");
    }
    let to = header(request, "To");
    let to = if to.contains(";tag=") {
        to.to_string()
    } else {
        format!("{to};tag={to_tag}")
    };
    for (name, value) in [
        ("From", header(request, "From")),
        ("To", &to),
        ("Call-ID", header(request, "Call-ID")),
        ("CSeq", header(request, "CSeq")),
    ] {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    if body.is_empty() {
        response.push_str("Content-Length: 0\r\n\r\n");
    } else {
        response.push_str(&format!(
            "Contact: <sip:101@127.0.0.1>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_bye_is_retransmitted_until_answered() {
    let platform = Platform::start().await;
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

    // 100 calls 101; 101 answers.
    caller
        .send_to(invite("100", "secret-100", "101", None, 1).as_bytes(), sip)
        .await
        .unwrap();
    let (challenge, _) = expect(&caller, "SIP/2.0 401").await;
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    caller
        .send_to(
            invite("100", "secret-100", "101", Some(nonce), 2).as_bytes(),
            sip,
        )
        .await
        .unwrap();
    let (offer, server) = expect(&callee, "INVITE").await;
    let sdp = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";
    let ok = respond(&offer, "200 OK", "callee", sdp);
    callee.send_to(ok.as_bytes(), server).await.unwrap();
    let (answer, _) = expect(&caller, "SIP/2.0 200").await;
    let (to, call_id) = (header(&answer, "To"), header(&answer, "Call-ID"));
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} sip:centrex@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5998;branch=z9hG4bK{method}{cseq}\r\n\
             From: <sip:100@{domain}>;tag=a\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            domain = peers::DOMAIN
        )
    };
    caller
        .send_to(in_dialog("ACK", 2).as_bytes(), sip)
        .await
        .unwrap();

    // 100 hangs up; 101 "loses" the first BYE and answers the second.
    caller
        .send_to(in_dialog("BYE", 3).as_bytes(), sip)
        .await
        .unwrap();
    let (first, _) = expect(&callee, "BYE").await;
    let (again, server) = expect(&callee, "BYE").await;
    assert_eq!(
        header(&first, "Via"),
        header(&again, "Via"),
        "a retransmission keeps its branch"
    );
    callee
        .send_to(respond(&again, "200 OK", "callee", "").as_bytes(), server)
        .await
        .unwrap();
    // Answered: the next retransmission would have come 1 s (2·T1) after the second; none does.
    let mut buffer = vec![0u8; 65_536];
    let more = tokio::time::timeout(Duration::from_secs(2), callee.recv(&mut buffer)).await;
    assert!(
        more.is_err(),
        "an answered BYE is not sent again: {}",
        String::from_utf8_lossy(&buffer)
    );
}
