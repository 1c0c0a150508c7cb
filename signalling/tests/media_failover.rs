//! A call whose media node goes away moves to another node: signalling sees the node's
//! registration disappear, opens a relay session on a live node between the parties' last known
//! addresses, and re-INVITEs each party with its side of the new session. The call goes on and
//! ends normally there.

mod peers;

use centrex_coord::testing::eventually;
use centrex_proto::media::NodeStatsRequest;
use centrex_proto::media::media_control_client::MediaControlClient;
use peers::phone::{Behaviour, Dialer, Phone};
use peers::{Platform, header, media_node};

/// The audio port an SDP offers.
fn audio_port(message: &str) -> u16 {
    message
        .lines()
        .find_map(|line| line.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no audio in {message}"))
}

/// The origin version of an SDP.
fn sdp_version(message: &str) -> u64 {
    message
        .lines()
        .find_map(|line| line.strip_prefix("o="))
        .and_then(|origin| origin.split(' ').nth(2)?.parse().ok())
        .unwrap_or_else(|| panic!("no origin in {message}"))
}

async fn sessions(grpc: std::net::SocketAddr) -> u32 {
    let mut client = MediaControlClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    client
        .get_node_stats(NodeStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .active_sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_moves_to_another_media_node_when_its_node_goes() {
    let platform = Platform::start().await;
    // The platform's node (ports 31000–31999) carries the call; a second one then joins and
    // waits (joining only now: a new call may go to either of two idle nodes).
    let callee = Phone::register(platform.sip, "101", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let call = caller.call("101").await;
    assert_eq!(call.status(), 200, "{}", call.response);
    caller.ack(&call).await;
    assert!((31000..32000).contains(&audio_port(&call.response)));
    let first_offer = callee.invite().await;
    let (spare, _spare) = media_node(&platform.store, "media-1", "32000-32999").await;

    // The node stops (SIGTERM, drain timeout passed) with the call still on it.
    drop(platform.media);

    let to_caller = caller.next_request("INVITE").await;
    assert_eq!(
        header(&to_caller, "Call-ID"),
        header(&call.invite, "Call-ID")
    );
    assert!(
        (32000..33000).contains(&audio_port(&to_caller)),
        "the caller is offered the new node's side: {to_caller}"
    );
    assert!(sdp_version(&to_caller) > sdp_version(&call.response));
    let answer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    caller.answer(&to_caller, "200 OK", answer).await;
    let ack = caller.next_request("ACK").await;
    assert_eq!(header(&ack, "Call-ID"), header(&call.invite, "Call-ID"));

    let to_callee = eventually("the callee's re-INVITE", || async {
        callee
            .invites()
            .into_iter()
            .find(|invite| header(invite, "To").contains(";tag="))
    })
    .await;
    assert_eq!(
        header(&to_callee, "Call-ID"),
        header(&first_offer, "Call-ID")
    );
    assert!(
        (32000..33000).contains(&audio_port(&to_callee)),
        "the callee is offered the new node's side: {to_callee}"
    );
    assert_eq!(sessions(spare).await, 1, "the call's new relay session");

    // The call ends normally on the new node.
    assert_eq!(caller.hang_up(&call).await, 200);
    callee.request("BYE").await;
    eventually("the new session to be released", || async {
        (sessions(spare).await == 0).then_some(())
    })
    .await;
    let record = eventually("the call record", || async {
        platform.records.all().into_iter().next()
    })
    .await;
    assert_eq!(record.answered_by.as_deref(), Some("101"));
}
