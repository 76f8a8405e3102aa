//! Helpers shared by the benchmarks: real git, an in-process agent, Docker, a registry.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mcp_orchestration::manifest::policy::TrustPolicy;
use mcp_orchestration::settings::{AgentSettings, RuntimeChoice};
use mcp_orchestration::source::GitSettings;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub fn git(cwd: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(cwd)
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// User + system CPU time of process `pid` (`"self"`: this one), in seconds.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields are counted after the command name, which may hold spaces and parentheses.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let field = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // Linux reports CPU time in clock ticks of 1/100 s.
    (field(11) + field(12)) as f64 / 100.0
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`), 0 when absent.
pub fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A bare repository and a working clone holding `manifest`, pushed.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new(manifest: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote.git");
        git(
            dir.path(),
            &["init", "-q", "--bare", remote.to_str().unwrap()],
        );
        git(
            dir.path(),
            &["clone", "-q", remote.to_str().unwrap(), "work"],
        );
        let repo = Repo { dir };
        repo.push(manifest, "start");
        repo
    }

    pub fn remote(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn push(&self, manifest: &str, message: &str) {
        std::fs::write(self.work().join("ecosystem-manifest.yaml"), manifest).unwrap();
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-qm", message]);
        git(&self.work(), &["push", "-q", "origin", "HEAD:main"]);
    }
}

pub struct Agent {
    pub url: String,
    pub token: CancellationToken,
    pub data: tempfile::TempDir,
    pub runtime: RuntimeChoice,
}

pub struct AgentOptions {
    pub runtime: RuntimeChoice,
    pub poll: Duration,
    pub registry_poll: Duration,
    pub trust: TrustPolicy,
}

pub async fn start_agent(repo: &str, o: AgentOptions) -> Agent {
    start_agent_with(repo, o, Vec::new()).await
}

/// [`start_agent`], publishing to `gateway_urls`.
pub async fn start_agent_with(repo: &str, o: AgentOptions, gateway_urls: Vec<String>) -> Agent {
    let data = tempfile::tempdir().unwrap();
    let settings = AgentSettings {
        git: GitSettings {
            url: repo.to_owned(),
            branch: "main".into(),
            manifest_path: "ecosystem-manifest.yaml".into(),
            token: None,
            ssh_key: None,
            timeout: Duration::from_secs(30),
        },
        poll_interval: o.poll,
        registry_poll_interval: o.registry_poll,
        drain: Duration::ZERO,
        registry_credentials: None,
        gateway_urls,
        gateway_resend_interval: Duration::from_secs(30),
        runtime: o.runtime,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.path().to_owned(),
        webhook_secret: None,
        secrets_file: None,
        concurrency: 4,
        api_key: Some("bench-key".into()),
        api_keys_file: None,
        keys_for_reads: false,
        header_read_timeout: Duration::from_secs(10),
        max_connections: None,
    };
    let token = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let t = token.clone();
    let trust = o.trust;
    tokio::spawn(async move {
        if let Err(e) = mcp_orchestration::agent::run(settings, trust, t, move |a| {
            let _ = tx.send(a);
        })
        .await
        {
            panic!("agent: {e:#}");
        }
    });
    let addr = rx.await.unwrap();
    Agent {
        url: format!("http://{addr}"),
        token,
        data,
        runtime: o.runtime,
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.token.cancel();
        kill_fleet(self.data.path(), self.runtime);
    }
}

/// Kills the processes, or removes the containers, an agent's data dir owns.
pub fn kill_fleet(data: &Path, runtime: RuntimeChoice) {
    if runtime == RuntimeChoice::Docker {
        let owner = std::fs::read_to_string(data.join("agent-id")).unwrap_or_default();
        let ids = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=io.mcp-orchestration.owner={}", owner.trim()),
            ])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
        return;
    }
    for e in std::fs::read_dir(data.join("processes"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap_or_default())
            .unwrap_or(Value::Null);
        if let Some(pid) = v["pid"].as_i64().filter(|p| *p > 1) {
            // SAFETY: kill(2) of a process group this benchmark's agent started.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

/// Builds `name` in release mode (`kind` is `--bin` or `--example`) and returns its path,
/// `target/release/<subdir>/<name>`.
fn release_build(kind: &str, name: &str, subdir: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", kind, name])
        .current_dir(root)
        .status()
        .expect("cargo");
    assert!(
        status.success(),
        "cargo build --release {kind} {name} failed"
    );
    root.join("target/release").join(subdir).join(name)
}

/// The example server, built in release mode (dynamically linked: for the process runtime).
pub fn release_example() -> PathBuf {
    release_build("--example", "example-server", "examples")
}

/// The agent binary, built in release mode.
pub fn release_agent() -> PathBuf {
    release_build("--bin", "mcp-orchestration", "")
}

/// The statically linked example server, built once into `target/static`.
pub fn static_example() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("rustc").arg("-vV").output().expect("rustc");
    let triple = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("host triple");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "--example",
            "example-server",
            "--target",
            &triple,
            "--target-dir",
        ])
        .arg(root.join("target/static"))
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(root)
        .status()
        .expect("cargo");
    assert!(status.success());
    root.join("target/static")
        .join(triple)
        .join("release/examples/example-server")
}

/// A `FROM scratch` image of the example server reporting `version`, with `/health` in
/// `health` mode, tagged `tag`.
pub fn build_image(binary: &Path, tag: &str, version: &str, health: &str) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(binary, ctx.path().join("example-server")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile =
        std::fs::read_to_string(root.join("examples/example-server/Dockerfile")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("{dockerfile}\nENV EXAMPLE_SERVER_VERSION={version}\nENV EXAMPLE_SERVER_HEALTH={health}\n"),
    )
    .unwrap();
    docker(&[
        "build",
        "--quiet",
        "--tag",
        tag,
        ctx.path().to_str().unwrap(),
    ]);
}

/// Debian's `docker-registry` on a free 127.0.0.1 port, killed on drop.
pub struct Registry {
    child: std::process::Child,
    pub host: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: warn }}\nstorage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let host = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            host,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
