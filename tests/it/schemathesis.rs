//! schemathesis, a property-based API tester nobody here wrote, against a live agent's
//! `/openapi.json`: every documented operation, with valid and invalid input, statefully
//! chained, must answer as the document says and never with a server error.
//!
//! Bounded: a fixed seed, at most 15 examples per operation, 60 s of fuzzing. `/events`
//! (an endless SSE stream) and `/mcp` (JSON-RPC, tested by the MCP tests) are left out.
//! One documented false positive is excluded: `use_after_free` — `DELETE /servers/{id}` is
//! an operator's stop, and a stopped server stays in the manifest with its history
//! readable, so reading it afterwards is right, not a resource that outlived its deletion.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::agent::{Options, TEST_API_KEY, TestAgent, process_manifest};
use crate::support::git::ManifestRepo;

/// The schemathesis CLI: `MCP_TEST_SCHEMATHESIS`, else `schemathesis` on `PATH`. `.ci/run`
/// installs it; elsewhere its absence skips the test, and under `CI=true` fails it.
fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MCP_TEST_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Some(PathBuf::from("schemathesis"));
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "schemathesis is not installed (.ci/run installs it and sets MCP_TEST_SCHEMATHESIS)"
    );
    eprintln!("skipping: schemathesis is not installed (pip install schemathesis)");
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_failure_in_the_documented_api() {
    let Some(st) = schemathesis() else {
        return;
    };
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("fuzzed", "1.0.0")]), "one server");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            webhook_secret: Some("schemathesis-secret".into()),
            ..Options::default()
        },
    )
    .await;
    agent
        .wait_running("fuzzed", "1.0.0", Duration::from_secs(20))
        .await;
    let work = tempfile::tempdir().unwrap();
    let run = |seed: u32| {
        let st = st.clone();
        let url = format!("{}/openapi.json", agent.url);
        let cwd = work.path().to_owned();
        async move {
            tokio::process::Command::new(st)
                .args(["run", &url, "-H"])
                .arg(format!("Authorization: Bearer {TEST_API_KEY}"))
                .args([
                    "--max-examples",
                    "15",
                    "--max-time",
                    "60",
                    "--request-timeout",
                    "5",
                    // One worker: with two, Hypothesis' lambda-source cache is shared between
                    // threads and once crashed the tool (a `KeyError` raised as a
                    // `FlakyFailure`) in both runs of one CI job.
                    "--workers",
                    "1",
                    "--seed",
                    &seed.to_string(),
                    "--exclude-path",
                    "/events",
                    "--exclude-path",
                    "/mcp",
                    "--exclude-checks",
                    "use_after_free",
                    "--no-color",
                ])
                // Its example database and reports stay out of the checkout.
                .current_dir(&cwd)
                .kill_on_drop(true)
                .output()
                .await
                .expect("schemathesis runs")
        }
    };
    let mut out = tokio::time::timeout(Duration::from_secs(240), run(2))
        .await
        .expect("schemathesis finishes within 240 s");
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // A crash inside the tool itself (not a finding about the API) gets one more run, with
    // another seed: such a crash (a Hypothesis `FlakyFailure` while drawing a case) follows
    // the seed, so the same one would only crash again.
    let tool_crashed = |t: &str| t.contains("Runtime Error") && !t.contains("Failures:");
    if !out.status.success() && tool_crashed(&text(&out)) {
        eprintln!(
            "schemathesis crashed on its own; running it once more:\n{}",
            text(&out)
        );
        out = tokio::time::timeout(Duration::from_secs(240), run(3))
            .await
            .expect("schemathesis finishes within 240 s");
    }
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{}",
        text(&out)
    );
}
