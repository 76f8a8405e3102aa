//! Real Docker for the integration tests and benchmarks: a gate that skips (or fails on CI)
//! without a daemon, the example server as a `FROM scratch` image, and a guard that removes
//! every container a test created, even when it panics.
//!
//! Everything here talks to the daemon through the `docker` CLI, so the tests check the
//! runtime against a second opinion rather than against bollard itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use mcp_orchestration::manifest::{Resources, RestartPolicy};
use mcp_orchestration::runtime::{DockerInstance, InstanceSpec, labels};
use semver::Version;

use super::REPO;

/// Repository of the test images; the tag is the version asked for.
pub const IMAGE_REPO: &str = "mcp-orch-test/example-server";
/// Port the example server listens on inside its container (see its Dockerfile).
pub const CONTAINER_PORT: u16 = 8080;
/// A prebuilt static example server; when it names an existing file, no cargo build runs.
pub const STATIC_EXAMPLE_ENV: &str = "MCP_TEST_STATIC_EXAMPLE";
/// Label on test images holding the size and mtime of the binary inside, so an image is
/// rebuilt only when the binary changed.
const BINARY_LABEL: &str = "io.mcp-orchestration.test.binary-hash";
/// Label the tests put on containers they start without the runtime.
pub const CASE_LABEL: &str = "io.mcp-orch-test.case";
/// Generous, because a loaded CI machine can be slow to start a container; conditions are
/// polled, so a fast machine does not wait this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Whether Docker is reachable. Without it a test should return early: on CI (`CI=true`)
/// that is a failure, because CI must exercise the real thing; elsewhere a skip line.
pub fn docker_or_skip(test: &str) -> bool {
    static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let reachable = REACHABLE.get_or_init(|| {
        match Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            Err(err) => Err(format!("cannot run `docker`: {err}")),
        }
    });
    match reachable {
        Ok(()) => true,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: Docker is required on CI (CI=true) but is unreachable: {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: Docker is unreachable ({why})");
            false
        }
    }
}

/// Runs `docker args`, panicking with its stderr when it fails; returns trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `mcp-orch-test/example-server:{version}`, built from the example server's Dockerfile
/// around a statically linked binary. The binary is built once per test process; an image
/// is rebuilt only when its binary changed.
/// Serialises image builds in this test process: a build's prune of untagged test images
/// must never see another build's intermediate image.
static IMAGE_BUILDS: Mutex<()> = Mutex::new(());

/// Runs `f` while no other image build of this process runs.
pub fn with_image_build_lock<T>(f: impl FnOnce() -> T) -> T {
    let _building = IMAGE_BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

pub fn example_image(version: &str) -> String {
    let binary = static_example_binary();
    let tag = format!("{IMAGE_REPO}:{version}");
    let meta = std::fs::metadata(binary)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", binary.display()));
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let fingerprint = format!("{}-{mtime}", meta.len());

    // Parallel tests asking for the same tag must not build it twice at once.
    let _building = IMAGE_BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let existing = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{BINARY_LABEL}\"}}}}"),
            &tag,
        ])
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if existing.as_deref() == Some(fingerprint.as_str()) {
        return tag;
    }

    let context = tempfile::tempdir().expect("temp dir for the docker build context");
    let dockerfile = Path::new(REPO).join("examples/example-server/Dockerfile");
    // Each tag reports its own version from /health, as a real release would.
    let text = std::fs::read_to_string(&dockerfile)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dockerfile.display()));
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("{text}\nENV EXAMPLE_SERVER_VERSION={version}\n"),
    )
    .expect("write the Dockerfile");
    std::fs::copy(binary, context.path().join("example-server"))
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", binary.display()));
    let context_dir = context.path().to_str().expect("utf-8 temp path");
    let started = Instant::now();
    docker(&[
        "build",
        "--quiet",
        "--tag",
        &tag,
        "--label",
        &format!("{BINARY_LABEL}={fingerprint}"),
        context_dir,
    ]);
    eprintln!("built {tag} in {:.1?}", started.elapsed());
    // The image the tag named before is now untagged debris; so are images left by an
    // earlier binary. Only untagged test images no container uses go.
    let _ = Command::new("docker")
        .args([
            "image",
            "prune",
            "--force",
            "--filter",
            &format!("label={BINARY_LABEL}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    tag
}

/// The statically linked example server: `$MCP_TEST_STATIC_EXAMPLE` when it exists,
/// otherwise built once per process into `target/static`.
pub fn static_example_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(prebuilt) = std::env::var_os(STATIC_EXAMPLE_ENV).map(PathBuf::from) {
            if prebuilt.is_file() {
                return prebuilt;
            }
            eprintln!(
                "{STATIC_EXAMPLE_ENV}={} is not a file; building the static example server",
                prebuilt.display()
            );
        }
        // `--target` is required: without it RUSTFLAGS also reaches proc-macros, which
        // cannot be built with crt-static.
        let triple = host_triple();
        let target_dir = Path::new(REPO).join("target").join("static");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let started = Instant::now();
        eprintln!("building the static example server (first run: several minutes)");
        let status = Command::new(cargo)
            .args(["build", "--release", "--example", "example-server"])
            .arg("--target")
            .arg(&triple)
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(REPO)
            // Encoded flags would override RUSTFLAGS if an outer cargo left them set.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .stdin(Stdio::null())
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the static example server failed ({status})"
        );
        eprintln!(
            "built the static example server in {:.1?}",
            started.elapsed()
        );
        target_dir
            .join(triple)
            .join("release")
            .join("examples")
            .join("example-server")
    })
}

fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host triple")
        .trim()
        .to_string()
}

/// An instance spec for the example server at `version` from `image`, reporting `version`
/// on `/health` (through `EXAMPLE_SERVER_VERSION`).
pub fn example_spec(server_id: &str, version: &str, image: &str) -> InstanceSpec {
    InstanceSpec {
        server_id: server_id.to_string(),
        version: Version::parse(version).expect("test version"),
        revision: format!("rev-{server_id}"),
        spec_hash: format!("spec-{server_id}-{version}"),
        host_port: None,
        env: BTreeMap::from([("EXAMPLE_SERVER_VERSION".to_string(), version.to_string())]),
        restart_policy: RestartPolicy::UnlessStopped,
        docker: Some(DockerInstance {
            image: image.to_string(),
            container_port: CONTAINER_PORT,
            resources: Resources::default(),
            replicas: 1,
            constraints: Vec::new(),
            max_per_node: None,
        }),
        process: None,
    }
}

/// Owns every container labelled with its server id (plus any containers carrying labels
/// added with [`ContainerGuard::also_remove_labelled`]) and removes them on drop, panics
/// included. The id includes the pid, so parallel tests and other test runs never share
/// containers.
pub struct ContainerGuard {
    server_id: String,
    filters: Vec<String>,
}

impl ContainerGuard {
    /// A guard for server id `t-{short}-{pid}`; removes leftovers of an earlier run with
    /// the same pid first.
    pub fn new(short: &str) -> Self {
        let server_id = format!("t-{short}-{}", std::process::id());
        let guard = Self {
            filters: vec![format!("label={}={server_id}", labels::SERVER)],
            server_id,
        };
        guard.remove_all();
        guard
    }

    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Also remove containers carrying `key=value` when dropped.
    pub fn also_remove_labelled(&mut self, key: &str, value: &str) {
        self.filters.push(format!("label={key}={value}"));
    }

    /// Ids of the containers (running or not) labelled with this guard's server id.
    pub fn containers(&self) -> Vec<String> {
        docker(&["ps", "-aq", "--no-trunc", "--filter", &self.filters[0]])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn remove_all(&self) {
        for filter in &self.filters {
            // Best effort and quiet: this runs in Drop, possibly during a panic.
            let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", filter])
                .stdin(Stdio::null())
                .output()
            else {
                continue;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let _ = Command::new("docker")
                .args(["rm", "--force", "--volumes"])
                .args(&ids)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// An HTTP client that never goes through a proxy: tests only talk to 127.0.0.1.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("reqwest client")
}

/// Polls `GET http://127.0.0.1:{port}/health` until it answers 200; returns the body.
pub async fn wait_healthy(port: u16) -> serde_json::Value {
    let client = http();
    let url = format!("http://127.0.0.1:{port}/health");
    super::eventually(DEADLINE, &format!("200 from {url}"), || async {
        let response = client.get(&url).send().await.ok()?;
        if response.status() != reqwest::StatusCode::OK {
            return None;
        }
        response.json::<serde_json::Value>().await.ok()
    })
    .await
}

// The registry helpers live in `kit::registry`; the Docker tests keep their paths.
pub use super::registry::{REGISTRY_PASSWORD, REGISTRY_USER, TestRegistry, registry_or_skip};

/// Untags the images it was given on drop. Declare it before the [`ContainerGuard`] of
/// the same test, so the containers using the images go first.
#[derive(Default)]
pub struct ImageGuard(Vec<String>);

impl ImageGuard {
    pub fn add(&mut self, image: &str) {
        self.0.push(image.to_string());
    }
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker")
                .args(["image", "rm", "--force", image])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
