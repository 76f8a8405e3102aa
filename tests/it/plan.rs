//! Plan before push (`mcp-orchestration plan`, `POST /plan`, the pre-receive hook): a plan
//! of a working copy predicts exactly what the following push does, and is kept by its run.
//! Real git, real processes, the real binary, HTTP on 127.0.0.1.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::agent::{Options, TEST_API_KEY, TestAgent, process_manifest};
use crate::support::eventually;
use crate::support::git::{ManifestRepo, command};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-orchestration");
const PRE_RECEIVE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hooks/pre-receive");
const WAIT: Duration = Duration::from_secs(15);

/// Runs the CLI against `agent`; returns the exit code, stdout and stderr.
fn cli(agent: &TestAgent, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--agent-url", &agent.url, "--api-key", TEST_API_KEY])
        .env("NO_COLOR", "1")
        .output()
        .expect("the CLI runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// The newest run of `commit` once it has finished.
async fn finished_run(agent: &TestAgent, commit: &str) -> Value {
    eventually(WAIT, &format!("the run of {commit} to finish"), || async {
        let (status, run) = agent.get(&format!("/revisions/{commit}")).await;
        (status == 200 && run["result"] != "running").then_some(run)
    })
    .await
}

/// (server, action, from, to) of each line, for messages that read well.
fn actions(lines: &Value) -> Vec<(String, String, Value, Value)> {
    lines
        .as_array()
        .expect("plan lines")
        .iter()
        .map(|l| {
            (
                l["server_id"].as_str().unwrap_or_default().to_owned(),
                l["action"].as_str().unwrap_or_default().to_owned(),
                l["from_version"].clone(),
                l["to_version"].clone(),
            )
        })
        .collect()
}

fn write_manifest(work: &Path, text: &str) {
    std::fs::write(work.join("ecosystem-manifest.yaml"), text).expect("write the manifest");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_of_a_working_copy_predicts_exactly_what_its_push_does() {
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &process_manifest(&[("alpha", "1.0.0"), ("beta", "1.0.0"), ("keep", "1.0.0")]),
        "three servers",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_runs(1).await;
    for id in ["alpha", "beta", "keep"] {
        agent.wait_running(id, "1.0.0", WAIT).await;
    }

    // The working copy: alpha upgraded, beta removed, gamma added, keep as it is but probed
    // more slowly (a field that needs no new instance).
    let next = process_manifest(&[("alpha", "1.1.0"), ("gamma", "1.0.0"), ("keep", "1.0.0")]);
    let next = {
        let (head, tail) = next.split_at(next.find("- id: keep").expect("keep"));
        format!(
            "{head}{}",
            tail.replacen("interval_seconds: 0.2", "interval_seconds: 0.3", 1)
        )
    };
    write_manifest(&repo.work(), &next);
    let (code, out, err) = cli(
        &agent,
        &["plan", repo.work().to_str().unwrap(), "--output", "json"],
    );
    assert_eq!(code, 1, "changes exit 1:\n{out}{err}");
    let plan = json_of(&out);
    assert_eq!(plan["valid"], true, "{plan}");
    assert_eq!(plan["changes"], 3, "{plan}");
    assert_eq!(
        plan["summary"], "update alpha, remove beta, deploy gamma",
        "{plan}"
    );
    assert_eq!(
        actions(&plan["servers"]),
        vec![
            (
                "alpha".into(),
                "update".into(),
                json!("1.0.0"),
                json!("1.1.0")
            ),
            ("beta".into(), "remove".into(), json!("1.0.0"), Value::Null),
            ("gamma".into(), "deploy".into(), Value::Null, json!("1.0.0")),
            ("keep".into(), "keep".into(), json!("1.0.0"), json!("1.0.0")),
        ],
        "{plan}"
    );
    let line = |id: &str| {
        plan["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["server_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(line("alpha")["changed_fields"], json!(["version"]));
    assert_eq!(
        line("keep")["changed_fields"],
        json!(["health_check.interval_seconds"])
    );
    assert_eq!(plan["applied_commit"], repo.git(&["rev-parse", "HEAD"]));

    // The table says the same, for people.
    let (code, text, _) = cli(&agent, &["plan", repo.work().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["alpha", "update", "1.0.0", "1.1.0", "version", "-"]),
        "{text}"
    );
    assert!(
        text.contains("plan: update alpha, remove beta, deploy gamma"),
        "{text}"
    );

    // Nothing changed meanwhile: planning is a read.
    for id in ["alpha", "beta", "keep"] {
        assert_eq!(agent.server(id).await.unwrap()["running_version"], "1.0.0");
    }
    assert!(agent.server("gamma").await.is_none());

    // The push does what the plan said, and its run keeps that plan.
    repo.git(&["commit", "-qam", "upgrade alpha, beta out, gamma in"]);
    repo.git(&["push", "-q", "origin", "HEAD:main"]);
    let commit = repo.git(&["rev-parse", "HEAD"]);
    let run = finished_run(&agent, &commit).await;
    assert_eq!(run["result"], "applied", "{run}");
    assert_eq!(
        run["plan"], plan["servers"],
        "the run's plan is the plan shown"
    );
    agent.wait_running("alpha", "1.1.0", WAIT).await;
    agent.wait_running("gamma", "1.0.0", WAIT).await;
    assert!(agent.server("beta").await.is_none());
    // Each change the plan named is a rollout of the run.
    for (id, action) in [("alpha", "update"), ("gamma", "deploy"), ("beta", "remove")] {
        let (_, page) = agent.get(&format!("/servers/{id}/rollouts")).await;
        let rollouts = page["rollouts"].as_array().cloned().unwrap_or_default();
        assert!(
            rollouts
                .iter()
                .any(|r| r["run_id"] == run["id"] && r["action"] == action),
            "no {action} rollout of {id} in run {}: {page}",
            run["id"]
        );
    }

    // `revisions show` prints the plan the run applied.
    let (code, shown, err) = cli(&agent, &["revisions", "show", &commit]);
    assert_eq!(code, 0, "{shown}{err}");
    let after_plan = shown.split("plan:").nth(1).unwrap_or_default();
    assert!(
        after_plan
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["beta", "remove", "1.0.0", "-", "-", "-"]),
        "{shown}"
    );

    // The working copy now matches what runs: no change, exit 0.
    let (code, out, _) = cli(
        &agent,
        &["plan", repo.work().to_str().unwrap(), "--output", "json"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(json_of(&out)["summary"], "no changes");

    // A commit of the watched repository, by branch expression: going back undoes the push.
    let (code, out, err) = cli(&agent, &["plan", "--commit", "main~1", "--output", "json"]);
    assert_eq!(code, 1, "{out}{err}");
    let back = json_of(&out);
    assert_eq!(back["commit"], repo.git(&["rev-parse", "HEAD~1"]));
    assert_eq!(
        back["summary"], "update alpha, deploy beta, remove gamma",
        "{back}"
    );

    // A commit the mirror does not have is an error that says so.
    let (code, _, err) = cli(&agent, &["plan", "--commit", "0123456789abcdef"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no commit `0123456789abcdef` in the agent's mirror"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_of_an_invalid_manifest_shows_its_errors_and_exits_2() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("alpha", "1.0.0")]), "alpha");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_runs(1).await;

    let broken =
        process_manifest(&[("alpha", "1.0.0")]).replace("version: \"1.0.0\"", "version: \"one\"");
    write_manifest(&repo.work(), &broken);
    let (code, out, _) = cli(
        &agent,
        &["plan", repo.work().to_str().unwrap(), "--output", "json"],
    );
    assert_eq!(code, 2, "{out}");
    let plan = json_of(&out);
    assert_eq!(plan["valid"], false);
    assert_eq!(plan["servers"], json!([]));
    let diagnostic = &plan["diagnostics"][0];
    assert_eq!(diagnostic["file"], "ecosystem-manifest.yaml", "{plan}");
    assert_eq!(diagnostic["line"], 4, "{plan}");
    assert!(
        plan["summary"].as_str().unwrap().starts_with("rejected"),
        "{plan}"
    );

    // A file that is not UTF-8 is refused before it is sent.
    std::fs::write(
        repo.work().join("ecosystem-manifest.yaml"),
        b"servers: [\xff]\n",
    )
    .unwrap();
    let (code, out, _) = cli(&agent, &["plan", repo.work().to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not UTF-8"), "{out}");

    // A request that names both a commit and files, or neither, is refused with a reason.
    for body in [
        json!({}),
        json!({ "commit": "main", "files": { "manifest": { "path": "m", "text": "" } } }),
    ] {
        let (status, answer) = agent.call(reqwest::Method::POST, "/plan", Some(body)).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer.to_string().contains("either `commit` or `files`"),
            "{answer}"
        );
    }
    // Nothing changed.
    assert_eq!(
        agent.server("alpha").await.unwrap()["running_version"],
        "1.0.0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_receive_prints_the_plan_of_the_pushed_commit_when_the_agent_answers() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("alpha", "1.0.0")]), "alpha");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_runs(1).await;
    let hook = repo.remote().join("hooks/pre-receive");
    std::fs::copy(PRE_RECEIVE, &hook).expect("install the hook");
    // The hook validates with the operator's trust policy, as the agent does.
    let trust = repo.dir.path().join("trust-policy.yaml");
    let bin_dir = Path::new(crate::support::example_server_bin().parent().unwrap()).to_owned();
    std::fs::write(
        &trust,
        format!("allowed_commands: [{}]\n", bin_dir.display()),
    )
    .unwrap();

    let push = |url: &str| {
        let out = command(&repo.work(), &repo.home())
            .args(["push", "origin", "HEAD:main"])
            .env("MCP_ORCHESTRATION_BIN", BIN)
            .env("MCP_ORCHESTRATION_TRUST_POLICY", &trust)
            .env("MCP_ORCHESTRATION_URL", url)
            .env("MCP_ORCHESTRATION_API_KEY", TEST_API_KEY)
            .env("NO_COLOR", "1")
            .output()
            .expect("git push runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    write_manifest(
        &repo.work(),
        &process_manifest(&[("alpha", "1.1.0"), ("beta", "1.0.0")]),
    );
    repo.git(&["commit", "-qam", "alpha 1.1.0, beta"]);
    let (pushed, said) = push(&agent.url);
    assert!(pushed, "the push was refused:\n{said}");
    assert!(
        said.lines()
            .any(|l| l.contains("alpha") && l.contains("update") && l.contains("1.1.0")),
        "no plan line for alpha in the hook's output:\n{said}"
    );
    assert!(said.contains("plan: update alpha, deploy beta"), "{said}");

    // An agent that does not answer: the hook still validates, says it could not plan,
    // and lets a valid push through.
    write_manifest(&repo.work(), &process_manifest(&[("alpha", "1.2.0")]));
    repo.git(&["commit", "-qam", "alpha 1.2.0"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (pushed, said) = push(&dead);
    assert!(pushed, "the push was refused:\n{said}");
    assert!(said.contains("could not plan"), "{said}");
}
