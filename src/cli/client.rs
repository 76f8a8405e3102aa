//! A small blocking HTTP client for commands that talk to a running agent.

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub struct Client {
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Client> {
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .context("cannot build the HTTP client")?,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?,
        })
    }

    /// GETs `path`; an error envelope becomes an error carrying its message.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let response = self.http.get(&url).send().await.with_context(|| {
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
                let message = body
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("request failed");
                bail!("{message} (HTTP {})", status.as_u16());
            }
            serde_json::from_value(body).with_context(|| format!("unexpected answer from {url}"))
        })
    }
}
