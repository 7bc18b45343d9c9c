//! Trusted update keys and signature checks over the manifest bytes (ring).
//! Owns the key files' format (SPKI PEM: Ed25519 or RSA ≥ 2048 bit) and the
//! vendor-side signing keys (PKCS#8 PEM); it never parses a manifest.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{self, KeyPair as _};

/// OID 1.3.101.112 (Ed25519), DER-encoded content bytes.
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
/// OID 1.2.840.113549.1.1.1 (rsaEncryption).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// OID 1.2.840.113549.1.1.10 (RSASSA-PSS keys), named only to refuse it clearly.
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
/// Largest key file read; a PEM public key of RSA-8192 is ~1.5 KiB.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The signature scheme that verified a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Algorithm {
    #[serde(rename = "ed25519")]
    Ed25519,
    #[serde(rename = "rsa-pkcs1-sha256")]
    RsaPkcs1Sha256,
    #[serde(rename = "rsa-pss-sha256")]
    RsaPssSha256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            Algorithm::RsaPssSha256 => "rsa-pss-sha256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which trusted key verified the manifest, and how.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignatureInfo {
    /// File name of the key in the keys dir (e.g. `vendor.pem`).
    pub key: String,
    pub algorithm: Algorithm,
}

#[derive(Clone)]
enum PublicKey {
    /// Raw 32-byte Ed25519 key.
    Ed25519(Vec<u8>),
    /// DER RSAPublicKey (PKCS#1), as ring wants it.
    Rsa { der: Vec<u8>, bits: usize },
}

#[derive(Clone)]
struct TrustedKey {
    name: String,
    key: PublicKey,
}

/// The public keys a bundle may be signed with. Empty means every bundle is
/// refused (`no_trusted_key`): updates fail closed.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// A key file that cannot be used; names the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeyError {
    pub path: PathBuf,
    pub reason: String,
}

impl TrustedKeys {
    /// Loads every `*.pem` in `dir` (sorted by name). A missing dir gives no
    /// keys (every bundle is then refused); an unreadable or malformed key
    /// file is an error naming it, so a typo is not silently ignored.
    pub fn load(dir: &Path) -> Result<TrustedKeys, KeyError> {
        let err = |path: &Path, reason: String| KeyError {
            path: path.to_owned(),
            reason,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TrustedKeys::default());
            }
            Err(e) => return Err(err(dir, format!("cannot read the keys dir: {e}"))),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| err(dir, format!("cannot read the keys dir: {e}")))?;
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "pem") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut keys = TrustedKeys::default();
        for path in paths {
            let meta = std::fs::metadata(&path).map_err(|e| err(&path, e.to_string()))?;
            if meta.len() > MAX_KEY_FILE {
                return Err(err(&path, format!("larger than {MAX_KEY_FILE} bytes")));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e.to_string()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            keys.add_pem(&name, &text)
                .map_err(|reason| err(&path, reason))?;
        }
        Ok(keys)
    }

    /// Adds one SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn add_pem(&mut self, name: &str, pem: &str) -> Result<(), String> {
        let der = pem_decode(pem, "PUBLIC KEY")?;
        let key = parse_spki(&der)?;
        self.keys.push(TrustedKey {
            name: name.to_owned(),
            key,
        });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Key names (file names), in load order.
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// Checks `sig` over `message` against every key: Ed25519 (64 raw bytes),
    /// RSA PKCS#1 v1.5 with SHA-256, RSA-PSS with SHA-256 (salt = 32 bytes).
    /// `None` when no key verifies it.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Option<SignatureInfo> {
        for k in &self.keys {
            let hit = match &k.key {
                PublicKey::Ed25519(raw) => (sig.len() == 64
                    && signature::UnparsedPublicKey::new(&signature::ED25519, raw)
                        .verify(message, sig)
                        .is_ok())
                .then_some(Algorithm::Ed25519),
                PublicKey::Rsa { der, .. } => {
                    if signature::UnparsedPublicKey::new(
                        &signature::RSA_PKCS1_2048_8192_SHA256,
                        der,
                    )
                    .verify(message, sig)
                    .is_ok()
                    {
                        Some(Algorithm::RsaPkcs1Sha256)
                    } else if signature::UnparsedPublicKey::new(
                        &signature::RSA_PSS_2048_8192_SHA256,
                        der,
                    )
                    .verify(message, sig)
                    .is_ok()
                    {
                        Some(Algorithm::RsaPssSha256)
                    } else {
                        None
                    }
                }
            };
            if let Some(algorithm) = hit {
                return Some(SignatureInfo {
                    key: k.name.clone(),
                    algorithm,
                });
            }
        }
        None
    }
}

/// A vendor's private signing key (PKCS#8 PEM, or PKCS#1 `RSA PRIVATE KEY`).
pub enum SigningKey {
    Ed25519(signature::Ed25519KeyPair),
    Rsa(signature::RsaKeyPair),
}

impl SigningKey {
    /// Reads an Ed25519 (PKCS#8 v1 or v2, e.g. from `openssl genpkey -algorithm
    /// ed25519` or `bundle keygen`) or RSA (≥ 2048 bit) private key.
    pub fn from_pem(pem: &str) -> Result<SigningKey, String> {
        if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            let der = pem_decode(pem, "RSA PRIVATE KEY")?;
            return rsa_key(signature::RsaKeyPair::from_der(&der));
        }
        let der = pem_decode(pem, "PRIVATE KEY")?;
        if let Ok(k) = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
            return Ok(SigningKey::Ed25519(k));
        }
        match signature::RsaKeyPair::from_pkcs8(&der) {
            Ok(k) => rsa_key(Ok(k)),
            Err(e) => Err(format!(
                "not an Ed25519 or RSA private key in PKCS#8 form ({e})"
            )),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            SigningKey::Ed25519(_) => Algorithm::Ed25519,
            SigningKey::Rsa(_) => Algorithm::RsaPkcs1Sha256,
        }
    }

    /// Signs `message`: Ed25519, or RSA PKCS#1 v1.5 SHA-256 (what `openssl dgst
    /// -sha256 -sign` makes).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            SigningKey::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
            SigningKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    message,
                    &mut sig,
                )
                .map_err(|_| "RSA signing failed".to_owned())?;
                Ok(sig)
            }
        }
    }

    /// The matching public key as SPKI PEM, to put in the keys dir.
    pub fn public_pem(&self) -> String {
        match self {
            SigningKey::Ed25519(k) => {
                pem_encode("PUBLIC KEY", &ed25519_spki(k.public_key().as_ref()))
            }
            SigningKey::Rsa(k) => {
                let rsa = k.public().as_ref();
                let alg = der_tlv(0x30, &[der_tlv(0x06, OID_RSA), vec![0x05, 0x00]].concat());
                let bits = der_tlv(0x03, &[&[0u8][..], rsa].concat());
                pem_encode("PUBLIC KEY", &der_tlv(0x30, &[alg, bits].concat()))
            }
        }
    }
}

fn rsa_key(
    k: Result<signature::RsaKeyPair, ring::error::KeyRejected>,
) -> Result<SigningKey, String> {
    let k = k.map_err(|e| format!("RSA private key rejected: {e}"))?;
    if k.public().modulus_len() * 8 < 2048 {
        return Err(format!(
            "RSA key of {} bits; at least 2048 are required",
            k.public().modulus_len() * 8
        ));
    }
    Ok(SigningKey::Rsa(k))
}

/// A new Ed25519 key pair: (PKCS#8 v2 private PEM, SPKI public PEM).
pub fn generate_ed25519() -> Result<(String, String), String> {
    let rng = ring::rand::SystemRandom::new();
    let doc = signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| "key generation failed".to_owned())?;
    let pair = signature::Ed25519KeyPair::from_pkcs8(doc.as_ref())
        .map_err(|e| format!("generated key rejected: {e}"))?;
    Ok((
        pem_encode("PRIVATE KEY", doc.as_ref()),
        pem_encode("PUBLIC KEY", &ed25519_spki(pair.public_key().as_ref())),
    ))
}

fn ed25519_spki(raw: &[u8]) -> Vec<u8> {
    let alg = der_tlv(0x30, &der_tlv(0x06, OID_ED25519));
    let bits = der_tlv(0x03, &[&[0u8][..], raw].concat());
    der_tlv(0x30, &[alg, bits].concat())
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first `label` block of `pem`.
fn pem_decode(pem: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| format!("no \"{begin}\" block"))?
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or_else(|| format!("no \"{end}\" line"))?
        + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("bad base64 in the PEM block: {e}"))
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Reads one DER TLV from the front of `input`: (tag, content, rest).
fn der_read(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "malformed DER".to_owned();
    let (&tag, rest) = input.split_first().ok_or_else(bad)?;
    let (&len0, mut rest) = rest.split_first().ok_or_else(bad)?;
    let len = if len0 < 0x80 {
        len0 as usize
    } else {
        let n = (len0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// SubjectPublicKeyInfo → a key ring can verify with.
fn parse_spki(der: &[u8]) -> Result<PublicKey, String> {
    let (tag, spki, trailing) = der_read(der)?;
    if tag != 0x30 || !trailing.is_empty() {
        return Err("not a SubjectPublicKeyInfo".into());
    }
    let (tag, alg, rest) = der_read(spki)?;
    if tag != 0x30 {
        return Err("not a SubjectPublicKeyInfo".into());
    }
    let (tag, bits, rest) = der_read(rest)?;
    if tag != 0x03 || !rest.is_empty() || bits.first() != Some(&0) {
        return Err("not a SubjectPublicKeyInfo".into());
    }
    let key = &bits[1..];
    let (tag, oid, _params) = der_read(alg)?;
    if tag != 0x06 {
        return Err("not a SubjectPublicKeyInfo".into());
    }
    if oid == OID_ED25519 {
        if key.len() != 32 {
            return Err("Ed25519 key is not 32 bytes".into());
        }
        Ok(PublicKey::Ed25519(key.to_vec()))
    } else if oid == OID_RSA {
        let (tag, seq, rest) = der_read(key)?;
        if tag != 0x30 || !rest.is_empty() {
            return Err("malformed RSA public key".into());
        }
        let (tag, n, _) = der_read(seq)?;
        if tag != 0x02 {
            return Err("malformed RSA public key".into());
        }
        let n = match n.iter().position(|b| *b != 0) {
            Some(i) => &n[i..],
            None => return Err("malformed RSA public key".into()),
        };
        let bits = n.len() * 8 - n[0].leading_zeros() as usize;
        if bits < 2048 {
            return Err(format!(
                "RSA key of {bits} bits; at least 2048 are required"
            ));
        }
        if bits > 8192 {
            return Err(format!(
                "RSA key of {bits} bits; at most 8192 are supported"
            ));
        }
        Ok(PublicKey::Rsa {
            der: key.to_vec(),
            bits,
        })
    } else if oid == OID_RSA_PSS {
        Err("RSASSA-PSS-restricted keys are not supported; use a plain RSA key (PSS signatures still verify)".into())
    } else {
        Err("unsupported key type (Ed25519 or RSA expected)".into())
    }
}

impl TrustedKeys {
    /// One line per key: name, type and size, for `bundle inspect`.
    pub fn describe(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| match &k.key {
                PublicKey::Ed25519(_) => format!("{} (ed25519)", k.name),
                PublicKey::Rsa { bits, .. } => format!("{} (rsa-{bits})", k.name),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_signs_and_its_public_pem_verifies() {
        let (private, public) = generate_ed25519().unwrap();
        let key = SigningKey::from_pem(&private).unwrap();
        assert_eq!(key.public_pem(), public);
        let sig = key.sign(b"manifest").unwrap();
        let mut keys = TrustedKeys::default();
        keys.add_pem("a.pem", &public).unwrap();
        let info = keys.verify(b"manifest", &sig).unwrap();
        assert_eq!(info.key, "a.pem");
        assert_eq!(info.algorithm, Algorithm::Ed25519);
        assert!(keys.verify(b"manifesT", &sig).is_none());
    }

    #[test]
    fn non_key_pem_is_refused_with_a_reason() {
        let mut keys = TrustedKeys::default();
        let e = keys.add_pem("x.pem", "hello").unwrap_err();
        assert!(e.contains("BEGIN PUBLIC KEY"), "{e}");
        let e = keys
            .add_pem(
                "x.pem",
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            )
            .unwrap_err();
        assert!(
            e.contains("SubjectPublicKeyInfo") || e.contains("DER"),
            "{e}"
        );
    }
}
