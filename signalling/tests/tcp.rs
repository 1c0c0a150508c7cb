//! SIP over TCP: Content-Length framing, keep-alives, and the limits a remote peer meets.

mod peers;

use std::time::Duration;

use centrex_signalling::server::TcpLimits;
use peers::{DOMAIN, Platform, next_message, register_over};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn options(branch: &str) -> String {
    format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{branch}\r\nFrom: <sip:100@{DOMAIN}>;tag=1\r\n\
         To: <sip:{DOMAIN}>\r\nCall-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Reads until `count` SIP responses have arrived (or the connection ends), with a deadline.
async fn responses(stream: &mut TcpStream, count: usize) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while text.matches("SIP/2.0 200").count() < count {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("responses in time")
            .unwrap();
        if read == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&chunk[..read]));
    }
    text
}

#[tokio::test]
async fn two_messages_in_one_segment_and_one_split_over_two_are_all_answered() {
    let platform = Platform::start().await;
    let mut stream = TcpStream::connect(platform.tcp).await.unwrap();
    stream
        .write_all(format!("{}{}", options("a"), options("b")).as_bytes())
        .await
        .unwrap();
    let third = options("c");
    let (head, tail) = third.split_at(40);
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    tokio::task::yield_now().await;
    stream.write_all(tail.as_bytes()).await.unwrap();
    let text = responses(&mut stream, 3).await;
    for branch in ["a", "b", "c"] {
        assert!(
            text.contains(&format!("branch=z9hG4bK{branch}")),
            "no answer to {branch}: {text}"
        );
    }
}

#[tokio::test]
async fn a_keep_alive_ping_gets_a_pong() {
    let platform = Platform::start().await;
    let mut stream = TcpStream::connect(platform.tcp).await.unwrap();
    stream.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
}

#[tokio::test]
async fn an_unframeable_stream_is_closed_and_others_keep_working() {
    let platform = Platform::start().await;
    let mut bad = TcpStream::connect(platform.tcp).await.unwrap();
    // No Content-Length on a stream: the message cannot be framed.
    bad.write_all(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut rest))
        .await
        .expect("the connection is closed")
        .unwrap();

    let mut good = TcpStream::connect(platform.tcp).await.unwrap();
    good.write_all(options("ok").as_bytes()).await.unwrap();
    assert!(responses(&mut good, 1).await.contains("SIP/2.0 200"));
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_idle_ones_closed() {
    let limits = TcpLimits {
        max_connections: 1,
        idle_timeout: Duration::from_millis(300),
    };
    let platform = Platform::start_with(limits).await;
    let mut first = TcpStream::connect(platform.tcp).await.unwrap();
    first.write_all(options("1").as_bytes()).await.unwrap();
    assert!(responses(&mut first, 1).await.contains("SIP/2.0 200"));

    let mut second = TcpStream::connect(platform.tcp).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the second connection must be closed at once"
    );

    // Silent past the idle timeout: the server closes the first connection too.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), first.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_))),
        "an idle connection must be closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tcp_reaches_the_callee_on_the_connection_it_registered_over() {
    let platform = Platform::start().await;
    // 101 registers over a TCP connection and keeps it, like a phone behind NAT.
    let mut callee = TcpStream::connect(platform.tcp).await.unwrap();
    let mut buffer = bytes::BytesMut::new();
    callee
        .write_all(register_over(&callee, None, 1).as_bytes())
        .await
        .unwrap();
    let challenge = next_message(&mut callee, &mut buffer).await;
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let nonce = peers::nonce_of(&challenge);
    callee
        .write_all(register_over(&callee, Some(&nonce), 2).as_bytes())
        .await
        .unwrap();
    let registered = next_message(&mut callee, &mut buffer).await;
    assert!(registered.starts_with("SIP/2.0 200"), "{registered}");

    // 100 calls 101 with sipp over TCP.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        peers::scenario_path("uac_call.xml"),
        dir.path().join("uac_call.xml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("audio.raw"), [0xffu8; 8000]).unwrap();
    let (tcp, path) = (platform.tcp, dir.path().to_path_buf());
    let caller = tokio::task::spawn_blocking(move || {
        peers::call_as_100(tcp, &path, "uac_call.xml", &["-t", "t1"])
    });

    // The INVITE arrives on 101's own connection, with a TCP Via and Contact.
    let invite = next_message(&mut callee, &mut buffer).await;
    assert!(invite.starts_with("INVITE sip:101@"), "{invite}");
    assert!(invite.contains("Via: SIP/2.0/TCP "), "{invite}");
    assert!(invite.contains(";transport=tcp>"), "{invite}");
    let sdp = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";
    callee
        .write_all(peers::respond(&invite, "200 OK", "callee", sdp).as_bytes())
        .await
        .unwrap();
    let ack = next_message(&mut callee, &mut buffer).await;
    assert!(ack.starts_with("ACK "), "{ack}");
    let bye = next_message(&mut callee, &mut buffer).await;
    assert!(bye.starts_with("BYE "), "{bye}");
    callee
        .write_all(peers::respond(&bye, "200 OK", "callee", "").as_bytes())
        .await
        .unwrap();
    let caller = caller.await.unwrap();
    assert!(caller.status.success(), "the caller's call over TCP failed");
}
