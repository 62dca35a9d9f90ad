//! The Slack Web API and incoming webhooks over HTTPS, with Slack's answers sorted into "try
//! again", "try again after" and "refused".

use std::time::Duration;

use serde_json::Value;

use crate::config::{Secret, SlackConfig, SlackMode};

/// Why a call to Slack did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// Worth trying again: a 5xx, a timeout, a reset connection, Slack's own transient errors.
    #[error("{0}")]
    Transient(String),
    /// 429 (or `ratelimited`): try again after this long.
    #[error("rate limited; retry after {} s", .0.as_secs())]
    RateLimited(Duration),
    /// Slack refused the call (`channel_not_found`, `invalid_blocks`, a 4xx …); the same call
    /// will be refused again.
    #[error("{0}")]
    Refused(String),
}

/// Errors Slack documents as temporary.
const TRANSIENT: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

#[derive(Debug, Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    mode: SlackMode,
    token: Secret,
    webhook: Secret,
    base: String,
}

impl SlackClient {
    /// A client for the configured transport; None when Slack is not configured.
    pub fn new(config: &SlackConfig) -> Option<Self> {
        let mode = config.mode();
        if mode == SlackMode::Off {
            return None;
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("quorum/", env!("CARGO_PKG_VERSION")))
            .build()
            .ok()?;
        Some(Self {
            http,
            mode,
            token: config.bot_token.clone(),
            webhook: config.webhook_url.clone(),
            base: config.api_base_url.trim_end_matches('/').to_owned(),
        })
    }

    pub fn mode(&self) -> SlackMode {
        self.mode
    }

    /// A Web API method with a JSON body (the write methods: `chat.postMessage`, `chat.update`,
    /// `chat.postEphemeral`, `views.open`).
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(self.token.expose())
            .json(body)
            .send()
            .await;
        Self::answer(response).await
    }

    /// A Web API method with form parameters (the read methods: `users.info`,
    /// `users.lookupByEmail`, `conversations.replies`, which do not take JSON).
    pub async fn call_form(
        &self,
        method: &str,
        params: &[(&str, &str)],
    ) -> Result<Value, SlackError> {
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(self.token.expose())
            .form(params)
            .send()
            .await;
        Self::answer(response).await
    }

    /// Posts a message to the incoming webhook, which answers `ok` or an error as plain text.
    pub async fn webhook(&self, body: &Value) -> Result<(), SlackError> {
        let response = self
            .http
            .post(self.webhook.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| SlackError::Transient(describe(&e)))?;
        let status = response.status();
        let after = retry_after(&response);
        let text = response.text().await.unwrap_or_default();
        match status.as_u16() {
            200..=299 => Ok(()),
            429 => Err(SlackError::RateLimited(after)),
            500..=599 => Err(SlackError::Transient(format!("HTTP {status}"))),
            _ => Err(SlackError::Refused(format!(
                "HTTP {}: {}",
                status.as_u16(),
                crate::domain::slack::cut(text.trim(), 200).0
            ))),
        }
    }

    async fn answer(response: reqwest::Result<reqwest::Response>) -> Result<Value, SlackError> {
        let response = response.map_err(|e| SlackError::Transient(describe(&e)))?;
        let status = response.status();
        let after = retry_after(&response);
        if status.as_u16() == 429 {
            return Err(SlackError::RateLimited(after));
        }
        if status.is_server_error() {
            return Err(SlackError::Transient(format!("HTTP {}", status.as_u16())));
        }
        if !status.is_success() {
            return Err(SlackError::Refused(format!("HTTP {}", status.as_u16())));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| SlackError::Transient(format!("unreadable answer: {}", describe(&e))))?;
        if body["ok"] == Value::Bool(true) {
            return Ok(body);
        }
        let error = body["error"].as_str().unwrap_or("unknown_error").to_owned();
        Err(if error == "ratelimited" {
            SlackError::RateLimited(after)
        } else if TRANSIENT.contains(&error.as_str()) {
            SlackError::Transient(error)
        } else {
            SlackError::Refused(error)
        })
    }
}

/// `Retry-After` in seconds; 30 s when Slack gave none.
fn retry_after(response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(30), |s| {
            Duration::from_secs(s.min(3600))
        })
}

/// A transport error without the URL (a webhook URL is a credential).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_decode() {
        "bad answer"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}
