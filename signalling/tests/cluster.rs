//! Two signalling instances sharing one store: a request for a call reaches the call wherever it
//! arrives. The instance that did not set the call up hands the request to the one that did, over
//! gRPC, and sends its answer back; a call whose instance is gone is taken over. (Killing an
//! instance process with SIGKILL is `cli/tests/failover.rs`.)

mod peers;

use std::sync::Arc;

use centrex_coord::store::MemoryStore;
use centrex_coord::testing::eventually;
use centrex_coord::{Store, keys};
use peers::phone::{Behaviour, Dialer, Dialled, Phone};
use peers::{DOMAIN, Records, cluster_instance, media_node, next_message, register_over, tenant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A store serving the test tenant with one media node.
async fn store() -> (Arc<dyn Store>, tokio::sync::oneshot::Sender<()>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let snapshot = serde_json::to_vec(&tenant()).unwrap();
    store
        .put(&keys::tenant("default", "acme"), snapshot, None)
        .await
        .unwrap();
    let (_, media) = media_node(&store, "media-0", "33000-33999").await;
    (store, media)
}

/// The owner named in the dialog record of the call whose caller's Call-ID is `call_id`.
async fn owner(store: &Arc<dyn Store>, call_id: &str) -> String {
    eventually("the call's dialog record", || async {
        let kv = store.get(&keys::dialog(call_id)).await.ok()??;
        let record: serde_json::Value = serde_json::from_slice(&kv.value).ok()?;
        Some(record["owner"].as_str()?.to_string())
    })
    .await
}

/// 100 calls 101 through `through` (101 registered there too); returns both parties, the
/// answered call and its Call-ID once its dialog record names `owner`.
async fn answered_call(
    store: &Arc<dyn Store>,
    through: std::net::SocketAddr,
    owner_name: &str,
) -> (Phone, Dialer, Dialled, String) {
    let callee = Phone::register(through, "101", Behaviour::Answer).await;
    let caller = Dialer::new(through, "100").await;
    let call = caller.call("101").await;
    assert_eq!(call.status(), 200, "{}", call.response);
    caller.ack(&call).await;
    let call_id = peers::header(&call.invite, "Call-ID").to_string();
    assert_eq!(owner(store, &call_id).await, owner_name);
    (callee, caller, call, call_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_arriving_at_the_other_instance_is_handed_to_the_calls_owner() {
    let (store, _media) = store().await;
    let (a_records, b_records) = (Arc::new(Records::default()), Arc::new(Records::default()));
    let a_sip = cluster_instance(&store, "signalling-a", a_records.clone())
        .await
        .sip;
    let b_sip = cluster_instance(&store, "signalling-b", b_records.clone())
        .await
        .sip;
    let (callee, caller, call, call_id) = answered_call(&store, a_sip, "signalling-a").await;

    assert_eq!(caller.hang_up_through(&call, b_sip).await, 200);
    callee.request("BYE").await;
    let record = eventually("the owner's call record", || async {
        a_records.all().into_iter().next()
    })
    .await;
    assert_eq!(record.answered_by.as_deref(), Some("101"));
    assert!(
        b_records.all().is_empty(),
        "only the owner records the call"
    );
    eventually("the dialog record to be removed", || async {
        store
            .get(&keys::dialog(&call_id))
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_of_an_instance_that_leaves_are_taken_over() {
    let (store, _media) = store().await;
    let (a_records, b_records) = (Arc::new(Records::default()), Arc::new(Records::default()));
    let a = cluster_instance(&store, "signalling-a", a_records.clone()).await;
    let (a_sip, a) = (a.sip, a.server);
    let b_sip = cluster_instance(&store, "signalling-b", b_records.clone())
        .await
        .sip;
    let (callee, caller, call, call_id) = answered_call(&store, a_sip, "signalling-a").await;
    let tenant_calls = keys::tenant_calls(DOMAIN);
    assert_eq!(store.list(&tenant_calls).await.unwrap().0.len(), 1);

    // A drains and leaves: its lease goes, and B claims the call and its counters.
    a.drain();
    assert!(
        a.is_drained(),
        "an answered call does not hold a clustered instance"
    );
    a.leave_cluster().await;
    eventually("the other instance to claim the call", || async {
        let owner = owner(&store, &call_id).await;
        (owner == "signalling-b").then_some(())
    })
    .await;
    eventually("the call to be counted again under B's lease", || async {
        let (slots, _) = store.list(&tenant_calls).await.ok()?;
        (slots.len() == 1).then_some(())
    })
    .await;

    // A re-INVITE reaches the callee through B, and its answer comes back anchored.
    let answer = caller.reinvite_through(&call, b_sip).await;
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert!(answer.contains("m=audio "), "the answer's SDP: {answer}");
    eventually("the callee's re-INVITE", || async {
        let invites = callee.invites();
        invites
            .iter()
            .any(|invite| peers::header(invite, "To").contains(";tag="))
            .then_some(())
    })
    .await;

    assert_eq!(caller.hang_up_through(&call, b_sip).await, 200);
    let bye = callee.request("BYE").await;
    let cseq: u32 = peers::header(&bye, "CSeq")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        cseq > 1000,
        "the new owner's CSeq moved past the old one's: {cseq}"
    );
    let record = eventually("the new owner's call record", || async {
        b_records.all().into_iter().next()
    })
    .await;
    assert_eq!((record.from.as_str(), record.to.as_str()), ("100", "101"));
    assert!(a_records.all().is_empty());
    eventually("the counters to be released", || async {
        let (slots, _) = store.list(&keys::all_calls()).await.ok()?;
        slots.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_set_up_elsewhere_reaches_a_phone_over_the_tcp_connection_another_instance_holds() {
    let (store, _media) = store().await;
    let a = cluster_instance(&store, "signalling-a", Arc::default()).await;
    let b = cluster_instance(&store, "signalling-b", Arc::default()).await;
    // 101 keeps a TCP connection to A, like a phone behind NAT.
    let mut callee = TcpStream::connect(a.tcp).await.unwrap();
    let mut buffer = bytes::BytesMut::new();
    let register = register_over(&callee, None, 1);
    callee.write_all(register.as_bytes()).await.unwrap();
    let challenge = next_message(&mut callee, &mut buffer).await;
    let nonce = peers::nonce_of(&challenge);
    let register = register_over(&callee, Some(&nonce), 2);
    callee.write_all(register.as_bytes()).await.unwrap();
    let registered = next_message(&mut callee, &mut buffer).await;
    assert!(registered.starts_with("SIP/2.0 200"), "{registered}");
    let connection = keys::connection(&callee.local_addr().unwrap().to_string());
    eventually("A to announce the connection", || async {
        store.get(&connection).await.ok()?.map(|_| ())
    })
    .await;

    // 100 calls through B: B's INVITE leaves through A's connection, and the answer that comes
    // back on it is handed to B.
    let caller = Dialer::new(b.sip, "100").await;
    let dialling = tokio::spawn(async move {
        let call = caller.call("101").await;
        (caller, call)
    });
    let invite = next_message(&mut callee, &mut buffer).await;
    assert!(invite.starts_with("INVITE sip:101@"), "{invite}");
    assert!(invite.contains(";cx=signalling-b"), "B's own Via: {invite}");
    let sdp = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";
    let ok = peers::respond(&invite, "200 OK", "callee", sdp);
    callee.write_all(ok.as_bytes()).await.unwrap();
    let (caller, call) = dialling.await.unwrap();
    assert_eq!(call.status(), 200, "{}", call.response);
    let ack = next_message(&mut callee, &mut buffer).await;
    assert!(ack.starts_with("ACK "), "{ack}");
    caller.ack(&call).await;

    let hanging_up = tokio::spawn(async move { caller.hang_up(&call).await });
    let bye = next_message(&mut callee, &mut buffer).await;
    assert!(bye.starts_with("BYE "), "{bye}");
    let ok = peers::respond(&bye, "200 OK", "callee", "");
    callee.write_all(ok.as_bytes()).await.unwrap();
    assert_eq!(hanging_up.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_one_instance_issued_is_accepted_by_the_other() {
    let (store, _media) = store().await;
    let a = cluster_instance(&store, "signalling-a", Arc::default()).await;
    let b = cluster_instance(&store, "signalling-b", Arc::default()).await;
    let _callee = Phone::register(a.sip, "101", Behaviour::Answer).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let exchange = |request: String, to: std::net::SocketAddr| {
        let socket = &socket;
        async move {
            socket.send_to(request.as_bytes(), to).await.unwrap();
            let mut buffer = vec![0u8; 65_536];
            loop {
                let (len, _) = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    socket.recv_from(&mut buffer),
                )
                .await
                .expect("an answer")
                .unwrap();
                let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
                if !text.starts_with("SIP/2.0 100") {
                    return text;
                }
            }
        }
    };
    // The challenge comes from A; the retried INVITE reaches B, which accepts A's nonce.
    let challenge = exchange(peers::invite("100", "secret-100", "101", None, 1), a.sip).await;
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let nonce = peers::nonce_of(&challenge);
    let answer = exchange(
        peers::invite("100", "secret-100", "101", Some(&nonce), 2),
        b.sip,
    )
    .await;
    assert!(
        !answer.starts_with("SIP/2.0 401") && !answer.starts_with("SIP/2.0 403"),
        "B refused A's nonce: {answer}"
    );
}
