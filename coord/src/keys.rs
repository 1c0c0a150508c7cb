//! The versioned key layout of the coordination store: every key Centrex writes is built here.
//!
//! ```text
//! /centrex/v1/tenants/<namespace>/<name>          compiled TenantSnapshot (JSON), written by the operator
//! /centrex/v1/trunks/<namespace>/<name>           compiled TrunkSnapshot (JSON), written by the operator
//! /centrex/v1/media-nodes/<namespace>/<pool>/<node>   media-node registration, under the node's lease
//! /centrex/v1/registrations/<domain>/<user>/<id>  SIP binding, under a lease with TTL = Expires
//! /centrex/v1/dialogs/<call-id>                   dialog state for failover (under each leg's Call-ID)
//! /centrex/v1/signalling/<instance>               a live signalling instance, under its lease
//! /centrex/v1/connections/<ip:port>               the instance holding a phone's TCP connection
//! /centrex/v1/nonce-keys/<pool>                   the digest nonce key a signalling pool shares
//! /centrex/v1/media-drain/<namespace>/<pool>/<node>   the operator asks a media node to drain
//! /centrex/v1/calls/<domain>/tenant/<slot>        a tenant's concurrent calls, one slot each, lease-bound
//! /centrex/v1/calls/<domain>/users/<user>/<slot>  a user's concurrent calls, likewise
//! /centrex/v1/trunk-calls/<namespace>/<name>/<slot>   a trunk's channels in use, likewise
//! /centrex/v1/trunk-registrations/<namespace>/<name>  TrunkRegistrationState, under its owner's lease
//! /centrex/v1/rates/<what>                        calls-per-second window of a tenant or trunk
//! /centrex/v1/elections/<name>                    leader elections (e.g. trunk registration ownership)
//! ```
//!
//! `v1` changes only with an incompatible layout; a new layout is written beside the old one.

/// Root of every key of this layout version.
pub const ROOT: &str = "/centrex/v1/";

/// Prefix of all tenant snapshots.
pub fn tenants() -> String {
    format!("{ROOT}tenants/")
}

/// Key of one tenant's compiled snapshot.
pub fn tenant(namespace: &str, name: &str) -> String {
    format!("{ROOT}tenants/{namespace}/{name}")
}

/// Prefix of all trunk snapshots.
pub fn trunks() -> String {
    format!("{ROOT}trunks/")
}

/// Key of one trunk's compiled snapshot.
pub fn trunk(namespace: &str, name: &str) -> String {
    format!("{ROOT}trunks/{namespace}/{name}")
}

/// Prefix of every media node of every pool.
pub fn all_media_nodes() -> String {
    format!("{ROOT}media-nodes/")
}

/// Prefix of the media nodes registered for one pool.
pub fn media_nodes(namespace: &str, pool: &str) -> String {
    format!("{ROOT}media-nodes/{namespace}/{pool}/")
}

/// Key of one media node's registration.
pub fn media_node(namespace: &str, pool: &str, node: &str) -> String {
    format!("{ROOT}media-nodes/{namespace}/{pool}/{node}")
}

/// Prefix of every SIP binding (`…/registrations/<domain>/<user>/<binding>`).
pub fn all_registrations() -> String {
    format!("{ROOT}registrations/")
}

/// Prefix of the SIP bindings of one address of record.
pub fn registrations(domain: &str, user: &str) -> String {
    format!("{ROOT}registrations/{domain}/{user}/")
}

/// Key of one SIP binding.
pub fn registration(domain: &str, user: &str, binding: &str) -> String {
    format!("{ROOT}registrations/{domain}/{user}/{binding}")
}

/// Key of the failover state of one dialog.
pub fn dialog(call_id: &str) -> String {
    format!("{ROOT}dialogs/{call_id}")
}

/// Prefix of every dialog's failover state.
pub fn dialogs() -> String {
    format!("{ROOT}dialogs/")
}

/// Prefix of the live signalling instances.
pub fn signalling_instances() -> String {
    format!("{ROOT}signalling/")
}

/// Key of one live signalling instance (its addresses), under the instance's lease.
pub fn signalling_instance(instance: &str) -> String {
    format!("{ROOT}signalling/{instance}")
}

/// Key naming the signalling instance that holds the TCP connection from `peer` (`ip:port`),
/// under that instance's lease.
pub fn connection(peer: &str) -> String {
    format!("{ROOT}connections/{peer}")
}

/// Key of the digest nonce key the instances of signalling pool `pool` share.
pub fn nonce_key(pool: &str) -> String {
    format!("{ROOT}nonce-keys/{pool}")
}

/// Prefix of the drain requests of one media pool.
pub fn media_drains(namespace: &str, pool: &str) -> String {
    format!("{ROOT}media-drain/{namespace}/{pool}/")
}

/// Key of the operator's request that one media node drain (scale-down is coming for it).
pub fn media_drain(namespace: &str, pool: &str, node: &str) -> String {
    format!("{ROOT}media-drain/{namespace}/{pool}/{node}")
}

/// Prefix of every call slot of every tenant (`…/calls/<domain>/…`).
pub fn all_calls() -> String {
    format!("{ROOT}calls/")
}

/// Prefix of a tenant's concurrent-call slots (their count is the tenant's active calls).
pub fn tenant_calls(domain: &str) -> String {
    format!("{ROOT}calls/{domain}/tenant/")
}

/// Prefix of one user's concurrent-call slots.
pub fn user_calls(domain: &str, user: &str) -> String {
    format!("{ROOT}calls/{domain}/users/{user}/")
}

/// Prefix of one trunk's channel slots.
pub fn trunk_calls(namespace: &str, name: &str) -> String {
    format!("{ROOT}trunk-calls/{namespace}/{name}/")
}

/// Prefix of every trunk's registration state.
pub fn trunk_registrations() -> String {
    format!("{ROOT}trunk-registrations/")
}

/// Registration state of one trunk with its carrier.
pub fn trunk_registration(namespace: &str, name: &str) -> String {
    format!("{ROOT}trunk-registrations/{namespace}/{name}")
}

/// Calls-per-second window of a tenant.
pub fn tenant_rate(domain: &str) -> String {
    format!("{ROOT}rates/tenants/{domain}")
}

/// Calls-per-second window of a trunk.
pub fn trunk_rate(namespace: &str, name: &str) -> String {
    format!("{ROOT}rates/trunks/{namespace}/{name}")
}

/// Key of one election.
pub fn election(name: &str) -> String {
    format!("{ROOT}elections/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_lives_under_the_versioned_root() {
        for key in [
            tenant("ns", "acme"),
            trunk("ns", "carrier"),
            media_node("ns", "default", "media-0"),
            registration("acme.example", "100", "b1"),
            dialog("abc"),
            user_calls("acme.example", "100"),
            tenant_calls("acme.example"),
            trunk_calls("ns", "carrier"),
            tenant_rate("acme.example"),
            trunk_registration("ns", "carrier"),
            trunk_rate("ns", "carrier"),
            election("trunk/carrier"),
            signalling_instance("signalling-0"),
            connection("192.0.2.1:5060"),
            nonce_key("default"),
            media_drain("ns", "default", "media-1"),
        ] {
            assert!(key.starts_with(ROOT), "{key}");
        }
    }

    #[test]
    fn an_item_key_is_under_its_collection_prefix() {
        assert!(tenant("ns", "acme").starts_with(&tenants()));
        assert!(trunk("ns", "c").starts_with(&trunks()));
        assert!(media_node("ns", "p", "n").starts_with(&media_nodes("ns", "p")));
        assert!(media_nodes("ns", "p").starts_with(&all_media_nodes()));
        assert!(registration("d", "u", "b").starts_with(&registrations("d", "u")));
        assert!(tenant_calls("d").starts_with(&all_calls()));
        assert!(dialog("c").starts_with(&dialogs()));
        assert!(signalling_instance("s").starts_with(&signalling_instances()));
        assert!(media_drain("ns", "p", "n").starts_with(&media_drains("ns", "p")));
        assert!(user_calls("d", "u").starts_with(&all_calls()));
        // A user named "tenant" must not fall under the tenant's own slots.
        assert!(!user_calls("d", "tenant").starts_with(&tenant_calls("d")));
    }
}
