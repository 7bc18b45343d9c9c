//! HTTPS at the front door (`http.tls`, off by default): the owner's PEM
//! certificate and key, or a self-signed certificate made once at first
//! start for the box's names (`<mdns hostname>.local`, `arasul.local`,
//! `localhost`) and its addresses, kept in `secrets_dir/tls/` (the key 0600)
//! so its fingerprint stays the same across restarts. The fingerprint
//! (SHA-256 of the certificate, as browsers show it) is what the owner
//! compares in the dashboard and `/api/system/network`. rustls with ring,
//! HTTP/1.1 only (what `api::serve` speaks).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::config::TlsConfig;

/// Under the secrets dir: the self-signed certificate and its key.
pub const DIR: &str = "tls";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
/// How long a made certificate is valid: the box must look after itself
/// for years, and the owner trusts this one certificate by its fingerprint.
const VALID_YEARS: i32 = 10;

/// What serving HTTPS needs, and what the owner is shown.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// SHA-256 of the leaf certificate, upper-case hex pairs joined by `:`.
    pub fingerprint: String,
    pub cert_path: PathBuf,
    pub self_signed: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// The names a made certificate is for.
pub fn names(mdns_hostname: &str) -> Vec<String> {
    let mut v = vec![
        format!("{mdns_hostname}.local"),
        "arasul.local".to_owned(),
        "localhost".to_owned(),
    ];
    v.dedup();
    v
}

/// The addresses a made certificate is for: loopback and every address
/// the box has now.
pub fn addresses() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    for a in crate::net::interface_addresses() {
        if !v.contains(&a.address) && !a.address.is_unspecified() {
            v.push(a.address);
        }
    }
    v
}

/// Loads the configured certificate, or the made one (making it first when
/// there is none). Blocking file I/O: call before serving.
pub fn open(
    cfg: &TlsConfig,
    secrets_dir: &Path,
    names: &[String],
    addrs: &[IpAddr],
) -> anyhow::Result<Tls> {
    let (cert_path, key_path) = if cfg.self_signed {
        let dir = secrets_dir.join(DIR);
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if !(cert.exists() && key.exists()) {
            make_self_signed(&dir, names, addrs)?;
            tracing::info!(path = %cert.display(), "made a self-signed TLS certificate");
        }
        (cert, key)
    } else {
        match (&cfg.cert, &cfg.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => anyhow::bail!("http.tls needs cert and key, or self_signed: true"),
        }
    };
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("{}: not a PEM certificate chain", cert_path.display()))?;
    let leaf = certs
        .first()
        .with_context(|| format!("{}: holds no certificate", cert_path.display()))?;
    let fingerprint = fingerprint(leaf.as_ref());
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?,
    ))
    .with_context(|| format!("{}: not a PEM private key", key_path.display()))?
    .with_context(|| format!("{}: holds no private key", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "{} and {} do not make a usable certificate and key",
                cert_path.display(),
                key_path.display()
            )
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        fingerprint,
        cert_path,
        self_signed: cfg.self_signed,
    })
}

/// SHA-256 of a DER certificate, as `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Writes a new key (0600) and certificate (0644) into `dir`, each to a
/// temporary file first, so a power cut leaves the old pair or none.
fn make_self_signed(dir: &Path, names: &[String], addrs: &[IpAddr]) -> anyhow::Result<()> {
    use chrono::Datelike;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).context("certificate names")?;
    for ip in addrs {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().map_or("arasul.local", String::as_str),
    );
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "Arasul appliance (self-signed)",
    );
    let today = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let (m, d) = (today.month() as u8, today.day() as u8);
    params.not_before = rcgen::date_time_ymd(today.year(), m, d);
    // 28 February stays valid in every year.
    params.not_after = rcgen::date_time_ymd(today.year() + VALID_YEARS, m, d.min(28));
    let key = rcgen::KeyPair::generate().context("making the TLS key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the certificate")?;
    for (file, pem, mode) in [
        (KEY_FILE, key.serialize_pem(), 0o600),
        (CERT_FILE, cert.pem(), 0o644),
    ] {
        let path = dir.join(file);
        crate::os::fs::write_atomic(&path, pem.as_bytes(), Some(mode))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_certificate_is_kept_and_its_fingerprint_stays() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TlsConfig {
            listen: "127.0.0.1:8443".parse().unwrap(),
            cert: None,
            key: None,
            self_signed: true,
        };
        let names = names("box");
        assert_eq!(names, ["box.local", "arasul.local", "localhost"]);
        let a = open(&cfg, dir.path(), &names, &[[192, 0, 2, 7].into()]).unwrap();
        let b = open(&cfg, dir.path(), &names, &[]).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| {
            std::fs::metadata(dir.path().join(DIR).join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode(KEY_FILE), mode(CERT_FILE)), (0o600, 0o644));
        // The owner's own pair is used as given; a wrong file is named.
        let own = TlsConfig {
            self_signed: false,
            cert: Some(dir.path().join(DIR).join(CERT_FILE)),
            key: Some(dir.path().join("missing.pem")),
            ..cfg
        };
        let err = open(&own, dir.path(), &names, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("missing.pem"), "{err:#}");
    }
}
