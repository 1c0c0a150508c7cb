//! What a REGISTER asks for, decided before any IO. Pure.

/// Expiry rules of the registrar.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryPolicy {
    /// Shortest registration accepted (423 below it).
    pub min: u32,
    /// Longest registration granted (longer requests are shortened).
    pub max: u32,
    /// Used when the request names none.
    pub default: u32,
    /// Contacts one address of record may hold.
    pub max_bindings: usize,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        Self {
            min: 60,
            max: 3600,
            default: 3600,
            max_bindings: 10,
        }
    }
}

/// One Contact of a REGISTER, as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRequest {
    /// The contact URI.
    pub uri: String,
    /// Its `expires` parameter, if present and readable.
    pub expires: Option<u32>,
}

/// The request's Contact header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// No Contact: a query for the current bindings.
    None,
    /// `Contact: *`.
    Wildcard,
    /// One or more addresses.
    List(Vec<ContactRequest>),
}

/// What to do with the bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Only report the current bindings.
    Query,
    /// Remove every binding.
    RemoveAll,
    /// Add or refresh (`expires > 0`) or remove (`expires == 0`) these contacts.
    Update(Vec<(String, u32)>),
}

/// Why a REGISTER is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the message says what is wrong.
    BadRequest(&'static str),
    /// 423 with `Min-Expires`.
    IntervalTooBrief(u32),
}

/// Decides a REGISTER from its contacts and `Expires` header (RFC 3261 §10.3 steps 6–7).
pub fn plan(
    contacts: Contacts,
    expires_header: Option<u32>,
    policy: &ExpiryPolicy,
) -> Result<Plan, Refusal> {
    match contacts {
        Contacts::None => Ok(Plan::Query),
        Contacts::Wildcard if expires_header == Some(0) => Ok(Plan::RemoveAll),
        Contacts::Wildcard => Err(Refusal::BadRequest("Contact: * needs Expires: 0")),
        Contacts::List(list) => {
            let mut changes = Vec::with_capacity(list.len());
            for contact in list {
                let asked = contact.expires.or(expires_header).unwrap_or(policy.default);
                if asked != 0 && asked < policy.min {
                    return Err(Refusal::IntervalTooBrief(policy.min));
                }
                changes.push((contact.uri, asked.min(policy.max)));
            }
            Ok(Plan::Update(changes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(uri: &str, expires: Option<u32>) -> ContactRequest {
        ContactRequest {
            uri: uri.into(),
            expires,
        }
    }

    #[test]
    fn no_contact_is_a_query() {
        assert_eq!(
            plan(Contacts::None, None, &ExpiryPolicy::default()),
            Ok(Plan::Query)
        );
    }

    #[test]
    fn a_wildcard_removes_everything_only_with_expires_zero() {
        let policy = ExpiryPolicy::default();
        assert_eq!(
            plan(Contacts::Wildcard, Some(0), &policy),
            Ok(Plan::RemoveAll)
        );
        assert!(matches!(
            plan(Contacts::Wildcard, Some(60), &policy),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[test]
    fn contact_expires_wins_over_the_header_and_is_capped() {
        let policy = ExpiryPolicy::default();
        let list = Contacts::List(vec![
            contact("sip:a@h", Some(120)),
            contact("sip:b@h", None),
            contact("sip:c@h", Some(99_999)),
        ]);
        assert_eq!(
            plan(list, Some(600), &policy),
            Ok(Plan::Update(vec![
                ("sip:a@h".into(), 120),
                ("sip:b@h".into(), 600),
                ("sip:c@h".into(), 3600)
            ]))
        );
    }

    #[test]
    fn too_brief_an_interval_is_refused_with_the_minimum() {
        let list = Contacts::List(vec![contact("sip:a@h", Some(30))]);
        assert_eq!(
            plan(list, None, &ExpiryPolicy::default()),
            Err(Refusal::IntervalTooBrief(60))
        );
    }

    #[test]
    fn expires_zero_removes_one_contact() {
        let list = Contacts::List(vec![contact("sip:a@h", None)]);
        assert_eq!(
            plan(list, Some(0), &ExpiryPolicy::default()),
            Ok(Plan::Update(vec![("sip:a@h".into(), 0)]))
        );
    }
}
