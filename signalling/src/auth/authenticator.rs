//! Authenticating a request against a tenant: challenge, verify, refuse, throttle.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use centrex_coord::snapshot::{TenantSnapshot, UserEntry};

use super::digest::{Algorithm, Challenge, Credentials, PREFERRED, challenges};
use super::nonce::{NonceCheck, NonceCounts, NonceIssuer};
use super::throttle::{AuthThrottle, ThrottlePolicy};

/// How long a nonce stays fresh.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Nonces whose counts are remembered (replay protection), per instance.
const NONCE_MEMORY: usize = 100_000;

/// The verdict on a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome<'t> {
    /// The credentials are those of this user.
    Authenticated(&'t UserEntry),
    /// Answer 401 with fresh challenges (`stale`: the password was right, the nonce old).
    Challenge { stale: bool },
    /// Answer 403: wrong password or another user's identity.
    Forbidden,
    /// The source failed too often: drop without answering.
    Throttled,
}

/// Digest authentication state of one signalling instance.
pub struct Authenticator {
    issuer: NonceIssuer,
    /// Algorithms offered, most preferred first (accepted: any of them).
    algorithms: Vec<Algorithm>,
    counts: Mutex<NonceCounts>,
    throttle: Mutex<AuthThrottle>,
}

impl Authenticator {
    /// An authenticator with a random nonce key and the default throttle.
    pub fn new() -> Self {
        Self::with(
            NonceIssuer::random(NONCE_LIFETIME),
            ThrottlePolicy::default(),
        )
    }

    /// Issues and accepts nonces with `key`, shared with the other instances of the pool (see
    /// [`crate::cluster::nonce_key`]) instead of a key of its own.
    pub fn with_nonce_key(mut self, key: [u8; 32]) -> Self {
        self.issuer = NonceIssuer::new(key, NONCE_LIFETIME);
        self
    }

    /// An authenticator with a given issuer and throttle policy.
    pub fn with(issuer: NonceIssuer, policy: ThrottlePolicy) -> Self {
        Self {
            issuer,
            algorithms: PREFERRED.to_vec(),
            counts: Mutex::new(NonceCounts::new(NONCE_MEMORY)),
            throttle: Mutex::new(AuthThrottle::new(policy)),
        }
    }

    /// Offers `algorithms` in this order instead of RFC 8760's (SHA-256, MD5): some UAs answer
    /// only the first challenge and know only MD5.
    pub fn with_algorithms(mut self, algorithms: Vec<Algorithm>) -> Self {
        if !algorithms.is_empty() {
            self.algorithms = algorithms;
        }
        self
    }

    /// The `WWW-Authenticate` values of a 401 for `tenant`.
    pub fn challenge(&self, tenant: &TenantSnapshot, stale: bool, unix_now: u64) -> Vec<String> {
        let nonce = self.issuer.issue(&tenant.domain, unix_now);
        challenges(&tenant.domain, &nonce, stale, &self.algorithms)
            .iter()
            .map(Challenge::to_string)
            .collect()
    }

    /// Checks `authorization` (the header value, if any) of a `method` request that must come
    /// from `expected_user` of `tenant`.
    #[allow(clippy::too_many_arguments)]
    pub fn authenticate<'t>(
        &self,
        method: &str,
        authorization: Option<&str>,
        tenant: &'t TenantSnapshot,
        expected_user: &str,
        source: IpAddr,
        unix_now: u64,
        now: Instant,
    ) -> AuthOutcome<'t> {
        if self
            .throttle
            .lock()
            .expect("throttle lock")
            .is_blocked(source, now)
        {
            return AuthOutcome::Throttled;
        }
        let Some(value) = authorization else {
            return AuthOutcome::Challenge { stale: false };
        };
        let Ok(credentials) = Credentials::parse(value) else {
            return self.fail(source, now);
        };
        if credentials.realm != tenant.domain || !self.algorithms.contains(&credentials.algorithm) {
            return AuthOutcome::Challenge { stale: false };
        }
        let freshness = self
            .issuer
            .check(&credentials.nonce, &tenant.domain, unix_now);
        if freshness == NonceCheck::Unknown {
            return AuthOutcome::Challenge { stale: false };
        }
        // Usernames are extensions; a user whose username differs is found by a scan.
        let user = tenant
            .user(&credentials.username)
            .filter(|u| u.credentials.username == credentials.username)
            .or_else(|| {
                tenant
                    .users
                    .iter()
                    .find(|u| u.credentials.username == credentials.username)
            });
        let verified = user.is_some_and(|user| {
            let ha1 = match credentials.algorithm {
                Algorithm::Md5 => &user.credentials.ha1_md5,
                Algorithm::Sha256 => &user.credentials.ha1_sha256,
            };
            credentials.verify(method, ha1)
        });
        // An identity other than the one the request speaks for is refused like a bad password.
        let Some(user) = user.filter(|_| verified && credentials.username == expected_user) else {
            return self.fail(source, now);
        };
        if freshness == NonceCheck::Stale {
            return AuthOutcome::Challenge { stale: true };
        }
        let nc = credentials.nc.unwrap_or(0);
        if !self
            .counts
            .lock()
            .expect("nonce counts lock")
            .accept(&credentials.nonce, nc)
        {
            // A replayed count gets a fresh nonce, not a failure: the digest itself was right, and
            // a phone retransmitting under load must not get its whole NAT address throttled.
            return AuthOutcome::Challenge { stale: true };
        }
        self.throttle
            .lock()
            .expect("throttle lock")
            .succeeded(source);
        AuthOutcome::Authenticated(user)
    }

    fn fail<'t>(&self, source: IpAddr, now: Instant) -> AuthOutcome<'t> {
        if self
            .throttle
            .lock()
            .expect("throttle lock")
            .failed(source, now)
        {
            tracing::warn!(%source, "authentication failures: source throttled");
        }
        AuthOutcome::Forbidden
    }
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centrex_coord::snapshot::{self as snap, DigestCredentials};

    fn tenant() -> TenantSnapshot {
        let user = snap::UserEntry {
            extension: "100".into(),
            display_name: None,
            credentials: DigestCredentials::derive("100", "acme.example.com", b"secret-100"),
            max_calls: 2,
            caller_id: snap::CallerId::Extension,
            direct_number: None,
            mobile_number: None,
            forwarding: Default::default(),
        };
        let mut other = user.clone();
        other.extension = "101".into();
        other.credentials = DigestCredentials::derive("101", "acme.example.com", b"secret-101");
        TenantSnapshot {
            schema: snap::SCHEMA_VERSION,
            source: snap::Source {
                namespace: "d".into(),
                name: "acme".into(),
                uid: "u".into(),
                generation: 1,
            },
            domain: "acme.example.com".into(),
            main_number: None,
            users: vec![user, other],
            hunt_groups: vec![],
            numbers: vec![],
            outbound: None,
            limits: snap::TenantLimits {
                concurrent_calls: 10,
                calls_per_second: 5,
            },
            signalling_pool: "default".into(),
            media_pool: "default".into(),
        }
    }

    /// The Authorization a UA computes for `password` after a challenge carrying `nonce`.
    fn authorization(
        user: &str,
        password: &str,
        nonce: &str,
        nc: u32,
        algorithm: Algorithm,
    ) -> String {
        let ha1 = algorithm.hash(&[user.as_bytes(), b"acme.example.com", password.as_bytes()]);
        let ha2 = algorithm.hash(&[b"REGISTER", b"sip:acme.example.com"]);
        let nc = format!("{nc:08x}");
        let response = algorithm.hash(&[
            ha1.as_bytes(),
            nonce.as_bytes(),
            nc.as_bytes(),
            b"c0ffee",
            b"auth",
            ha2.as_bytes(),
        ]);
        format!(
            "Digest username=\"{user}\", realm=\"acme.example.com\", nonce=\"{nonce}\", uri=\"sip:acme.example.com\", \
             response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"c0ffee\"",
            algorithm.token()
        )
    }

    fn nonce_of(challenge: &str) -> String {
        challenge
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    }

    const SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn challenge_then_success_with_either_algorithm() {
        let auth = Authenticator::new();
        let tenant = tenant();
        let now = Instant::now();
        assert_eq!(
            auth.authenticate("REGISTER", None, &tenant, "100", SOURCE, 1000, now),
            AuthOutcome::Challenge { stale: false }
        );
        for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
            let nonce = nonce_of(&auth.challenge(&tenant, false, 1000)[0]);
            let header = authorization("100", "secret-100", &nonce, 1, algorithm);
            let outcome =
                auth.authenticate("REGISTER", Some(&header), &tenant, "100", SOURCE, 1001, now);
            assert!(
                matches!(outcome, AuthOutcome::Authenticated(u) if u.extension == "100"),
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn a_wrong_password_or_another_users_credentials_are_forbidden() {
        let auth = Authenticator::new();
        let tenant = tenant();
        let nonce = nonce_of(&auth.challenge(&tenant, false, 1000)[0]);
        let wrong = authorization("100", "guess", &nonce, 1, Algorithm::Md5);
        assert_eq!(
            auth.authenticate(
                "REGISTER",
                Some(&wrong),
                &tenant,
                "100",
                SOURCE,
                1000,
                Instant::now()
            ),
            AuthOutcome::Forbidden
        );
        let bobs = authorization("101", "secret-101", &nonce, 1, Algorithm::Md5);
        assert_eq!(
            auth.authenticate(
                "REGISTER",
                Some(&bobs),
                &tenant,
                "100",
                SOURCE,
                1000,
                Instant::now()
            ),
            AuthOutcome::Forbidden
        );
    }

    #[test]
    fn an_expired_nonce_with_the_right_password_is_stale() {
        let auth = Authenticator::new();
        let tenant = tenant();
        let nonce = nonce_of(&auth.challenge(&tenant, false, 1000)[0]);
        let header = authorization("100", "secret-100", &nonce, 1, Algorithm::Md5);
        let later = 1000 + NONCE_LIFETIME.as_secs() + 1;
        assert_eq!(
            auth.authenticate(
                "REGISTER",
                Some(&header),
                &tenant,
                "100",
                SOURCE,
                later,
                Instant::now()
            ),
            AuthOutcome::Challenge { stale: true }
        );
    }

    #[test]
    fn a_replayed_nonce_count_is_challenged_again_and_not_counted_as_a_failure() {
        let auth = Authenticator::new();
        let tenant = tenant();
        let nonce = nonce_of(&auth.challenge(&tenant, false, 1000)[0]);
        let header = authorization("100", "secret-100", &nonce, 1, Algorithm::Md5);
        let now = Instant::now();
        assert!(matches!(
            auth.authenticate("REGISTER", Some(&header), &tenant, "100", SOURCE, 1000, now),
            AuthOutcome::Authenticated(_)
        ));
        for _ in 0..20 {
            assert_eq!(
                auth.authenticate("REGISTER", Some(&header), &tenant, "100", SOURCE, 1000, now),
                AuthOutcome::Challenge { stale: true }
            );
        }
        let next = authorization("100", "secret-100", &nonce, 2, Algorithm::Md5);
        assert!(matches!(
            auth.authenticate("REGISTER", Some(&next), &tenant, "100", SOURCE, 1000, now),
            AuthOutcome::Authenticated(_)
        ));
    }

    #[test]
    fn a_nonce_of_another_realm_or_instance_gets_a_fresh_challenge() {
        let auth = Authenticator::new();
        let tenant = tenant();
        let foreign = Authenticator::new().challenge(&tenant, false, 1000);
        let header = authorization(
            "100",
            "secret-100",
            &nonce_of(&foreign[0]),
            1,
            Algorithm::Md5,
        );
        assert_eq!(
            auth.authenticate(
                "REGISTER",
                Some(&header),
                &tenant,
                "100",
                SOURCE,
                1000,
                Instant::now()
            ),
            AuthOutcome::Challenge { stale: false }
        );
    }

    #[test]
    fn repeated_failures_throttle_the_source_only() {
        let policy = ThrottlePolicy {
            max_failures: 3,
            ..Default::default()
        };
        let auth = Authenticator::with(NonceIssuer::random(NONCE_LIFETIME), policy);
        let tenant = tenant();
        let nonce = nonce_of(&auth.challenge(&tenant, false, 1000)[0]);
        let wrong = authorization("100", "guess", &nonce, 1, Algorithm::Md5);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                auth.authenticate("REGISTER", Some(&wrong), &tenant, "100", SOURCE, 1000, now),
                AuthOutcome::Forbidden
            );
        }
        assert_eq!(
            auth.authenticate("REGISTER", None, &tenant, "100", SOURCE, 1000, now),
            AuthOutcome::Throttled
        );
        let elsewhere: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(
            auth.authenticate("REGISTER", None, &tenant, "100", elsewhere, 1000, now),
            AuthOutcome::Challenge { stale: false }
        );
    }
}
