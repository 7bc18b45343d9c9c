//! jsonwebtoken's crypto provider for the one family arasuld signs with,
//! HMAC, on `ring` (which rustls links anyway). The crate's own
//! `rust_crypto` provider would also link RSA, ECDSA and EdDSA, which a
//! token of ours never uses: `TokenCodec` accepts HS256 alone, and decoding
//! refuses any other header `alg` before a key is touched. HS384 and HS512
//! are here only so a test can sign such a token and see it refused.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};

struct Hmac {
    alg: Algorithm,
    key: ring::hmac::Key,
}

impl Hmac {
    fn new(alg: Algorithm, family: AlgorithmFamily, secret: &[u8]) -> Result<Hmac> {
        if family != AlgorithmFamily::Hmac {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        let digest = match alg {
            Algorithm::HS256 => ring::hmac::HMAC_SHA256,
            Algorithm::HS384 => ring::hmac::HMAC_SHA384,
            Algorithm::HS512 => ring::hmac::HMAC_SHA512,
            _ => return Err(ErrorKind::InvalidAlgorithm.into()),
        };
        Ok(Hmac {
            alg,
            key: ring::hmac::Key::new(digest, secret),
        })
    }
}

impl signature::Signer<Vec<u8>> for Hmac {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(ring::hmac::sign(&self.key, msg).as_ref().to_vec())
    }
}

impl signature::Verifier<Vec<u8>> for Hmac {
    /// Constant-time comparison (ring's).
    fn verify(&self, msg: &[u8], tag: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        ring::hmac::verify(&self.key, msg, tag).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Hmac {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

impl JwtVerifier for Hmac {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: |alg, key: &EncodingKey| {
        Ok(Box::new(Hmac::new(*alg, key.family(), key.as_bytes())?))
    },
    verifier_factory: |alg, key: &DecodingKey| {
        Ok(Box::new(Hmac::new(
            *alg,
            key.family(),
            key.try_get_as_bytes()?,
        )?))
    },
    // JWKs (key sets of other issuers) are never read.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes this the process's provider; before any token is signed or read.
/// Idempotent: a second call finds it installed.
pub fn install() {
    let _ = PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (key "Jefe"), as jsonwebtoken signs it
    /// (base64url, no padding).
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        install();
        let sig = jsonwebtoken::crypto::sign(
            b"what do ya want for nothing?",
            &EncodingKey::from_secret(b"Jefe"),
            Algorithm::HS256,
        )
        .unwrap();
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        use base64::Engine as _;
        let got = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sig)
            .unwrap();
        assert_eq!(hex::encode(got), want);
        let key = DecodingKey::from_secret(b"Jefe");
        let ok = |s: &str| {
            jsonwebtoken::crypto::verify(s, b"what do ya want for nothing?", &key, Algorithm::HS256)
                .unwrap()
        };
        assert!(ok(&sig));
        let mut bad = sig.into_bytes();
        bad[3] ^= 1;
        assert!(!ok(std::str::from_utf8(&bad).unwrap()));
    }

    #[test]
    fn other_families_are_an_error_not_a_panic() {
        install();
        let r = jsonwebtoken::crypto::sign(b"x", &EncodingKey::from_secret(b"k"), Algorithm::RS256);
        assert!(r.is_err(), "{r:?}");
    }
}
