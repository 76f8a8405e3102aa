//! A small blocking HTTP client for commands that talk to a running agent.

use anyhow::{Context, bail};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::settings::Settings;

pub struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(settings: &Settings) -> anyhow::Result<Client> {
        Ok(Client {
            base: settings.agent_url.trim_end_matches('/').to_owned(),
            key: settings.client_api_key(),
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
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach the agent at {} (is it running? set --agent-url)", self.base))?;
            let status = response.status();
            let body: Value = response
                .json()
                .await
                .with_context(|| format!("the agent's answer to {url} is not JSON"))?;
            if !status.is_success() {
                let message = body
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("request failed");
                if status.as_u16() == 401 {
                    bail!("{message} (HTTP 401: give --api-key or MCP_ORCHESTRATION_API_KEY, or run on the agent's machine with its --data-dir)");
                }
                bail!("{message} (HTTP {})", status.as_u16());
            }
            serde_json::from_value(body).with_context(|| format!("unexpected answer from {url}"))
        })
    }
}
