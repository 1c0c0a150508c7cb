//! Calls through a SIP trunk with sipp as the carrier on 127.0.0.2: an outbound call answers the
//! carrier's digest challenge from the trunk's hashes and asserts the caller's number; an
//! inbound call to a DID rings the user's phone; RTP flows through the media node both times.

mod peers;

use std::net::SocketAddr;
use std::process::Output;

use centrex_coord::snapshot::{DestinationClass, NumberEntry, OutboundPolicy, TenantSnapshot};
use centrex_proto::media::NodeStatsRequest;
use centrex_proto::media::media_control_client::MediaControlClient;
use peers::{
    Platform, free_media_port, free_udp_port, register_scenario, scenario_path, sipp_at, sipp_on,
    trunk,
};

const CARRIER_IP: &str = "127.0.0.2";
const DID_100: &str = "+15551230100";

fn tenant() -> TenantSnapshot {
    let mut tenant = peers::tenant();
    tenant.outbound = Some(OutboundPolicy {
        trunks: vec!["carrier".into()],
        allowed: vec![DestinationClass::National],
    });
    tenant.numbers = vec![NumberEntry {
        number: DID_100.into(),
        target: "100".into(),
        trunk: "carrier".into(),
    }];
    tenant.users[0].direct_number = Some(DID_100.into());
    tenant
}

/// A free UDP port on the carrier's address.
fn carrier_port() -> u16 {
    std::net::UdpSocket::bind((CARRIER_IP, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory with the scenarios and one second of PCMU silence.
fn workdir(scenarios: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for scenario in scenarios {
        std::fs::copy(scenario_path(scenario), dir.path().join(scenario)).unwrap();
    }
    std::fs::write(dir.path().join("audio.raw"), [0xffu8; 8000]).unwrap();
    dir
}

/// Packets the platform's media node relayed, once no session is left.
async fn relayed(platform: &Platform) -> u64 {
    let mut media = MediaControlClient::connect(format!("http://{}", platform.media_grpc))
        .await
        .unwrap();
    let stats = media
        .get_node_stats(NodeStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.active_sessions, 0, "the relay session is released");
    stats.packets_relayed
}

fn succeeded(output: &Output, who: &str) {
    assert!(
        output.status.success(),
        "{who} did not complete the call:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_authenticates_to_the_carrier_and_carries_audio() {
    let carrier: SocketAddr = (
        CARRIER_IP.parse::<std::net::IpAddr>().unwrap(),
        carrier_port(),
    )
        .into();
    let platform = Platform::serving(tenant(), vec![trunk(carrier)]).await;
    let sip = platform.sip;
    let dir = workdir(&["carrier_auth.xml", "uac_call.xml"]);

    let path = dir.path().to_path_buf();
    let carrier_side = tokio::task::spawn_blocking(move || {
        let media_port = free_media_port().to_string();
        let args = [
            "-sf",
            "carrier_auth.xml",
            "-mi",
            CARRIER_IP,
            "-mp",
            &media_port,
            "-rtp_echo",
        ];
        sipp_on(CARRIER_IP, sip, carrier.port(), &path, &args)
    });
    let path = dir.path().to_path_buf();
    let caller = tokio::task::spawn_blocking(move || {
        peers::call_from_100(sip, &path, "uac_call.xml", "15551239999", &[])
    });
    succeeded(&caller.await.unwrap(), "the caller");
    succeeded(&carrier_side.await.unwrap(), "the carrier");
    let relayed = relayed(&platform).await;
    assert!(
        relayed >= 50,
        "RTP must pass through the media node, relayed {relayed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_from_the_carrier_rings_the_users_phone_and_carries_audio() {
    let carrier: SocketAddr = (
        CARRIER_IP.parse::<std::net::IpAddr>().unwrap(),
        carrier_port(),
    )
        .into();
    let platform = Platform::serving(tenant(), vec![trunk(carrier)]).await;
    let sip = platform.sip;
    let dir = workdir(&["carrier_uac.xml"]);
    std::fs::write(
        dir.path().join("register.xml"),
        register_scenario("100", 200),
    )
    .unwrap();
    let phone_port = free_udp_port();
    let path = dir.path().to_path_buf();
    let registered = tokio::task::spawn_blocking(move || {
        sipp_at(
            sip,
            phone_port,
            &path,
            &["-sf", "register.xml", "-au", "100", "-ap", "secret-100"],
        )
    })
    .await
    .unwrap();
    succeeded(&registered, "the phone's registration");

    let path = dir.path().to_path_buf();
    let phone = tokio::task::spawn_blocking(move || {
        let media_port = free_media_port().to_string();
        sipp_at(
            sip,
            phone_port,
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
    let carrier_side = tokio::task::spawn_blocking(move || {
        let media_port = free_media_port().to_string();
        let args = [
            "-sf",
            "carrier_uac.xml",
            "-s",
            DID_100,
            "-mi",
            CARRIER_IP,
            "-mp",
            &media_port,
        ];
        sipp_on(CARRIER_IP, sip, carrier.port(), &path, &args)
    });
    succeeded(&carrier_side.await.unwrap(), "the carrier");
    succeeded(&phone.await.unwrap(), "the phone");
    let relayed = relayed(&platform).await;
    assert!(
        relayed >= 50,
        "RTP must pass through the media node, relayed {relayed}"
    );
}
