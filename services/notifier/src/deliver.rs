//! Channels: one attempt per channel kind, and the retry loop around it (per-attempt timeout,
//! exponential backoff with jitter, `Retry-After` honoured, permanent errors not retried).

use std::time::Duration;

use fleetbus_schemas::commands::notify::{ChannelKind, ChannelSpec};
use hmac::{Hmac, Mac};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rand::Rng;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::config::{RetryConfig, Secrets};
use crate::render::Message;

/// The webhook signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub(crate) const SIGNATURE_HEADER: &str = "X-Fleetbus-Signature";
/// The idempotency header: the notification (or digest) id.
pub(crate) const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// `sha256=<hex>` of the body under `key`.
pub(crate) fn sign(key: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why one attempt failed.
#[derive(Debug, Clone)]
pub(crate) struct AttemptError {
    /// Worth trying again (timeouts, connection errors, 429, 5xx, transient SMTP).
    pub retryable: bool,
    /// What happened (no secrets).
    pub reason: String,
    /// The receiver asked to wait this long.
    pub retry_after: Option<Duration>,
}

impl AttemptError {
    fn permanent(reason: impl Into<String>) -> Self {
        AttemptError {
            retryable: false,
            reason: reason.into(),
            retry_after: None,
        }
    }
    fn transient(reason: impl Into<String>) -> Self {
        AttemptError {
            retryable: true,
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// The outcome of a delivery with retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Accepted after this many attempts.
    Delivered {
        /// Attempts made.
        attempts: u32,
    },
    /// Gave up.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
}

/// Delivers messages through channels.
#[derive(Clone)]
pub(crate) struct Deliverer {
    http: reqwest::Client,
    nats: Option<async_nats::Client>,
    secrets: std::sync::Arc<Secrets>,
    retry: RetryConfig,
}

impl Deliverer {
    /// A deliverer; `nats` is needed for NATS channels.
    pub(crate) fn new(
        nats: Option<async_nats::Client>,
        secrets: Secrets,
        retry: RetryConfig,
    ) -> Result<Self, crate::NotifierError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("fleetbus-notifier/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::NotifierError::Config(format!("http client: {e}")))?;
        Ok(Deliverer {
            http,
            nats,
            secrets: std::sync::Arc::new(secrets),
            retry,
        })
    }

    /// The backoff before attempt `n + 1` (n ≥ 1): base·2^(n-1), capped, then "equal jitter"
    /// (half fixed, half random) so that retries of many notifications spread out but still grow.
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .retry
            .base_ms
            .saturating_mul(1u64 << (n.saturating_sub(1)).min(20))
            .min(self.retry.max_ms)
            .max(1);
        let half = exp / 2;
        Duration::from_millis(half + rand::thread_rng().gen_range(0..=exp - half))
    }

    /// Delivers with retries until accepted, a permanent error, `max_attempts`, or shutdown.
    pub(crate) async fn deliver(
        &self,
        channel: &ChannelSpec,
        msg: &Message,
        cancel: &CancellationToken,
    ) -> Outcome {
        let max = channel.max_attempts.max(1);
        let timeout = Duration::from_millis(channel.timeout_ms);
        let mut n = 0;
        loop {
            n += 1;
            let res = match tokio::time::timeout(timeout, self.attempt(channel, msg, timeout)).await
            {
                Ok(r) => r,
                Err(_) => Err(AttemptError::transient(format!(
                    "timed out after {} ms",
                    channel.timeout_ms
                ))),
            };
            let err = match res {
                Ok(()) => return Outcome::Delivered { attempts: n },
                Err(e) => e,
            };
            tracing::debug!(channel = %channel.channel, key = %msg.key, attempt = n,
                retryable = err.retryable, reason = %err.reason, "delivery attempt failed");
            if !err.retryable || n >= max {
                return Outcome::GaveUp {
                    attempts: n,
                    reason: err.reason,
                };
            }
            let wait = err
                .retry_after
                .map(|d| d.min(Duration::from_millis(self.retry.max_ms)))
                .unwrap_or_else(|| self.backoff(n));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => {
                    return Outcome::GaveUp { attempts: n, reason: format!("{} (shutdown before retry)", err.reason) };
                }
            }
        }
    }

    fn secret(&self, name: &str) -> Result<&str, AttemptError> {
        self.secrets.get(name).map(|s| s.expose()).ok_or_else(|| {
            AttemptError::permanent(format!("secret {name:?} is not in the secrets file"))
        })
    }

    async fn attempt(
        &self,
        channel: &ChannelSpec,
        msg: &Message,
        timeout: Duration,
    ) -> Result<(), AttemptError> {
        match &channel.kind {
            ChannelKind::Webhook { url, hmac_secret } => {
                let body = serde_json::to_vec(&msg.json)
                    .map_err(|e| AttemptError::permanent(format!("encode body: {e}")))?;
                let mut req = self
                    .http
                    .post(url)
                    .timeout(timeout)
                    .header("Content-Type", "application/json")
                    .header(IDEMPOTENCY_HEADER, &msg.key);
                if let Some(name) = hmac_secret {
                    req = req.header(SIGNATURE_HEADER, sign(self.secret(name)?.as_bytes(), &body));
                }
                http_result(req.body(body).send().await).await
            }
            ChannelKind::Slack { url_secret } => {
                let url = self.secret(url_secret)?.to_owned();
                let body = serde_json::json!({ "text": format!("*{}*\n{}", msg.title, msg.text) });
                let req = self
                    .http
                    .post(url)
                    .timeout(timeout)
                    .header(IDEMPOTENCY_HEADER, &msg.key)
                    .json(&body);
                http_result(req.send().await).await
            }
            ChannelKind::Ntfy {
                server,
                topic,
                token_secret,
            } => {
                let url = format!("{}/{topic}", server.trim_end_matches('/'));
                let mut req = self
                    .http
                    .post(url)
                    .timeout(timeout)
                    .header(IDEMPOTENCY_HEADER, &msg.key)
                    .header("Title", ascii_header(&msg.title))
                    .header("Priority", msg.priority.to_string())
                    .header("Tags", "fleetbus");
                if let Some(name) = token_secret {
                    req = req.bearer_auth(self.secret(name)?);
                }
                http_result(req.body(msg.text.clone()).send().await).await
            }
            ChannelKind::Email {
                smtp_host,
                smtp_port,
                starttls,
                from,
                username,
                password_secret,
            } => {
                let to = msg
                    .email
                    .as_deref()
                    .ok_or_else(|| AttemptError::permanent("recipient has no email address"))?;
                let parse = |s: &str, what: &str| {
                    s.parse::<Mailbox>()
                        .map_err(|e| AttemptError::permanent(format!("{what} address {s:?}: {e}")))
                };
                let mut email = lettre::Message::builder()
                    .from(parse(from, "from")?)
                    .to(parse(to, "to")?)
                    .subject(&msg.title)
                    .message_id(Some(format!("<{}@fleetbus>", msg.key)))
                    .multipart(MultiPart::alternative_plain_html(
                        msg.text.clone(),
                        msg.html.clone(),
                    ))
                    .map_err(|e| AttemptError::permanent(format!("build email: {e}")))?;
                email.headers_mut().insert_raw(HeaderValue::new(
                    HeaderName::new_from_ascii_str(IDEMPOTENCY_HEADER),
                    msg.key.clone(),
                ));
                let mut builder = if *starttls {
                    AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(smtp_host)
                        .map_err(|e| AttemptError::permanent(format!("smtp tls setup: {e}")))?
                } else {
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp_host.as_str())
                };
                builder = builder.port(*smtp_port).timeout(Some(timeout));
                if let Some(user) = username {
                    let password = match password_secret {
                        Some(name) => self.secret(name)?.to_owned(),
                        None => String::new(),
                    };
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                let transport = builder.build();
                match transport.send(email).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_permanent() => {
                        Err(AttemptError::permanent(format!("smtp: {e}")))
                    }
                    Err(e) => Err(AttemptError::transient(format!("smtp: {e}"))),
                }
            }
            ChannelKind::Nats => {
                let Some(client) = &self.nats else {
                    return Err(AttemptError::permanent(
                        "no NATS connection for a NATS channel",
                    ));
                };
                let body = serde_json::to_vec(&msg.json)
                    .map_err(|e| AttemptError::permanent(format!("encode body: {e}")))?;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(IDEMPOTENCY_HEADER, msg.key.as_str());
                let subject = format!("fleet.notify.{}", channel.channel);
                client
                    .publish_with_headers(subject, headers, body.into())
                    .await
                    .map_err(|e| AttemptError::transient(format!("nats publish: {e}")))?;
                client
                    .flush()
                    .await
                    .map_err(|e| AttemptError::transient(format!("nats flush: {e}")))
            }
        }
    }
}

/// Header values must be visible ASCII; titles may carry anything a host reported.
fn ascii_header(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect()
}

async fn http_result(res: Result<reqwest::Response, reqwest::Error>) -> Result<(), AttemptError> {
    let resp = match res {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err(AttemptError::transient("timed out")),
        Err(e) if e.is_builder() => {
            return Err(AttemptError::permanent(format!("bad request: {e}")))
        }
        // Connection refused, reset, DNS: the receiver may come back.
        Err(e) => {
            return Err(AttemptError::transient(format!(
                "http: {}",
                without_url(&e)
            )))
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let retryable = status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408;
    Err(AttemptError {
        retryable,
        reason: format!("HTTP {}", status.as_u16()),
        retry_after,
    })
}

// reqwest errors print the URL, which for Slack is a secret.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<url>");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let d = Deliverer::new(
            None,
            Secrets::empty(),
            RetryConfig {
                base_ms: 100,
                max_ms: 1_000,
            },
        )
        .unwrap();
        for _ in 0..50 {
            let b1 = d.backoff(1).as_millis();
            let b3 = d.backoff(3).as_millis();
            let b9 = d.backoff(9).as_millis();
            assert!((50..=100).contains(&b1), "{b1}");
            assert!((200..=400).contains(&b3), "{b3}");
            assert!((500..=1000).contains(&b9), "{b9}");
        }
    }
}
