//! REGISTER with digest authentication, driven by sipp against a signalling server on 127.0.0.1.

mod peers;

use centrex_coord::keys;
use peers::{DOMAIN, Platform, credentials, register_scenario, sipp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_password_registers_a_binding() {
    let platform = Platform::start().await;
    let target = platform.sip;
    let output = tokio::task::spawn_blocking(move || {
        sipp(
            target,
            &register_scenario("100", 200),
            &credentials("100", "secret-100"),
        )
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "sipp REGISTER with the right password did not get 200"
    );
    let (bindings, _) = platform
        .store
        .list(&keys::registrations(DOMAIN, "100"))
        .await
        .unwrap();
    assert_eq!(bindings.len(), 1, "one binding in the store");
    assert!(
        bindings[0].lease.is_some(),
        "the binding lives under a lease"
    );
    let value = String::from_utf8(bindings[0].value.clone()).unwrap();
    assert!(value.contains("sip:100@127.0.0.1"), "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_forbidden_and_registers_nothing() {
    let platform = Platform::start().await;
    let target = platform.sip;
    let output = tokio::task::spawn_blocking(move || {
        sipp(
            target,
            &register_scenario("100", 403),
            &credentials("100", "guess"),
        )
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "sipp REGISTER with a wrong password did not get 403"
    );
    let (bindings, _) = platform
        .store
        .list(&keys::registrations(DOMAIN, "100"))
        .await
        .unwrap();
    assert!(bindings.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_password_cannot_register_this_user() {
    let platform = Platform::start().await;
    let target = platform.sip;
    let output = tokio::task::spawn_blocking(move || {
        sipp(
            target,
            &register_scenario("100", 403),
            &credentials("101", "secret-101"),
        )
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "user 101's credentials must not register 100"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_works_over_tcp() {
    let platform = Platform::start().await;
    let target = platform.tcp;
    let mut options = credentials("101", "secret-101").to_vec();
    options.extend(["-t", "t1"]);
    let output =
        tokio::task::spawn_blocking(move || sipp(target, &register_scenario("101", 200), &options))
            .await
            .unwrap();
    assert!(
        output.status.success(),
        "sipp REGISTER over TCP did not get 200"
    );
    let (bindings, _) = platform
        .store
        .list(&keys::registrations(DOMAIN, "101"))
        .await
        .unwrap();
    let value = String::from_utf8(bindings[0].value.clone()).unwrap();
    assert!(value.contains("\"transport\":\"tcp\""), "{value}");
}

/// Sends an authenticated REGISTER of 100 with `contact` and `expires` from `socket` (answering
/// a fresh challenge) and returns the final answer.
async fn register_raw(
    platform: &Platform,
    socket: &tokio::net::UdpSocket,
    contact: &str,
    expires: u32,
    cseq: u32,
) -> String {
    let uri = format!("sip:{DOMAIN}");
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5996;branch=z9hG4bKr{cseq}\r\n\
             From: <sip:100@{DOMAIN}>;tag=r\r\nTo: <sip:100@{DOMAIN}>\r\nCall-ID: raw-register@test\r\n\
             CSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\nMax-Forwards: 70\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    let challenge = exchange(platform, socket, request(2 * cseq, "")).await;
    let nonce = peers::nonce_of(&challenge);
    let auth = peers::authorization("100", "secret-100", "REGISTER", &uri, &nonce, 1);
    exchange(platform, socket, request(2 * cseq + 1, &auth)).await
}

/// Sends `message` to the platform and returns the answer.
async fn exchange(platform: &Platform, socket: &tokio::net::UdpSocket, message: String) -> String {
    let mut buffer = vec![0u8; 65_536];
    socket
        .send_to(message.as_bytes(), platform.sip)
        .await
        .unwrap();
    let len = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv(&mut buffer))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    String::from_utf8_lossy(&buffer[..len]).into_owned()
}

#[tokio::test]
async fn refreshes_add_replace_and_remove_bindings_and_the_answer_lists_them() {
    let platform = Platform::start().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (desk, soft) = ("<sip:100@127.0.0.1:7001>", "<sip:100@127.0.0.1:7002>");
    let contacts = |answer: &str| answer.matches("\r\nContact: ").count();
    let stored = || async {
        let (items, _) = platform
            .store
            .list(&keys::registrations(DOMAIN, "100"))
            .await
            .unwrap();
        items
    };

    let first = register_raw(&platform, &socket, desk, 600, 1).await;
    assert!(
        first.starts_with("SIP/2.0 200") && contacts(&first) == 1,
        "{first}"
    );
    let lease = stored().await[0].lease;
    let refreshed = register_raw(&platform, &socket, desk, 600, 2).await;
    assert!(
        refreshed.starts_with("SIP/2.0 200") && contacts(&refreshed) == 1,
        "{refreshed}"
    );
    let items = stored().await;
    assert_eq!(items.len(), 1, "a refresh replaces its binding");
    assert_ne!(
        items[0].lease, lease,
        "under a new lease (the old one is revoked)"
    );

    let both = register_raw(&platform, &socket, soft, 600, 3).await;
    assert!(
        both.starts_with("SIP/2.0 200") && contacts(&both) == 2,
        "{both}"
    );
    let one_left = register_raw(&platform, &socket, desk, 0, 4).await;
    assert!(
        one_left.starts_with("SIP/2.0 200") && contacts(&one_left) == 1,
        "{one_left}"
    );
    assert!(one_left.contains("127.0.0.1:7002"), "{one_left}");
    assert_eq!(stored().await.len(), 1);

    let brief = register_raw(&platform, &socket, desk, 30, 5).await;
    assert!(
        brief.starts_with("SIP/2.0 423") && brief.contains("Min-Expires: 60"),
        "{brief}"
    );
    let none = register_raw(&platform, &socket, "*", 0, 6).await;
    assert!(
        none.starts_with("SIP/2.0 200") && contacts(&none) == 0,
        "{none}"
    );
    assert!(
        stored().await.is_empty(),
        "`*` with Expires 0 removes every binding"
    );
}
