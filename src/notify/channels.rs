//! Sending one alert through one channel: a webhook (JSON POST, signed
//! with the channel's secret), ntfy (POST to `{server}/{topic}` with
//! Title/Priority/Tags headers) or e-mail over SMTP (lettre). Each send is
//! one try; retries belong to the worker.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{ChannelConfig, EmailChannel, NtfyChannel, SmtpSecurity, WebhookChannel};
use super::{Alert, Severity};
use crate::config::Secret;

/// What every message says besides the alert.
#[derive(Clone, Debug)]
pub struct Sender {
    /// The box's name (`mdns.hostname`).
    pub box_name: String,
    pub http: reqwest::Client,
    pub timeout: Duration,
}

impl Sender {
    pub fn new(box_name: &str, timeout: Duration) -> Sender {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("arasuld/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Sender {
            box_name: box_name.to_owned(),
            http,
            timeout,
        }
    }

    /// One try through `channel`; `Err` is what went wrong, for the outbox
    /// and the log (never the credential).
    pub async fn send(
        &self,
        channel: &ChannelConfig,
        credential: Option<&Secret<String>>,
        alert: &Alert,
        at: DateTime<Utc>,
    ) -> Result<(), String> {
        let sent = async {
            if let Some(w) = &channel.webhook {
                self.webhook(w, credential, alert, at).await
            } else if let Some(n) = &channel.ntfy {
                self.ntfy(n, credential, alert).await
            } else if let Some(e) = &channel.email {
                self.email(e, credential, alert, at).await
            } else {
                Err("the channel has no destination".into())
            }
        };
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn webhook(
        &self,
        w: &WebhookChannel,
        secret: Option<&Secret<String>>,
        alert: &Alert,
        at: DateTime<Utc>,
    ) -> Result<(), String> {
        let body = serde_json::to_vec(&serde_json::json!({
            "box": self.box_name,
            "at": at,
            "severity": alert.severity,
            "kind": alert.kind,
            "cause": alert.cause,
            "title": alert.title,
            "body": alert.body,
        }))
        .map_err(|e| e.to_string())?;
        let mut req = self
            .http
            .post(&w.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(s) = secret {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.expose().as_bytes());
            let tag = ring::hmac::sign(&key, &body);
            req = req.header(
                "X-Arasul-Signature",
                format!("sha256={}", hex::encode(tag.as_ref())),
            );
        }
        answer(req.body(body).send().await).await
    }

    async fn ntfy(
        &self,
        n: &NtfyChannel,
        token: Option<&Secret<String>>,
        alert: &Alert,
    ) -> Result<(), String> {
        let url = format!("{}/{}", n.server.trim_end_matches('/'), n.topic);
        let (priority, tag) = match alert.severity {
            Severity::Critical => ("5", "rotating_light"),
            Severity::Warning => ("4", "warning"),
            Severity::Info => ("3", "information_source"),
        };
        let mut req = self
            .http
            .post(url)
            .header(
                "Title",
                header_text(&format!("{}: {}", self.box_name, alert.title)),
            )
            .header("Priority", priority)
            .header("Tags", format!("{tag},{}", alert.kind));
        if let Some(t) = token {
            req = req.bearer_auth(t.expose());
        }
        answer(req.body(alert.body.clone()).send().await).await
    }

    async fn email(
        &self,
        e: &EmailChannel,
        password: Option<&Secret<String>>,
        alert: &Alert,
        at: DateTime<Utc>,
    ) -> Result<(), String> {
        let from: Mailbox = e.from.parse().map_err(|err| format!("from: {err}"))?;
        let mut msg = Message::builder()
            .from(from)
            .subject(format!(
                "[{}] {}: {}",
                self.box_name,
                alert.severity.as_str(),
                alert.title
            ))
            .header(ContentType::TEXT_PLAIN)
            .date(at.into());
        for to in &e.to {
            msg = msg.to(to.parse().map_err(|err| format!("to {to:?}: {err}"))?);
        }
        let mut msg = msg
            .body(format!(
                "{}\n\n{} · {} · {}\n",
                alert.body,
                self.box_name,
                alert.severity.as_str(),
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ))
            .map_err(|err| err.to_string())?;
        // For mail filters (and the tests): what and why, machine-readable.
        for (name, value) in [
            ("X-Arasul-Kind", &alert.kind),
            ("X-Arasul-Cause", &alert.cause),
        ] {
            msg.headers_mut().insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.clone(),
            ));
        }
        let builder = match e.security {
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&e.host)
                .map_err(|err| err.to_string())?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&e.host)
                .map_err(|err| err.to_string())?,
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&e.host),
        };
        let hello = if self.box_name.is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(format!("{}.local", self.box_name))
        };
        let mut builder = builder
            .port(e.port)
            .timeout(Some(self.timeout))
            .hello_name(hello);
        if let Some(user) = &e.username {
            let pw = password.map(|p| p.expose().clone()).unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), pw));
        }
        builder
            .build()
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|err| format!("SMTP {}:{}: {err}", e.host, e.port))
    }
}

/// A 2xx is delivered; anything else names the status and the start of
/// the answer.
async fn answer(r: Result<reqwest::Response, reqwest::Error>) -> Result<(), String> {
    let resp = r.map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    Err(format!("HTTP {status}: {}", text.trim()))
}

/// A header value: ASCII as it is, anything else RFC 2047-encoded (ntfy
/// decodes it), so German titles arrive intact.
fn header_text(s: &str) -> String {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        s.to_owned()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_header_values_are_encoded_for_ntfy() {
        assert_eq!(header_text("box: disk full"), "box: disk full");
        assert_eq!(header_text("Größe"), "=?UTF-8?B?R3LDtsOfZQ==?=");
    }
}
