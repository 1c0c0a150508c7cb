//! Nonces that need no shared state to check (an HMAC over their issue time), and the
//! nonce-count memory that rejects replays.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Issues and checks nonces: `hex(issued_at_secs ‖ random ‖ HMAC(key, issued_at ‖ random ‖ realm)[..16])`.
pub struct NonceIssuer {
    key: [u8; 32],
    lifetime: Duration,
}

/// What a presented nonce is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, for this realm, still fresh.
    Fresh,
    /// Ours but expired: answer 401 with `stale=true`.
    Stale,
    /// Not ours (forged, another realm, or another key): a fresh challenge.
    Unknown,
}

impl NonceIssuer {
    /// An issuer with `key` (shared by every instance that must accept the others' nonces).
    pub fn new(key: [u8; 32], lifetime: Duration) -> Self {
        Self { key, lifetime }
    }

    /// An issuer with a random key.
    pub fn random(lifetime: Duration) -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source is available");
        Self::new(key, lifetime)
    }

    /// A new nonce for `realm` at `now` (seconds since the Unix epoch).
    pub fn issue(&self, realm: &str, now: u64) -> String {
        let mut random = [0u8; 8];
        centrex_coord::random::fill(&mut random);
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&now.to_be_bytes());
        body[8..].copy_from_slice(&random);
        let mac = self.mac(&body, realm);
        format!("{}{}", hex::encode(body), hex::encode(&mac[..16]))
    }

    /// Checks a nonce presented for `realm` at `now`.
    pub fn check(&self, nonce: &str, realm: &str, now: u64) -> NonceCheck {
        let Ok(bytes) = hex::decode(nonce) else {
            return NonceCheck::Unknown;
        };
        if bytes.len() != 32 {
            return NonceCheck::Unknown;
        }
        let (body, tag) = bytes.split_at(16);
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body);
        mac.update(realm.as_bytes());
        if mac.verify_truncated_left(tag).is_err() {
            return NonceCheck::Unknown;
        }
        let issued = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
        if now.saturating_sub(issued) > self.lifetime.as_secs() || issued > now + 5 {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh
        }
    }

    fn mac(&self, body: &[u8], realm: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body);
        mac.update(realm.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// The highest nonce count accepted per nonce, for at most `capacity` nonces (oldest forgotten
/// first: a forgotten nonce's next use is refused as a replay, which only costs a re-challenge).
pub struct NonceCounts {
    highest: HashMap<String, u32>,
    order: VecDeque<String>,
    capacity: usize,
}

impl NonceCounts {
    /// Memory for `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            highest: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `nc` for `nonce` if it is higher than any seen; false means a replay.
    pub fn accept(&mut self, nonce: &str, nc: u32) -> bool {
        match self.highest.get_mut(nonce) {
            Some(highest) if nc <= *highest => false,
            Some(highest) => {
                *highest = nc;
                true
            }
            None => {
                if self.highest.len() >= self.capacity
                    && let Some(oldest) = self.order.pop_front()
                {
                    self.highest.remove(&oldest);
                }
                self.highest.insert(nonce.to_string(), nc);
                self.order.push_back(nonce.to_string());
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> NonceIssuer {
        NonceIssuer::new([7; 32], Duration::from_secs(300))
    }

    #[test]
    fn a_nonce_is_fresh_for_its_realm_until_it_expires() {
        let nonce = issuer().issue("acme.example.com", 1_000);
        assert_eq!(
            issuer().check(&nonce, "acme.example.com", 1_100),
            NonceCheck::Fresh
        );
        assert_eq!(
            issuer().check(&nonce, "acme.example.com", 1_301),
            NonceCheck::Stale
        );
        assert_eq!(
            issuer().check(&nonce, "other.example.com", 1_100),
            NonceCheck::Unknown
        );
    }

    #[test]
    fn forged_or_foreign_nonces_are_unknown() {
        let nonce = issuer().issue("r", 1_000);
        let other = NonceIssuer::new([8; 32], Duration::from_secs(300));
        assert_eq!(other.check(&nonce, "r", 1_000), NonceCheck::Unknown);
        let mut tampered = nonce.clone().into_bytes();
        tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            issuer().check(&String::from_utf8(tampered).unwrap(), "r", 1_000),
            NonceCheck::Unknown
        );
        assert_eq!(issuer().check("zz", "r", 1_000), NonceCheck::Unknown);
    }

    #[test]
    fn two_nonces_differ() {
        assert_ne!(issuer().issue("r", 1), issuer().issue("r", 1));
    }

    #[test]
    fn a_nonce_count_is_accepted_once_and_only_upwards() {
        let mut counts = NonceCounts::new(10);
        assert!(counts.accept("n", 1));
        assert!(!counts.accept("n", 1), "replay");
        assert!(counts.accept("n", 2));
        assert!(!counts.accept("n", 1), "going back");
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut counts = NonceCounts::new(2);
        counts.accept("a", 1);
        counts.accept("b", 1);
        counts.accept("c", 1);
        assert_eq!(counts.highest.len(), 2);
        assert!(
            !counts.highest.contains_key("a"),
            "the oldest nonce is forgotten"
        );
    }
}
