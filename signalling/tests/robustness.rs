//! What a hostile or broken peer meets: malformed and oversized datagrams are answered or
//! dropped, a source guessing passwords is throttled, and everyone else keeps registering.

mod peers;

use std::net::SocketAddr;
use std::time::Duration;

use centrex_signalling::auth::digest::Algorithm;
use peers::{DOMAIN, Platform, credentials, register_scenario, sipp};
use tokio::net::UdpSocket;

fn register(branch: u32, authorization: Option<&str>) -> String {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5999;branch=z9hG4bKflood{branch}\r\n\
         From: <sip:100@{DOMAIN}>;tag=f\r\nTo: <sip:100@{DOMAIN}>\r\nCall-ID: flood@127.0.0.2\r\nCSeq: {branch} REGISTER\r\n\
         Contact: <sip:100@127.0.0.2:5999>\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

/// Sends `message` and returns the answer, or None after 300 ms of silence.
async fn exchange(socket: &UdpSocket, target: SocketAddr, message: &[u8]) -> Option<String> {
    socket.send_to(message, target).await.unwrap();
    let mut buffer = vec![0u8; 65_536];
    let received = tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buffer))
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&buffer[..received.unwrap()]).into_owned())
}

async fn right_password_still_registers(platform: &Platform) {
    let target = platform.sip;
    let output = tokio::task::spawn_blocking(move || {
        sipp(
            target,
            &register_scenario("101", 200),
            &credentials("101", "secret-101"),
        )
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "a legitimate phone could not register"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_datagrams_do_not_stop_the_server() {
    let platform = Platform::start().await;
    let socket = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    // A request whose To cannot be parsed is answered with a 400 naming the header.
    let broken = register(1, None).replace(&format!("To: <sip:100@{DOMAIN}>"), "To: <sip:100@");
    let answer = exchange(&socket, platform.sip, broken.as_bytes())
        .await
        .expect("a 400");
    assert!(answer.starts_with("SIP/2.0 400"), "{answer}");
    // Binary junk is dropped without an answer.
    assert_eq!(exchange(&socket, platform.sip, &[0xff; 512]).await, None);
    // A header line beyond the size limit is refused by name.
    let oversized = register(2, None).replace(
        "Max-Forwards: 70",
        &format!("Subject: {}", "x".repeat(20_000)),
    );
    let answer = exchange(&socket, platform.sip, oversized.as_bytes())
        .await
        .unwrap_or_default();
    assert!(
        answer.starts_with("SIP/2.0 513") || answer.starts_with("SIP/2.0 400"),
        "{answer:.200}"
    );
    // Bytes past Content-Length in a datagram are discarded (RFC 3261 §18.3): still a REGISTER.
    let mut padded = register(3, None).into_bytes();
    padded.extend(std::iter::repeat_n(b'x', 60_000));
    let answer = exchange(&socket, platform.sip, &padded)
        .await
        .unwrap_or_default();
    assert!(answer.starts_with("SIP/2.0 401"), "{answer:.200}");
    right_password_still_registers(&platform).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_guessing_source_is_throttled_and_others_are_not() {
    let platform = Platform::start().await;
    let attacker = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let challenge = exchange(&attacker, platform.sip, register(1, None).as_bytes())
        .await
        .expect("a challenge");
    let nonce = peers::nonce_of(&challenge);

    let mut answered = Vec::new();
    for attempt in 2..15u32 {
        let guess = format!("guess-{attempt}");
        let ha1 = Algorithm::Md5.hash(&[b"100", DOMAIN.as_bytes(), guess.as_bytes()]);
        let ha2 = Algorithm::Md5.hash(&[b"REGISTER", format!("sip:{DOMAIN}").as_bytes()]);
        let nc = format!("{attempt:08x}");
        let response = Algorithm::Md5.hash(&[
            ha1.as_bytes(),
            nonce.as_bytes(),
            nc.as_bytes(),
            b"c",
            b"auth",
            ha2.as_bytes(),
        ]);
        let authorization = format!(
            "Digest username=\"100\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", uri=\"sip:{DOMAIN}\", response=\"{response}\", \
             algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c\""
        );
        answered.push(
            exchange(
                &attacker,
                platform.sip,
                register(attempt, Some(&authorization)).as_bytes(),
            )
            .await,
        );
    }
    let forbidden = answered
        .iter()
        .flatten()
        .filter(|a| a.starts_with("SIP/2.0 403"))
        .count();
    assert_eq!(
        forbidden, 10,
        "wrong passwords are refused until the throttle starts"
    );
    assert!(
        answered[10..].iter().all(Option::is_none),
        "then the source is ignored"
    );
    right_password_still_registers(&platform).await;
}
