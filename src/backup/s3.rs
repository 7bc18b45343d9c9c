//! A small S3 client for the backup destination: PUT, GET, LIST (v2) and
//! DELETE of objects, path-style, signed with AWS Signature V4 (HMAC-SHA256
//! from `ring`) over `reqwest`; no SDK (the binary stays small). Bodies are
//! streamed from and to files, with `UNSIGNED-PAYLOAD` (the archive carries
//! its own sha256s and is checked after every download). The keys live in
//! the secrets dir, never in the config or a log line.

use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use reqwest::{Method, Url};
use tokio::io::AsyncWriteExt as _;

use super::S3Config;
use crate::config::Secret;

/// Files in `paths.secrets_dir`.
pub const ACCESS_KEY_FILE: &str = "s3-backup-access-key";
pub const SECRET_KEY_FILE: &str = "s3-backup-secret-key";

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// DNS-compatible bucket names (3–63 lowercase letters, digits, `-`, `.`).
pub fn bucket_name_ok(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

#[derive(Clone)]
pub struct Bucket {
    endpoint: Url,
    bucket: String,
    region: String,
    pub prefix: String,
    access_key: Secret<String>,
    secret_key: Secret<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

impl Bucket {
    /// From the config and the key files in `secrets_dir`.
    pub fn open(c: &S3Config, secrets_dir: &Path) -> anyhow::Result<Bucket> {
        let read = |name: &str| -> anyhow::Result<Secret<String>> {
            let p = secrets_dir.join(name);
            let s = std::fs::read_to_string(&p)
                .with_context(|| format!("the S3 key file {} cannot be read", p.display()))?;
            Ok(Secret::new(s.trim().to_string()))
        };
        let endpoint = Url::parse(&c.endpoint).context("backup.s3.endpoint")?;
        Ok(Bucket {
            endpoint,
            bucket: c.bucket.clone(),
            region: c.region.clone(),
            prefix: c.prefix.clone(),
            access_key: read(ACCESS_KEY_FILE)?,
            secret_key: read(SECRET_KEY_FILE)?,
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()?,
        })
    }

    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn url(&self, key: Option<&str>) -> Url {
        let mut u = self.endpoint.clone();
        {
            let mut segs = u.path_segments_mut().expect("an http(s) URL has a path");
            segs.pop_if_empty().push(&self.bucket);
            if let Some(k) = key {
                segs.extend(k.split('/'));
            }
        }
        u
    }

    fn request(&self, method: Method, url: Url, payload_hash: &str) -> reqwest::RequestBuilder {
        let now = Utc::now();
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
            None => url.host_str().unwrap_or("").to_string(),
        };
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let auth = authorization(
            &Signing {
                access_key: self.access_key.expose(),
                secret_key: self.secret_key.expose(),
                region: &self.region,
                at: now,
            },
            method.as_str(),
            url.path(),
            &query,
            &[
                ("host", &host),
                ("x-amz-content-sha256", payload_hash),
                ("x-amz-date", &amz_date),
            ],
            payload_hash,
        );
        self.http
            .request(method, url)
            .header("x-amz-content-sha256", payload_hash)
            .header("x-amz-date", amz_date)
            .header("authorization", auth)
    }

    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = rb.send().await.with_context(|| format!("S3 {what}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let code = between(&body, "<Code>", "</Code>").unwrap_or("");
            bail!("S3 {what}: {status} {code}");
        }
        Ok(resp)
    }

    /// Uploads a file as `prefix + name`.
    pub async fn put_file(&self, name: &str, path: &Path) -> anyhow::Result<()> {
        let key = format!("{}{name}", self.prefix);
        let f = tokio::fs::File::open(path).await?;
        let len = f.metadata().await?.len();
        let body =
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
        let rb = self
            .request(Method::PUT, self.url(Some(&key)), "UNSIGNED-PAYLOAD")
            .header("content-length", len)
            .body(body);
        self.send(rb, &format!("PUT {key}")).await?;
        Ok(())
    }

    /// Downloads `prefix + name` into `dest` (fsynced); returns its size.
    pub async fn get_file(&self, name: &str, dest: &Path) -> anyhow::Result<u64> {
        let key = format!("{}{name}", self.prefix);
        let resp = self
            .send(
                self.request(Method::GET, self.url(Some(&key)), EMPTY_SHA256),
                &format!("GET {key}"),
            )
            .await?;
        let mut f = tokio::fs::File::create(dest).await?;
        let mut n = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("S3 GET {key}"))?;
            n += chunk.len() as u64;
            f.write_all(&chunk).await?;
        }
        f.sync_all().await?;
        Ok(n)
    }

    /// The names (without the prefix) and sizes of the objects under the prefix.
    pub async fn list(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = self.url(None);
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("list-type", "2");
                q.append_pair("prefix", &self.prefix);
                if let Some(t) = &token {
                    q.append_pair("continuation-token", t);
                }
            }
            let text = self
                .send(self.request(Method::GET, url, EMPTY_SHA256), "LIST")
                .await?
                .text()
                .await?;
            for part in text.split("<Contents>").skip(1) {
                let key = between(part, "<Key>", "</Key>").map(xml_unescape);
                let size = between(part, "<Size>", "</Size>").and_then(|s| s.parse().ok());
                if let (Some(k), Some(s)) = (key, size)
                    && let Some(name) = k.strip_prefix(&self.prefix)
                    && !name.contains('/')
                {
                    out.push((name.to_string(), s));
                }
            }
            if between(&text, "<IsTruncated>", "</IsTruncated>") == Some("true") {
                token = between(&text, "<NextContinuationToken>", "</NextContinuationToken>")
                    .map(xml_unescape);
                if token.is_none() {
                    bail!("S3 LIST: truncated without a continuation token");
                }
            } else {
                return Ok(out);
            }
        }
    }

    pub async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let key = format!("{}{name}", self.prefix);
        self.send(
            self.request(Method::DELETE, self.url(Some(&key)), EMPTY_SHA256),
            &format!("DELETE {key}"),
        )
        .await?;
        Ok(())
    }
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Who signs, where and when.
pub struct Signing<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub region: &'a str,
    pub at: DateTime<Utc>,
}

/// RFC 3986 percent-encoding of everything but the unreserved characters
/// (and `/` when `keep_slash`), as SigV4 wants it.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&k, data.as_bytes()).as_ref().to_vec()
}

/// The `Authorization` header of AWS Signature V4 for S3. `path` is the
/// URL's path as sent (already percent-encoded by the URL; decoded and
/// encoded again canonically); `headers` are the signed ones (lowercase
/// names).
pub fn authorization(
    s: &Signing<'_>,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> String {
    let decoded = percent_decode(path);
    let canonical_uri = uri_encode(&decoded, true);
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    let canonical_query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    h.sort();
    let canonical_headers: String = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = h
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
    );
    let date = s.at.format("%Y%m%d").to_string();
    let amz_date = s.at.format("%Y%m%dT%H%M%SZ").to_string();
    let scope = format!("{date}/{}/s3/aws4_request", s.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes()
        ))
    );
    let k = hmac(format!("AWS4{}", s.secret_key).as_bytes(), &date);
    let k = hmac(&k, s.region);
    let k = hmac(&k, "s3");
    let k = hmac(&k, "aws4_request");
    let signature = hex::encode(hmac(&k, &to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        s.access_key
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The worked example of AWS's "Signature Calculations for the
    /// Authorization Header" (GET Object with a Range header).
    #[test]
    fn the_signature_matches_the_aws_worked_example() {
        let s = Signing {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            at: Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap(),
        };
        let auth = authorization(
            &s,
            "GET",
            "/test.txt",
            &[],
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
            EMPTY_SHA256,
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn bucket_names_follow_the_s3_rules() {
        for ok in ["arasul-backups", "a.b.c", "abc"] {
            assert!(bucket_name_ok(ok), "{ok}");
        }
        for bad in ["", "ab", "Upper", "-x-", "a_b", "x/y"] {
            assert!(!bucket_name_ok(bad), "{bad}");
        }
    }
}
