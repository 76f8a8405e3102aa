//! Regression tests for the holes an outside attack and a new user found (issue 10), each
//! named after what it prevents. Real processes, real git, real SQLite, real HTTP.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use mcp_orchestration::manifest::policy::TrustPolicy;

use crate::support::agent::{Options, TestAgent};
use crate::support::eventually;
use crate::support::git::ManifestRepo;

const DEADLINE: Duration = Duration::from_secs(20);

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn trust_for(dir: &Path) -> TrustPolicy {
    TrustPolicy {
        allowed_commands: vec![dir.display().to_string()],
        allowed_env: vec!["LEAKY_ALLOWED".into()],
        source: "test trust policy".into(),
        ..Default::default()
    }
}

/// Every byte of the agent's database files, WAL included.
fn database_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["state.db", "state.db-wal"] {
        if let Ok(b) = std::fs::read(data.join(name)) {
            all.extend(b);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_cannot_exfiltrate_the_agents_secrets() {
    const SECRET: &str = "s3cr3t-from-the-secrets-file";
    let bin = tempfile::tempdir().unwrap();
    // A server that prints its whole environment and dies: its log tail becomes the failed
    // gate's reason.
    let leaky = bin.path().join("leaky");
    script(&leaky, "env\nexit 3");
    let secrets = bin.path().join("secrets.yaml");
    std::fs::write(&secrets, format!("LEAKY_TOKEN: {SECRET}\n")).unwrap();

    let repo = ManifestRepo::new();
    let health = "health_check: { interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }";
    repo.push_manifest(
        &format!(
            "version: \"1.1\"\nservers:\n\
             - id: leaky\n  version: \"1.0.0\"\n  process: {{ command: {cmd}, args: [\"{{port}}\"] }}\n  {health}\n  config_requirements:\n    - {{ name: LEAKY_TOKEN, secret: true }}\n\
             - id: greedy\n  version: \"1.0.0\"\n  process: {{ command: {cmd}, args: [\"{{port}}\"] }}\n  {health}\n  config_requirements:\n    - {{ name: HOME, secret: true }}\n",
            cmd = leaky.display()
        ),
        "a server that prints its environment, and one asking for the agent's HOME",
    );
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            trust: Some(trust_for(bin.path())),
            secrets_file: Some(secrets.clone()),
            ..Options::default()
        },
    )
    .await;

    // The agent's environment is not a source unless the operator allow-listed the name.
    let greedy = eventually(
        DEADLINE,
        "greedy to be refused its configuration",
        || async {
            let s = agent.server("greedy").await?;
            let reason = s["reason"].as_str()?.to_owned();
            reason.contains("HOME").then_some(reason)
        },
    )
    .await;
    assert!(greedy.contains("allowed_env"), "{greedy}");

    // The leaky server's failed gate keeps its log tail, with the secret blanked out.
    let reason = eventually(DEADLINE, "leaky's rollout to fail", || async {
        let (_, v) = agent.get("/servers/leaky/rollouts").await;
        let r = v["rollouts"].as_array()?.first()?.clone();
        (r["outcome"] == "failed").then(|| r["reason"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(reason.contains("LEAKY_TOKEN=[redacted]"), "{reason}");
    assert!(!reason.contains(SECRET), "{reason}");

    for path in ["/revisions", "/events/history", "/servers/leaky/rollouts"] {
        let (_, v) = agent.get(path).await;
        assert!(
            !v.to_string().contains(SECRET),
            "{path} leaks the secret: {v}"
        );
    }
    let db = database_bytes(agent.data.path());
    assert!(!db.is_empty());
    assert!(!contains(&db, SECRET), "state.db holds the secret");

    // The data dir and every file in it are the agent's user's alone.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(agent.data.path()), 0o700);
    for entry in std::fs::read_dir(agent.data.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} is readable by others",
                path.display()
            );
        }
    }
}

/// Starts an agent trusting `dir` on a repo whose one commit is `manifest`, and returns the
/// agent and that commit's run, which must be `rejected`.
async fn rejected_run(
    manifest: String,
    dir: &Path,
    message: &str,
) -> (TestAgent, serde_json::Value) {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest, message);
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            trust: Some(trust_for(dir)),
            ..Options::default()
        },
    )
    .await;
    agent.wait_runs(1).await;
    let (_, v) = agent.get("/revisions").await;
    let run = v["revisions"][0].clone();
    assert_eq!(run["result"], "rejected", "{run}");
    (agent, run)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_channel_outside_the_trust_policy_is_rejected() {
    let bin = tempfile::tempdir().unwrap();
    let server = bin.path().join("server");
    script(&server, "exit 0");
    let (_agent, run) = rejected_run(
        format!(
            "version: \"1.1\"\nservers:\n- id: chatty\n  version: \"1.0.0\"\n  process: {{ command: {} }}\n  update_policy: {{ version_strategy: pinned, notification_channel: \"http://127.0.0.1:9/collect\" }}\n",
            server.display()
        ),
        bin.path(),
        "a channel the pusher chose",
    )
    .await;
    assert!(
        run.to_string().contains("allowed_notification_urls"),
        "the rejection names the trust policy's list: {run}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_cannot_escape_the_command_trust_policy() {
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/bin/sh", bin.path().join("sh")).unwrap();
    let (agent, run) = rejected_run(
        format!(
            "version: \"1.1\"\nservers:\n- id: escape\n  version: \"1.0.0\"\n  process: {{ command: {}, args: [\"-c\", \"sleep 60\"] }}\n",
            bin.path().join("sh").display()
        ),
        bin.path(),
        "a link to a shell in an allowed directory",
    )
    .await;
    assert!(run.to_string().contains("resolves to"), "{run}");
    assert!(agent.pid_files().is_empty(), "nothing was started");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_cannot_preload_a_library_into_a_process_server() {
    let bin = tempfile::tempdir().unwrap();
    let server = bin.path().join("server");
    script(&server, "exit 0");
    let (_agent, run) = rejected_run(
        format!(
            "version: \"1.1\"\nservers:\n- id: preload\n  version: \"1.0.0\"\n  process: {{ command: {}, env: {{ LD_PRELOAD: /tmp/evil.so }} }}\n",
            server.display()
        ),
        bin.path(),
        "LD_PRELOAD through an allowed command",
    )
    .await;
    assert!(run.to_string().contains("allowed_process_env"), "{run}");
}

/// A repo whose one commit runs `id` at `version` (process runtime), its agent, and the
/// server's view once it runs.
async fn one_running(id: &str, version: &str) -> (ManifestRepo, TestAgent, serde_json::Value) {
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[(id, version)]),
        &format!("{id} {version}"),
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let view = agent.wait_running(id, version, DEADLINE).await;
    (repo, agent, view)
}

async fn sync_count(agent: &TestAgent) -> u64 {
    agent.sync_count().await
}

async fn wait_syncs(agent: &TestAgent, n: u64) {
    agent.wait_syncs(n).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_webhook_wakes_nothing_and_a_flood_is_rate_limited() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&crate::support::agent::process_manifest(&[]), "empty fleet");
    let agent = TestAgent::start(
        &repo.remote_url(),
        Options {
            webhook_secret: Some("s3cret".into()),
            ..Options::default()
        },
    )
    .await;
    agent.wait_runs(1).await;
    let before = sync_count(&agent).await;
    let url = format!("{}/webhooks/git", agent.url);
    let send = |client: reqwest::Client, delivery: &'static str, body: &'static str| {
        let url = url.clone();
        let signature = mcp_orchestration::api::sign_webhook(b"s3cret", body.as_bytes());
        async move {
            client
                .post(&url)
                .header("x-hub-signature-256", signature)
                .header("x-github-delivery", delivery)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    const FIRST: &str = r#"{"ref":"refs/heads/main","after":"1"}"#;
    let client = reqwest::Client::new();
    assert_eq!(send(client.clone(), "delivery-1", FIRST).await, 202);
    wait_syncs(&agent, before + 1).await;

    // A captured delivery replayed with a fresh id (the id header is not signed).
    assert_eq!(send(client.clone(), "delivery-1b", FIRST).await, 200);
    // The attack's 2,000 replays of one captured delivery.
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..2000 {
        *statuses
            .entry(send(client.clone(), "delivery-1", FIRST).await)
            .or_insert(0) += 1;
    }
    assert!(
        !statuses.contains_key(&202),
        "a replay was accepted: {statuses:?}"
    );
    assert!(
        statuses.get(&429).copied().unwrap_or(0) >= 1900,
        "the flood is rate limited: {statuses:?}"
    );

    // A new delivery from another source is the counted event: one more sync, and none for
    // the replays before it.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let second = r#"{"ref":"refs/heads/main","after":"2"}"#;
    assert_eq!(send(other, "delivery-2", second).await, 202);
    wait_syncs(&agent, before + 2).await;
    assert_eq!(sync_count(&agent).await, before + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_connections_cannot_exhaust_the_api() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let repo = ManifestRepo::new();
    repo.push_manifest(&crate::support::agent::process_manifest(&[]), "empty fleet");
    let agent = TestAgent::start(
        &repo.remote_url(),
        Options {
            header_read_timeout: Duration::from_millis(500),
            max_connections: Some(64),
            ..Options::default()
        },
    )
    .await;
    agent.wait_runs(1).await;
    let addr = agent.url.trim_start_matches("http://").to_owned();

    // Slowloris: more clients than the cap, each sending half a request head and waiting.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // Over the cap the agent may close before this write lands; that is fine.
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
        slow.push(s);
    }
    // An idle kept-alive client: one request, then silence.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    // Every one of them is closed by the agent, not held.
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut buf = vec![0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    };
    let results = futures::future::join_all(slow.into_iter().map(closed)).await;
    assert!(
        results.iter().all(|c| *c),
        "{} of 200 slow connections were still open after 5 s",
        results.iter().filter(|c| !**c).count()
    );
    assert!(closed(idle).await, "the idle connection is closed");

    // A client that trickles a body in is answered 408 and let go, not held.
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    trickle
        .write_all(b"POST /webhooks/git HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), trickle.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a trickled body held the connection past 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // And the API still answers.
    let (status, health) = agent.get("/health").await;
    assert_eq!(status, 200, "{health}");

    // The open-file limit was raised to the hard limit at start.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct passed in.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    assert_eq!(limit.rlim_cur, limit.rlim_max);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_does_not_resurrect_a_stopped_server() {
    use reqwest::Method;
    let (_repo, agent, _) = one_running("held", "1.0.0").await;
    let (status, _) = agent.call(Method::DELETE, "/servers/held", None).await;
    assert_eq!(status, 200);
    let (status, body) = agent
        .call(Method::POST, "/servers/held/restart", None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deploy"),
        "{body}"
    );
    // The counted event: a sync after the refused restart still shows it stopped, with no
    // process behind it.
    let before = sync_count(&agent).await;
    let (status, _) = agent
        .call(Method::POST, "/servers/held/rollout/resume", None)
        .await;
    assert_eq!(status, 200);
    wait_syncs(&agent, before + 1).await;
    assert_eq!(agent.server("held").await.unwrap()["state"], "stopped");
    let running: Vec<_> = agent
        .pid_files()
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter(|t| t.contains("\"held\""))
        .collect();
    assert!(
        running.is_empty(),
        "a stopped server has a process: {running:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_to_a_version_that_never_ran_is_refused_without_force() {
    let (repo, agent, _) = one_running("rb", "1.0.0").await;
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[("rb", "1.1.0")]),
        "1.1.0",
    );
    agent.wait_running("rb", "1.1.0", DEADLINE).await;

    let (status, body) = agent.rollback_to("rb", "9.9.9").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("never ran 9.9.9"),
        "{body}"
    );
    assert!(agent.server("rb").await.unwrap()["pinned_version"].is_null());

    // A version from its history is fine.
    let (status, body) = agent.rollback_to("rb", "1.0.0").await;
    assert_eq!(status, 202, "{body}");
    agent.wait_running("rb", "1.0.0", DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_agents_never_share_a_data_dir_and_a_failed_start_leaves_none_behind() {
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[("solo", "1.0.0")]),
        "one server",
    );
    let first = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    first.wait_running("solo", "1.0.0", DEADLINE).await;

    // A second agent on the same data dir is refused before it touches anything.
    let options = Options::default();
    let settings = crate::support::agent::settings(
        repo.remote().to_str().unwrap(),
        &options,
        first.data.path(),
    );
    let err = mcp_orchestration::agent::run(
        settings,
        crate::support::agent::test_trust(),
        tokio_util::sync::CancellationToken::new(),
        |_| panic!("the second agent must not start"),
    )
    .await
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("in use by another agent"), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    let (_, runs) = first.get("/revisions").await;
    assert!(
        runs["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] != "interrupted"),
        "{runs}"
    );
    first.wait_running("solo", "1.0.0", DEADLINE).await;

    // A start that fails (its port is taken) leaves no data dir behind when none existed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let parent = tempfile::tempdir().unwrap();
    let fresh = parent.path().join("never-started");
    let mut settings =
        crate::support::agent::settings(repo.remote().to_str().unwrap(), &options, &fresh);
    settings.listen = taken.local_addr().unwrap();
    let err = mcp_orchestration::agent::run(
        settings,
        crate::support::agent::test_trust(),
        tokio_util::sync::CancellationToken::new(),
        |_| panic!("the agent cannot listen"),
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("cannot listen"), "{err:#}");
    assert!(!fresh.exists(), "the failed start left {}", fresh.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_never_publishes_an_empty_backend_set() {
    use crate::support::receiver::Receiver;
    let receiver = Receiver::start().await;
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[("kept", "1.0.0")]),
        "one server",
    );
    let options = || Options {
        gateway_urls: vec![receiver.url.clone()],
        ..Options::default()
    };
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), options()).await;
    agent.wait_running("kept", "1.0.0", DEADLINE).await;
    let data = agent.stop().await;
    let seen = receiver.bodies().len();

    let agent = TestAgent::start_in(repo.remote().to_str().unwrap(), options(), data).await;
    // The counted event: the restarted agent's first delivery.
    let first = eventually(DEADLINE, "a delivery from the restarted agent", || async {
        receiver.bodies().get(seen).cloned()
    })
    .await;
    assert_eq!(
        first["backends"][0]["id"], "kept",
        "the first set after a restart names the running server: {first}"
    );
    for body in &receiver.bodies()[seen..] {
        assert!(
            !body["backends"].as_array().unwrap().is_empty(),
            "an empty set was published: {body}"
        );
    }
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_seen_while_the_store_cannot_write_is_retried_not_lost() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&crate::support::agent::process_manifest(&[]), "empty fleet");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_runs(1).await;

    // A real SQLite failure, injected from outside: every new run is refused.
    let db = rusqlite::Connection::open(agent.data.path().join("state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_runs BEFORE INSERT ON runs BEGIN SELECT RAISE(FAIL, 'injected: disk full'); END;",
    )
    .unwrap();
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[("late", "1.0.0")]),
        "a commit the store cannot record",
    );
    let health = eventually(DEADLINE, "/health to report the store", || async {
        let (_, h) = agent.get("/health").await;
        h["store_error"].is_string().then_some(h)
    })
    .await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["store_error"].as_str().unwrap().contains("injected"),
        "{health}"
    );

    // The store writes again: the commit is run, without a restart.
    db.execute_batch("DROP TRIGGER refuse_runs;").unwrap();
    agent.wait_running("late", "1.0.0", DEADLINE).await;
    let (_, h) = agent.get("/health").await;
    assert!(h["store_error"].is_null(), "{h}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_that_cannot_be_listed_is_not_an_empty_fleet() {
    use crate::support::receiver::Receiver;
    use reqwest::Method;
    let receiver = Receiver::start().await;
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[("steady", "1.0.0")]),
        "one server",
    );
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway_urls: vec![receiver.url.clone()],
            ..Options::default()
        },
    )
    .await;
    let before_fault = agent.wait_running("steady", "1.0.0", DEADLINE).await;

    // The runtime's listing now fails (its pid-file directory is gone).
    let processes = agent.data.path().join("processes");
    let away = agent.data.path().join("processes.away");
    std::fs::rename(&processes, &away).unwrap();
    let syncs = sync_count(&agent).await;
    agent
        .call(Method::POST, "/servers/steady/rollout/resume", None)
        .await;
    wait_syncs(&agent, syncs + 1).await;

    let (_, health) = agent.get("/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["runtime_error"].is_string(), "{health}");
    let during = agent.server("steady").await.unwrap();
    assert_eq!(during["endpoint"], before_fault["endpoint"], "{during}");
    assert_eq!(during["instance_id"], before_fault["instance_id"]);
    assert_eq!(during["health"], "healthy", "still monitored: {during}");
    for body in receiver.bodies() {
        assert_eq!(
            body["backends"][0]["id"], "steady",
            "a set without the server was published: {body}"
        );
    }

    // The runtime answers again: the error clears, the same instance serves.
    std::fs::rename(&away, &processes).unwrap();
    let syncs = sync_count(&agent).await;
    agent
        .call(Method::POST, "/servers/steady/rollout/resume", None)
        .await;
    wait_syncs(&agent, syncs + 1).await;
    let (_, health) = agent.get("/health").await;
    assert!(health["runtime_error"].is_null(), "{health}");
    let after = agent.server("steady").await.unwrap();
    assert_eq!(after["instance_id"], before_fault["instance_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_git_remote_that_never_answers_cannot_hang_the_sync_loop() {
    // A peer that accepts connections and then says nothing, ever.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let agent = TestAgent::start(
        &format!("http://127.0.0.1:{port}/ecosystem-manifest.git"),
        Options {
            git_timeout: Duration::from_millis(500),
            ..Options::default()
        },
    )
    .await;
    let health = eventually(DEADLINE, "the stuck fetch to be reported", || async {
        let (_, h) = agent.get("/health").await;
        h["source_error"].is_string().then_some(h)
    })
    .await;
    assert_eq!(health["status"], "degraded", "{health}");
    // The loop goes on: fetches are tried again (with backoff), each one bounded.
    let first = sync_count(&agent).await;
    wait_syncs(&agent, first + 2).await;
    agent.stop_within(Duration::from_secs(5)).await;
    held.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_yaml_bomb_or_a_huge_manifest_is_rejected_and_the_agent_survives() {
    let (repo, agent, before) = one_running("calm", "1.0.0").await;

    // Under 1 MiB on disk; 512 KiB × 400 × 400 = 80 GB once aliases are expanded.
    let big = "x".repeat(512 * 1024);
    let bomb = format!(
        "version: \"1.1\"\nservers: []\na: &a \"{big}\"\nb: &b [{}]\nc: [{}]\n",
        vec!["*a"; 400].join(", "),
        vec!["*b"; 400].join(", ")
    );
    let bomb_commit = repo.push_manifest(&bomb, "a YAML bomb");
    agent.wait_runs(2).await;
    // More than 1 MiB of plain text.
    let huge = format!(
        "version: \"1.1\"\nservers: []\n# {}\n",
        "y".repeat(2 * 1024 * 1024)
    );
    let huge_commit = repo.push_manifest(&huge, "a huge manifest");
    agent.wait_runs(3).await;
    let (_, v) = agent.get("/revisions").await;
    let runs = v["revisions"].as_array().unwrap();
    let run_of = |c: &str| runs.iter().find(|r| r["commit_id"] == c).cloned().unwrap();
    let bomb_run = run_of(&bomb_commit);
    assert_eq!(bomb_run["result"], "rejected", "{bomb_run}");
    assert!(bomb_run.to_string().contains("MiB of text"), "{bomb_run}");
    let huge_run = run_of(&huge_commit);
    assert_eq!(huge_run["result"], "rejected", "{huge_run}");
    assert!(
        huge_run.to_string().contains("at most 1024 KiB"),
        "{huge_run}"
    );
    let after = agent.wait_running("calm", "1.0.0", DEADLINE).await;
    assert_eq!(
        after["instance_id"], before["instance_id"],
        "nothing that runs changed"
    );
}

/// The agent binary on `repo` and `data`, trusting `commands`; killed on drop.
struct Spawned {
    child: std::process::Child,
    url: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent binary's command line on `repo` and `data`, listening on a free port; its
/// output goes nowhere unless the caller says otherwise.
fn agent_command(repo: &ManifestRepo, data: &Path) -> (std::process::Command, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = std::process::Command::new(crate::support::BIN);
    cmd.args(["agent", "--poll-interval", "60s", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--repo")
        .arg(repo.remote())
        .arg("--data-dir")
        .arg(data)
        .env_remove("MCP_ORCHESTRATION_CONFIG")
        // Not the default 127.0.0.1:7071: agents of tests running at once would share it.
        .env("MCP_ORCHESTRATION_GATEWAY_LISTEN", "127.0.0.1:0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    (cmd, format!("http://127.0.0.1:{port}"))
}

fn spawn_agent(repo: &ManifestRepo, data: &Path, commands: &[&Path]) -> Spawned {
    let trust = data.with_extension("trust.yaml");
    let dirs: Vec<String> = commands
        .iter()
        .map(|d| format!("\"{}\"", d.display()))
        .collect();
    std::fs::write(
        &trust,
        format!(
            "allowed_images: []\nallowed_commands: [{}]\n",
            dirs.join(", ")
        ),
    )
    .unwrap();
    let (mut cmd, url) = agent_command(repo, data);
    let child = cmd.arg("--trust-policy").arg(&trust).spawn().unwrap();
    Spawned { child, url }
}

/// A client whose every request gives up after 2 s: an agent that stopped answering makes
/// a test fail, not hang.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

async fn runs_of(url: &str) -> Option<Vec<serde_json::Value>> {
    let v: serde_json::Value = http()
        .get(format!("{url}/revisions"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["revisions"].as_array().cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_that_killed_the_agent_twice_is_not_run_again() {
    let (repo, agent, before) = one_running("calm", "1.0.0").await;
    let data = agent.stop().await;

    // The next commit killed the agent twice while it was being validated (as a manifest
    // that exhausts memory does): two runs left `running`, each with only its fetch stage.
    let poison = repo.push_manifest(
        &crate::support::agent::process_manifest(&[("calm", "2.0.0")]),
        "a commit the agent dies on",
    );
    {
        let db = rusqlite::Connection::open(data.path().join("state.db")).unwrap();
        for _ in 0..2 {
            db.execute(
                "INSERT INTO runs (commit_id, trigger, seen_at, result) VALUES (?1, 'poll', '2026-01-01T00:00:00Z', 'running')",
                [&poison],
            )
            .unwrap();
            db.execute(
                "INSERT INTO run_stages (run_id, stage, status, started_at, finished_at) VALUES (last_insert_rowid(), 'fetch', 'succeeded', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                [],
            )
            .unwrap();
            // The restart after each death marks the run interrupted.
            db.execute(
                "UPDATE runs SET result = 'interrupted' WHERE result = 'running'",
                [],
            )
            .unwrap();
        }
    }

    // The next start records the commit as failed instead of running it a third time.
    let agent =
        TestAgent::start_in(repo.remote().to_str().unwrap(), Options::default(), data).await;
    let runs = eventually(DEADLINE, "the poison commit's failed run", || async {
        let (_, v) = agent.get("/revisions").await;
        let runs = v["revisions"].as_array()?.clone();
        (runs.first()?["result"] == "failed").then_some(runs)
    })
    .await;
    assert_eq!(runs[0]["commit_id"], poison.as_str());
    assert!(
        runs[0]["reason"].as_str().unwrap().contains("died 2 times"),
        "{:?}",
        runs[0]
    );
    let mine: Vec<_> = runs
        .iter()
        .filter(|r| r["commit_id"] == poison.as_str())
        .collect();
    assert_eq!(
        mine.len(),
        3,
        "two interrupted runs and the failed one: {mine:?}"
    );
    assert!(mine.iter().all(|r| r["result"] != "running"), "{mine:?}");
    // The good revision stays in force: the same instance serves 1.0.0.
    let after = agent.wait_running("calm", "1.0.0", DEADLINE).await;
    assert_eq!(after["instance_id"], before["instance_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_runs_and_rollouts_get_a_closing_event() {
    let bin = tempfile::tempdir().unwrap();
    let stuck = bin.path().join("stuck");
    script(&stuck, "exec sleep 300");
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &format!(
            "version: \"1.1\"\nservers:\n- id: stuck\n  version: \"1.0.0\"\n  process: {{ command: {} }}\n  update_policy: {{ version_strategy: pinned, progress_deadline_seconds: 600 }}\n",
            stuck.display()
        ),
        "a run that never ends",
    );
    let mut agent = spawn_agent(&repo, &data, &[bin.path()]);
    eventually(DEADLINE, "a rollout in progress", || async {
        let v: serde_json::Value = reqwest::get(format!("{}/servers/stuck/rollouts", agent.url))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["rollouts"][0]["outcome"] == "in_progress").then_some(())
    })
    .await;
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    crate::support::agent::kill_fleet(&data);

    let agent = spawn_agent(&repo, &data, &[bin.path()]);
    let closing = eventually(DEADLINE, "closing events", || async {
        let v: serde_json::Value = reqwest::get(format!("{}/events/history?limit=500", agent.url))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let events = v["events"].as_array()?.clone();
        let run = events
            .iter()
            .any(|e| e["kind"] == "run.finished" && e["data"]["result"] == "interrupted");
        let rollout = events
            .iter()
            .any(|e| e["kind"] == "rollout.finished" && e["data"]["outcome"] == "interrupted");
        (run && rollout).then_some(events)
    })
    .await;
    assert!(!closing.is_empty());
    drop(agent);
    crate::support::agent::kill_fleet(&data);
}

/// Sends SIGTERM to `child` and waits (with a deadline) for it to exit.
fn terminate_within(child: &mut std::process::Child, deadline: Duration) -> bool {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The agent binary with its stderr on a pipe the test controls, logging at `level`.
fn agent_with_stderr_pipe(
    repo: &ManifestRepo,
    data: &Path,
    level: &str,
) -> (Spawned, std::process::ChildStderr) {
    let (mut cmd, url) = agent_command(repo, data);
    let mut child = cmd
        .args(["--log-level", level])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    (Spawned { child, url }, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_whose_stderr_reader_went_away_still_stops() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&crate::support::agent::process_manifest(&[]), "empty fleet");
    let root = tempfile::tempdir().unwrap();
    let (mut agent, stderr) = agent_with_stderr_pipe(&repo, &root.path().join("data"), "info");
    // `agent | tee log`, then Ctrl-C killed tee: every log write now fails with EPIPE.
    drop(stderr);
    eventually(DEADLINE, "the agent's first run", || async {
        let runs = runs_of(&agent.url).await?;
        (!runs.is_empty() && runs[0]["result"] != "running").then_some(())
    })
    .await;
    // It logs (a new commit), and keeps serving.
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[]),
        "another commit",
    );
    eventually(DEADLINE, "the second run", || async {
        (runs_of(&agent.url).await?.len() >= 2).then_some(())
    })
    .await;
    assert!(
        terminate_within(&mut agent.child, Duration::from_secs(10)),
        "SIGTERM did not stop the agent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_whose_stderr_nobody_reads_still_stops() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&crate::support::agent::process_manifest(&[]), "empty fleet");
    let root = tempfile::tempdir().unwrap();
    // A reader that never reads: the pipe fills after 64 KiB of trace logging.
    let (mut agent, _stderr) = agent_with_stderr_pipe(&repo, &root.path().join("data"), "trace");
    eventually(DEADLINE, "the agent's first run", || async {
        let runs = runs_of(&agent.url).await?;
        (!runs.is_empty() && runs[0]["result"] != "running").then_some(())
    })
    .await;
    // Each request logs several trace lines: well past what the pipe holds.
    for _ in 0..300 {
        assert!(
            http()
                .get(format!("{}/servers", agent.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            "the agent stopped answering while its stderr was full"
        );
    }
    assert!(
        terminate_within(&mut agent.child, Duration::from_secs(10)),
        "SIGTERM did not stop the agent"
    );
}

/// Live (not zombie) pids recorded in `data`'s pid files for `server`, with their command.
fn live_instances(data: &Path, server: &str) -> Vec<(i32, String)> {
    crate::support::agent::pid_files(data)
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter(|v| v["server_id"] == server)
        .filter_map(|v| Some((v["pid"].as_i64()? as i32, v["command"].to_string())))
        .filter(|(pid, _)| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z'))
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_rollouts_does_not_pile_up_instances() {
    let bin = tempfile::tempdir().unwrap();
    let stuck = bin.path().join("stuck");
    script(&stuck, "exec sleep 300");
    let example = crate::support::example_server_bin();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _fleet = FleetKiller(data.clone());
    // The example server's directory and the stuck script's are both allowed.
    let commands = [example.parent().unwrap(), bin.path()];
    let repo = ManifestRepo::new();
    let health = "health_check: { interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }";
    repo.push_manifest(
        &format!(
            "version: \"1.1\"\nservers:\n- id: pile\n  version: \"1.0.0\"\n  process: {{ command: {}, args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"] }}\n  {health}\n",
            example.display()
        ),
        "a healthy server",
    );
    let agent = spawn_agent(&repo, &data, &commands);
    eventually(DEADLINE, "pile running", || async {
        let v: serde_json::Value = http()
            .get(format!("{}/servers/pile", agent.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["state"] == "running").then_some(())
    })
    .await;
    drop(agent);
    // An update whose new instance never passes its gate: the rollout stays in progress.
    repo.push_manifest(
        &format!(
            "version: \"1.1\"\nservers:\n- id: pile\n  version: \"1.1.0\"\n  process: {{ command: {} }}\n  {health}\n  update_policy: {{ version_strategy: pinned, progress_deadline_seconds: 600 }}\n",
            stuck.display()
        ),
        "an update stuck in its gate",
    );

    // Three times: the agent dies mid-rollout and its half-started instance dies with it.
    for round in 1..=3 {
        let mut agent = spawn_agent(&repo, &data, &commands);
        eventually(
            DEADLINE,
            &format!("rollout {round} started its instance"),
            || async {
                live_instances(&data, "pile")
                    .iter()
                    .any(|(_, c)| c.contains("stuck"))
                    .then_some(())
            },
        )
        .await;
        agent.child.kill().unwrap();
        agent.child.wait().unwrap();
        for (pid, command) in live_instances(&data, "pile") {
            if command.contains("stuck") {
                // SAFETY: a process group this test's agent started (see kill_fleet).
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
        eventually(DEADLINE, "the stuck instance to die", || async {
            (!live_instances(&data, "pile")
                .iter()
                .any(|(_, c)| c.contains("stuck")))
            .then_some(())
        })
        .await;
    }

    // The fourth agent cleans up before it starts: the old instance and one new one.
    let agent = spawn_agent(&repo, &data, &commands);
    eventually(DEADLINE, "the fourth rollout's instance", || async {
        live_instances(&data, "pile")
            .iter()
            .any(|(_, c)| c.contains("stuck"))
            .then_some(())
    })
    .await;
    let recorded: Vec<_> = crate::support::agent::pid_files(&data)
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter(|t| t.contains("\"pile\""))
        .collect();
    assert_eq!(
        recorded.len(),
        2,
        "the serving instance and one new one, no leftovers: {recorded:#?}"
    );
    drop(agent);
}

struct FleetKiller(std::path::PathBuf);

impl Drop for FleetKiller {
    fn drop(&mut self) {
        crate::support::agent::kill_fleet(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_port_moved_from_a_removed_server_to_a_new_one_is_freed_first() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = crate::support::example_server_bin();
    let manifest = |id: &str| {
        format!(
            "version: \"1.1\"\nservers:\n- id: {id}\n  version: \"1.0.0\"\n  process: {{ command: {}, args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"] }}\n  docker: {{ image: mcp-orch-test/example-server, port: 8080, host_port: {port} }}\n  health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }}\n",
            bin.display()
        )
    };
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest("first"), "first holds the port");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_running("first", "1.0.0", DEADLINE).await;
    // Each commit removes the server on the port and adds another on the same port.
    for (n, id) in ["second", "third", "fourth"].iter().enumerate() {
        repo.push_manifest(&manifest(id), &format!("{id} takes the port"));
        agent.wait_runs(n + 2).await;
        let (_, v) = agent.get("/revisions").await;
        let run = &v["revisions"][0];
        assert_eq!(run["result"], "applied", "{id}: {run}");
        let s = agent.wait_running(id, "1.0.0", DEADLINE).await;
        assert_eq!(
            s["endpoint"],
            format!("http://127.0.0.1:{port}/mcp"),
            "{id} serves on the moved port"
        );
    }
}

/// `mcp-orchestration status` against `agent`, as its text output.
fn status_text(agent: &TestAgent) -> String {
    let out = std::process::Command::new(crate::support::BIN)
        .arg("status")
        .env("MCP_ORCHESTRATION_URL", &agent.url)
        .env(
            "MCP_ORCHESTRATION_API_KEY",
            crate::support::agent::TEST_API_KEY,
        )
        .env_remove("MCP_ORCHESTRATION_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    crate::support::stdout(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_a_rejected_head_a_hold_and_a_stop() {
    use reqwest::Method;
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[("held", "1.0.0"), ("off", "1.0.0")]),
        "two servers",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_running("held", "1.0.0", DEADLINE).await;
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[("held", "1.1.0"), ("off", "1.0.0")]),
        "held 1.1.0",
    );
    agent.wait_running("held", "1.1.0", DEADLINE).await;
    let (status, body) = agent.rollback_to("held", "1.0.0").await;
    assert_eq!(status, 202, "{body}");
    agent.wait_running("held", "1.0.0", DEADLINE).await;
    let (status, _) = agent.call(Method::DELETE, "/servers/off", None).await;
    assert_eq!(status, 200);
    let rejected = repo.push_manifest("version: \"1.1\"\nservers: [\n", "broken YAML");
    agent.wait_runs(3).await;
    let text = eventually(DEADLINE, "status to show the stop", || async {
        let t = status_text(&agent);
        t.contains("off: stopped by an operator").then_some(t)
    })
    .await;
    assert!(
        text.contains("held: held at 1.0.0 by an operator rollback"),
        "{text}"
    );
    assert!(
        text.contains(&format!("branch head {}: rejected: ", &rejected[..10])),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_the_schema_excludes_are_refused_not_reinterpreted() {
    use reqwest::Method;
    let (_repo, agent, _) = one_running("one", "1.0.0").await;
    for path in [
        "/revisions?limit=501",
        "/revisions?limit=0",
        "/servers/one/rollouts?limit=501",
        "/servers/one/health/events?limit=1001",
        "/health/events?after=-1",
        "/events/history?after=-225297844351293856&limit=10",
        "/events/history?limit=1001",
    ] {
        let (status, body) = agent.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION_FAILED", "{path}: {body}");
    }
    // A webhook body that is there must be a push event: JSON `null` is not one.
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/git", agent.url))
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // An override without its body is refused, as the document's `required` says.
    let (status, body) = agent
        .call(Method::POST, "/servers/one/health/override", None)
        .await;
    assert_eq!(status, 400, "{body}");
    let (_, doc) = agent.get("/openapi.json").await;
    assert_eq!(
        doc["paths"]["/servers/{id}/health/override"]["post"]["requestBody"]["required"],
        true
    );
}

#[test]
fn a_secret_given_as_a_flag_is_warned_about() {
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["agent", "--webhook-secret", "visible-in-ps", "--repo"])
        .arg(root.path().join("no-such-repo"))
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .env_remove("MCP_ORCHESTRATION_CONFIG")
        .env("MCP_ORCHESTRATION_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = crate::support::stderr(&out);
    assert!(
        stderr.contains("--webhook-secret") && stderr.contains("visible to every user"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("visible-in-ps"),
        "the warning repeats the secret: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_cannot_be_read_never_brings_back_a_stopped_server() {
    use reqwest::Method;
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[("kept", "1.0.0"), ("off", "1.0.0")]),
        "two servers",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let kept = agent.wait_running("kept", "1.0.0", DEADLINE).await;
    agent.wait_running("off", "1.0.0", DEADLINE).await;
    let (status, _) = agent.call(Method::DELETE, "/servers/off", None).await;
    assert_eq!(status, 200);
    eventually(DEADLINE, "off to be stopped", || async {
        (agent.server("off").await?["state"] == "stopped").then_some(())
    })
    .await;

    // A real SQLite failure: the table of operator stops is gone for the agent.
    let db = rusqlite::Connection::open(agent.data.path().join("state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch("ALTER TABLE servers RENAME TO servers_away;")
        .unwrap();
    let syncs = sync_count(&agent).await;
    agent
        .call(Method::POST, "/servers/kept/rollout/resume", None)
        .await;
    wait_syncs(&agent, syncs + 1).await;
    let (_, health) = agent.get("/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["store_error"]
            .as_str()
            .is_some_and(|e| e.contains("operator stops")),
        "{health}"
    );
    let running_off = live_instances(agent.data.path(), "off");
    assert!(
        running_off.is_empty(),
        "a stopped server came back: {running_off:?}"
    );
    let during = agent.server("kept").await.unwrap();
    assert_eq!(during["instance_id"], kept["instance_id"]);

    // Readable again: the stop still holds and the error clears.
    db.execute_batch("ALTER TABLE servers_away RENAME TO servers;")
        .unwrap();
    let syncs = sync_count(&agent).await;
    agent
        .call(Method::POST, "/servers/kept/rollout/resume", None)
        .await;
    wait_syncs(&agent, syncs + 1).await;
    let (_, health) = agent.get("/health").await;
    assert!(health["store_error"].is_null(), "{health}");
    assert_eq!(agent.server("off").await.unwrap()["state"], "stopped");
    assert!(live_instances(agent.data.path(), "off").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_error_from_the_store_keeps_its_cause() {
    let (_repo, agent, _) = one_running("cause", "1.0.0").await;
    let db = rusqlite::Connection::open(agent.data.path().join("state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch("ALTER TABLE rollouts RENAME TO rollouts_away;")
        .unwrap();
    let (status, body) = agent.get("/servers/cause/rollouts").await;
    db.execute_batch("ALTER TABLE rollouts_away RENAME TO rollouts;")
        .unwrap();
    assert_eq!(status, 500, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no such table"),
        "the cause is lost: {message}"
    );
}
