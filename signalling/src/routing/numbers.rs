//! Dialled numbers: normalisation to E.164 with a trunk's number plan, destination classes
//! (emergency, national, mobile, international, premium rate) and the outbound policy decision.
//!
//! The destination classes come from a deliberately small built-in table (`COUNTRIES`): the
//! mobile and premium-rate ranges of a few countries, enough to enforce a tenant's
//! `allowedDestinations`, not a numbering database. A number of a country not in the table is
//! `national` (own country) or `international` (any other).

use centrex_coord::snapshot::{DestinationClass, OutboundPolicy, TrunkSnapshot};

use crate::sip::StatusCode;

/// Fewest digits after `+` an E.164 number may have here (shorter ones are almost always typos).
pub const E164_MIN_DIGITS: usize = 8;
/// Most digits after `+` an E.164 number has (ITU-T E.164 §6).
pub const E164_MAX_DIGITS: usize = 15;
/// Fewest digits of a number dialled without prefix for it to be taken as a national number.
pub const NATIONAL_MIN_DIGITS: usize = 7;

/// Emergency short codes answered in every country, as GSM phones do for 112 and 911.
const UNIVERSAL_EMERGENCY: &[&str] = &["112", "911"];

/// What the built-in table knows of one country.
struct CountryRules {
    /// Country calling code, without `+`.
    country_code: &'static str,
    /// Emergency short codes besides [`UNIVERSAL_EMERGENCY`].
    emergency: &'static [&'static str],
    /// Prefixes of the national significant number of mobile ranges.
    mobile: &'static [&'static str],
    /// Prefixes of the national significant number of premium-rate (and special-cost) ranges.
    premium: &'static [&'static str],
}

/// The countries whose emergency codes and number ranges are known; others only get 112/911 and
/// the national / international distinction.
const COUNTRIES: &[CountryRules] = &[
    // France: 15 SAMU, 17 police, 18 fire, 114 deaf and hard of hearing, 115 shelter, 119
    // children; 06/07 mobile; 081/082 shared cost and 089 premium rate.
    CountryRules {
        country_code: "33",
        emergency: &["15", "17", "18", "114", "115", "119"],
        mobile: &["6", "7"],
        premium: &["81", "82", "89"],
    },
    // United Kingdom: 999; 07 mobile (and personal / pager numbers); 09 premium rate.
    CountryRules {
        country_code: "44",
        emergency: &["999"],
        mobile: &["7"],
        premium: &["9"],
    },
    // Germany: 110 police; 015x/016x/017x mobile; 0900 premium rate.
    CountryRules {
        country_code: "49",
        emergency: &["110"],
        mobile: &["15", "16", "17"],
        premium: &["900"],
    },
    // North American Numbering Plan: mobiles are not told apart; 900 and 976 premium rate.
    CountryRules {
        country_code: "1",
        emergency: &[],
        mobile: &[],
        premium: &["900", "976"],
    },
];

/// Why a dialled string is not a callable number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Nothing but separators was dialled.
    #[error("the dialled number is empty")]
    Empty,
    /// A character other than digits, a leading `+` and visual separators.
    #[error(
        "dialled number `{number}` contains `{character}`: only digits, a leading + and the separators space - . ( ) are allowed"
    )]
    InvalidCharacter {
        /// The number as dialled.
        number: String,
        /// The first offending character.
        character: char,
    },
    /// Dialled without any prefix and too short to be a national number.
    #[error(
        "dialled number `{number}` has {digits} digits: without a prefix a national number needs at least {NATIONAL_MIN_DIGITS}"
    )]
    TooShortForNational {
        /// The number as dialled.
        number: String,
        /// Its digits.
        digits: usize,
    },
    /// The E.164 form has a length no E.164 number has.
    #[error(
        "dialled number `{number}` becomes {e164}, {digits} digits after +: an E.164 number has {E164_MIN_DIGITS} to {E164_MAX_DIGITS}"
    )]
    Length {
        /// The number as dialled.
        number: String,
        /// What normalisation made of it.
        e164: String,
        /// Its digits after `+`.
        digits: usize,
    },
}

/// Where a dialled number leads, for the outbound policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// An emergency short code: always allowed, never normalised.
    Emergency,
    /// A destination class a tenant allows or not.
    Class(DestinationClass),
}

/// How numbers are dialled behind one trunk: its country and its prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPlan {
    country_code: String,
    national_prefix: String,
    international_prefix: String,
}

impl NumberPlan {
    /// A plan for country calling code `country_code` (without `+`), e.g. `("33", "0", "00")`.
    pub fn new(
        country_code: impl Into<String>,
        national_prefix: impl Into<String>,
        international_prefix: impl Into<String>,
    ) -> Self {
        Self {
            country_code: country_code.into(),
            national_prefix: national_prefix.into(),
            international_prefix: international_prefix.into(),
        }
    }

    /// The plan of a trunk's `normalisation`.
    pub fn from_trunk(trunk: &TrunkSnapshot) -> Self {
        Self::new(
            trunk.country_code.as_str(),
            trunk.national_prefix.as_str(),
            trunk.international_prefix.as_str(),
        )
    }

    /// Country calling code, without `+`.
    pub fn country_code(&self) -> &str {
        &self.country_code
    }

    /// What a user dialled as an E.164 number with a leading `+`.
    ///
    /// `+` numbers are kept; the international prefix becomes `+`; the national prefix becomes
    /// `+` and the country code; a number without prefix of at least [`NATIONAL_MIN_DIGITS`] is
    /// a national significant number. The international prefix is tried before the national one
    /// (France's `00` starts with its national `0`).
    pub fn normalise(&self, dialled: &str) -> Result<String, NumberError> {
        let digits = strip_separators(dialled)?;
        let e164 = if digits.starts_with('+') {
            digits
        } else if let Some(rest) = strip_non_empty_prefix(&digits, &self.international_prefix) {
            format!("+{rest}")
        } else if let Some(rest) = strip_non_empty_prefix(&digits, &self.national_prefix) {
            format!("+{}{rest}", self.country_code)
        } else if digits.len() >= NATIONAL_MIN_DIGITS {
            format!("+{}{digits}", self.country_code)
        } else {
            return Err(NumberError::TooShortForNational {
                number: dialled.into(),
                digits: digits.len(),
            });
        };
        check_length(dialled, e164)
    }

    /// Whether `dialled` is an emergency short code in this plan's country (or 112 / 911).
    pub fn is_emergency(&self, dialled: &str) -> bool {
        strip_separators(dialled).is_ok_and(|code| {
            is_universal_emergency(&code)
                || country(&self.country_code).is_some_and(|c| c.emergency.contains(&code.as_str()))
        })
    }

    /// The destination of a call: `dialled` decides emergency, `e164` (its normalised form) the
    /// class.
    pub fn classify(&self, dialled: &str, e164: &str) -> Destination {
        if self.is_emergency(dialled) {
            return Destination::Emergency;
        }
        let national = e164
            .strip_prefix('+')
            .and_then(|digits| digits.strip_prefix(self.country_code.as_str()));
        let Some(significant) = national else {
            return Destination::Class(DestinationClass::International);
        };
        let starts_with_any =
            |prefixes: &[&str]| prefixes.iter().any(|p| significant.starts_with(p));
        let class = match country(&self.country_code) {
            Some(rules) if starts_with_any(rules.premium) => DestinationClass::Premium,
            Some(rules) if starts_with_any(rules.mobile) => DestinationClass::Mobile,
            _ => DestinationClass::National,
        };
        Destination::Class(class)
    }
}

/// Whether `code` (separators removed) is 112 or 911, emergency numbers in every country.
pub fn is_universal_emergency(code: &str) -> bool {
    UNIVERSAL_EMERGENCY.contains(&code)
}

/// `dialled` without visual separators (space, `-`, `.`, `(`, `)`); a `+` may only lead.
pub fn strip_separators(dialled: &str) -> Result<String, NumberError> {
    let mut out = String::with_capacity(dialled.len());
    for c in dialled.chars() {
        match c {
            ' ' | '-' | '.' | '(' | ')' => {}
            '0'..='9' => out.push(c),
            '+' if out.is_empty() => out.push(c),
            _ => {
                return Err(NumberError::InvalidCharacter {
                    number: dialled.into(),
                    character: c,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(NumberError::Empty);
    }
    Ok(out)
}

/// `number` as an E.164 number, without a number plan: it must start with `+`.
pub fn parse_e164(number: &str) -> Result<String, NumberError> {
    let digits = strip_separators(number)?;
    if !digits.starts_with('+') {
        return Err(NumberError::Length {
            number: number.into(),
            e164: digits,
            digits: 0,
        });
    }
    check_length(number, digits)
}

fn strip_non_empty_prefix<'a>(digits: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        None
    } else {
        digits.strip_prefix(prefix)
    }
}

fn check_length(dialled: &str, e164: String) -> Result<String, NumberError> {
    let digits = e164.len() - 1;
    if (E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&digits) {
        Ok(e164)
    } else {
        Err(NumberError::Length {
            number: dialled.into(),
            e164,
            digits,
        })
    }
}

fn country(country_code: &str) -> Option<&'static CountryRules> {
    COUNTRIES.iter().find(|c| c.country_code == country_code)
}

/// Where an allowed outbound call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRoute {
    /// The E.164 number, or the emergency short code as dialled (separators removed).
    pub number: String,
    /// Its destination class.
    pub class: Destination,
    /// The tenant's trunks, to try in order.
    pub trunks: Vec<String>,
}

/// Why an outbound call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundRefusal {
    /// The tenant's policy does not allow the destination class.
    #[error("{number}: {} (allowedDestinations lacks `{}`)", class_reason(*.class), class_name(*.class))]
    NotAllowed {
        /// The refused class.
        class: DestinationClass,
        /// The E.164 number.
        number: String,
    },
    /// The dialled string is not a callable number.
    #[error(transparent)]
    Invalid(#[from] NumberError),
}

impl OutboundRefusal {
    /// The SIP status to answer with: 403 for a class not allowed, 484 for an invalid number.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::Invalid(_) => StatusCode::ADDRESS_INCOMPLETE,
        }
    }

    /// The reason phrase of that answer, telling the caller what was refused.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAllowed { class, .. } => class_reason(*class),
            Self::Invalid(_) => "the dialled number is incomplete or invalid",
        }
    }
}

fn class_reason(class: DestinationClass) -> &'static str {
    match class {
        DestinationClass::National => "national calls are not allowed for this tenant",
        DestinationClass::Mobile => "calls to mobiles are not allowed for this tenant",
        DestinationClass::International => "international calls are not allowed for this tenant",
        DestinationClass::Premium => "premium-rate calls are not allowed for this tenant",
    }
}

/// The class as spelt in `spec.outbound.allowedDestinations`.
fn class_name(class: DestinationClass) -> &'static str {
    match class {
        DestinationClass::National => "national",
        DestinationClass::Mobile => "mobile",
        DestinationClass::International => "international",
        DestinationClass::Premium => "premium",
    }
}

/// Whether the tenant's `policy` lets `dialled` leave through a trunk dialling with `plan`, and
/// how. Emergency short codes are always allowed and keep their dialled form.
pub fn outbound_decision(
    policy: &OutboundPolicy,
    plan: &NumberPlan,
    dialled: &str,
) -> Result<OutboundRoute, OutboundRefusal> {
    let route = |number, class| OutboundRoute {
        number,
        class,
        trunks: policy.trunks.clone(),
    };
    if plan.is_emergency(dialled) {
        return Ok(route(strip_separators(dialled)?, Destination::Emergency));
    }
    let number = plan.normalise(dialled)?;
    match plan.classify(dialled, &number) {
        Destination::Class(class) if !policy.allowed.contains(&class) => {
            Err(OutboundRefusal::NotAllowed { class, number })
        }
        class => Ok(route(number, class)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DestinationClass::*;

    fn france() -> NumberPlan {
        NumberPlan::new("33", "0", "00")
    }

    fn nanp() -> NumberPlan {
        NumberPlan::new("1", "1", "011")
    }

    fn policy(allowed: &[DestinationClass]) -> OutboundPolicy {
        OutboundPolicy {
            trunks: vec!["carrier-a".into(), "carrier-b".into()],
            allowed: allowed.to_vec(),
        }
    }

    #[test]
    fn normalise_turns_every_dialling_habit_into_e164() {
        let cases = [
            (france(), "+33123456789", "+33123456789"),
            (france(), "+33 1 23 45 67 89", "+33123456789"),
            (france(), "01 23 45 67 89", "+33123456789"),
            (france(), "01.23.45.67.89", "+33123456789"),
            (france(), "0044 20 7946 0958", "+442079460958"),
            (france(), "123456789", "+33123456789"),
            (nanp(), "(212) 555-1234", "+12125551234"),
            (nanp(), "1 212 555 1234", "+12125551234"),
            (nanp(), "011 33 1 23 45 67 89", "+33123456789"),
        ];
        for (plan, dialled, e164) in cases {
            assert_eq!(plan.normalise(dialled).as_deref(), Ok(e164), "{dialled}");
        }
    }

    #[test]
    fn normalise_with_an_empty_national_prefix_takes_leading_zeros_as_part_of_the_number() {
        let italy = NumberPlan::new("39", "", "00");
        assert_eq!(
            italy.normalise("06 1234 5678").as_deref(),
            Ok("+390612345678")
        );
    }

    #[test]
    fn normalise_refuses_letters_naming_the_character() {
        assert_eq!(
            france().normalise("01 23 ab"),
            Err(NumberError::InvalidCharacter {
                number: "01 23 ab".into(),
                character: 'a'
            })
        );
    }

    #[test]
    fn normalise_refuses_a_plus_that_does_not_lead() {
        assert!(matches!(
            france().normalise("33+1234567"),
            Err(NumberError::InvalidCharacter { character: '+', .. })
        ));
    }

    #[test]
    fn normalise_refuses_an_empty_number() {
        assert_eq!(france().normalise(" - "), Err(NumberError::Empty));
    }

    #[test]
    fn normalise_refuses_a_short_number_without_prefix() {
        assert_eq!(
            france().normalise("12345"),
            Err(NumberError::TooShortForNational {
                number: "12345".into(),
                digits: 5
            })
        );
    }

    #[test]
    fn normalise_refuses_e164_numbers_of_impossible_length() {
        for dialled in ["+3312345", "+1234567890123456", "0612", "+"] {
            assert!(
                matches!(france().normalise(dialled), Err(NumberError::Length { .. })),
                "{dialled}"
            );
        }
    }

    #[test]
    fn number_errors_name_the_number_and_the_rule() {
        let message = france().normalise("0612").unwrap_err().to_string();
        assert!(
            message.contains("`0612`") && message.contains("8 to 15"),
            "{message}"
        );
    }

    #[test]
    fn parse_e164_accepts_only_plus_numbers() {
        assert_eq!(
            parse_e164("+33 1 23 45 67 89").as_deref(),
            Ok("+33123456789")
        );
        assert!(parse_e164("0123456789").is_err());
    }

    #[test]
    fn emergency_codes_depend_on_the_country_but_112_and_911_work_everywhere() {
        let uk = NumberPlan::new("44", "0", "00");
        let germany = NumberPlan::new("49", "0", "00");
        let spain = NumberPlan::new("34", "", "00");
        let cases = [
            (france(), "15", true),
            (france(), "17", true),
            (france(), "18", true),
            (france(), "114", true),
            (france(), "115", true),
            (france(), "119", true),
            (france(), "112", true),
            (france(), "911", true),
            (france(), "999", false),
            (uk.clone(), "999", true),
            (uk, "15", false),
            (germany.clone(), "110", true),
            (germany, "17", false),
            (nanp(), "911", true),
            (nanp(), "110", false),
            (spain.clone(), "112", true),
            (spain, "091", false),
        ];
        for (plan, dialled, emergency) in cases {
            assert_eq!(
                plan.is_emergency(dialled),
                emergency,
                "{dialled} in +{}",
                plan.country_code()
            );
        }
    }

    #[test]
    fn classify_uses_the_country_table_and_the_country_code() {
        let uk = NumberPlan::new("44", "0", "00");
        let germany = NumberPlan::new("49", "0", "00");
        let italy = NumberPlan::new("39", "", "00");
        let cases = [
            (france(), "+33123456789", National),
            (france(), "+33612345678", Mobile),
            (france(), "+33712345678", Mobile),
            (france(), "+33891234567", Premium),
            (france(), "+33812345678", Premium),
            (france(), "+33801234567", National),
            (france(), "+442079460958", International),
            (uk.clone(), "+447700900123", Mobile),
            (uk, "+449098790000", Premium),
            (germany.clone(), "+4915123456789", Mobile),
            (germany.clone(), "+499001234567", Premium),
            (germany, "+493012345678", National),
            (nanp(), "+19005551234", Premium),
            (nanp(), "+19765551234", Premium),
            (nanp(), "+12125551234", National),
            (italy.clone(), "+393123456789", National),
            (italy, "+33612345678", International),
        ];
        for (plan, e164, class) in cases {
            assert_eq!(
                plan.classify(e164, e164),
                Destination::Class(class),
                "{e164} from +{}",
                plan.country_code()
            );
        }
    }

    #[test]
    fn classify_decides_emergency_on_the_dialled_string() {
        assert_eq!(france().classify("15", "15"), Destination::Emergency);
        assert_eq!(france().classify("1 1 2", ""), Destination::Emergency);
    }

    #[test]
    fn outbound_decision_routes_an_allowed_class_over_the_policy_trunks_in_order() {
        let route = outbound_decision(&policy(&[National]), &france(), "01 23 45 67 89").unwrap();
        assert_eq!(
            route,
            OutboundRoute {
                number: "+33123456789".into(),
                class: Destination::Class(National),
                trunks: vec!["carrier-a".into(), "carrier-b".into()],
            }
        );
    }

    #[test]
    fn outbound_decision_always_allows_emergency_keeping_the_short_code() {
        let route = outbound_decision(&policy(&[]), &france(), "112").unwrap();
        assert_eq!(route.number, "112");
        assert_eq!(route.class, Destination::Emergency);
        assert_eq!(
            outbound_decision(&policy(&[]), &france(), "18")
                .unwrap()
                .class,
            Destination::Emergency
        );
    }

    #[test]
    fn outbound_decision_refuses_a_class_not_allowed_with_403_and_says_which() {
        let refusal =
            outbound_decision(&policy(&[National, Mobile]), &france(), "0044 20 7946 0958")
                .unwrap_err();
        assert_eq!(
            refusal,
            OutboundRefusal::NotAllowed {
                class: International,
                number: "+442079460958".into()
            }
        );
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            refusal.reason(),
            "international calls are not allowed for this tenant"
        );
        assert!(refusal.to_string().contains("`international`"));
    }

    #[test]
    fn outbound_decision_refuses_premium_unless_allowed() {
        let refused = outbound_decision(&policy(&[National]), &france(), "0891234567");
        assert_eq!(
            refused.unwrap_err().reason(),
            "premium-rate calls are not allowed for this tenant"
        );
        let allowed = outbound_decision(&policy(&[Premium]), &france(), "0891234567");
        assert_eq!(allowed.unwrap().class, Destination::Class(Premium));
    }

    #[test]
    fn outbound_decision_answers_an_invalid_number_with_484() {
        let refusal = outbound_decision(&policy(&[National]), &france(), "0612").unwrap_err();
        assert_eq!(refusal.status(), StatusCode::ADDRESS_INCOMPLETE);
        assert!(matches!(refusal, OutboundRefusal::Invalid(_)));
    }

    #[test]
    fn a_plan_comes_from_the_trunk_normalisation() {
        use centrex_coord::snapshot::{Source, Transport};
        let trunk = TrunkSnapshot {
            schema: 1,
            source: Source {
                namespace: "d".into(),
                name: "carrier".into(),
                uid: "u".into(),
                generation: 1,
            },
            host: "sip.carrier.example".into(),
            port: 5060,
            transport: Transport::Udp,
            registration: None,
            inbound_sources: vec![],
            number_prefixes: vec![],
            max_channels: 30,
            calls_per_second: 10,
            country_code: "33".into(),
            national_prefix: "0".into(),
            international_prefix: "00".into(),
        };
        assert_eq!(NumberPlan::from_trunk(&trunk), france());
    }
}
