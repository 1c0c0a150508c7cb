//! A call between two registered users, through the B2BUA, with the audio anchored on a media
//! node: sipp as the caller (digest auth, RTP from a file) and sipp as the callee (echoing RTP).

mod peers;

use std::net::SocketAddr;
use std::process::Output;

use centrex_coord::testing::eventually;
use centrex_proto::media::NodeStatsRequest;
use centrex_proto::media::media_control_client::MediaControlClient;
use peers::{
    DOMAIN, Platform, answer_to, free_media_port, free_udp_port, invite, register_scenario,
    scenario_path, sipp_at,
};

/// Registers 101 (a sipp UAS echoing RTP) and has 100 call it (a sipp UAC: digest, 1.5 s of RTP,
/// BYE); returns both sides' sipp outcome, caller first, once the call is over.
async fn call_100_to_101(sip: SocketAddr) -> (Output, Output) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("register.xml"),
        register_scenario("101", 200),
    )
    .unwrap();
    std::fs::copy(
        scenario_path("uac_call.xml"),
        dir.path().join("uac_call.xml"),
    )
    .unwrap();
    // One second of PCMU silence: 50 packets of 160 bytes.
    std::fs::write(dir.path().join("audio.raw"), [0xffu8; 8000]).unwrap();
    let callee_port = free_udp_port();

    // The callee registers from the port it will answer on.
    let path = dir.path().to_path_buf();
    let registered = tokio::task::spawn_blocking(move || {
        sipp_at(
            sip,
            callee_port,
            &path,
            &["-sf", "register.xml", "-au", "101", "-ap", "secret-101"],
        )
    })
    .await
    .unwrap();
    assert!(registered.status.success(), "the callee could not register");

    let path = dir.path().to_path_buf();
    let callee = tokio::task::spawn_blocking(move || {
        let media_port = free_media_port().to_string();
        sipp_at(
            sip,
            callee_port,
            &path,
            &[
                "-sn",
                "uas",
                "-mi",
                "127.0.0.1",
                "-mp",
                &media_port,
                "-rtp_echo",
            ],
        )
    });
    // No wait for the callee to bind: until it answers, the B2BUA retransmits its INVITE (Timer A).
    let path = dir.path().to_path_buf();
    let caller =
        tokio::task::spawn_blocking(move || peers::call_as_100(sip, &path, "uac_call.xml", &[]));
    (caller.await.unwrap(), callee.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_user_calls_another_and_rtp_flows_through_the_media_node() {
    let platform = Platform::start().await;
    let (caller, callee) = call_100_to_101(platform.sip).await;
    assert!(
        caller.status.success(),
        "the call did not complete on the caller's side"
    );
    assert!(
        callee.status.success(),
        "the call did not complete on the callee's side"
    );

    let mut media = MediaControlClient::connect(format!("http://{}", platform.media_grpc))
        .await
        .unwrap();
    let stats = media
        .get_node_stats(NodeStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        stats.packets_relayed >= 50,
        "RTP must pass through the media node, relayed {}",
        stats.packets_relayed
    );
    assert_eq!(
        stats.active_sessions, 0,
        "the relay session is released when the call ends"
    );
}

/// The final answer to an authenticated INVITE from 100 to `target`.
async fn final_answer(platform: &Platform, target: &str) -> String {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buffer = vec![0u8; 65_536];
    socket
        .send_to(
            invite("100", "secret-100", target, None, 1).as_bytes(),
            platform.sip,
        )
        .await
        .unwrap();
    let challenge = loop {
        let len = socket.recv(&mut buffer).await.unwrap();
        let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if text.starts_with("SIP/2.0 401") {
            break text;
        }
    };
    let nonce = peers::nonce_of(&challenge);
    socket
        .send_to(
            invite("100", "secret-100", target, Some(&nonce), 2).as_bytes(),
            platform.sip,
        )
        .await
        .unwrap();
    loop {
        let len = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

#[tokio::test]
async fn an_unknown_extension_is_not_found() {
    let platform = Platform::start().await;
    let answer = final_answer(&platform, "999").await;
    assert!(answer.starts_with("SIP/2.0 404"), "{answer}");
}

#[tokio::test]
async fn a_user_without_a_registered_phone_is_temporarily_unavailable() {
    let platform = Platform::start().await;
    let answer = final_answer(&platform, "101").await;
    assert!(answer.starts_with("SIP/2.0 480"), "{answer}");
}

#[tokio::test]
async fn an_unauthenticated_invite_is_challenged_whatever_the_target() {
    let platform = Platform::start().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buffer = vec![0u8; 65_536];
    for target in ["101", "999"] {
        socket
            .send_to(
                invite("100", "secret-100", target, None, 1).as_bytes(),
                platform.sip,
            )
            .await
            .unwrap();
        let len = socket.recv(&mut buffer).await.unwrap();
        let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
        assert!(
            text.starts_with("SIP/2.0 401"),
            "an outsider learns nothing about {target}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registered_phone_rings_and_the_others_are_cancelled_when_one_answers() {
    let platform = Platform::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("register.xml"),
        register_scenario("101", 200),
    )
    .unwrap();
    for file in ["uac_call.xml", "uas_ringing.xml"] {
        std::fs::copy(scenario_path(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("audio.raw"), [0xffu8; 8000]).unwrap();
    let (sip, desk, softphone) = (platform.sip, free_udp_port(), free_udp_port());
    for port in [desk, softphone] {
        let path = dir.path().to_path_buf();
        let registered = tokio::task::spawn_blocking(move || {
            sipp_at(
                sip,
                port,
                &path,
                &["-sf", "register.xml", "-au", "101", "-ap", "secret-101"],
            )
        })
        .await
        .unwrap();
        assert!(
            registered.status.success(),
            "phone on port {port} could not register"
        );
    }
    let path = dir.path().to_path_buf();
    let ringing =
        tokio::task::spawn_blocking(move || sipp_at(sip, desk, &path, &["-sf", "uas_ringing.xml"]));
    let path = dir.path().to_path_buf();
    let answering = tokio::task::spawn_blocking(move || {
        let media_port = free_media_port().to_string();
        sipp_at(
            sip,
            softphone,
            &path,
            &[
                "-sn",
                "uas",
                "-mi",
                "127.0.0.1",
                "-mp",
                &media_port,
                "-rtp_echo",
            ],
        )
    });
    let path = dir.path().to_path_buf();
    let caller =
        tokio::task::spawn_blocking(move || peers::call_as_100(sip, &path, "uac_call.xml", &[]));
    assert!(
        caller.await.unwrap().status.success(),
        "the caller's call did not complete"
    );
    assert!(
        answering.await.unwrap().status.success(),
        "the answering phone's call did not complete"
    );
    assert!(
        ringing.await.unwrap().status.success(),
        "the other phone was not cancelled properly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_invite_putting_the_call_on_hold_passes_through_with_its_sdp() {
    let platform = Platform::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("register.xml"),
        register_scenario("101", 200),
    )
    .unwrap();
    for file in ["uac_reinvite.xml", "uas_reinvite.xml"] {
        std::fs::copy(scenario_path(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("audio.raw"), [0xffu8; 8000]).unwrap();
    let (sip, phone) = (platform.sip, free_udp_port());
    let path = dir.path().to_path_buf();
    let registered = tokio::task::spawn_blocking(move || {
        sipp_at(
            sip,
            phone,
            &path,
            &["-sf", "register.xml", "-au", "101", "-ap", "secret-101"],
        )
    })
    .await
    .unwrap();
    assert!(registered.status.success());
    let path = dir.path().to_path_buf();
    let callee = tokio::task::spawn_blocking(move || {
        let media_port = free_media_port().to_string();
        sipp_at(
            sip,
            phone,
            &path,
            &[
                "-sf",
                "uas_reinvite.xml",
                "-mi",
                "127.0.0.1",
                "-mp",
                &media_port,
            ],
        )
    });
    let path = dir.path().to_path_buf();
    let caller = tokio::task::spawn_blocking(move || {
        peers::call_as_100(sip, &path, "uac_reinvite.xml", &[])
    });
    // Both sides check the hold attributes (a=sendonly reaches the callee, a=recvonly comes back).
    assert!(
        caller.await.unwrap().status.success(),
        "the caller's hold and hang-up did not complete"
    );
    assert!(
        callee.await.unwrap().status.success(),
        "the callee did not see the hold re-INVITE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_instance_refuses_new_calls_and_lets_the_running_one_finish() {
    let platform = Platform::start().await;
    let call = tokio::spawn(call_100_to_101(platform.sip));
    eventually("the call to be up", || async {
        (platform.server.active_calls() == 1).then_some(())
    })
    .await;

    platform.server.drain();
    assert!(
        !platform.server.is_drained(),
        "a call is in progress: the drain is not over"
    );
    let refused = answer_to(&platform, &invite("100", "secret-100", "101", None, 7)).await;
    assert!(refused.starts_with("SIP/2.0 503"), "{refused}");
    assert!(refused.contains("Retry-After: 5"), "{refused}");
    let text = platform.server.render_metrics();
    assert!(text.contains("centrex_sip_draining 1"), "{text}");

    let (caller, callee) = call.await.unwrap();
    assert!(
        caller.status.success(),
        "the running call was cut by the drain"
    );
    assert!(
        callee.status.success(),
        "the running call was cut by the drain"
    );
    eventually("the drain to be over once the call ended", || async {
        platform.server.is_drained().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_revision_mid_call_keeps_the_call_and_takes_effect() {
    use centrex_coord::keys;
    use centrex_coord::snapshot::DigestCredentials;

    let platform = Platform::start().await;
    let call = tokio::spawn(call_100_to_101(platform.sip));
    eventually("the call to be up", || async {
        (platform.server.active_calls() == 1).then_some(())
    })
    .await;

    // Revision 2: a new user, 102.
    let mut revision = peers::tenant();
    revision.source.generation = 2;
    let mut carol = revision.users[1].clone();
    carol.extension = "102".into();
    carol.credentials = DigestCredentials::derive("102", DOMAIN, b"secret-102");
    revision.users.push(carol);
    platform
        .store
        .put(
            &keys::tenant("default", "acme"),
            serde_json::to_vec(&revision).unwrap(),
            None,
        )
        .await
        .unwrap();

    let (caller, callee) = call.await.unwrap();
    assert!(
        caller.status.success(),
        "the call was dropped by the new revision"
    );
    assert!(
        callee.status.success(),
        "the call was dropped by the new revision"
    );

    // The new revision serves: 102 registers.
    let sip = platform.sip;
    let registered = tokio::task::spawn_blocking(move || {
        peers::sipp(
            sip,
            &register_scenario("102", 200),
            &peers::credentials("102", "secret-102"),
        )
    })
    .await
    .unwrap();
    assert!(
        registered.status.success(),
        "102 of revision 2 cannot register"
    );
}

#[tokio::test]
async fn an_invite_that_already_went_through_us_is_a_loop() {
    let platform = Platform::start().await;
    let looped = invite("100", "secret-100", "101", None, 1).replacen(
        "\r\nFrom:",
        &format!(
            "\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKours\r\nFrom:",
            platform.sip
        ),
        1,
    );
    let answer = answer_to(&platform, &looped).await;
    assert!(answer.starts_with("SIP/2.0 482"), "{answer}");
}
