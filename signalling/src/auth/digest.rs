//! Digest challenges and the verification of credentials against HA1 hashes.

use std::fmt;

use md5::Md5;
use sha2::Sha256;

/// A digest algorithm SIP UAs use (RFC 8760: SHA-256 preferred, MD5 for older phones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The `algorithm=` token.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm=` token (case-insensitive).
    pub fn parse(token: &str) -> Option<Self> {
        match token.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// Lowercase hex of H(`parts` joined by `:`).
    pub fn hash(self, parts: &[&[u8]]) -> String {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> String {
            let mut digest = D::new();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    digest.update(b":");
                }
                digest.update(part);
            }
            hex::encode(digest.finalize())
        }
        match self {
            Algorithm::Md5 => run::<Md5>(parts),
            Algorithm::Sha256 => run::<Sha256>(parts),
        }
    }
}

/// The fields of an `Authorization` (or `Proxy-Authorization`) header with the Digest scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    pub qop: Option<String>,
    /// Nonce count, parsed from 8 hex digits.
    pub nc: Option<u32>,
}

/// Why an Authorization header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("Authorization: not the Digest scheme")]
    NotDigest,
    #[error("Authorization: missing {0}")]
    Missing(&'static str),
    #[error("Authorization: unsupported algorithm {0:?}")]
    Algorithm(String),
    #[error("Authorization: malformed {0}")]
    Malformed(&'static str),
}

impl Credentials {
    /// Parses the value of an Authorization header (`Digest username="…", …`).
    pub fn parse(value: &str) -> Result<Self, CredentialsError> {
        let params = digest_params(value)
            .ok_or(CredentialsError::NotDigest)?
            .ok_or(CredentialsError::Malformed("parameter list"))?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let required = |name: &'static str| get(name).ok_or(CredentialsError::Missing(name));
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(token) => Algorithm::parse(&token).ok_or(CredentialsError::Algorithm(token))?,
        };
        let nc = match get("nc") {
            None => None,
            Some(nc) if nc.len() == 8 => {
                Some(u32::from_str_radix(&nc, 16).map_err(|_| CredentialsError::Malformed("nc"))?)
            }
            Some(_) => return Err(CredentialsError::Malformed("nc")),
        };
        Ok(Self {
            username: required("username")?,
            realm: required("realm")?,
            nonce: required("nonce")?,
            uri: required("uri")?,
            response: required("response")?,
            algorithm,
            cnonce: get("cnonce"),
            qop: get("qop"),
            nc,
        })
    }

    /// Checks the response against the user's HA1 for this algorithm (qop=auth required: it is
    /// what carries the nonce count that replay protection needs).
    pub fn verify(&self, method: &str, ha1: &str) -> bool {
        let (Some(qop), Some(cnonce), Some(nc)) = (&self.qop, &self.cnonce, self.nc) else {
            return false;
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return false;
        }
        let ha2 = self
            .algorithm
            .hash(&[method.as_bytes(), self.uri.as_bytes()]);
        let nc = format!("{nc:08x}");
        let expected = self.algorithm.hash(&[
            ha1.as_bytes(),
            self.nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ]);
        constant_time_eq(
            expected.as_bytes(),
            self.response.to_ascii_lowercase().as_bytes(),
        )
    }
}

/// A `WWW-Authenticate` challenge value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge<'a> {
    pub realm: &'a str,
    pub nonce: &'a str,
    pub algorithm: Algorithm,
    /// The credentials were right but the nonce expired: the UA retries without asking the user.
    pub stale: bool,
}

impl fmt::Display for Challenge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"",
            self.realm,
            self.nonce,
            self.algorithm.token()
        )?;
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

/// RFC 8760 §2.4's order of preference: SHA-256, then MD5 for older phones.
pub const PREFERRED: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

/// The challenges of a 401, one per algorithm, most preferred first.
pub fn challenges<'a>(
    realm: &'a str,
    nonce: &'a str,
    stale: bool,
    algorithms: &[Algorithm],
) -> Vec<Challenge<'a>> {
    algorithms
        .iter()
        .map(|&algorithm| Challenge {
            realm,
            nonce,
            algorithm,
            stale,
        })
        .collect()
}

/// The parameters of a `Digest …` header value: `None` when the scheme is not Digest,
/// `Some(None)` when the parameter list is malformed.
pub(crate) fn digest_params(value: &str) -> Option<Option<Vec<(String, String)>>> {
    let (scheme, params) = value
        .trim_start()
        .split_once(|c: char| c.is_ascii_whitespace())?;
    scheme
        .eq_ignore_ascii_case("Digest")
        .then(|| auth_params(params))
}

/// `name=value` pairs of an auth-param list; values may be quoted strings with escapes.
fn auth_params(input: &str) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut rest = input.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace() || c == '"') {
            return None;
        }
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            quoted_string(quoted)?
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.push((name.to_string(), value));
        rest = after.trim_start();
        rest = match rest.strip_prefix(',') {
            Some(next) => next.trim_start(),
            None if rest.is_empty() => rest,
            None => return None,
        };
        if params.len() > 32 {
            return None;
        }
    }
    Some(params)
}

/// The content of a quoted string (after its opening quote) and what follows it.
fn quoted_string(input: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = input.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &input[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1: the SHA-256 example (HTTP, but the computation is the same).
    const RFC7616: &str = r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;

    #[test]
    fn rfc_7616_sha256_example_verifies() {
        let credentials = Credentials::parse(RFC7616).unwrap();
        assert_eq!(credentials.algorithm, Algorithm::Sha256);
        assert_eq!(credentials.nc, Some(1));
        let ha1 = Algorithm::Sha256.hash(&[b"Mufasa", b"http-auth@example.org", b"Circle of Life"]);
        assert!(credentials.verify("GET", &ha1));
        assert!(
            !credentials.verify("POST", &ha1),
            "the method is part of HA2"
        );
    }

    #[test]
    fn a_wrong_password_fails() {
        let credentials = Credentials::parse(RFC7616).unwrap();
        let ha1 = Algorithm::Sha256.hash(&[b"Mufasa", b"http-auth@example.org", b"wrong"]);
        assert!(!credentials.verify("GET", &ha1));
    }

    #[test]
    fn md5_is_the_default_algorithm_and_sip_style_uris_parse() {
        let value = r#"Digest username="100",realm="acme.example.com",nonce="abc",uri="sip:acme.example.com",response="x",qop=auth,nc=0000000a,cnonce="c""#;
        let credentials = Credentials::parse(value).unwrap();
        assert_eq!(
            (credentials.algorithm, credentials.nc),
            (Algorithm::Md5, Some(10))
        );
        assert_eq!(credentials.uri, "sip:acme.example.com");
    }

    #[test]
    fn without_qop_the_credentials_are_refused() {
        let value = r#"Digest username="100", realm="r", nonce="n", uri="sip:r", response="00""#;
        let credentials = Credentials::parse(value).unwrap();
        let ha1 = Algorithm::Md5.hash(&[b"100", b"r", b"pw"]);
        assert!(!credentials.verify("REGISTER", &ha1));
    }

    #[test]
    fn malformed_headers_name_what_is_wrong() {
        assert_eq!(
            Credentials::parse("Basic abc"),
            Err(CredentialsError::NotDigest)
        );
        assert_eq!(
            Credentials::parse(r#"Digest realm="r""#),
            Err(CredentialsError::Missing("username"))
        );
        let bad_nc = r#"Digest username="u", realm="r", nonce="n", uri="u", response="x", nc=1"#;
        assert_eq!(
            Credentials::parse(bad_nc),
            Err(CredentialsError::Malformed("nc"))
        );
        let bad_alg =
            r#"Digest username="u", realm="r", nonce="n", uri="u", response="x", algorithm=SHA-1"#;
        assert_eq!(
            Credentials::parse(bad_alg),
            Err(CredentialsError::Algorithm("SHA-1".into()))
        );
        assert_eq!(
            Credentials::parse(r#"Digest username="unterminated"#),
            Err(CredentialsError::Malformed("parameter list"))
        );
    }

    #[test]
    fn quoted_strings_keep_escaped_characters() {
        let value = r#"Digest username="a\"b", realm="r", nonce="n", uri="u", response="x""#;
        assert_eq!(Credentials::parse(value).unwrap().username, "a\"b");
    }

    #[test]
    fn challenges_offer_sha256_first_then_md5() {
        let [first, second] = challenges("acme.example.com", "n1", true, &PREFERRED)
            .try_into()
            .unwrap();
        assert_eq!(
            first.to_string(),
            r#"Digest realm="acme.example.com", nonce="n1", algorithm=SHA-256, qop="auth", stale=true"#
        );
        assert_eq!(second.algorithm, Algorithm::Md5);
    }
}
