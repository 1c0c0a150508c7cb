//! The coordination store going away (issue #6): a call in progress is not touched by it, a new
//! call gets a prompt 503 instead of hanging, and everything works again once etcd is back — with
//! a real etcd on 127.0.0.1 stopped and restarted under the platform.

mod peers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use centrex_coord::testing::{Etcd, eventually};
use peers::Platform;
use peers::phone::{Behaviour, Dialer, Phone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outlives_an_etcd_outage_new_calls_get_503_and_service_returns_with_etcd() {
    let mut etcd = Etcd::start().await;
    let platform = Platform::on_store(Arc::new(etcd.store().await)).await;
    let callee = Phone::register(platform.sip, "101", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let up = caller.call("101").await;
    assert_eq!(up.status(), 200, "{}", up.response);
    caller.ack(&up).await;

    etcd.stop();
    let asked = Instant::now();
    let refused = Dialer::new(platform.sip, "100").await.call("101").await;
    assert_eq!(refused.status(), 503, "{}", refused.response);
    // Bounded by the admission's store deadline (2 s), not by a client's request timeout.
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "{:?}",
        asked.elapsed()
    );
    // The call in progress hangs up normally: its BYE is answered and reaches the callee.
    assert_eq!(caller.hang_up(&up).await, 200);
    callee.request("BYE").await;

    etcd.restart().await;
    eventually("a call to go through once etcd is back", || async {
        let again = Dialer::new(platform.sip, "100").await.call("101").await;
        (again.status() == 200).then_some(())
    })
    .await;
}
