//! The client side of digest authentication: answering a carrier's challenge (RFC 3261 §22.2,
//! RFC 8760) from the HA1 hashes of the trunk's snapshot — the password itself never reaches
//! signalling.

use centrex_coord::snapshot::DigestCredentials;

use super::digest::{Algorithm, digest_params};

/// A `WWW-Authenticate` / `Proxy-Authenticate` challenge we can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerChallenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    pub opaque: Option<String>,
    /// The server offered `qop=auth`.
    pub qop_auth: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("challenge: not the Digest scheme")]
    NotDigest,
    #[error("challenge: missing {0}")]
    Missing(&'static str),
    #[error("challenge: unsupported algorithm {0:?}")]
    Algorithm(String),
    #[error("challenge: malformed parameter list")]
    Malformed,
    #[error("challenge: realm {challenged:?} is not the trunk's realm {configured:?}")]
    Realm {
        challenged: String,
        configured: String,
    },
}

impl ServerChallenge {
    /// Parses a challenge header value (`Digest realm="…", nonce="…", …`).
    pub fn parse(value: &str) -> Result<Self, ChallengeError> {
        let params = digest_params(value)
            .ok_or(ChallengeError::NotDigest)?
            .ok_or(ChallengeError::Malformed)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(token) => Algorithm::parse(&token).ok_or(ChallengeError::Algorithm(token))?,
        };
        let qop_auth = get("qop").is_some_and(|qop| {
            qop.split(',')
                .any(|option| option.trim().eq_ignore_ascii_case("auth"))
        });
        Ok(Self {
            realm: get("realm").ok_or(ChallengeError::Missing("realm"))?,
            nonce: get("nonce").ok_or(ChallengeError::Missing("nonce"))?,
            algorithm,
            opaque: get("opaque"),
            qop_auth,
        })
    }

    /// The first challenge among `values` that we can answer, preferring SHA-256.
    pub fn best<'a>(values: impl Iterator<Item = &'a str>) -> Result<Self, ChallengeError> {
        let mut first_error = None;
        let mut usable: Vec<Self> = Vec::new();
        for value in values {
            match Self::parse(value) {
                Ok(challenge) => usable.push(challenge),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        usable.sort_by_key(|c| c.algorithm != Algorithm::Sha256);
        usable
            .into_iter()
            .next()
            .ok_or(first_error.unwrap_or(ChallengeError::Missing("challenge")))
    }

    /// The `Authorization` value for `method` on `uri`, with nonce count `nc` and a fresh cnonce.
    pub fn answer(
        &self,
        credentials: &DigestCredentials,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> Result<String, ChallengeError> {
        // A hash is bound to its realm: another realm cannot be answered from the same HA1.
        if self.realm != credentials.realm {
            return Err(ChallengeError::Realm {
                challenged: self.realm.clone(),
                configured: credentials.realm.clone(),
            });
        }
        let ha1 = match self.algorithm {
            Algorithm::Md5 => &credentials.ha1_md5,
            Algorithm::Sha256 => &credentials.ha1_sha256,
        };
        let ha2 = self.algorithm.hash(&[method.as_bytes(), uri.as_bytes()]);
        let mut header = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm={}",
            credentials.username,
            self.realm,
            self.nonce,
            self.algorithm.token()
        );
        let response = if self.qop_auth {
            let nc = format!("{nc:08x}");
            header.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
            self.algorithm.hash(&[
                ha1.as_bytes(),
                self.nonce.as_bytes(),
                nc.as_bytes(),
                cnonce.as_bytes(),
                b"auth",
                ha2.as_bytes(),
            ])
        } else {
            // RFC 2069 compatibility: carriers that do not offer qop.
            self.algorithm
                .hash(&[ha1.as_bytes(), self.nonce.as_bytes(), ha2.as_bytes()])
        };
        header.push_str(&format!(", response=\"{response}\""));
        if let Some(opaque) = &self.opaque {
            header.push_str(&format!(", opaque=\"{opaque}\""));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::digest::Credentials;

    fn credentials() -> DigestCredentials {
        DigestCredentials::derive("acme-trunk", "carrier.example", b"s3cret")
    }

    #[test]
    fn our_answer_verifies_on_the_server_side_with_either_algorithm() {
        for algorithm in ["MD5", "SHA-256"] {
            let challenge = ServerChallenge::parse(&format!(
                "Digest realm=\"carrier.example\", nonce=\"abc\", algorithm={algorithm}, qop=\"auth,auth-int\", opaque=\"xyz\""
            ))
            .unwrap();
            let header = challenge
                .answer(
                    &credentials(),
                    "INVITE",
                    "sip:+15551234567@carrier.example",
                    1,
                    "c1",
                )
                .unwrap();
            let parsed = Credentials::parse(&header).unwrap();
            let ha1 = match parsed.algorithm {
                Algorithm::Md5 => credentials().ha1_md5,
                Algorithm::Sha256 => credentials().ha1_sha256,
            };
            assert!(parsed.verify("INVITE", &ha1), "{algorithm}: {header}");
            assert!(header.contains("opaque=\"xyz\""));
        }
    }

    #[test]
    fn a_challenge_without_qop_gets_an_rfc_2069_answer() {
        let challenge =
            ServerChallenge::parse("Digest realm=\"carrier.example\", nonce=\"n\"").unwrap();
        let header = challenge
            .answer(&credentials(), "REGISTER", "sip:carrier.example", 1, "c")
            .unwrap();
        let ha2 = Algorithm::Md5.hash(&[b"REGISTER", b"sip:carrier.example"]);
        let expected =
            Algorithm::Md5.hash(&[credentials().ha1_md5.as_bytes(), b"n", ha2.as_bytes()]);
        assert!(header.contains(&expected), "{header}");
        assert!(!header.contains("qop"));
    }

    #[test]
    fn sha_256_is_preferred_among_several_challenges() {
        let best = ServerChallenge::best(
            [
                "Digest realm=\"r\", nonce=\"n\", algorithm=MD5",
                "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256",
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(best.algorithm, Algorithm::Sha256);
    }

    #[test]
    fn another_realm_cannot_be_answered_and_says_which() {
        let challenge = ServerChallenge::parse("Digest realm=\"other\", nonce=\"n\"").unwrap();
        let error = challenge
            .answer(&credentials(), "INVITE", "sip:x", 1, "c")
            .unwrap_err();
        assert!(error.to_string().contains("other"), "{error}");
    }
}
