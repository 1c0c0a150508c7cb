//! Two signalling instances sharing one store: a request for a call reaches the call wherever it
//! arrives. The instance that did not set the call up hands the request to the one that did, over
//! gRPC, and sends its answer back; a call whose instance is gone is taken over. (Killing an
//! instance process with SIGKILL is `cli/tests/failover.rs`.)

mod peers;

use std::sync::Arc;

use centrex_coord::store::MemoryStore;
use centrex_coord::testing::eventually;
use centrex_coord::{Store, keys};
use peers::phone::{Behaviour, Dialer, Phone};
use peers::{DOMAIN, Records, cluster_instance, media_node, tenant};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_arriving_at_the_other_instance_is_handed_to_the_calls_owner() {
    let (store, _media) = store().await;
    let (a_records, b_records) = (Arc::new(Records::default()), Arc::new(Records::default()));
    let (_a, a_sip) = cluster_instance(&store, "signalling-a", a_records.clone()).await;
    let (_b, b_sip) = cluster_instance(&store, "signalling-b", b_records.clone()).await;
    let callee = Phone::register(a_sip, "101", Behaviour::Answer).await;
    let caller = Dialer::new(a_sip, "100").await;
    let call = caller.call("101").await;
    assert_eq!(call.status(), 200, "{}", call.response);
    caller.ack(&call).await;
    let call_id = peers::header(&call.invite, "Call-ID").to_string();
    assert_eq!(owner(&store, &call_id).await, "signalling-a");

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
    let (a, a_sip) = cluster_instance(&store, "signalling-a", a_records.clone()).await;
    let (_b, b_sip) = cluster_instance(&store, "signalling-b", b_records.clone()).await;
    let callee = Phone::register(a_sip, "101", Behaviour::Answer).await;
    let caller = Dialer::new(a_sip, "100").await;
    let call = caller.call("101").await;
    assert_eq!(call.status(), 200, "{}", call.response);
    caller.ack(&call).await;
    let call_id = peers::header(&call.invite, "Call-ID").to_string();
    assert_eq!(owner(&store, &call_id).await, "signalling-a");
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
