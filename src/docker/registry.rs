//! What a registry says about an image before it is pulled: the compressed
//! size of the manifest for this box's platform (config + layers), so a pull
//! that cannot fit is refused before a byte is written. The distribution API
//! (`/v2/<repo>/manifests/<ref>`), anonymous or with the box's credentials,
//! Bearer tokens as Docker Hub hands them out; a registry on loopback is
//! spoken to over plain HTTP, as the engine does by default.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// `host[:port]/repo[:tag|@digest]`, split the way the engine does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// As used in credentials (`docker.io` for Docker Hub).
    pub domain: String,
    pub repository: String,
    /// A tag or a `sha256:` digest.
    pub reference: String,
}

impl Reference {
    pub fn parse(image: &str) -> Reference {
        let (name, reference) = match image.split_once('@') {
            Some((n, d)) => (n, d.to_string()),
            None => match image.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (n, t.to_string()),
                _ => (image, "latest".to_string()),
            },
        };
        let (domain, repository) = match name.split_once('/') {
            Some((d, rest)) if d.contains('.') || d.contains(':') || d == "localhost" => {
                (d.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let repository = if domain == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        Reference {
            domain,
            repository,
            reference,
        }
    }

    fn base_url(&self) -> String {
        let host = if self.domain == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.domain
        };
        let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let insecure = bare == "localhost" || bare.starts_with("127.") || bare == "[::1]";
        format!("{}://{host}", if insecure { "http" } else { "https" })
    }
}

/// Registry logins from `secrets_dir/registry-auth.json`:
/// `{"registry.example.com": {"username": "…", "password": "…"}}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Login {
    pub username: String,
    pub password: String,
}

pub fn load_logins(secrets_dir: &Path) -> BTreeMap<String, Login> {
    let path = secrets_dir.join("registry-auth.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "registry logins unreadable: pulling anonymously");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
    #[serde(default)]
    config: Option<Blob>,
    #[serde(default)]
    layers: Vec<Blob>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Blob {
    size: u64,
}

/// This machine's architecture in the registry's words.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// The compressed size of `image` for this platform: what a pull downloads
/// at most (layers already present are skipped by the engine).
pub async fn compressed_size(
    image: &str,
    login: Option<&Login>,
    timeout: Duration,
) -> Result<u64, String> {
    let r = Reference::parse(image);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let mut token = None;
    let mut reference = r.reference.clone();
    // An index points at one manifest per platform: at most one hop.
    for _ in 0..2 {
        let m = fetch(&client, &r, &reference, login, &mut token).await?;
        if m.manifests.is_empty() {
            let layers: u64 = m.layers.iter().map(|l| l.size).sum();
            return Ok(layers + m.config.map_or(0, |c| c.size));
        }
        let entry = m
            .manifests
            .iter()
            .find(|e| {
                e.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch())
            })
            .ok_or_else(|| format!("{image} has no linux/{} image", arch()))?;
        reference = entry.digest.clone();
    }
    Err(format!("{image}: an index inside an index"))
}

async fn fetch(
    client: &reqwest::Client,
    r: &Reference,
    reference: &str,
    login: Option<&Login>,
    token: &mut Option<String>,
) -> Result<Manifest, String> {
    let url = format!("{}/v2/{}/manifests/{reference}", r.base_url(), r.repository);
    for _ in 0..2 {
        let mut req = client.get(&url).header("Accept", ACCEPT);
        if let Some(t) = token.as_deref() {
            req = req.bearer_auth(t);
        } else if let Some(l) = login {
            req = req.basic_auth(&l.username, Some(&l.password));
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED && token.is_none() {
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            *token = Some(bearer_token(client, &challenge, r, login).await?);
            continue;
        }
        if !status.is_success() {
            return Err(format!("{url}: the registry answered {status}"));
        }
        return resp
            .json::<Manifest>()
            .await
            .map_err(|e| format!("{url}: {e}"));
    }
    Err(format!("{url}: not authorised"))
}

/// Answers a `Bearer realm="…",service="…",scope="…"` challenge.
async fn bearer_token(
    client: &reqwest::Client,
    challenge: &str,
    r: &Reference,
    login: Option<&Login>,
) -> Result<String, String> {
    let params = challenge
        .strip_prefix("Bearer ")
        .ok_or_else(|| format!("the registry asks for {challenge:?}, not a bearer token"))?;
    let mut realm = None;
    let mut query = Vec::new();
    for part in params.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        let v = v.trim_matches('"').to_string();
        match k {
            "realm" => realm = Some(v),
            "service" | "scope" => query.push((k.to_string(), v)),
            _ => {}
        }
    }
    if !query.iter().any(|(k, _)| k == "scope") {
        query.push(("scope".into(), format!("repository:{}:pull", r.repository)));
    }
    let realm = realm.ok_or("the registry's challenge names no realm")?;
    let mut req = client.get(&realm).query(&query);
    if let Some(l) = login {
        req = req.basic_auth(&l.username, Some(&l.password));
    }
    #[derive(Deserialize)]
    struct Token {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
    }
    let t: Token = req
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("{realm}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{realm}: {e}"))?;
    t.token
        .or(t.access_token)
        .ok_or_else(|| format!("{realm} gave no token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_as_the_engine_does() {
        let r = Reference::parse("ollama/ollama:0.5.7");
        assert_eq!(
            (
                r.domain.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("docker.io", "ollama/ollama", "0.5.7")
        );
        assert_eq!(r.base_url(), "https://registry-1.docker.io");
        assert_eq!(Reference::parse("busybox").repository, "library/busybox");
        assert_eq!(Reference::parse("busybox").reference, "latest");
        let r = Reference::parse("127.0.0.1:5000/arasul/rt:1");
        assert_eq!(
            (
                r.domain.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "arasul/rt", "1")
        );
        assert_eq!(r.base_url(), "http://127.0.0.1:5000");
        let r = Reference::parse("localhost:5000/rt@sha256:abc");
        assert_eq!(r.reference, "sha256:abc");
        assert_eq!(r.base_url(), "http://localhost:5000");
        assert_eq!(
            Reference::parse("ghcr.io/org/app").base_url(),
            "https://ghcr.io"
        );
    }
}
