//! Bodies of the fuzz targets, shared by `fuzz/` (cargo-fuzz, nightly) and
//! the seeded stable run in tests/bundle_fuzz.rs, so both drive the same
//! code. They must never panic, whatever the bytes.

use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::Version;
use super::bundle::{self, MANIFEST_NAME, SIGNATURE_NAME};
use super::keys::TrustedKeys;
use super::manifest::Manifest;
use super::verify::{VerifyLimits, check_reader};

/// The fixed key the structured mode signs with (a fuzz-only seed).
fn fuzz_key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a fixed 32-byte seed is a valid key")
}

fn fuzz_keys(key: &Ed25519KeyPair) -> TrustedKeys {
    let raw = key.public_key().as_ref();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(raw);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, spki)
    );
    let mut keys = TrustedKeys::default();
    keys.add_pem("fuzz.pem", &pem)
        .expect("the fuzz key's PEM is well-formed");
    keys
}

/// Small limits so that the fuzzer reaches every limit check quickly.
fn limits() -> VerifyLimits {
    VerifyLimits {
        max_bundle_bytes: 1 << 20,
        max_manifest_bytes: 64 << 10,
        max_sig_bytes: 1024,
    }
}

/// Input byte 0 even: the rest is the bundle as is (header parsing, limits,
/// signature refusal). Odd: bytes 1..3 are a little-endian manifest length,
/// then the manifest, then the tar after the signature; the harness adds the
/// two headers and a valid signature, so manifest parsing, version checks and
/// payload member handling are reached too.
pub fn bundle_reader(data: &[u8]) {
    let key = fuzz_key();
    let keys = fuzz_keys(&key);
    let installed = Version::new(1, 0, 0);
    let Some((&mode, rest)) = data.split_first() else {
        let _ = check_reader(data, &keys, &installed, &limits());
        return;
    };
    if mode % 2 == 0 {
        let _ = check_reader(rest, &keys, &installed, &limits());
        return;
    }
    if rest.len() < 2 {
        return;
    }
    let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
    let rest = &rest[2..];
    let (manifest, tail) = rest.split_at(len.min(rest.len()));
    let bundle = signed_bundle(&key, manifest, tail);
    if let Ok(ok) = check_reader(&bundle[..], &keys, &installed, &limits()) {
        // Whatever was accepted is self-consistent.
        assert!(ok.manifest.payload_bytes() <= ok.size);
        assert_eq!(ok.size, bundle.len() as u64);
        assert!(ok.manifest.version > installed);
    }
}

/// manifest.json + manifest.sig (valid, by `key`) + `tail` verbatim.
pub fn signed_bundle(key: &Ed25519KeyPair, manifest: &[u8], tail: &[u8]) -> Vec<u8> {
    let sig = key.sign(manifest);
    let mut out = Vec::with_capacity(manifest.len() + tail.len() + 2048);
    for (name, body) in [(MANIFEST_NAME, manifest), (SIGNATURE_NAME, sig.as_ref())] {
        let h =
            bundle::file_header(name, body.len() as u64, 0).expect("fixed member names are valid");
        out.extend_from_slice(&h);
        out.extend_from_slice(body);
        out.resize(out.len() + bundle::padding(body.len() as u64) as usize, 0);
    }
    out.extend_from_slice(tail);
    out
}

/// Manifest parser: never panics; what parses, serialises and parses back
/// to the same manifest.
pub fn manifest_parser(data: &[u8]) {
    if let Ok(m) = Manifest::parse(data) {
        let again = Manifest::parse(&m.to_bytes()).expect("a parsed manifest re-parses");
        assert_eq!(again, m);
    }
}

/// Starting inputs for `bundle_reader`: a valid structured bundle (accepted)
/// and the same bundle raw, signed by the fuzz key. The fuzzers mutate these.
pub fn bundle_seeds() -> Vec<Vec<u8>> {
    use super::bundle::BundleWriter;
    let key = fuzz_key();
    let a = b"image layer bytes ".repeat(40);
    let b = b"CREATE TABLE x (id int);\n".to_vec();
    let sha = |d: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, d).as_ref());
    let manifest = format!(
        r#"{{"format":1,"version":"1.1.0","min_version":"1.0.0","build_hash":"f","created_at":"2026-01-01T00:00:00Z","release_notes":"","requires_reboot":false,"components":{{"images":[{{"service":"llm","image":"a/llm:2","file":"payload/image-llm.tar","size":{},"sha256":"{}"}}],"migrations":[{{"name":"0100.sql","file":"payload/migration-0100.sql","size":{},"sha256":"{}","transactional":false}}]}}}}"#,
        a.len(),
        sha(&a),
        b.len(),
        sha(&b)
    );
    let mut tail = BundleWriter::new(Vec::new(), 0);
    let ok = tail
        .append_bytes("payload/image-llm.tar", &a)
        .and_then(|()| tail.append_bytes("payload/migration-0100.sql", &b));
    let tail = match ok.and_then(|()| tail.finish()) {
        Ok(t) => t,
        Err(_) => return Vec::new(),
    };
    let len = (manifest.len() as u16).to_le_bytes();
    let mut structured = vec![1u8, len[0], len[1]];
    structured.extend_from_slice(manifest.as_bytes());
    structured.extend_from_slice(&tail);
    let mut raw = vec![0u8];
    raw.extend_from_slice(&signed_bundle(&key, manifest.as_bytes(), &tail));
    vec![structured, raw]
}

/// Starting inputs for `manifest_parser`.
pub fn manifest_seeds() -> Vec<Vec<u8>> {
    bundle_seeds()
        .first()
        .map(|s| {
            let len = u16::from_le_bytes([s[1], s[2]]) as usize;
            vec![s[3..3 + len].to_vec()]
        })
        .unwrap_or_default()
}

/// Whether the first seed passes verification (the harness reaches the payload).
pub fn structured_seed_is_accepted() -> bool {
    let key = fuzz_key();
    let Some(s) = bundle_seeds().into_iter().next() else {
        return false;
    };
    let len = u16::from_le_bytes([s[1], s[2]]) as usize;
    let bundle = signed_bundle(&key, &s[3..3 + len], &s[3 + len..]);
    check_reader(
        &bundle[..],
        &fuzz_keys(&key),
        &Version::new(1, 0, 0),
        &limits(),
    )
    .is_ok()
}
