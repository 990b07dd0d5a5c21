//! The FleetPrompt server's `/edge/v1` API, as this connector calls it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;

/// Failures talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The token was refused: revoked, or not this server's. Retrying
    /// cannot help, so the connector stops.
    #[error("the server refused the connector token (revoked, or for another server)")]
    Unauthorized,
    /// The server answered with an error.
    #[error("the server answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// The server could not be reached, or the answer could not be read.
    #[error("cannot reach the server: {0}")]
    Transport(#[from] reqwest::Error),
}

impl ApiError {
    /// The server is away or in trouble (no answer, or a 5xx): worth asking
    /// again later. A 4xx answer will be the same next time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Unauthorized => false,
        }
    }
}

/// A task the server handed us.
#[derive(Debug, Clone, Deserialize)]
pub struct Task {
    /// The directive's id (`dir_…`): also the email's `Message-ID`.
    pub id: String,
    /// Its kind (`email.send`).
    pub kind: String,
    /// The attempt number, reported back with the result.
    pub attempt: i32,
    /// The kind's arguments.
    #[serde(default)]
    pub args: Value,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Delivered (SMTP `250`).
    Succeeded,
    /// Not delivered; may be tried again.
    Retry,
    /// Not delivered, for good.
    Failed,
}

impl Outcome {
    /// As the server spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retry => "retry",
            Self::Failed => "failed",
        }
    }
}

/// How an attempt ended, as reported to the server (and kept in the
/// journal until the server takes it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskResult {
    /// The attempt number the task was handed with.
    pub attempt: i32,
    /// How it ended.
    pub outcome: Outcome,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The email's `Message-ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    /// The SMTP server's reply code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_code: Option<u16>,
    /// The SMTP server's reply text, shown on the conversation's timeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_reply: Option<String>,
}

/// A reply found in the mailbox, as reported to `POST /edge/v1/inbound`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InboundReport {
    /// The reply's `Message-ID` (the server dedupes by it).
    pub message_id: String,
    /// The ids of ours it answers (`dir_…`, `conv_…`).
    pub references: Vec<String>,
    /// The sender's address.
    pub from: String,
    /// Its own words.
    pub text: String,
}

/// The server, with this connector's token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for `config`'s server.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Long enough for the longest claim long poll.
            .timeout(config.wait + Duration::from_secs(20))
            .user_agent(concat!("fleetprompt-edge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: config.server_url.clone(),
            token: config.token.clone(),
        })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, ApiError> {
        let resp = self
            .http
            .post(format!("{}/edge/v1{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(v),
            401 => Err(ApiError::Unauthorized),
            _ => Err(ApiError::Status {
                status,
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or("(no message)")
                    .to_owned(),
            }),
        }
    }

    /// Tells the server this connector is alive.
    pub async fn heartbeat(&self) -> Result<Value, ApiError> {
        self.post(
            "/heartbeat",
            json!({ "version": env!("CARGO_PKG_VERSION") }),
        )
        .await
    }

    /// Claims due tasks of `kinds`, waiting up to `wait` for one.
    pub async fn claim(
        &self,
        kinds: &[&str],
        limit: i64,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Task>, ApiError> {
        let v = self
            .post(
                "/tasks/claim",
                json!({
                    "kinds": kinds,
                    "limit": limit,
                    "wait_ms": wait.as_millis() as u64,
                    "lease_ms": lease.as_millis() as u64,
                }),
            )
            .await?;
        Ok(serde_json::from_value(v["tasks"].clone()).unwrap_or_default())
    }

    /// Reports a reply found in the mailbox; the answer says whether it was
    /// recorded and whether it came from the team.
    pub async fn inbound(&self, report: &InboundReport) -> Result<Value, ApiError> {
        let body = serde_json::to_value(report).unwrap_or(Value::Null);
        self.post("/inbound", body).await
    }

    /// Reports how an attempt ended.
    pub async fn report(&self, task_id: &str, result: &TaskResult) -> Result<(), ApiError> {
        let body = serde_json::to_value(result).unwrap_or(Value::Null);
        self.post(&format!("/tasks/{task_id}/result"), body)
            .await
            .map(|_| ())
    }
}
