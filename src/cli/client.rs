//! A small blocking HTTP client for commands that talk to a running agent.

use anyhow::{Context, bail};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::output::errln;
use crate::settings::Settings;

/// The agent refused a request: its error envelope (`{"error": {"code", "message",
/// "details"}}`) and the HTTP status. Shown as the message and the status (a 401 also says
/// which key was sent); commands that want the code downcast to it.
#[derive(Debug, thiserror::Error)]
#[error("{shown}")]
pub struct Refusal {
    pub status: u16,
    /// `CLIENT_NOT_FOUND`, `CONFIG_INVALID`, …; `ERROR` when the answer had no envelope.
    pub code: String,
    pub message: String,
    pub details: Value,
    shown: String,
}

pub struct Client {
    base: String,
    key: Option<String>,
    /// Which key was sent or where none was found, for a 401's message.
    key_hint: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(settings: &Settings) -> anyhow::Result<Client> {
        Ok(Client {
            base: settings.agent_url.trim_end_matches('/').to_owned(),
            key: settings.client_api_key(),
            key_hint: settings.client_key_hint(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .context("cannot build the HTTP client")?,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?,
        })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(Method::GET, path)
    }

    pub fn send<T: DeserializeOwned>(&self, method: Method, path: &str) -> anyhow::Result<T> {
        self.request(method, path, None)
    }

    pub fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<T> {
        self.request(method, path, Some(body))
    }

    /// Follows `GET {path}` as Server-Sent Events, calling `on_event` with each event's JSON
    /// data, for as long as the agent is reachable and `on_event` returns true. A dropped
    /// connection is resumed with `Last-Event-ID`, so nothing is missed or printed twice;
    /// `last_id` starts the stream.
    pub fn follow(
        &self,
        path: &str,
        mut last_id: Option<i64>,
        mut on_event: impl FnMut(&crate::store::Event) -> bool,
    ) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        // No overall timeout (the stream is endless); the agent sends a keep-alive every 15 s,
        // so a silent minute means the connection is gone.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        let mut backoff = std::time::Duration::from_millis(250);
        self.rt.block_on(async {
            loop {
                let mut request = http.get(&url).header("accept", "text/event-stream");
                if let Some(key) = &self.key {
                    request = request.bearer_auth(key);
                }
                if let Some(id) = last_id {
                    request = request.header("last-event-id", id.to_string());
                }
                let lost = match request.send().await {
                    Ok(response) if response.status().is_success() => {
                        backoff = std::time::Duration::from_millis(250);
                        let mut parser = crate::sse::Parser::default();
                        let mut body = response.bytes_stream();
                        loop {
                            match futures::StreamExt::next(&mut body).await {
                                Some(Ok(chunk)) => {
                                    for e in parser.push(&chunk) {
                                        if let Some(id) =
                                            e.id.as_deref().and_then(|id| id.parse().ok())
                                        {
                                            last_id = Some(id);
                                        }
                                        match e.event.as_str() {
                                            // The agent's notes about the stream itself.
                                            "gap" | "reset" => {
                                                let v: Value = serde_json::from_str(&e.data)
                                                    .unwrap_or_default();
                                                errln!(
                                                    "note: {} (after id {})",
                                                    v["message"].as_str().unwrap_or(&e.event),
                                                    v["after"]
                                                )
                                            }
                                            _ => {
                                                let Ok(event) = serde_json::from_str(&e.data)
                                                else {
                                                    errln!(
                                                        "note: an event this CLI cannot read: {}",
                                                        e.data
                                                    );
                                                    continue;
                                                };
                                                if !on_event(&event) {
                                                    return Ok(());
                                                }
                                            }
                                        }
                                    }
                                }
                                Some(Err(e)) => break format!("{e}"),
                                None => break "the agent closed the stream".to_owned(),
                            }
                        }
                    }
                    Ok(response) => {
                        let status = response.status();
                        let body: Value = response.json().await.unwrap_or_default();
                        let message = body
                            .pointer("/error/message")
                            .and_then(Value::as_str)
                            .unwrap_or("request failed");
                        // A refusal will not change by retrying.
                        bail!("{}", self.refusal(status, message));
                    }
                    Err(e) => format!("cannot reach the agent at {}: {e}", self.base),
                };
                errln!("{lost}; reconnecting in {:.1} s", backoff.as_secs_f64());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
        })
    }

    /// The agent URL requests go to, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The error message of a refused request; a 401 also says which key was sent or where
    /// none was found.
    fn refusal(&self, status: reqwest::StatusCode, message: &str) -> String {
        if status == reqwest::StatusCode::UNAUTHORIZED {
            format!("{message} (HTTP 401: {})", self.key_hint)
        } else {
            format!("{message} (HTTP {})", status.as_u16())
        }
    }

    /// A refused request's error envelope as an error.
    fn refused(&self, status: reqwest::StatusCode, body: &Value) -> Refusal {
        let error = &body["error"];
        let message = error["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_owned();
        Refusal {
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("ERROR").to_owned(),
            shown: self.refusal(status, &message),
            message,
            details: error["details"].clone(),
        }
    }

    /// Sends a request; an error envelope becomes an error carrying its message.
    fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let mut request = self.http.request(method, &url);
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = &self.key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.with_context(|| {
                format!(
                    "cannot reach the agent at {} (is it running? set --agent-url)",
                    self.base
                )
            })?;
            let status = response.status();
            let body: Value = response
                .json()
                .await
                .with_context(|| format!("the agent's answer to {url} is not JSON"))?;
            if !status.is_success() {
                return Err(self.refused(status, &body).into());
            }
            serde_json::from_value(body).with_context(|| format!("unexpected answer from {url}"))
        })
    }
}
