//! Access tokens: JWT, HS256 only, every claim required and checked.
//! Time checks use the injected `now` (not the library's system clock) so
//! they are testable; `LEEWAY` (30 s) absorbs small clock differences between
//! the appliance and nothing else (tokens are only checked here).

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::secrets::Secret;

pub const ISSUER: &str = "arasuld";
pub const AUDIENCE: &str = "arasuld-admin";
pub const SUBJECT: &str = "admin";
pub const TOKEN_TYPE: &str = "access";
/// Allowed clock skew for `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 30;
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Claims of an access token. Every field is required: a token lacking one
/// fails to deserialize and is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// 128 random bits, hex: the session id.
    pub jti: String,
    pub typ: String,
}

impl Claims {
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.exp, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Why a token was refused. The HTTP layer answers 401 for all of them;
/// the distinction is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("session revoked")]
    Revoked,
    /// Well-formed and signed, but no session with this jti is known (e.g.
    /// issued before a restart while the DB was unreachable).
    #[error("unknown session")]
    UnknownSession,
}

fn invalid(reason: impl Into<String>) -> TokenError {
    TokenError::Invalid(reason.into())
}

/// Random 128-bit id, hex encoded.
pub fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    hex::encode(bytes)
}

fn is_jti(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Issues and checks tokens with one HMAC key.
pub struct TokenCodec {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: chrono::Duration,
}

impl std::fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCodec")
            .field("key", &"***")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TokenCodec {
    pub fn new(key: &Secret<Vec<u8>>, ttl: std::time::Duration) -> Self {
        super::jwt_crypto::install();
        let mut validation = Validation::new(Algorithm::HS256);
        // Only HS256: `decode` refuses any other header alg (none, RS256,
        // HS384, ...) before touching the key, which also defeats the
        // RS256/HS256 key-confusion trick.
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.sub = Some(SUBJECT.to_owned());
        // Checked below against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(key.expose()),
            decoding: DecodingKey::from_secret(key.expose()),
            validation,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(24)),
        }
    }

    pub fn ttl(&self) -> chrono::Duration {
        self.ttl
    }

    /// A fresh token valid from `now` for the configured TTL.
    pub fn issue(&self, now: DateTime<Utc>) -> anyhow::Result<(Secret<String>, Claims)> {
        let iat = now.timestamp();
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: SUBJECT.to_owned(),
            iat,
            nbf: iat,
            exp: iat + self.ttl.num_seconds(),
            jti: new_jti(),
            typ: TOKEN_TYPE.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| anyhow::anyhow!("signing token: {e}"))?;
        Ok((Secret::new(token), claims))
    }

    /// Signature, algorithm, issuer, audience, subject, type, id and time
    /// window. Session state (revocation) is checked by the caller.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        if header.crit.is_some() {
            return Err(invalid("critical header extensions are not supported"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidAlgorithm => invalid("algorithm not allowed"),
                ErrorKind::InvalidSignature => invalid("bad signature"),
                ErrorKind::InvalidIssuer => invalid("wrong issuer"),
                ErrorKind::InvalidAudience => invalid("wrong audience"),
                ErrorKind::InvalidSubject => invalid("wrong subject"),
                ErrorKind::MissingRequiredClaim(c) => invalid(format!("missing claim {c}")),
                _ => invalid(e.to_string()),
            })?;
        let c = data.claims;
        if c.typ != TOKEN_TYPE {
            return Err(invalid("wrong token type"));
        }
        if !is_jti(&c.jti) {
            return Err(invalid("malformed jti"));
        }
        if c.exp <= c.iat || c.nbf < c.iat {
            return Err(invalid("inconsistent time claims"));
        }
        let now = now.timestamp();
        if c.iat > now + LEEWAY_SECS {
            return Err(invalid("issued in the future"));
        }
        if c.nbf > now + LEEWAY_SECS {
            return Err(invalid("not yet valid"));
        }
        if now >= c.exp + LEEWAY_SECS {
            return Err(TokenError::Expired);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn b64url(data: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    fn key() -> Secret<Vec<u8>> {
        Secret::new(vec![7u8; 32])
    }

    fn codec() -> TokenCodec {
        TokenCodec::new(&key(), std::time::Duration::from_secs(24 * 3600))
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn good_claims() -> Value {
        let iat = now().timestamp();
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT,
            "iat": iat, "nbf": iat, "exp": iat + 3600,
            "jti": "00112233445566778899aabbccddeeff", "typ": TOKEN_TYPE,
        })
    }

    fn sign(alg: Algorithm, claims: &Value, key: &[u8]) -> String {
        crate::auth::jwt_crypto::install();
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
    }

    fn is_invalid(r: Result<Claims, TokenError>) -> bool {
        matches!(r, Err(TokenError::Invalid(_)))
    }

    #[test]
    fn issued_token_verifies_and_carries_all_claims() {
        let codec = codec();
        let (token, claims) = codec.issue(now()).unwrap();
        let back = codec.verify(token.expose(), now()).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.exp - back.iat, 24 * 3600);
        assert!(is_jti(&back.jti));
        // Also fine by hand-built HS256 with the right key.
        codec
            .verify(
                &sign(Algorithm::HS256, &good_claims(), key().expose()),
                now(),
            )
            .unwrap();
    }

    #[test]
    fn expired_token_is_rejected_after_the_leeway() {
        let codec = codec();
        let (token, claims) = codec.issue(now()).unwrap();
        let at_exp = DateTime::from_timestamp(claims.exp, 0).unwrap();
        codec.verify(token.expose(), at_exp).unwrap();
        let late = at_exp + chrono::Duration::seconds(LEEWAY_SECS);
        assert_eq!(codec.verify(token.expose(), late), Err(TokenError::Expired));
    }

    #[test]
    fn alg_none_token_is_rejected() {
        let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64url(good_claims().to_string().as_bytes());
        let codec = codec();
        assert!(is_invalid(
            codec.verify(&format!("{header}.{body}."), now())
        ));
        assert!(is_invalid(codec.verify(&format!("{header}.{body}"), now())));
        let header = b64url(br#"{"alg":"None"}"#);
        assert!(is_invalid(
            codec.verify(&format!("{header}.{body}."), now())
        ));
    }

    #[test]
    fn other_hmac_algorithms_with_the_right_key_are_rejected() {
        let codec = codec();
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let t = sign(alg, &good_claims(), key().expose());
            assert!(is_invalid(codec.verify(&t, now())), "{alg:?}");
        }
    }

    #[test]
    fn rs256_key_confusion_token_is_rejected() {
        // Header says RS256, signature is an HMAC made with our secret (what
        // a confused verifier treating the HMAC key as an RSA key would accept).
        let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
        let body = b64url(good_claims().to_string().as_bytes());
        let input = format!("{header}.{body}");
        crate::auth::jwt_crypto::install();
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(key().expose()),
            Algorithm::HS256,
        )
        .unwrap();
        assert!(is_invalid(codec().verify(&format!("{input}.{sig}"), now())));
    }

    #[test]
    fn hs256_token_signed_with_another_key_is_rejected() {
        let t = sign(Algorithm::HS256, &good_claims(), &[8u8; 32]);
        assert_eq!(
            codec().verify(&t, now()),
            Err(TokenError::Invalid("bad signature".into()))
        );
    }

    #[test]
    fn wrong_aud_iss_sub_or_typ_is_rejected() {
        let codec = codec();
        for (field, value) in [
            ("aud", json!("someone-else")),
            ("aud", json!(["arasuld-admin", "x"])),
            ("iss", json!("evil")),
            ("sub", json!("root")),
            ("typ", json!("refresh")),
            ("jti", json!("not-hex")),
        ] {
            let mut c = good_claims();
            c[field] = value.clone();
            let t = sign(Algorithm::HS256, &c, key().expose());
            assert!(is_invalid(codec.verify(&t, now())), "{field}={value}");
        }
    }

    #[test]
    fn token_missing_any_claim_is_rejected() {
        let codec = codec();
        for field in ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "typ"] {
            let mut c = good_claims();
            c.as_object_mut().unwrap().remove(field);
            let t = sign(Algorithm::HS256, &c, key().expose());
            assert!(is_invalid(codec.verify(&t, now())), "missing {field}");
        }
    }

    #[test]
    fn flipped_signature_byte_is_rejected() {
        let codec = codec();
        let (token, _) = codec.issue(now()).unwrap();
        let token = token.into_inner();
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut sig = sig.as_bytes().to_vec();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        let forged = format!("{head}.{}", String::from_utf8(sig).unwrap());
        assert!(is_invalid(codec.verify(&forged, now())));
    }

    #[test]
    fn token_from_the_future_or_not_yet_valid_is_rejected() {
        let codec = codec();
        let (token, _) = codec
            .issue(now() + chrono::Duration::seconds(LEEWAY_SECS + 5))
            .unwrap();
        assert!(is_invalid(codec.verify(token.expose(), now())));
        let (token, _) = codec.issue(now() + chrono::Duration::seconds(10)).unwrap();
        codec.verify(token.expose(), now()).unwrap();
    }

    #[test]
    fn garbage_and_oversized_tokens_are_rejected() {
        let codec = codec();
        assert!(is_invalid(codec.verify("", now())));
        assert!(is_invalid(codec.verify("a.b.c", now())));
        assert!(is_invalid(codec.verify(&"a".repeat(5000), now())));
    }
}
