//! An agent running in the calling process (a test or a benchmark) against real git, real
//! processes, real SQLite and real HTTP on 127.0.0.1; the fleet it starts is killed when
//! the handle drops.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_orchestration::manifest::policy::TrustPolicy;
use mcp_orchestration::settings::{AgentSettings, RuntimeChoice};
use mcp_orchestration::source::GitSettings;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{eventually, example_server_bin};

/// A manifest of example servers run by the process runtime, with fast health checks.
pub fn process_manifest(servers: &[(&str, &str)]) -> String {
    let bin = example_server_bin();
    if servers.is_empty() {
        return "version: \"1.1\"\nservers: []\n".to_owned();
    }
    let mut text = String::from("version: \"1.1\"\nservers:\n");
    for (id, version) in servers {
        text.push_str(&format!(
            "  - id: {id}\n    version: \"{version}\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }}\n",
            bin.display()
        ));
    }
    text
}

/// A manifest of example-server containers (images from `support::docker::example_image`).
pub fn docker_manifest(servers: &[(&str, &str)]) -> String {
    if servers.is_empty() {
        return "version: \"1.1\"\nservers: []\n".to_owned();
    }
    let mut text = String::from("version: \"1.1\"\nservers:\n");
    for (id, version) in servers {
        text.push_str(&format!(
            "  - id: {id}\n    version: \"{version}\"\n    docker: {{ image: mcp-orch-test/example-server, port: 8080 }}\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }}\n"
        ));
    }
    text
}

/// Allows the example server's directory and the test image prefixes.
pub fn test_trust() -> TrustPolicy {
    let bin = example_server_bin();
    TrustPolicy {
        allowed_images: vec!["mcp-orch-test/".into(), "127.0.0.1:5000/".into()],
        allowed_commands: vec![bin.parent().expect("examples dir").display().to_string()],
        source: "test trust policy".into(),
        ..Default::default()
    }
}

/// The API key every test agent accepts.
pub const TEST_API_KEY: &str = "test-api-key";

pub struct Options {
    pub poll_interval: Duration,
    pub registry_poll_interval: Duration,
    pub drain: Duration,
    /// Replaces [`test_trust`].
    pub trust: Option<TrustPolicy>,
    pub gateway_urls: Vec<String>,
    pub gateway_resend_interval: Duration,
    pub webhook_secret: Option<String>,
    pub runtime: RuntimeChoice,
    pub require_key_for_reads: bool,
    pub secrets_file: Option<PathBuf>,
    pub header_read_timeout: Duration,
    pub max_connections: Option<usize>,
    pub git_timeout: Duration,
    /// Serve the MCP gateway (on a free port); off by default.
    pub gateway: bool,
    /// The gateway's public URL (`--gateway-public-url`).
    pub gateway_public_url: Option<String>,
    /// The engine or swarm manager (`--docker-host`); `None`: `DOCKER_HOST` or the socket.
    pub docker_host: Option<String>,
    /// How webhook deliveries are retried (`--delivery-attempts`, `--delivery-backoff`).
    pub delivery: mcp_orchestration::subscriptions::Retry,
    /// `--write-notes`: each run's result as a git note, pushed.
    pub write_notes: bool,
    /// `--sync-windows`: the operator's sync windows file.
    pub sync_windows: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            // Long enough that tests of the watch or the webhook are not rescued by polling.
            poll_interval: Duration::from_secs(120),
            registry_poll_interval: Duration::from_secs(120),
            drain: Duration::ZERO,
            trust: None,
            gateway_urls: Vec::new(),
            gateway_resend_interval: Duration::from_secs(30),
            webhook_secret: None,
            runtime: RuntimeChoice::Process,
            require_key_for_reads: false,
            secrets_file: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections: None,
            git_timeout: Duration::from_secs(30),
            gateway: false,
            gateway_public_url: None,
            docker_host: None,
            delivery: Default::default(),
            write_notes: false,
            sync_windows: None,
        }
    }
}

/// The settings a test agent runs with: `repo`, `options` and `data_dir`.
pub fn settings(repo: &str, options: &Options, data_dir: &Path) -> AgentSettings {
    AgentSettings {
        git: GitSettings {
            url: repo.to_owned(),
            branch: "main".into(),
            manifest_path: "ecosystem-manifest.yaml".into(),
            token: None,
            ssh_key: None,
            timeout: options.git_timeout,
        },
        poll_interval: options.poll_interval,
        registry_poll_interval: options.registry_poll_interval,
        drain: options.drain,
        registry_credentials: None,
        gateway_urls: options.gateway_urls.clone(),
        gateway_resend_interval: options.gateway_resend_interval,
        runtime: options.runtime,
        listen: "127.0.0.1:0".parse().expect("addr"),
        gateway_listen: options
            .gateway
            .then(|| "127.0.0.1:0".parse().expect("addr")),
        gateway_public_url: options.gateway_public_url.clone(),
        docker_host: options.docker_host.clone(),
        gateway_keys: options.require_key_for_reads,
        data_dir: data_dir.to_owned(),
        // Client files a test deploys land here, never in the home of whoever runs them.
        clients_home: Some(data_dir.join("clients-home")),
        webhook_secret: options.webhook_secret.clone(),
        secrets_file: options.secrets_file.clone(),
        concurrency: 4,
        api_key: Some(TEST_API_KEY.into()),
        api_keys_file: None,
        keys_for_reads: options.require_key_for_reads,
        header_read_timeout: options.header_read_timeout,
        max_connections: options.max_connections,
        delivery: options.delivery,
        write_notes: options.write_notes,
        sync_windows: options.sync_windows.clone(),
    }
}

pub struct TestAgent {
    pub url: String,
    /// The MCP gateway's endpoint, when [`Options::gateway`] asked for it.
    pub gateway: Option<String>,
    pub data: tempfile::TempDir,
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    http: reqwest::Client,
}

impl TestAgent {
    pub async fn start(repo: &str, options: Options) -> TestAgent {
        let data = tempfile::tempdir().expect("data dir");
        Self::start_in(repo, options, data).await
    }

    /// Starts on an existing data dir (a restart).
    pub async fn start_in(repo: &str, options: Options, data: tempfile::TempDir) -> TestAgent {
        let settings = settings(repo, &options, data.path());
        let token = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let t = token.clone();
        let trust = options.trust.clone().unwrap_or_else(test_trust);
        let task = tokio::spawn(async move {
            let result = mcp_orchestration::agent::run(settings, trust, t, move |addr| {
                let _ = tx.send(addr);
            })
            .await;
            if let Err(e) = result {
                panic!("the agent failed: {e:#}");
            }
        });
        let ready = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("the agent listens within 10 s")
            .expect("the agent reports its address");
        TestAgent {
            url: format!("http://{}", ready.api),
            gateway: ready.gateway.map(|g| format!("http://{g}/mcp")),
            data,
            token,
            task: Some(task),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("agent answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Sends `method path` with the test key and an optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TEST_API_KEY);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().await.expect("agent answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn server(&self, id: &str) -> Option<Value> {
        let (status, v) = self.get(&format!("/servers/{id}")).await;
        (status == 200).then_some(v)
    }

    /// Waits until `id` runs `version` and its own `/health` says so; returns its view.
    pub async fn wait_running(&self, id: &str, version: &str, deadline: Duration) -> Value {
        eventually(deadline, &format!("{id} running {version}"), || async {
            let s = self.server(id).await?;
            if s["state"] != "running" || s["running_version"] != version {
                return None;
            }
            let endpoint = s["endpoint"].as_str()?;
            let health = endpoint.replace("/mcp", "/health");
            let body: Value = self
                .http
                .get(&health)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (body["version"] == version && body["status"] == "healthy").then_some(s)
        })
        .await
    }

    /// Asks for an operator rollback of `server` to `version`.
    pub async fn rollback_to(&self, server: &str, version: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/servers/{server}/rollback"),
            Some(serde_json::json!({ "to": version })),
        )
        .await
    }

    /// One sample of `GET /metrics`: the line that starts with `series` (a name with its
    /// labels), as a number.
    pub async fn metric(&self, series: &str) -> Option<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("agent answers")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|n| n.trim().parse().ok())
    }

    /// How many syncs the agent has finished, from `GET /metrics`: the counted event tests
    /// wait for when they show that something did not happen.
    pub async fn sync_count(&self) -> u64 {
        self.metric("mcp_orchestration_sync_duration_seconds_count")
            .await
            .expect("the sync counter")
    }

    /// Waits until the agent has finished `n` syncs in all.
    pub async fn wait_syncs(&self, n: u64) {
        eventually(Duration::from_secs(20), &format!("{n} syncs"), || async {
            (self.sync_count().await >= n).then_some(())
        })
        .await
    }

    /// Lets `n` more syncs pass, each woken by an operator action on `server` that changes
    /// nothing (lifting a rollback hold it does not have).
    pub async fn syncs_pass(&self, n: u64, server: &str) {
        for _ in 0..n {
            let before = self.sync_count().await;
            let (status, body) = self
                .call(
                    reqwest::Method::POST,
                    &format!("/servers/{server}/rollout/resume"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            self.wait_syncs(before + 1).await;
        }
    }

    /// Waits until `n` runs have finished (any result).
    pub async fn wait_runs(&self, n: usize) {
        eventually(
            Duration::from_secs(10),
            &format!("{n} finished run(s)"),
            || async {
                let (_, v) = self.get("/revisions").await;
                let runs = v["revisions"].as_array()?;
                (runs.len() >= n && runs.iter().all(|r| r["result"] != "running")).then_some(())
            },
        )
        .await
    }

    /// Instances recorded by the process runtime: (pid file, running?).
    pub fn pid_files(&self) -> Vec<PathBuf> {
        pid_files(self.data.path())
    }

    /// Stops the agent, which must finish within `deadline` (graceful shutdown is not held
    /// up by open connections); the fleet is cleaned up.
    pub async fn stop_within(mut self, deadline: Duration) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(deadline, task)
                .await
                .expect("the agent stops within the deadline")
                .expect("the agent task ends cleanly");
        }
    }

    /// Stops the agent and returns its data dir (the fleet keeps running).
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().expect("temp"));
        std::mem::forget(self);
        data
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.token.cancel();
        kill_fleet(self.data.path());
    }
}

pub fn pid_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("processes"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Kills every process group recorded in `data`'s pid files.
pub fn kill_fleet(data: &Path) {
    for file in pid_files(data) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(pid) = v["pid"].as_i64().filter(|p| *p > 1) {
            // SAFETY: kill(2) with a negative pid signals that process group only; the pid
            // comes from a pid file this test's agent wrote for a child it started.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}
