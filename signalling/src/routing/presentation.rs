//! Caller ID: what the callee sees of the caller (the From header), withheld callers (RFC 3323)
//! and the network-asserted identity given to trusted peers (RFC 3325).

use centrex_coord::snapshot::{CallerId, TenantSnapshot, UserEntry};

/// Display name of a withheld caller (RFC 3323 §4.1.1.3).
pub const ANONYMOUS_DISPLAY_NAME: &str = "Anonymous";
/// User part of a withheld caller's From URI.
pub const ANONYMOUS_USER: &str = "anonymous";
/// Host part of a withheld caller's From URI: `.invalid` cannot resolve (RFC 3323 §4.1.1.3).
pub const ANONYMOUS_HOST: &str = "anonymous.invalid";
/// `Privacy` value asking that the asserted identity be withheld from untrusted peers.
pub const PRIVACY_ID: &str = "id";

/// What the callee is shown of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// Name shown, if any.
    pub display_name: Option<String>,
    /// User part of the From URI: an extension or an E.164 number, or `anonymous`.
    pub user: String,
    /// Whether the caller withholds their identity.
    pub hidden: bool,
}

/// What `caller`'s callee is shown, following the caller's `callerId` setting.
///
/// Towards another user the fallback is the extension, which the callee can call back; towards
/// an external (trunk) destination an extension means nothing, so the fallback is the direct
/// number, then the tenant's main number, then the extension as a last resort. `extension`
/// presents the extension internally and that fallback externally; `mainNumber` and
/// `directNumber` present their number when it is set, the fallback otherwise.
pub fn presentation(
    tenant: &TenantSnapshot,
    caller: &UserEntry,
    towards_external: bool,
) -> Presentation {
    let fallback = if towards_external {
        external_identity(tenant, caller)
    } else {
        &caller.extension
    };
    let user = match caller.caller_id {
        CallerId::Hidden => {
            return Presentation {
                display_name: None,
                user: ANONYMOUS_USER.into(),
                hidden: true,
            };
        }
        CallerId::Extension => fallback,
        CallerId::MainNumber => tenant.main_number.as_deref().unwrap_or(fallback),
        CallerId::DirectNumber => caller.direct_number.as_deref().unwrap_or(fallback),
    };
    Presentation {
        display_name: caller.display_name.clone(),
        user: user.into(),
        hidden: false,
    }
}

/// The caller's number as the outside world knows it: direct number, main number, extension.
fn external_identity<'a>(tenant: &'a TenantSnapshot, caller: &'a UserEntry) -> &'a str {
    caller
        .direct_number
        .as_deref()
        .or(tenant.main_number.as_deref())
        .unwrap_or(&caller.extension)
}

/// The From header value of a call presenting `presentation` from `domain` with tag `tag`; a
/// hidden caller becomes `"Anonymous" <sip:anonymous@anonymous.invalid>`.
pub fn from_header(presentation: &Presentation, domain: &str, tag: &str) -> String {
    if presentation.hidden {
        return format!(
            "\"{ANONYMOUS_DISPLAY_NAME}\" <sip:{ANONYMOUS_USER}@{ANONYMOUS_HOST}>;tag={tag}"
        );
    }
    let uri = format!("<sip:{}@{domain}>", presentation.user);
    match &presentation.display_name {
        Some(name) => format!("{} {uri};tag={tag}", quoted(name)),
        None => format!("{uri};tag={tag}"),
    }
}

/// The Privacy header value a call presenting `presentation` carries, if any.
pub fn privacy_header(presentation: &Presentation) -> Option<&'static str> {
    presentation.hidden.then_some(PRIVACY_ID)
}

/// The P-Asserted-Identity value of `caller` (`<sip:+E164@domain>`, or `<sip:ext@domain>` for
/// a user without any number), given only to `trusted` peers (RFC 3325 §5: trunks), and to them
/// even for a hidden caller, so the carrier and emergency services know who calls.
pub fn asserted_identity(
    tenant: &TenantSnapshot,
    caller: &UserEntry,
    trusted: bool,
) -> Option<String> {
    trusted.then(|| {
        format!(
            "<sip:{}@{}>",
            external_identity(tenant, caller),
            tenant.domain
        )
    })
}

/// `name` as a SIP quoted-string (RFC 3261 §25.1): `"` and `\` escaped; CR and LF, which no
/// quoted-pair may carry, dropped so a display name cannot inject a header.
fn quoted(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => {}
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::target::tests::{tenant, user};

    fn caller(caller_id: CallerId, direct: Option<&str>) -> UserEntry {
        let mut u = user("100");
        u.display_name = Some("Alice".into());
        u.caller_id = caller_id;
        u.direct_number = direct.map(Into::into);
        u
    }

    fn without_main_number() -> TenantSnapshot {
        TenantSnapshot {
            main_number: None,
            ..tenant()
        }
    }

    const DIRECT: Option<&str> = Some("+33123450100");

    #[test]
    fn presentation_follows_the_caller_id_setting() {
        use CallerId::*;
        let cases = [
            // (setting, direct number, towards external, presented)
            (Extension, DIRECT, false, "100"),
            (Extension, DIRECT, true, "+33123450100"),
            (Extension, None, true, "+33123450000"),
            (MainNumber, DIRECT, false, "+33123450000"),
            (MainNumber, DIRECT, true, "+33123450000"),
            (DirectNumber, DIRECT, false, "+33123450100"),
            (DirectNumber, DIRECT, true, "+33123450100"),
            (DirectNumber, None, true, "+33123450000"),
            (DirectNumber, None, false, "100"),
        ];
        for (setting, direct, external, presented) in cases {
            let p = presentation(&tenant(), &caller(setting, direct), external);
            assert_eq!(
                p,
                Presentation {
                    display_name: Some("Alice".into()),
                    user: presented.into(),
                    hidden: false,
                },
                "{setting:?} direct={direct:?} external={external}"
            );
        }
    }

    #[test]
    fn without_any_number_the_extension_is_presented_even_externally() {
        let p = presentation(
            &without_main_number(),
            &caller(CallerId::MainNumber, None),
            true,
        );
        assert_eq!(p.user, "100");
        let p = presentation(
            &without_main_number(),
            &caller(CallerId::MainNumber, None),
            false,
        );
        assert_eq!(p.user, "100");
    }

    #[test]
    fn a_hidden_caller_presents_nothing_of_themselves() {
        let p = presentation(&tenant(), &caller(CallerId::Hidden, DIRECT), true);
        assert_eq!(
            p,
            Presentation {
                display_name: None,
                user: "anonymous".into(),
                hidden: true,
            }
        );
    }

    #[test]
    fn from_header_of_a_hidden_caller_is_anonymous_with_privacy_id() {
        let p = presentation(&tenant(), &caller(CallerId::Hidden, DIRECT), false);
        assert_eq!(
            from_header(&p, "acme.example.com", "t1"),
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=t1"
        );
        assert_eq!(privacy_header(&p), Some("id"));
    }

    #[test]
    fn from_header_carries_the_display_name_and_the_presented_user() {
        let p = presentation(&tenant(), &caller(CallerId::DirectNumber, DIRECT), true);
        assert_eq!(
            from_header(&p, "acme.example.com", "t1"),
            "\"Alice\" <sip:+33123450100@acme.example.com>;tag=t1"
        );
        assert_eq!(privacy_header(&p), None);
    }

    #[test]
    fn from_header_without_display_name_is_a_bare_uri() {
        let p = Presentation {
            display_name: None,
            user: "100".into(),
            hidden: false,
        };
        assert_eq!(
            from_header(&p, "acme.example.com", "t1"),
            "<sip:100@acme.example.com>;tag=t1"
        );
    }

    #[test]
    fn from_header_escapes_quotes_and_drops_line_breaks_in_display_names() {
        let p = Presentation {
            display_name: Some("Bob \"the\\boss\"\r\nVia: x".into()),
            user: "100".into(),
            hidden: false,
        };
        assert_eq!(
            from_header(&p, "acme.example.com", "t1"),
            "\"Bob \\\"the\\\\boss\\\"Via: x\" <sip:100@acme.example.com>;tag=t1"
        );
    }

    #[test]
    fn asserted_identity_goes_only_to_trusted_peers() {
        let c = caller(CallerId::Extension, DIRECT);
        assert_eq!(asserted_identity(&tenant(), &c, false), None);
        assert_eq!(
            asserted_identity(&tenant(), &c, true).as_deref(),
            Some("<sip:+33123450100@acme.example.com>")
        );
    }

    #[test]
    fn asserted_identity_reveals_a_hidden_caller_to_trusted_peers() {
        let c = caller(CallerId::Hidden, None);
        assert_eq!(
            asserted_identity(&tenant(), &c, true).as_deref(),
            Some("<sip:+33123450000@acme.example.com>")
        );
    }

    #[test]
    fn asserted_identity_of_a_user_without_numbers_is_the_extension() {
        let c = caller(CallerId::Extension, None);
        assert_eq!(
            asserted_identity(&without_main_number(), &c, true).as_deref(),
            Some("<sip:100@acme.example.com>")
        );
    }
}
