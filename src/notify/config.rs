//! The `notify:` config section: channels (webhook, ntfy, e-mail), each with
//! its least severity, the de-duplication window, quiet hours, and the retry
//! schedule. Credentials are never here: each channel's lives in
//! `paths.secrets_dir/notify-<name>.secret` (see [`secret_file`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

use super::Severity;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Where alerts go; none by default.
    pub channels: Vec<ChannelConfig>,
    /// The same cause within this window is sent once; when the window
    /// closes, a summary says how often it happened again.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// `"22:00-07:00"` (local time): non-critical alerts wait until the end.
    pub quiet_hours: Option<QuietHours>,
    /// First wait before a failed delivery is tried again; doubles per try ...
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// ... up to this.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Tries per channel before a delivery is given up as failed.
    pub max_attempts: u32,
    /// One try may take this long (connect, TLS, send).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Outbox entries delivered (or given up) are kept this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            channels: Vec::new(),
            dedup_window: Duration::from_secs(3600),
            quiet_hours: None,
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(600),
            max_attempts: 20,
            send_timeout: Duration::from_secs(20),
            retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// One destination. Exactly one of `webhook`, `ntfy`, `email` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// 1 to 32 of `a-z`, `0-9`, `-`; names the credential file too.
    pub name: String,
    /// The least severity this channel is sent.
    #[serde(default = "ChannelConfig::default_min_severity")]
    pub min_severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookChannel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntfy: Option<NtfyChannel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailChannel>,
}

/// POST of the alert as JSON. The credential, if set, signs the body:
/// `X-Arasul-Signature: sha256=<hex HMAC-SHA256>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    /// `http://` or `https://`.
    pub url: String,
}

/// A push to an ntfy topic (`{server}/{topic}`); the credential, if set, is
/// an access token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NtfyChannel {
    #[serde(default = "NtfyChannel::default_server")]
    pub server: String,
    pub topic: String,
}

/// E-mail over SMTP; the credential, if set, is the password for `username`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    pub host: String,
    #[serde(default = "EmailChannel::default_port")]
    pub port: u16,
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `Arasul <box@example.org>` or a bare address.
    pub from: String,
    pub to: Vec<String>,
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connect, then STARTTLS (required), usually port 587.
    #[default]
    Starttls,
    /// TLS from the first byte, usually port 465.
    Tls,
    /// No encryption: only to a relay on this machine (loopback).
    None,
}

impl ChannelConfig {
    fn default_min_severity() -> Severity {
        Severity::Warning
    }

    /// `webhook`, `ntfy` or `email`.
    pub fn kind(&self) -> &'static str {
        match (&self.webhook, &self.ntfy, &self.email) {
            (Some(_), _, _) => "webhook",
            (_, Some(_), _) => "ntfy",
            _ => "email",
        }
    }

    /// Whether this channel is sent alerts of `severity`.
    pub fn wants(&self, severity: Severity) -> bool {
        severity >= self.min_severity
    }
}

impl NtfyChannel {
    fn default_server() -> String {
        "https://ntfy.sh".into()
    }
}

impl EmailChannel {
    fn default_port() -> u16 {
        587
    }
}

/// Where the credential of channel `name` lives.
pub fn secret_file(secrets_dir: &Path, name: &str) -> PathBuf {
    secrets_dir.join(format!("notify-{name}.secret"))
}

/// A daily span of local time; `start > end` wraps past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl FromStr for QuietHours {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected HH:MM-HH:MM (e.g. \"22:00-07:00\"), got {s:?}");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let t = |x: &str| NaiveTime::parse_from_str(x.trim(), "%H:%M").map_err(|_| bad());
        let q = QuietHours {
            start: t(a)?,
            end: t(b)?,
        };
        if q.start == q.end {
            return Err(format!("{s:?}: start and end must differ"));
        }
        Ok(q)
    }
}

impl TryFrom<String> for QuietHours {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<QuietHours> for String {
    fn from(q: QuietHours) -> String {
        q.to_string()
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

fn is_http_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://")) && reqwest::Url::parse(u).is_ok()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl NotifyConfig {
    /// (key, message) for each invalid value.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |key: String, msg: String| out.push((key, msg));
        for (key, d) in [
            ("dedup_window", self.dedup_window),
            ("retry_initial", self.retry_initial),
            ("send_timeout", self.send_timeout),
            ("retention", self.retention),
        ] {
            if d.is_zero() {
                bad(format!("notify.{key}"), "must be greater than zero".into());
            }
        }
        if self.retry_max < self.retry_initial {
            bad(
                "notify.retry_max".into(),
                "must not be below retry_initial".into(),
            );
        }
        if self.max_attempts == 0 {
            bad("notify.max_attempts".into(), "must be at least 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            let at = |k: &str| format!("notify.channels[{i}].{k}");
            let name_ok = (1..=32).contains(&c.name.len())
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                bad(
                    at("name"),
                    format!("{:?}: 1 to 32 of a-z, 0-9 and '-'", c.name),
                );
            } else if !seen.insert(c.name.as_str()) {
                bad(at("name"), format!("{:?} is used by two channels", c.name));
            }
            let kinds =
                c.webhook.is_some() as u8 + c.ntfy.is_some() as u8 + c.email.is_some() as u8;
            if kinds != 1 {
                bad(
                    format!("notify.channels[{i}]"),
                    "needs exactly one of webhook, ntfy, email".into(),
                );
            }
            if let Some(w) = &c.webhook
                && !is_http_url(&w.url)
            {
                bad(
                    at("webhook.url"),
                    format!("{:?} is not an http:// or https:// URL", w.url),
                );
            }
            if let Some(n) = &c.ntfy {
                if !is_http_url(&n.server) {
                    bad(
                        at("ntfy.server"),
                        format!("{:?} is not an http:// or https:// URL", n.server),
                    );
                }
                let topic_ok = (1..=64).contains(&n.topic.len())
                    && n.topic
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !topic_ok {
                    bad(
                        at("ntfy.topic"),
                        format!("{:?}: 1 to 64 of A-Z, a-z, 0-9, '-' and '_'", n.topic),
                    );
                }
            }
            if let Some(e) = &c.email {
                if e.host.is_empty() || e.host.contains(char::is_whitespace) {
                    bad(at("email.host"), format!("{:?} is not a host name", e.host));
                }
                if e.port == 0 {
                    bad(at("email.port"), "must be between 1 and 65535".into());
                }
                if e.security == SmtpSecurity::None && !is_loopback(&e.host) {
                    bad(
                        at("email.security"),
                        "none (no encryption) is only allowed to a relay on this machine \
                         (localhost, 127.0.0.1, ::1); use starttls or tls"
                            .into(),
                    );
                }
                if lettre::message::Mailbox::from_str(&e.from).is_err() {
                    bad(
                        at("email.from"),
                        format!("{:?} is not an e-mail address", e.from),
                    );
                }
                if e.to.is_empty() {
                    bad(at("email.to"), "needs at least one address".into());
                }
                for to in &e.to {
                    if lettre::message::Mailbox::from_str(to).is_err() {
                        bad(at("email.to"), format!("{to:?} is not an e-mail address"));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<NotifyConfig, String> {
        serde_yaml::from_str::<NotifyConfig>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_send_nowhere_with_an_hour_of_dedup() {
        let c = NotifyConfig::default();
        assert!(c.channels.is_empty());
        assert_eq!(c.dedup_window, Duration::from_secs(3600));
        assert!(c.validate().is_empty());
    }

    #[test]
    fn a_full_section_parses_and_validates() {
        let c = parse(
            r#"
dedup_window: 30m
quiet_hours: "22:00-07:00"
channels:
  - name: phone
    ntfy: {topic: my-box}
  - name: mail
    min_severity: CRITICAL
    email: {host: smtp.example.org, username: box, from: "Box <box@example.org>", to: [owner@example.org]}
  - name: hook
    min_severity: INFO
    webhook: {url: "https://hooks.example.org/x"}
"#,
        )
        .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.channels[0].min_severity, Severity::Warning);
        assert_eq!(
            c.channels[0].ntfy.as_ref().unwrap().server,
            "https://ntfy.sh"
        );
        assert_eq!(c.channels[1].email.as_ref().unwrap().port, 587);
        assert_eq!(c.channels[1].kind(), "email");
        assert_eq!(c.quiet_hours.unwrap().to_string(), "22:00-07:00");
        assert!(c.channels[1].wants(Severity::Critical));
        assert!(!c.channels[1].wants(Severity::Warning));
        assert!(c.channels[2].wants(Severity::Info));
        // It survives the round trip through YAML the dashboard's drop-in makes.
        let back = parse(&serde_yaml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bad_values_are_named_with_their_key() {
        assert!(
            parse("quiet_hours: \"22:00\"")
                .unwrap_err()
                .contains("HH:MM-HH:MM")
        );
        assert!(parse("channels: [{name: x, sms: {}}]").is_err());
        let c = parse(
            r#"
retry_initial: 1m
retry_max: 10s
channels:
  - name: Phone!
    ntfy: {topic: "a b"}
  - name: two
    webhook: {url: "ftp://x"}
    ntfy: {topic: t}
  - name: mail
    email: {host: smtp.example.org, security: none, from: "not an address", to: []}
"#,
        )
        .unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|(k, _)| k).collect();
        for want in [
            "notify.retry_max",
            "notify.channels[0].name",
            "notify.channels[0].ntfy.topic",
            "notify.channels[1]",
            "notify.channels[1].webhook.url",
            "notify.channels[2].email.security",
            "notify.channels[2].email.from",
            "notify.channels[2].email.to",
        ] {
            assert!(
                keys.contains(&want.to_string()),
                "{want} missing in {keys:?}"
            );
        }
        let plain_local = parse(
            "channels: [{name: m, email: {host: 127.0.0.1, port: 2525, security: none, from: a@b.c, to: [d@e.f]}}]",
        )
        .unwrap();
        assert!(plain_local.validate().is_empty());
    }
}
