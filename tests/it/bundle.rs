//! Update bundles (format 1): every malformed, tampered or unsuitable bundle
//! is refused with its code and leaves nothing in staging; good bundles made
//! by `arasuld bundle create`, by GNU tar + `openssl dgst -sign`, with Ed25519
//! and RSA (PKCS#1 v1.5 and PSS) keys verify and stage exactly their payload.

use std::path::{Path, PathBuf};
use std::process::Command;

use arasuld::update::keys::{SigningKey, generate_ed25519};
use arasuld::update::manifest::{Components, ConfigComponent, ImageComponent, MigrationComponent};
use arasuld::update::verify::check_reader;
use arasuld::update::{
    BundleError, Manifest, TrustedKeys, VerifiedBundle, VerifyLimits, Version, verify_bundle,
};
use rand::{RngCore, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_arasuld");

fn sha256(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// A raw ustar header, built by hand so that tests can make malformed ones.
fn raw_header(name: &[u8], size: u64, typeflag: u8, link: &[u8], prefix: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    if size < 0o77777777777 {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        h[124] = 0x80; // GNU base-256
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[345..345 + prefix.len()].copy_from_slice(prefix);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// One member as it goes into the tar: header and data (padded on output).
#[derive(Clone)]
struct Member {
    header: [u8; 512],
    data: Vec<u8>,
}

fn file(name: &str, data: &[u8]) -> Member {
    Member {
        header: raw_header(name.as_bytes(), data.len() as u64, b'0', b"", b""),
        data: data.to_vec(),
    }
}

fn special(name: &[u8], typeflag: u8, link: &[u8]) -> Member {
    Member {
        header: raw_header(name, 0, typeflag, link, b""),
        data: Vec::new(),
    }
}

fn tar(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        out.extend_from_slice(&m.header);
        out.extend_from_slice(&m.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The pieces of a good bundle, to be tampered with.
#[derive(Clone)]
struct Parts {
    manifest: Manifest,
    payload: Vec<(String, Vec<u8>)>,
}

fn parts(version: &str, min: &str) -> Parts {
    let image = b"image tarball bytes".repeat(100);
    let sql = b"CREATE TABLE t (id int);\n".to_vec();
    let conf = b"key: value\n".to_vec();
    let manifest = Manifest {
        format: 1,
        version: version.parse().unwrap(),
        min_version: min.parse().unwrap(),
        build_hash: "deadbeef".into(),
        created_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        release_notes: "test".into(),
        requires_reboot: false,
        components: Components {
            images: vec![ImageComponent {
                service: "llm".into(),
                image: "arasul/llm:2".into(),
                file: "payload/image-llm.tar".into(),
                size: image.len() as u64,
                sha256: sha256(&image),
            }],
            models: vec![],
            migrations: vec![MigrationComponent {
                name: "0100_t.sql".into(),
                file: "payload/migration-0100_t.sql".into(),
                size: sql.len() as u64,
                sha256: sha256(&sql),
                transactional: true,
            }],
            configs: vec![ConfigComponent {
                name: "app.yaml".into(),
                file: "payload/config-app.yaml".into(),
                size: conf.len() as u64,
                sha256: sha256(&conf),
            }],
            package: None,
        },
    };
    Parts {
        manifest,
        payload: vec![
            ("payload/image-llm.tar".into(), image),
            ("payload/migration-0100_t.sql".into(), sql),
            ("payload/config-app.yaml".into(), conf),
        ],
    }
}

struct Kit {
    dir: tempfile::TempDir,
    key: SigningKey,
    other: SigningKey,
    keys: TrustedKeys,
}

impl Kit {
    fn new() -> Kit {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = generate_ed25519().unwrap();
        let (other, _) = generate_ed25519().unwrap();
        let kdir = dir.path().join("keys");
        std::fs::create_dir(&kdir).unwrap();
        std::fs::write(kdir.join("vendor.pem"), public).unwrap();
        Kit {
            keys: TrustedKeys::load(&kdir).unwrap(),
            key: SigningKey::from_pem(&private).unwrap(),
            other: SigningKey::from_pem(&other).unwrap(),
            dir,
        }
    }

    /// manifest.json, manifest.sig (by `key`), then the payload.
    fn members(&self, p: &Parts, key: &SigningKey) -> Vec<Member> {
        let bytes = p.manifest.to_bytes();
        let sig = key.sign(&bytes).unwrap();
        let mut m = vec![file("manifest.json", &bytes), file("manifest.sig", &sig)];
        m.extend(p.payload.iter().map(|(n, d)| file(n, d)));
        m
    }

    fn good(&self) -> Vec<Member> {
        self.members(&parts("0.2.0", "0.1.0"), &self.key)
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn staging_root(&self) -> PathBuf {
        self.dir.path().join("staging")
    }

    fn verify_with(
        &self,
        bundle: &Path,
        keys: &TrustedKeys,
        installed: &str,
        limits: &VerifyLimits,
    ) -> Result<VerifiedBundle, BundleError> {
        let staging = self.staging_root().join("incoming");
        verify_bundle(bundle, keys, &installed.parse().unwrap(), &staging, limits)
    }
}

/// Files under `dir`, recursively (dirs included), for "nothing left behind".
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path());
            out.extend(leftovers(&e.path()));
        }
    }
    out
}

struct Case {
    name: &'static str,
    bundle: Vec<u8>,
    keys: Option<TrustedKeys>,
    installed: &'static str,
    limits: VerifyLimits,
    code: &'static str,
    /// A fragment the message must contain (the reason, not just the code).
    says: &'static str,
}

fn case(name: &'static str, bundle: Vec<u8>, code: &'static str, says: &'static str) -> Case {
    Case {
        name,
        bundle,
        keys: None,
        installed: "0.1.0",
        limits: VerifyLimits::default(),
        code,
        says,
    }
}

#[test]
fn every_bad_bundle_is_refused_with_its_code_and_leaves_nothing_in_staging() {
    let kit = Kit::new();
    let good = kit.good();
    let mut cases = Vec::new();

    cases.push(case("empty", Vec::new(), "invalid_bundle", "empty"));
    let mut random = vec![0u8; 64 * 1024];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut random);
    cases.push(case("random bytes", random, "invalid_bundle", "checksum"));

    let mut m = good.clone();
    m[1].data[10] ^= 0x01;
    cases.push(case(
        "one signature byte flipped",
        tar(&m),
        "signature_invalid",
        "signature",
    ));

    let mut m = good.clone();
    m.remove(1);
    cases.push(case(
        "unsigned (no manifest.sig)",
        tar(&m),
        "invalid_bundle",
        "manifest.sig",
    ));

    let mut c = case(
        "no key configured",
        tar(&good),
        "no_trusted_key",
        "no trusted",
    );
    c.keys = Some(TrustedKeys::default());
    cases.push(c);

    let m = kit.members(&parts("0.2.0", "0.1.0"), &kit.other);
    cases.push(case(
        "signed by another key",
        tar(&m),
        "signature_invalid",
        "vendor.pem",
    ));

    let mut p = parts("0.2.0", "0.1.0");
    p.manifest.components.images[0].sha256 = sha256(b"something else");
    let m = kit.members(&p, &kit.key);
    cases.push(case(
        "payload hash wrong in the signed manifest",
        tar(&m),
        "payload_mismatch",
        "sha256",
    ));

    let mut m = good.clone();
    let last = m[2].data.len() - 1;
    m[2].data[last] ^= 0xff;
    cases.push(case(
        "payload byte changed",
        tar(&m),
        "payload_mismatch",
        "payload/image-llm.tar",
    ));

    let mut m = good.clone();
    let edited = String::from_utf8(m[0].data.clone())
        .unwrap()
        .replace("\"test\"", "\"evil\"");
    m[0] = file("manifest.json", edited.as_bytes());
    cases.push(case(
        "manifest edited after signing",
        tar(&m),
        "signature_invalid",
        "signature",
    ));

    let mut m = good.clone();
    m.push(file("payload/extra.bin", b"extra"));
    cases.push(case(
        "extra member",
        tar(&m),
        "invalid_bundle",
        "not listed",
    ));

    let mut m = good.clone();
    m.push(file("payload/config-app.yaml", b"key: value\n"));
    cases.push(case(
        "duplicate member",
        tar(&m),
        "invalid_bundle",
        "duplicate",
    ));

    let mut m = good.clone();
    m.remove(3);
    cases.push(case(
        "missing member",
        tar(&m),
        "invalid_bundle",
        "out of order",
    ));

    let mut m = good.clone();
    m.pop();
    cases.push(case(
        "last member missing",
        tar(&m),
        "invalid_bundle",
        "missing",
    ));

    let mut m = good.clone();
    m.swap(3, 4);
    cases.push(case(
        "out-of-order members",
        tar(&m),
        "invalid_bundle",
        "out of order",
    ));

    let mut m = good.clone();
    m.swap(0, 1);
    cases.push(case(
        "signature before manifest",
        tar(&m),
        "invalid_bundle",
        "first member",
    ));

    for (name, member, says) in [
        ("../x member", file("../x", b"x"), "\"..\""),
        ("payload/../x member", file("payload/../x", b"x"), "\"..\""),
        ("/etc/x member", file("/etc/x", b"x"), "absolute"),
        (
            "NUL in a name",
            Member {
                header: raw_header(b"payload/config-app.yaml\0evil", 11, b'0', b"", b""),
                data: b"key: value\n".to_vec(),
            },
            "NUL",
        ),
        (
            "over-long name (ustar prefix)",
            Member {
                header: raw_header(&[b'a'; 100], 1, b'0', b"", &[b'b'; 120]),
                data: b"x".to_vec(),
            },
            "longer than 100",
        ),
        (
            "over-long name (GNU long-name header)",
            Member {
                header: raw_header(b"././@LongLink", 201, b'L', b"", b""),
                data: vec![b'a'; 201],
            },
            "long-name",
        ),
        (
            "pax extended header",
            Member {
                header: raw_header(b"PaxHeaders/x", 30, b'x', b"", b""),
                data: b"30 path=payload/config-app.yaml\n".to_vec(),
            },
            "pax",
        ),
        (
            "symlink member",
            special(b"payload/config-app.yaml", b'2', b"/etc/shadow"),
            "symbolic link",
        ),
        (
            "hardlink member",
            special(b"payload/config-app.yaml", b'1', b"manifest.json"),
            "hard link",
        ),
        (
            "character device member",
            special(b"payload/config-app.yaml", b'3', b""),
            "character device",
        ),
        (
            "block device member",
            special(b"payload/config-app.yaml", b'4', b""),
            "block device",
        ),
        (
            "FIFO member",
            special(b"payload/config-app.yaml", b'6', b""),
            "FIFO",
        ),
        (
            "directory member",
            special(b"payload/", b'5', b""),
            "directory",
        ),
    ] {
        let mut m = good.clone();
        m[4] = member;
        cases.push(case(name, tar(&m), "invalid_bundle", says));
    }

    let mut p = parts("0.2.0", "0.1.0");
    let long = format!("payload/{}", "a".repeat(93));
    p.manifest.components.configs[0].file = long.clone();
    p.payload[2].0 = long;
    let m = kit.members(&p, &kit.key);
    cases.push(case(
        "manifest names an over-long file",
        tar(&m),
        "invalid_bundle",
        "at most 100",
    ));

    let mut p = parts("0.2.0", "0.1.0");
    p.manifest.components.configs[0].file = "payload/../../etc/passwd".into();
    let m = kit.members(&p, &kit.key);
    cases.push(case(
        "manifest names ../ file",
        tar(&m),
        "invalid_bundle",
        "payload/<name>",
    ));

    let mut m = good.clone();
    m[1] = file("manifest.sig", &[7u8; 5000]);
    cases.push(case(
        "oversized signature",
        tar(&m),
        "invalid_bundle",
        "manifest.sig is 5000 bytes",
    ));

    let mut m = good.clone();
    let mut big = m[0].data.clone();
    big.resize((1 << 20) + 1, b' ');
    m[0] = file("manifest.json", &big);
    cases.push(case(
        "oversized manifest",
        tar(&m),
        "invalid_bundle",
        "manifest.json is 1048577 bytes",
    ));

    // A header that claims a 1 TiB manifest: refused from the header alone.
    let mut b = raw_header(b"manifest.json", 1 << 40, b'0', b"", b"").to_vec();
    b.extend_from_slice(&[b'{'; 512]);
    cases.push(case(
        "manifest header claiming 1 TiB",
        b,
        "invalid_bundle",
        "the limit is 1048576",
    ));

    let mut c = case("oversized bundle", tar(&good), "bundle_too_large", "limit");
    c.limits.max_bundle_bytes = 2048;
    cases.push(c);

    let mut p = parts("0.2.0", "0.1.0");
    p.manifest.components.images[0].size = 1 << 40;
    let m = kit.members(&p, &kit.key);
    cases.push(case(
        "manifest declaring more than the size limit",
        tar(&m),
        "bundle_too_large",
        "limit",
    ));

    let m = kit.members(&parts("0.1.0", "0.1.0"), &kit.key);
    cases.push(case(
        "same version",
        tar(&m),
        "version_not_newer",
        "not newer",
    ));
    let m = kit.members(&parts("0.0.9", "0.0.1"), &kit.key);
    cases.push(case(
        "older version",
        tar(&m),
        "version_not_newer",
        "not newer",
    ));
    let m = kit.members(&parts("0.1.0+build2", "0.0.1"), &kit.key);
    cases.push(case(
        "same version, other build metadata",
        tar(&m),
        "version_not_newer",
        "not newer",
    ));
    let m = kit.members(&parts("0.3.0", "0.2.0"), &kit.key);
    cases.push(case(
        "min_version above installed",
        tar(&m),
        "min_version_not_met",
        "at least version 0.2.0",
    ));

    let full = tar(&good);
    cases.push(case(
        "truncated inside the payload",
        full[..full.len() - 3000].to_vec(),
        "invalid_bundle",
        "truncated",
    ));
    cases.push(case(
        "truncated before the end marker",
        full[..full.len() - 1024].to_vec(),
        "invalid_bundle",
        "truncated",
    ));
    cases.push(case(
        "truncated inside the manifest",
        full[..700].to_vec(),
        "invalid_bundle",
        "truncated",
    ));

    let mut b = tar(&good);
    b.extend_from_slice(b"trailing garbage");
    cases.push(case(
        "data after the end marker",
        b,
        "invalid_bundle",
        "end",
    ));

    let mut failures = Vec::new();
    for c in &cases {
        let path = kit.write("case.araupdate", &c.bundle);
        let keys = c.keys.as_ref().unwrap_or(&kit.keys);
        let r = kit.verify_with(&path, keys, c.installed, &c.limits);
        let left = leftovers(&kit.staging_root());
        match r {
            Ok(_) => failures.push(format!("{}: accepted", c.name)),
            Err(e) => {
                let msg = e.to_string();
                if e.code() != c.code || !msg.contains(c.says) {
                    failures.push(format!(
                        "{}: got {} \"{msg}\", expected {} containing {:?}",
                        c.name,
                        e.code(),
                        c.code,
                        c.says
                    ));
                }
            }
        }
        if !left.is_empty() {
            failures.push(format!("{}: left behind {left:?}", c.name));
        }
        // The same bytes through the in-memory reader (what the fuzz target
        // drives) give the same verdict.
        let r2 = check_reader(
            &c.bundle[..],
            keys,
            &c.installed.parse().unwrap(),
            &c.limits,
        );
        if r2.as_ref().err().map(|e| e.code()) != Some(c.code) {
            failures.push(format!(
                "{}: check_reader gave {:?}",
                c.name,
                r2.err().map(|e| e.code())
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn good_bundle_stages_exactly_its_payload_and_reports_the_file_hash() {
    let kit = Kit::new();
    let bytes = tar(&kit.good());
    let path = kit.write("good.araupdate", &bytes);
    let v = kit
        .verify_with(&path, &kit.keys, "0.1.0", &VerifyLimits::default())
        .unwrap();
    assert_eq!(v.sha256, sha256(&bytes));
    assert_eq!(v.size, bytes.len() as u64);
    assert_eq!(v.signature.key, "vendor.pem");
    assert_eq!(v.signature.algorithm.as_str(), "ed25519");
    assert_eq!(v.manifest.version, Version::new(0, 2, 0));
    let p = parts("0.2.0", "0.1.0");
    for (name, data) in &p.payload {
        assert_eq!(&std::fs::read(v.staged(name)).unwrap(), data, "{name}");
    }
    assert_eq!(
        std::fs::read(v.staging_dir.join("manifest.json")).unwrap(),
        kit.good()[0].data
    );
    let mut staged: Vec<_> = leftovers(&v.staging_dir)
        .into_iter()
        .map(|p| {
            p.strip_prefix(&v.staging_dir)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    staged.sort();
    assert_eq!(
        staged,
        [
            "manifest.json",
            "manifest.sig",
            "payload",
            "payload/config-app.yaml",
            "payload/image-llm.tar",
            "payload/migration-0100_t.sql"
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(v.staged("payload/image-llm.tar"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "staged files are owner-only");
}

#[test]
fn staging_dir_that_is_not_empty_is_refused_and_left_alone() {
    let kit = Kit::new();
    let path = kit.write("good.araupdate", &tar(&kit.good()));
    let staging = kit.staging_root().join("incoming");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("keep.me"), b"mine").unwrap();
    let e = verify_bundle(
        &path,
        &kit.keys,
        &Version::new(0, 1, 0),
        &staging,
        &VerifyLimits::default(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "staging_failed");
    assert_eq!(std::fs::read(staging.join("keep.me")).unwrap(), b"mine");
}

#[test]
fn malformed_key_file_in_the_keys_dir_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.pem"), "not a key").unwrap();
    let e = TrustedKeys::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("broken.pem"), "{e}");
    // No dir at all: no keys, so every bundle is refused (fail closed).
    let none = TrustedKeys::load(&dir.path().join("absent")).unwrap();
    assert!(none.is_empty());
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Payload files on disk for `bundle create`.
fn inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let img = dir.join("img.tar");
    let mut data = vec![0u8; 300_000];
    rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut data);
    std::fs::write(&img, data).unwrap();
    let sql = dir.join("0100_add.sql");
    std::fs::write(
        &sql,
        "-- arasul:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (id);\n",
    )
    .unwrap();
    let conf = dir.join("app.yaml");
    std::fs::write(&conf, "a: 1\n").unwrap();
    (img, sql, conf)
}

#[test]
fn ed25519_round_trip_through_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ok(Command::new(BIN)
        .args(["bundle", "keygen", "--out"])
        .arg(dir.join("k")));
    std::fs::create_dir(dir.join("keys")).unwrap();
    std::fs::copy(
        dir.join("k/update-signing.pem"),
        dir.join("keys/vendor.pem"),
    )
    .unwrap();
    let (img, sql, conf) = inputs(dir);
    let out = dir.join("v2.araupdate");
    ok(Command::new(BIN)
        .args(["bundle", "create", "--key"])
        .arg(dir.join("k/update-signing.key"))
        .args([
            "--version",
            "0.2.0",
            "--min-version",
            "0.1.0",
            "--notes",
            "Two",
        ])
        .arg("--image-tar")
        .arg(format!("llm=arasul/llm:2={}", img.display()))
        .arg("--migration")
        .arg(&sql)
        .arg("--config-file")
        .arg(&conf)
        .arg("--out")
        .arg(&out));
    let said = ok(Command::new(BIN)
        .args(["bundle", "verify", "--installed", "0.1.0", "--keys"])
        .arg(dir.join("keys"))
        .arg(&out));
    assert!(said.contains("OK: version 0.2.0"), "{said}");
    assert!(said.contains("vendor.pem (ed25519)"), "{said}");
    // GNU tar reads what `create` wrote, member by member, in format order.
    let listing = ok(Command::new("tar").arg("tf").arg(&out));
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        [
            "manifest.json",
            "manifest.sig",
            "payload/image-llm.tar",
            "payload/migration-0100_add.sql",
            "payload/config-app.yaml"
        ]
    );
    let shown = ok(Command::new(BIN)
        .args(["bundle", "inspect", "--keys"])
        .arg(dir.join("keys"))
        .arg(&out));
    assert!(
        shown.contains("signature: valid, key vendor.pem (ed25519)"),
        "{shown}"
    );
    let m: Manifest = Manifest::parse(
        shown
            .split_once('{')
            .map(|(_, r)| format!("{{{r}"))
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    assert!(
        !m.components.migrations[0].transactional,
        "marked no-transaction"
    );
    assert_eq!(m.components.images[0].image, "arasul/llm:2");
    assert_eq!(m.release_notes, "Two");

    // The box refuses it when it already runs 0.2.0, with exit 1 and the code.
    let r = run(Command::new(BIN)
        .args(["bundle", "verify", "--installed", "0.2.0", "--keys"])
        .arg(dir.join("keys"))
        .arg(&out));
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("REFUSED (version_not_newer)"));
    // And with an empty keys dir: fail closed.
    std::fs::create_dir(dir.join("nokeys")).unwrap();
    let r = run(Command::new(BIN)
        .args(["bundle", "verify", "--installed", "0.1.0", "--keys"])
        .arg(dir.join("nokeys"))
        .arg(&out));
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("REFUSED (no_trusted_key)"));
}

/// The vendor path without our tool: manifest written by hand, signed with
/// `openssl dgst -sha256 -sign`, packed with GNU tar.
fn openssl_bundle(dir: &Path, key: &Path, sigopts: &[&str]) -> PathBuf {
    let work = dir.join(format!("w{}", sigopts.len()));
    std::fs::create_dir_all(work.join("payload")).unwrap();
    let conf = b"from: openssl\n";
    std::fs::write(work.join("payload/config-app.yaml"), conf).unwrap();
    let manifest = format!(
        r#"{{"format":1,"version":"0.3.0","min_version":"0.1.0","build_hash":"x1","created_at":"2026-11-28T08:00:00Z",
"release_notes":"","requires_reboot":false,
"components":{{"configs":[{{"name":"app.yaml","file":"payload/config-app.yaml","size":{},"sha256":"{}"}}]}}}}"#,
        conf.len(),
        sha256(conf)
    );
    std::fs::write(work.join("manifest.json"), manifest).unwrap();
    ok(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .args(sigopts)
        .args(["-out", "manifest.sig", "manifest.json"])
        .current_dir(&work));
    let out = dir.join(format!("openssl{}.araupdate", sigopts.len()));
    ok(Command::new("tar")
        .args(["--format=ustar", "-cf"])
        .arg(&out)
        .args(["manifest.json", "manifest.sig", "payload/config-app.yaml"])
        .current_dir(&work));
    out
}

#[test]
fn rsa_bundles_signed_by_openssl_verify_pkcs1_and_pss() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let key = dir.join("rsa.pem");
    ok(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key));
    std::fs::create_dir(dir.join("keys")).unwrap();
    ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(dir.join("keys/vendor-rsa.pem")));
    let keys = TrustedKeys::load(&dir.join("keys")).unwrap();
    let limits = VerifyLimits::default();
    let installed = Version::new(0, 1, 0);

    let pkcs1 = openssl_bundle(dir, &key, &[]);
    let v = verify_bundle(&pkcs1, &keys, &installed, &dir.join("st1"), &limits).unwrap();
    assert_eq!(v.signature.algorithm.as_str(), "rsa-pkcs1-sha256");
    assert_eq!(v.signature.key, "vendor-rsa.pem");
    assert_eq!(
        std::fs::read(v.staged("payload/config-app.yaml")).unwrap(),
        b"from: openssl\n"
    );

    let pss = openssl_bundle(
        dir,
        &key,
        &[
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ],
    );
    let v = verify_bundle(&pss, &keys, &installed, &dir.join("st2"), &limits).unwrap();
    assert_eq!(v.signature.algorithm.as_str(), "rsa-pss-sha256");

    // Our own tool signs with the same RSA key; openssl verifies that signature.
    let (_, _, conf) = inputs(dir);
    let ours = dir.join("ours.araupdate");
    ok(Command::new(BIN)
        .args(["bundle", "create", "--key"])
        .arg(&key)
        .args([
            "--version",
            "0.2.0",
            "--min-version",
            "0.1.0",
            "--config-file",
        ])
        .arg(&conf)
        .arg("--out")
        .arg(&ours));
    let v = verify_bundle(&ours, &keys, &installed, &dir.join("st3"), &limits).unwrap();
    assert_eq!(v.signature.algorithm.as_str(), "rsa-pkcs1-sha256");
    ok(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.join("keys/vendor-rsa.pem"))
        .arg("-signature")
        .arg(v.staging_dir.join("manifest.sig"))
        .arg(v.staging_dir.join("manifest.json")));
}

#[test]
fn openssl_ed25519_keys_work_both_ways_and_short_rsa_keys_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let key = dir.join("ed.pem");
    ok(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key));
    std::fs::create_dir(dir.join("keys")).unwrap();
    ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(dir.join("keys/ed.pem")));
    let (_, _, conf) = inputs(dir);
    let out = dir.join("ed.araupdate");
    ok(Command::new(BIN)
        .args(["bundle", "create", "--key"])
        .arg(&key)
        .args([
            "--version",
            "0.2.0",
            "--min-version",
            "0.1.0",
            "--config-file",
        ])
        .arg(&conf)
        .arg("--out")
        .arg(&out));
    let said = ok(Command::new(BIN)
        .args(["bundle", "verify", "--installed", "0.1.0", "--keys"])
        .arg(dir.join("keys"))
        .arg(&out));
    assert!(said.contains("ed.pem (ed25519)"), "{said}");

    let short = dir.join("short.pem");
    ok(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
        ])
        .arg(&short));
    std::fs::create_dir(dir.join("shortkeys")).unwrap();
    ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&short)
        .arg("-out")
        .arg(dir.join("shortkeys/short.pem")));
    let e = TrustedKeys::load(&dir.join("shortkeys")).unwrap_err();
    assert!(e.to_string().contains("at least 2048"), "{e}");
}
