//! What a dialled string (or a forwarding / overflow target) means inside a tenant: one of its
//! users, one of its hunt groups, or a number outside it.

use std::fmt;

use centrex_coord::snapshot::TenantSnapshot;

use super::numbers::{self, NumberPlan};

/// Fewest digits of an extension.
pub const EXTENSION_MIN_DIGITS: usize = 2;
/// Most digits of an extension.
pub const EXTENSION_MAX_DIGITS: usize = 8;

/// Whom a call is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A user of the tenant, by extension.
    User(String),
    /// A hunt group of the tenant, by extension.
    Group(String),
    /// Outside the tenant: an E.164 number, or an emergency short code; the outbound policy
    /// ([`numbers::outbound_decision`]) decides whether it may be called.
    External(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(extension) => write!(f, "extension {extension}"),
            Self::Group(extension) => write!(f, "hunt group {extension}"),
            Self::External(number) => write!(f, "{number}"),
        }
    }
}

/// Whether `s` has the shape of an extension: 2 to 8 digits.
pub fn is_extension(s: &str) -> bool {
    (EXTENSION_MIN_DIGITS..=EXTENSION_MAX_DIGITS).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
}

/// What `dialled` means in `tenant`, or `None` when it means nothing (404).
///
/// In order: an emergency short code is [`Target::External`] (even if an extension has the same
/// digits: emergency wins); a user's or hunt group's extension; a DID of the tenant
/// (`numbers[]` or a user's `directNumber`, compared in E.164) becomes what it rings; any other
/// number is [`Target::External`] with its E.164 form.
///
/// `plan` is the number plan of the tenant's outbound trunk. Without it (a tenant with no
/// outbound calling) only `+` numbers are understood, and only 112 and 911 are emergency codes.
pub fn resolve(
    tenant: &TenantSnapshot,
    plan: Option<&NumberPlan>,
    dialled: &str,
) -> Option<Target> {
    let digits = numbers::strip_separators(dialled).ok()?;
    let emergency = match plan {
        Some(plan) => plan.is_emergency(&digits),
        None => numbers::is_universal_emergency(&digits),
    };
    if emergency {
        return Some(Target::External(digits));
    }
    if let Some(target) = extension(tenant, &digits) {
        return Some(target);
    }
    let e164 = match plan {
        Some(plan) => plan.normalise(&digits),
        None => numbers::parse_e164(&digits),
    }
    .ok()?;
    number(tenant, e164)
}

/// A forwarding or overflow target: an extension (2 to 8 digits) of the tenant or an E.164
/// number; `None` when `s` is neither or names no user or group.
pub fn parse_forward_target(tenant: &TenantSnapshot, s: &str) -> Option<Target> {
    if is_extension(s) {
        extension(tenant, s)
    } else if s.starts_with('+') {
        number(tenant, numbers::parse_e164(s).ok()?)
    } else {
        None
    }
}

/// The user or hunt group whose extension is `extension`.
fn extension(tenant: &TenantSnapshot, extension: &str) -> Option<Target> {
    if tenant.user(extension).is_some() {
        Some(Target::User(extension.into()))
    } else if tenant.hunt_groups.iter().any(|g| g.extension == extension) {
        Some(Target::Group(extension.into()))
    } else {
        None
    }
}

/// What the E.164 number `e164` rings: a DID's target, or the outside world.
fn number(tenant: &TenantSnapshot, e164: String) -> Option<Target> {
    match did_extension(tenant, &e164) {
        // A DID whose target vanished is not sent to the carrier, which would route it back.
        Some(target) => extension(tenant, target),
        None => Some(Target::External(e164)),
    }
}

/// The extension the tenant's DID `e164` rings, if it is one.
fn did_extension<'a>(tenant: &'a TenantSnapshot, e164: &str) -> Option<&'a str> {
    let did = tenant
        .numbers
        .iter()
        .find(|n| n.number == e164)
        .map(|n| n.target.as_str());
    did.or_else(|| {
        tenant
            .users
            .iter()
            .find(|u| u.direct_number.as_deref() == Some(e164))
            .map(|u| u.extension.as_str())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use centrex_coord::snapshot::{self as snap, DigestCredentials, HuntStrategy};

    pub(crate) fn user(extension: &str) -> snap::UserEntry {
        snap::UserEntry {
            extension: extension.into(),
            display_name: None,
            credentials: DigestCredentials::derive(extension, "acme.example.com", b"secret"),
            max_calls: 2,
            caller_id: snap::CallerId::Extension,
            direct_number: None,
            mobile_number: None,
            forwarding: Default::default(),
        }
    }

    pub(crate) fn group(extension: &str, members: &[&str]) -> snap::HuntGroupEntry {
        snap::HuntGroupEntry {
            extension: extension.into(),
            name: None,
            members: members.iter().map(|m| m.to_string()).collect(),
            strategy: HuntStrategy::Simultaneous,
            ring_seconds: 20,
            overflow: None,
        }
    }

    /// Users 100, 101 (direct +33123450101) and 112; group 200; DIDs +33123450000 → 200 and
    /// +33123450100 → 100.
    pub(crate) fn tenant() -> TenantSnapshot {
        let mut with_did = user("101");
        with_did.direct_number = Some("+33123450101".into());
        TenantSnapshot {
            schema: snap::SCHEMA_VERSION,
            source: snap::Source {
                namespace: "d".into(),
                name: "acme".into(),
                uid: "u".into(),
                generation: 1,
            },
            domain: "acme.example.com".into(),
            main_number: Some("+33123450000".into()),
            users: vec![user("100"), with_did, user("112")],
            hunt_groups: vec![group("200", &["100", "101"])],
            numbers: vec![
                snap::NumberEntry {
                    number: "+33123450000".into(),
                    target: "200".into(),
                    trunk: "carrier".into(),
                },
                snap::NumberEntry {
                    number: "+33123450100".into(),
                    target: "100".into(),
                    trunk: "carrier".into(),
                },
            ],
            outbound: None,
            limits: snap::TenantLimits {
                concurrent_calls: 10,
                calls_per_second: 5,
            },
            signalling_pool: "default".into(),
            media_pool: "default".into(),
        }
    }

    fn france() -> NumberPlan {
        NumberPlan::new("33", "0", "00")
    }

    fn user_target(extension: &str) -> Option<Target> {
        Some(Target::User(extension.into()))
    }

    #[test]
    fn resolve_finds_users_and_hunt_groups_by_extension() {
        assert_eq!(resolve(&tenant(), None, "100"), user_target("100"));
        assert_eq!(
            resolve(&tenant(), None, "200"),
            Some(Target::Group("200".into()))
        );
    }

    #[test]
    fn resolve_turns_a_did_into_what_it_rings() {
        assert_eq!(
            resolve(&tenant(), None, "+33123450000"),
            Some(Target::Group("200".into()))
        );
        assert_eq!(resolve(&tenant(), None, "+33123450100"), user_target("100"));
    }

    #[test]
    fn resolve_turns_a_direct_number_into_its_user() {
        assert_eq!(resolve(&tenant(), None, "+33123450101"), user_target("101"));
    }

    #[test]
    fn resolve_compares_dids_in_e164_whatever_the_dialling_format() {
        for dialled in ["01 23 45 01 00", "0033123450100", "+33 1 23 45 01 00"] {
            assert_eq!(
                resolve(&tenant(), Some(&france()), dialled),
                user_target("100"),
                "{dialled}"
            );
        }
    }

    #[test]
    fn resolve_sends_other_numbers_outside_in_e164() {
        assert_eq!(
            resolve(&tenant(), Some(&france()), "06 12 34 56 78"),
            Some(Target::External("+33612345678".into()))
        );
        assert_eq!(
            resolve(&tenant(), None, "+442079460958"),
            Some(Target::External("+442079460958".into()))
        );
    }

    #[test]
    fn resolve_lets_emergency_codes_win_over_extensions() {
        assert_eq!(
            resolve(&tenant(), None, "112"),
            Some(Target::External("112".into()))
        );
        assert_eq!(
            resolve(&tenant(), Some(&france()), "18"),
            Some(Target::External("18".into()))
        );
    }

    #[test]
    fn resolve_finds_nothing_for_unknown_extensions_and_junk() {
        for dialled in ["199", "*72", "", "alice"] {
            assert_eq!(
                resolve(&tenant(), Some(&france()), dialled),
                None,
                "{dialled}"
            );
        }
    }

    #[test]
    fn resolve_without_a_plan_understands_only_plus_numbers() {
        assert_eq!(resolve(&tenant(), None, "0612345678"), None);
    }

    #[test]
    fn resolve_refuses_a_did_whose_target_is_gone() {
        let mut tenant = tenant();
        tenant.numbers[0].target = "299".into();
        assert_eq!(resolve(&tenant, None, "+33123450000"), None);
    }

    #[test]
    fn forward_targets_are_extensions_or_e164_numbers() {
        let cases = [
            ("101", user_target("101")),
            ("200", Some(Target::Group("200".into()))),
            ("+33123450100", user_target("100")),
            (
                "+33612345678",
                Some(Target::External("+33612345678".into())),
            ),
            ("199", None),
            ("0612345678", None),
            ("1", None),
            ("+336", None),
        ];
        for (s, target) in cases {
            assert_eq!(parse_forward_target(&tenant(), s), target, "{s}");
        }
    }

    #[test]
    fn targets_display_what_they_are() {
        assert_eq!(Target::User("100".into()).to_string(), "extension 100");
        assert_eq!(Target::Group("200".into()).to_string(), "hunt group 200");
    }
}
