//! HTTP client for ingest's agent API.

use std::time::Duration;

use fleetbus_schemas::AgentId;
use serde::Serialize;

use crate::wire;
use crate::AgentError;

/// How ingest answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Stored durably (2xx), with ingest's reply when it could be read.
    Accepted(Option<wire::SubmitReply>),
    /// Try again later: ingest unreachable, timed out, 5xx or 429 (flood control).
    Retry(String),
    /// Refused for good (any other 4xx): the request itself is wrong, sending it again will not
    /// help.
    Rejected {
        /// HTTP status.
        status: u16,
        /// Ingest's explanation.
        reason: String,
    },
}

/// Talks to one ingest on behalf of one agent.
#[derive(Debug, Clone)]
pub struct IngestClient {
    http: reqwest::Client,
    base: String,
    agent: AgentId,
    key: String,
}

impl IngestClient {
    /// A client for `agent` with its bearer `key`.
    pub fn new(
        ingest_url: &str,
        agent: AgentId,
        key: String,
        timeout: Duration,
    ) -> Result<IngestClient, AgentError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("fleetbus-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AgentError::Http(e.to_string()))?;
        Ok(IngestClient {
            http,
            base: ingest_url.trim_end_matches('/').to_owned(),
            agent,
            key,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/agents/{}/{path}", self.base, self.agent)
    }

    async fn post<T: Serialize + ?Sized>(&self, path: &str, body: &T) -> Delivery {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Delivery::Retry(describe(&e)),
        };
        let status = response.status();
        if status.is_success() {
            let reply = response.json::<wire::SubmitReply>().await.ok();
            if reply.as_ref().is_some_and(|r| r.blocked) {
                tracing::warn!(agent = %self.agent, "ingest says this agent is blocked; reports are stored but raise no notifications");
            }
            return Delivery::Accepted(reply);
        }
        let mut reason = response.text().await.unwrap_or_default();
        reason.truncate(reason.floor_char_boundary_compat(1000));
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Delivery::Retry(format!("HTTP {status}: {reason}"))
        } else {
            Delivery::Rejected {
                status: status.as_u16(),
                reason,
            }
        }
    }

    /// Sends one report.
    pub async fn send_report(&self, report: &wire::ReportPush) -> Delivery {
        self.post(wire::REPORT_PATH, report).await
    }

    /// Sends several reports, oldest first, in one request.
    pub async fn send_batch(&self, reports: &[wire::ReportPush]) -> Delivery {
        #[derive(Serialize)]
        struct Batch<'a> {
            reports: &'a [wire::ReportPush],
        }
        self.post(wire::BATCH_PATH, &Batch { reports }).await
    }

    /// Sends one notice.
    pub async fn send_notice(&self, notice: &wire::NoticePush) -> Delivery {
        #[derive(Serialize)]
        struct Notices<'a> {
            events: [&'a wire::NoticePush; 1],
        }
        self.post(wire::EVENTS_PATH, &Notices { events: [notice] })
            .await
    }
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's Display hides the cause ("error sending request"); the source says why.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for String {
    fn floor_char_boundary_compat(&self, index: usize) -> usize {
        if index >= self.len() {
            return self.len();
        }
        (0..=index)
            .rev()
            .find(|&i| self.is_char_boundary(i))
            .unwrap_or(0)
    }
}
