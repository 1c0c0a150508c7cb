//! Every CEL rule of the CRDs, evaluated locally with kube's CEL implementation: the example
//! manifests pass, and each single-field mistake is refused with a message that says what to do.

use std::path::Path;

use centrex_operator::{crd, schema_check};
use serde_json::{Value, json};

/// The example document of `kind`, as the API server would receive it.
fn example(kind: &str) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        if let Some(doc) = docs.into_iter().find(|d| d["kind"] == kind) {
            return doc;
        }
    }
    panic!("no {kind} in examples/quickstart");
}

fn check(kind: &str, object: Value) -> Result<Value, Vec<String>> {
    let definition = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    schema_check::check(&definition, object)
}

/// Sets `pointer` (JSON pointer) in the example of `kind` to `value`, and expects exactly one
/// error that contains `message`.
fn refused(kind: &str, pointer: &str, value: Value, message: &str) {
    let mut object = example(kind);
    *object
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} not in the {kind} example")) = value;
    let errors =
        check(kind, object).expect_err(&format!("{kind} with {pointer} changed should be refused"));
    assert!(
        errors.iter().any(|e| e.contains(message)),
        "{kind} {pointer}: expected {message:?}, got {errors:#?}"
    );
}

#[test]
fn the_examples_pass_every_rule() {
    for kind in ["Tenant", "Trunk", "MediaPool", "SignallingPool"] {
        check(kind, example(kind)).unwrap_or_else(|e| panic!("{kind}: {e:#?}"));
    }
}

#[test]
fn tenant_domain_must_be_a_dns_name() {
    refused(
        "Tenant",
        "/spec/domain",
        json!("Acme Corp"),
        "domain must be a lowercase DNS name",
    );
}

#[test]
fn extension_must_be_two_to_eight_digits() {
    refused(
        "Tenant",
        "/spec/users/0/extension",
        json!("1a"),
        "extension must be 2 to 8 digits",
    );
    refused(
        "Tenant",
        "/spec/users/0/extension",
        json!("123456789"),
        "at most 8 characters",
    );
}

#[test]
fn user_max_calls_lies_between_one_and_eight() {
    refused(
        "Tenant",
        "/spec/users/0/maxCalls",
        json!(0),
        "maxCalls must be between 1 and 8",
    );
    refused(
        "Tenant",
        "/spec/users/0/maxCalls",
        json!(9),
        "maxCalls must be between 1 and 8",
    );
}

#[test]
fn a_hunt_group_cannot_reuse_a_user_extension() {
    refused(
        "Tenant",
        "/spec/huntGroups/0/extension",
        json!("101"),
        "give every user and hunt group its own extension",
    );
}

#[test]
fn hunt_group_members_are_unique_extensions() {
    refused(
        "Tenant",
        "/spec/huntGroups/0/members",
        json!(["101", "101"]),
        "members must not repeat an extension",
    );
    refused(
        "Tenant",
        "/spec/huntGroups/0/members",
        json!([]),
        "at least one member",
    );
    refused(
        "Tenant",
        "/spec/huntGroups/0/members",
        json!(["x1"]),
        "members must be extensions",
    );
}

#[test]
fn hunt_group_ring_time_is_bounded() {
    refused(
        "Tenant",
        "/spec/huntGroups/0/ringSeconds",
        json!(1),
        "ringSeconds must be between 5 and 300",
    );
}

#[test]
fn numbers_are_e164() {
    refused(
        "Tenant",
        "/spec/numbers/0/number",
        json!("04155550100"),
        "number must be an E.164 number",
    );
    refused(
        "Tenant",
        "/spec/mainNumber",
        json!("+0123"),
        "must be an E.164 number",
    );
    refused(
        "Tenant",
        "/spec/users/0/mobileNumber",
        json!("mobile"),
        "must be an E.164 number",
    );
}

#[test]
fn caller_id_direct_number_needs_a_direct_number() {
    let mut tenant = example("Tenant");
    tenant["spec"]["users"][0]
        .as_object_mut()
        .unwrap()
        .remove("directNumber");
    let errors = check("Tenant", tenant).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("callerId directNumber needs directNumber")),
        "{errors:#?}"
    );
}

#[test]
fn forwarding_targets_are_extensions_or_numbers() {
    refused(
        "Tenant",
        "/spec/users/1/forwarding/busy",
        json!("reception"),
        "forwarding target must be an extension",
    );
    refused(
        "Tenant",
        "/spec/users/0/forwarding/noAnswer/afterSeconds",
        json!(600),
        "afterSeconds must be between 5 and 120",
    );
}

#[test]
fn outbound_needs_a_trunk() {
    refused(
        "Tenant",
        "/spec/outbound/trunkRefs",
        json!([]),
        "outbound needs at least one trunk",
    );
}

#[test]
fn tenant_limits_are_positive() {
    refused(
        "Tenant",
        "/spec/limits/concurrentCalls",
        json!(0),
        "concurrentCalls must be between 1 and 100000",
    );
}

#[test]
fn unknown_fields_and_wrong_types_are_refused() {
    refused(
        "Tenant",
        "/spec/users/0/maxCalls",
        json!("four"),
        "spec.users[0].maxCalls: must be of type integer",
    );
    let mut tenant = example("Tenant");
    tenant["spec"]["user"] = json!([]);
    assert!(
        check("Tenant", tenant)
            .unwrap_err()
            .iter()
            .any(|e| e.contains("spec.user: unknown field"))
    );
}

#[test]
fn trunk_fields_are_checked() {
    refused(
        "Trunk",
        "/spec/host",
        json!("not a host!"),
        "host must be a DNS name or an IP address",
    );
    refused(
        "Trunk",
        "/spec/port",
        json!(70000),
        "port must be between 1 and 65535",
    );
    refused(
        "Trunk",
        "/spec/inboundSources/0",
        json!("192.0.2.1/99"),
        "inboundSources must be CIDRs",
    );
    refused(
        "Trunk",
        "/spec/numberPrefixes/0",
        json!("1415"),
        "numberPrefixes must be E.164 prefixes",
    );
    refused(
        "Trunk",
        "/spec/registration/expirySeconds",
        json!(10),
        "expirySeconds must be between 60 and 86400",
    );
    refused("Trunk", "/spec/transport", json!("sctp"), "must be one of");
}

#[test]
fn media_pool_port_range_is_ordered_and_large_enough() {
    refused(
        "MediaPool",
        "/spec/rtpPorts/min",
        json!(30000),
        "rtpPorts.min must be lower than rtpPorts.max",
    );
    refused(
        "MediaPool",
        "/spec/rtpPorts/min",
        json!(80),
        "rtpPorts must lie within 1024-65535",
    );
    refused(
        "MediaPool",
        "/spec/sessionsPerNode",
        json!(5000),
        "rtpPorts must hold 4 ports per session",
    );
}

#[test]
fn media_pool_autoscaling_bounds_are_ordered() {
    let mut pool = example("MediaPool");
    pool["spec"]["autoscaling"] = json!({"minReplicas": 5, "maxReplicas": 3});
    let errors = check("MediaPool", pool).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("minReplicas must not exceed maxReplicas")),
        "{errors:#?}"
    );
}

#[test]
fn media_pool_replicas_lie_within_autoscaling_bounds() {
    let mut pool = example("MediaPool");
    pool["spec"]["autoscaling"] = json!({"minReplicas": 3, "maxReplicas": 6});
    let errors = check("MediaPool", pool).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("replicas must lie between autoscaling.minReplicas")),
        "{errors:#?}"
    );
}

#[test]
fn media_pool_advertised_address_is_an_ip() {
    refused(
        "MediaPool",
        "/spec/network/mode",
        json!("Bridge"),
        "must be one of",
    );
    let mut pool = example("MediaPool");
    pool["spec"]["network"]["advertisedAddress"] = json!("media.example.com");
    assert!(
        check("MediaPool", pool)
            .unwrap_err()
            .iter()
            .any(|e| e.contains("advertisedAddress must be an IP address"))
    );
}

#[test]
fn signalling_pool_advertised_address_is_an_ip() {
    let mut pool = example("SignallingPool");
    pool["spec"]["service"]["advertisedAddress"] = json!("sip.example.com");
    assert!(
        check("SignallingPool", pool)
            .unwrap_err()
            .iter()
            .any(|e| e.contains("service.advertisedAddress must be an IP address"))
    );
    let mut pool = example("SignallingPool");
    pool["spec"]["service"]["advertisedAddress"] = json!("203.0.113.10");
    assert!(check("SignallingPool", pool).is_ok());
}

#[test]
fn signalling_pool_tls_needs_a_certificate() {
    let mut pool = example("SignallingPool");
    pool["spec"]["sip"]["tlsPort"] = json!(5061);
    let errors = check("SignallingPool", pool).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("sip.tlsPort needs tlsSecretRef")),
        "{errors:#?}"
    );
}

#[test]
fn signalling_pool_ports_are_valid() {
    refused(
        "SignallingPool",
        "/spec/sip/udpPort",
        json!(0),
        "udpPort must be between 1 and 65535",
    );
    refused(
        "SignallingPool",
        "/spec/replicas",
        json!(-1),
        "replicas must be between 0 and 1000",
    );
}

#[test]
fn signalling_pool_digest_algorithms_are_known_and_distinct() {
    let mut pool = example("SignallingPool");
    pool["spec"]["digestAlgorithms"] = json!(["MD5", "MD5"]);
    let errors = check("SignallingPool", pool).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("digestAlgorithms must not repeat an algorithm")),
        "{errors:#?}"
    );
    let mut pool = example("SignallingPool");
    pool["spec"]["digestAlgorithms"] = json!(["SHA-512"]);
    assert!(
        check("SignallingPool", pool).is_err(),
        "an unknown algorithm"
    );
    let mut pool = example("SignallingPool");
    pool["spec"]["digestAlgorithms"] = json!(["MD5"]);
    assert_eq!(
        check("SignallingPool", pool).unwrap()["spec"]["digestAlgorithms"],
        json!(["MD5"])
    );
    let pool = check("SignallingPool", example("SignallingPool")).unwrap();
    assert_eq!(pool["spec"]["digestAlgorithms"], json!(["SHA-256", "MD5"]));
}

#[test]
fn defaults_are_applied_like_the_api_server() {
    let mut pool = example("MediaPool");
    pool["spec"] = json!({});
    let pool = check("MediaPool", pool).unwrap();
    assert_eq!(pool["spec"]["replicas"], 2);
    assert_eq!(
        pool["spec"]["rtpPorts"],
        json!({"min": 20000, "max": 29999})
    );
}
