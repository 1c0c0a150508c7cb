//! REGISTER with digest authentication, driven by sipp against a signalling server on 127.0.0.1.

mod peers;

use centrex_coord::{Store, keys};
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
