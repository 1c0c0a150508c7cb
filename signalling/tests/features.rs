//! The Centrex features, each shown with phones and a carrier over real UDP on 127.0.0.1 (the
//! carrier on 127.0.0.2, an untrusted peer on 127.0.0.3): hunt groups, call forwarding, caller
//! ID, licence limits, outbound and inbound calls through a trunk, fixed–mobile convergence, and
//! the call records they leave.

mod peers;

use std::time::Duration;

use centrex_coord::keys;
use centrex_coord::snapshot::{
    self as snap, CallerId, DestinationClass, HuntGroupEntry, HuntStrategy, NumberEntry,
    OutboundPolicy, TenantSnapshot,
};
use centrex_coord::testing::eventually;
use centrex_signalling::cdr::{CallRecord, CallResult, Direction};
use peers::phone::{Behaviour, Dialer, Phone, status};
use peers::{DOMAIN, Platform, header, tenant, trunk, user};

/// Where the carrier listens and sends from.
const CARRIER_IP: &str = "127.0.0.2";
/// A peer that is no trunk's carrier.
const STRANGER_IP: &str = "127.0.0.3";
/// The tenant's DID ringing user 100.
const DID_100: &str = "+15551230100";

/// The test tenant with users 100 to 103, changed by `change`.
fn acme(change: impl FnOnce(&mut TenantSnapshot)) -> TenantSnapshot {
    let mut tenant = tenant();
    tenant.users.extend([user("102"), user("103")]);
    tenant.limits = snap::TenantLimits {
        concurrent_calls: 50,
        calls_per_second: 50,
    };
    change(&mut tenant);
    tenant
}

fn user_mut<'a>(tenant: &'a mut TenantSnapshot, extension: &str) -> &'a mut snap::UserEntry {
    tenant
        .users
        .iter_mut()
        .find(|u| u.extension == extension)
        .unwrap()
}

fn group(extension: &str, members: &[&str], strategy: HuntStrategy) -> HuntGroupEntry {
    HuntGroupEntry {
        extension: extension.into(),
        name: Some("Sales".into()),
        members: members.iter().map(|m| m.to_string()).collect(),
        strategy,
        ring_seconds: 1,
        overflow: None,
    }
}

/// `tenant` calling out through the trunk (national and mobile allowed), owning [`DID_100`].
fn with_outbound(tenant: &mut TenantSnapshot) {
    tenant.outbound = Some(OutboundPolicy {
        trunks: vec!["carrier".into()],
        allowed: vec![DestinationClass::National, DestinationClass::Mobile],
    });
    tenant.numbers = vec![NumberEntry {
        number: DID_100.into(),
        target: "100".into(),
        trunk: "carrier".into(),
    }];
}

/// The call record of the call whose caller's INVITE had `call_id`, once written.
async fn record_of(platform: &Platform, invite: &str) -> CallRecord {
    let call_id = header(invite, "Call-ID").to_string();
    eventually("the call record", || async {
        platform
            .records
            .all()
            .into_iter()
            .find(|r| r.call_id == call_id)
    })
    .await
}

/// Concurrent-call slots the tenant holds.
async fn tenant_slots(platform: &Platform) -> usize {
    platform
        .store
        .list(&keys::tenant_calls(DOMAIN))
        .await
        .unwrap()
        .0
        .len()
}

// --- hunt groups ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_group_rings_members_in_turn_and_skips_the_unregistered() {
    let platform = Platform::serving(
        acme(|t| {
            t.hunt_groups = vec![group(
                "200",
                &["101", "102", "103"],
                HuntStrategy::Sequential,
            )]
        }),
        vec![],
    )
    .await;
    // 101 has no phone registered.
    let ringing = Phone::register(platform.sip, "102", Behaviour::Ring).await;
    let answering = Phone::register(platform.sip, "103", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;

    let dialled = caller.dial("200").await;
    assert_eq!(dialled.status(), 180, "the caller hears ringing first");
    let answer = caller.next_response(200).await;
    assert_eq!(status(&answer), 200);
    assert!(ringing.request("CANCEL").await.contains("CANCEL"));
    assert_eq!(answering.invites().len(), 1);
    let dialled = peers::phone::Dialled {
        response: answer,
        ..dialled
    };
    caller.ack(&dialled).await;
    assert_eq!(caller.hang_up(&dialled).await, 200);
    let record = record_of(&platform, &dialled.invite).await;
    assert_eq!(record.hunt_group.as_deref(), Some("200"));
    assert_eq!(record.answered_by.as_deref(), Some("103"));
    assert_eq!(record.result, CallResult::Answered);
    assert_eq!(record.direction, Direction::Internal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_hears_ringing_when_the_next_stage_starts_even_if_no_phone_said_so() {
    let platform = Platform::serving(
        acme(|t| t.hunt_groups = vec![group("200", &["101", "102"], HuntStrategy::Sequential)]),
        vec![],
    )
    .await;
    let _first = Phone::register(platform.sip, "101", Behaviour::Silent).await;
    let second = Phone::register(platform.sip, "102", Behaviour::Silent).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.dial("200").await;
    assert_eq!(dialled.status(), 180, "{}", dialled.response);
    // The ringing came with the second stage, not from a phone.
    assert!(second.invite().await.starts_with("INVITE "));
    assert!(
        !dialled.response.contains(";tag=ph"),
        "{}",
        dialled.response
    );
    assert_eq!(status(&caller.next_response(200).await), 480);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simultaneous_group_rings_everyone_and_cancels_the_others_on_answer() {
    let platform = Platform::serving(
        acme(|t| {
            t.hunt_groups = vec![group("200", &["101", "102"], HuntStrategy::Simultaneous)];
            t.hunt_groups[0].ring_seconds = 10;
        }),
        vec![],
    )
    .await;
    let ringing = Phone::register(platform.sip, "101", Behaviour::Ring).await;
    let _answering = Phone::register(platform.sip, "102", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("200").await;
    assert_eq!(dialled.status(), 200);
    ringing.request("CANCEL").await;
    caller.ack(&dialled).await;
    caller.hang_up(&dialled).await;
    let record = record_of(&platform, &dialled.invite).await;
    assert_eq!(record.answered_by.as_deref(), Some("102"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_starts_each_call_one_member_further() {
    let platform = Platform::serving(
        acme(|t| t.hunt_groups = vec![group("200", &["101", "102"], HuntStrategy::RoundRobin)]),
        vec![],
    )
    .await;
    let _first = Phone::register(platform.sip, "101", Behaviour::Answer).await;
    let _second = Phone::register(platform.sip, "102", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let mut answered_by = Vec::new();
    for _ in 0..2 {
        let dialled = caller.call("200").await;
        assert_eq!(dialled.status(), 200);
        caller.ack(&dialled).await;
        caller.hang_up(&dialled).await;
        answered_by.push(record_of(&platform, &dialled.invite).await.answered_by);
    }
    assert_ne!(answered_by[0], answered_by[1], "{answered_by:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_nobody_in_the_group_answers_the_call_overflows() {
    let platform = Platform::serving(
        acme(|t| {
            let mut sales = group("200", &["101"], HuntStrategy::Simultaneous);
            sales.overflow = Some("103".into());
            t.hunt_groups = vec![sales];
        }),
        vec![],
    )
    .await;
    let member = Phone::register(platform.sip, "101", Behaviour::Ring).await;
    let overflow = Phone::register(platform.sip, "103", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("200").await;
    assert_eq!(dialled.status(), 200);
    member.request("CANCEL").await;
    assert_eq!(overflow.invites().len(), 1);
    caller.ack(&dialled).await;
    caller.hang_up(&dialled).await;
    let record = record_of(&platform, &dialled.invite).await;
    assert_eq!(record.answered_by.as_deref(), Some("103"));
    assert_eq!(record.forwarded_from.as_deref(), Some("200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_nobody_answers_without_overflow_ends_with_480() {
    let platform = Platform::serving(
        acme(|t| t.hunt_groups = vec![group("200", &["101"], HuntStrategy::Sequential)]),
        vec![],
    )
    .await;
    let _member = Phone::register(platform.sip, "101", Behaviour::Ring).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("200").await;
    assert_eq!(dialled.status(), 480, "{}", dialled.response);
    let record = record_of(&platform, &dialled.invite).await;
    assert_eq!(record.result, CallResult::NoAnswer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_members_are_all_busy_answers_busy() {
    let platform = Platform::serving(
        acme(|t| t.hunt_groups = vec![group("200", &["101", "102"], HuntStrategy::Sequential)]),
        vec![],
    )
    .await;
    let first = Phone::register(platform.sip, "101", Behaviour::Busy).await;
    let second = Phone::register(platform.sip, "102", Behaviour::Busy).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("200").await;
    assert_eq!(dialled.status(), 486, "{}", dialled.response);
    assert_eq!((first.invites().len(), second.invites().len()), (1, 1));
    let record = record_of(&platform, &dialled.invite).await;
    assert_eq!(record.result, CallResult::Busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_at_their_call_limit_is_skipped() {
    let platform = Platform::serving(
        acme(|t| {
            user_mut(t, "101").max_calls = 1;
            t.hunt_groups = vec![group("200", &["101", "103"], HuntStrategy::Simultaneous)];
        }),
        vec![],
    )
    .await;
    let busy = Phone::register(platform.sip, "101", Behaviour::Ring).await;
    let _free = Phone::register(platform.sip, "103", Behaviour::Answer).await;
    // 102 keeps 101's only slot taken with a call that rings.
    let other = Dialer::new(platform.sip, "102").await;
    assert_eq!(other.dial("101").await.status(), 180);
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("200").await;
    assert_eq!(dialled.status(), 200);
    assert_eq!(busy.invites().len(), 1, "only 102's call rang 101");
    caller.ack(&dialled).await;
    caller.hang_up(&dialled).await;
}

// --- call forwarding -----------------------------------------------------------------------

async fn forwarded_call(
    tenant: TenantSnapshot,
    behaviour_101: Option<Behaviour>,
) -> (Platform, Phone, Option<Phone>, CallRecord) {
    let platform = Platform::serving(tenant, vec![]).await;
    let first = match behaviour_101 {
        Some(behaviour) => Some(Phone::register(platform.sip, "101", behaviour).await),
        None => None,
    };
    let target = Phone::register(platform.sip, "102", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("101").await;
    assert_eq!(dialled.status(), 200, "{}", dialled.response);
    caller.ack(&dialled).await;
    caller.hang_up(&dialled).await;
    let record = record_of(&platform, &dialled.invite).await;
    assert_eq!(record.answered_by.as_deref(), Some("102"));
    assert_eq!(record.forwarded_from.as_deref(), Some("101"));
    (platform, target, first, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_always_sends_the_call_on_without_ringing() {
    let tenant = acme(|t| user_mut(t, "101").forwarding.always = Some("102".into()));
    let (_platform, _target, first, _) = forwarded_call(tenant, Some(Behaviour::Answer)).await;
    assert!(first.unwrap().invites().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_on_busy_follows_a_busy_answer() {
    let tenant = acme(|t| user_mut(t, "101").forwarding.busy = Some("102".into()));
    let (_platform, _target, first, _) = forwarded_call(tenant, Some(Behaviour::Busy)).await;
    assert_eq!(first.unwrap().invites().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_on_no_answer_follows_the_ring_time() {
    let tenant = acme(|t| user_mut(t, "101").forwarding.no_answer = Some(("102".into(), 1)));
    let (_platform, _target, first, _) = forwarded_call(tenant, Some(Behaviour::Ring)).await;
    first.unwrap().request("CANCEL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_when_unavailable_follows_when_no_phone_is_registered() {
    let tenant = acme(|t| user_mut(t, "101").forwarding.unavailable = Some("102".into()));
    forwarded_call(tenant, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_loop_is_stopped() {
    let platform = Platform::serving(
        acme(|t| {
            user_mut(t, "101").forwarding.always = Some("102".into());
            user_mut(t, "102").forwarding.always = Some("101".into());
        }),
        vec![],
    )
    .await;
    let one = Phone::register(platform.sip, "101", Behaviour::Answer).await;
    let two = Phone::register(platform.sip, "102", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("101").await;
    assert_eq!(dialled.status(), 480, "{}", dialled.response);
    assert!(
        dialled.response.contains("forwarding loop"),
        "{}",
        dialled.response
    );
    assert!(one.invites().is_empty() && two.invites().is_empty());
}

// --- caller ID -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_caller_is_anonymous_to_the_callee() {
    let platform = Platform::serving(
        acme(|t| user_mut(t, "100").caller_id = CallerId::Hidden),
        vec![],
    )
    .await;
    let callee = Phone::register(platform.sip, "101", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("101").await;
    let invite = callee.invite().await;
    assert!(
        header(&invite, "From").contains("sip:anonymous@anonymous.invalid"),
        "{invite}"
    );
    assert_eq!(header(&invite, "Privacy"), "id");
    assert!(
        !invite.contains("P-Asserted-Identity"),
        "no asserted identity to a phone"
    );
    caller.ack(&dialled).await;
    caller.hang_up(&dialled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_sees_the_callers_name_and_extension() {
    let platform = Platform::serving(
        acme(|t| user_mut(t, "100").display_name = Some("Alice Martin".into())),
        vec![],
    )
    .await;
    let callee = Phone::register(platform.sip, "101", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("101").await;
    let from = header(&callee.invite().await, "From").to_string();
    assert!(
        from.starts_with("\"Alice Martin\" <sip:100@acme.example.com>"),
        "{from}"
    );
    caller.ack(&dialled).await;
    caller.hang_up(&dialled).await;
}

// --- licence limits ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_at_their_call_limit_gets_486() {
    let platform = Platform::serving(acme(|t| user_mut(t, "100").max_calls = 1), vec![]).await;
    let _ringing = Phone::register(platform.sip, "101", Behaviour::Ring).await;
    let caller = Dialer::new(platform.sip, "100").await;
    assert_eq!(caller.dial("101").await.status(), 180);
    let second = Dialer::new(platform.sip, "100").await.call("102").await;
    assert_eq!(second.status(), 486, "{}", second.response);
    // A refused call leaves a record too.
    let record = record_of(&platform, &second.invite).await;
    assert_eq!(
        (record.result, record.sip_status.as_u16()),
        (CallResult::Busy, 486)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_concurrent_call_limit_gives_503_and_its_slots_are_released() {
    let platform = Platform::serving(acme(|t| t.limits.concurrent_calls = 1), vec![]).await;
    let _ringing = Phone::register(platform.sip, "101", Behaviour::Ring).await;
    let _busy = Phone::register(platform.sip, "103", Behaviour::Busy).await;
    let first = Dialer::new(platform.sip, "100").await;
    assert_eq!(first.dial("101").await.status(), 180);
    let second = Dialer::new(platform.sip, "102").await.call("103").await;
    assert_eq!(second.status(), 503);
    assert!(
        second.response.contains("concurrent-call limit"),
        "{}",
        second.response
    );
    assert_eq!(tenant_slots(&platform).await, 1);
    drop(first);
    // A call refused by the callee releases its slot at once.
    let platform = Platform::serving(acme(|_| {}), vec![]).await;
    let _busy = Phone::register(platform.sip, "103", Behaviour::Busy).await;
    let refused = Dialer::new(platform.sip, "102").await.call("103").await;
    assert_eq!(refused.status(), 486);
    eventually("the slots to be released", || async {
        (tenant_slots(&platform).await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_tenant_rate_get_503_with_retry_after() {
    let platform = Platform::serving(acme(|t| t.limits.calls_per_second = 1), vec![]).await;
    let _busy = Phone::register(platform.sip, "101", Behaviour::Busy).await;
    let caller = Dialer::new(platform.sip, "100").await;
    // Three calls within a second span at most two one-second windows: one is refused.
    let started = std::time::Instant::now();
    let mut refused = Vec::new();
    for _ in 0..3 {
        let dialled = caller.call("101").await;
        if dialled.status() == 503 {
            refused.push(dialled.response);
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "too slow to prove anything"
    );
    assert!(!refused.is_empty(), "no call refused");
    assert!(refused[0].contains("calls-per-second"), "{}", refused[0]);
    assert_eq!(header(&refused[0], "Retry-After"), "1");
}

// --- trunks --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_leaves_through_the_trunk_with_the_callers_number() {
    let carrier = Phone::unregistered(CARRIER_IP, Behaviour::Answer).await;
    let platform = Platform::serving(
        acme(|t| {
            with_outbound(t);
            user_mut(t, "100").direct_number = Some(DID_100.into());
        }),
        vec![trunk(carrier.addr)],
    )
    .await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("15551239999").await;
    assert_eq!(dialled.status(), 200, "{}", dialled.response);
    let invite = carrier.invite().await;
    assert!(
        invite.starts_with("INVITE sip:+15551239999@127.0.0.2:"),
        "{invite}"
    );
    assert!(
        header(&invite, "From").contains(&format!("<sip:{DID_100}@")),
        "{invite}"
    );
    assert_eq!(
        header(&invite, "P-Asserted-Identity"),
        format!("<sip:{DID_100}@{DOMAIN}>")
    );
    assert!(
        !invite.contains("acme.example.com>;tag") || invite.contains("P-Asserted"),
        "{invite}"
    );
    caller.ack(&dialled).await;
    caller.hang_up(&dialled).await;
    let record = record_of(&platform, &dialled.invite).await;
    assert_eq!(record.direction, Direction::Outbound);
    assert_eq!(record.trunk.as_deref(), Some("carrier"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_destination_is_refused_with_a_reason() {
    let carrier = Phone::unregistered(CARRIER_IP, Behaviour::Answer).await;
    let platform = Platform::serving(acme(with_outbound), vec![trunk(carrier.addr)]).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("+33123456789").await;
    assert_eq!(dialled.status(), 403, "{}", dialled.response);
    assert!(
        dialled
            .response
            .contains("international calls are not allowed")
    );
    assert!(carrier.invites().is_empty());
    let incomplete = caller.call("+1").await;
    assert_eq!(incomplete.status(), 404, "{}", incomplete.response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trunks_channel_limit_refuses_the_call_beyond_it() {
    let carrier = Phone::unregistered(CARRIER_IP, Behaviour::Ring).await;
    let mut one_channel = trunk(carrier.addr);
    one_channel.max_channels = 1;
    let platform = Platform::serving(acme(with_outbound), vec![one_channel]).await;
    let first = Dialer::new(platform.sip, "100").await;
    assert_eq!(first.dial("+15551239999").await.status(), 180);
    let second = Dialer::new(platform.sip, "101")
        .await
        .call("+15551238888")
        .await;
    assert_eq!(second.status(), 503, "{}", second.response);
    assert!(
        second.response.contains("trunk channels"),
        "{}",
        second.response
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_to_a_did_rings_its_user() {
    let carrier = tokio::net::UdpSocket::bind((CARRIER_IP, 0)).await.unwrap();
    let platform = Platform::serving(
        acme(with_outbound),
        vec![trunk(carrier.local_addr().unwrap())],
    )
    .await;
    let phone = Phone::register(platform.sip, "100", Behaviour::Answer).await;
    let invite = carrier_invite(carrier.local_addr().unwrap(), DID_100);
    carrier
        .send_to(invite.as_bytes(), platform.sip)
        .await
        .unwrap();
    let answer = final_from(&carrier).await;
    assert_eq!(status(&answer), 200, "{answer}");
    let rung = phone.invite().await;
    assert!(header(&rung, "From").contains("+15559870000"), "{rung}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_from_an_untrusted_source_is_refused() {
    let carrier = Phone::unregistered(CARRIER_IP, Behaviour::Answer).await;
    let platform = Platform::serving(acme(with_outbound), vec![trunk(carrier.addr)]).await;
    let phone = Phone::register(platform.sip, "100", Behaviour::Answer).await;
    let stranger = tokio::net::UdpSocket::bind((STRANGER_IP, 0)).await.unwrap();
    let invite = carrier_invite(stranger.local_addr().unwrap(), DID_100);
    stranger
        .send_to(invite.as_bytes(), platform.sip)
        .await
        .unwrap();
    let answer = final_from(&stranger).await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert!(phone.invites().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_mobile_rings_with_the_desk_phone_through_the_trunk() {
    let mobile = Phone::unregistered(CARRIER_IP, Behaviour::Answer).await;
    let platform = Platform::serving(
        acme(|t| {
            with_outbound(t);
            user_mut(t, "101").mobile_number = Some("+15557770101".into());
        }),
        vec![trunk(mobile.addr)],
    )
    .await;
    let desk = Phone::register(platform.sip, "101", Behaviour::Ring).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("101").await;
    assert_eq!(dialled.status(), 200, "{}", dialled.response);
    assert!(
        mobile
            .invite()
            .await
            .starts_with("INVITE sip:+15557770101@")
    );
    desk.request("CANCEL").await;
    caller.ack(&dialled).await;
    caller.hang_up(&dialled).await;
    let record = record_of(&platform, &dialled.invite).await;
    assert_eq!(record.answered_by.as_deref(), Some("carrier/+15557770101"));
}

/// An INVITE from a carrier at `from` to `number`, caller +15559870000.
fn carrier_invite(from: std::net::SocketAddr, number: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";
    let id = centrex_signalling::b2bua::random_token();
    format!(
        "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{id}\r\n\
         From: <sip:+15559870000@carrier.example>;tag=c{id}\r\nTo: <sip:{number}@127.0.0.1>\r\n\
         Call-ID: {id}@carrier\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@{from}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The first final response arriving on `socket`.
async fn final_from(socket: &tokio::net::UdpSocket) -> String {
    let mut buffer = vec![0u8; 65_536];
    loop {
        let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buffer))
            .await
            .expect("a final answer in time")
            .unwrap();
        let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if text.starts_with("SIP/2.0") && status(&text) >= 200 {
            return text;
        }
    }
}

// --- topology hiding -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_one_party_reaches_the_other() {
    let platform = Platform::serving(acme(|_| {}), vec![]).await;
    let callee = Phone::register(platform.sip, "101", Behaviour::Answer).await;
    let caller = Dialer::new(platform.sip, "100").await;
    let dialled = caller.call("101").await;
    assert_eq!(dialled.status(), 200);
    let invite = callee.invite().await;
    let ours = platform.sip.to_string();
    // The callee sees our Via, Contact and relay address, none of the caller's identifiers.
    for caller_detail in [
        header(&dialled.invite, "Call-ID"),
        header(&dialled.invite, "Via"),
        header(&dialled.invite, "Contact"),
        "m=audio 4000 ",
    ] {
        assert!(
            !invite.contains(caller_detail),
            "{caller_detail:?} leaked: {invite}"
        );
    }
    assert!(header(&invite, "Via").contains(&ours), "{invite}");
    assert!(header(&invite, "Contact").contains(&ours), "{invite}");
    // And the caller sees nothing of the callee: its tag, Contact and media port are ours.
    let callee_port = format!("m=audio {} ", callee.addr.port());
    assert!(
        !dialled.response.contains(&callee_port),
        "{}",
        dialled.response
    );
    assert!(!dialled.response.contains(&callee.addr.to_string()));
    assert!(header(&dialled.response, "Contact").contains(&ours));
    caller.ack(&dialled).await;
    caller.hang_up(&dialled).await;
}
