//! The guides run: every `sh` block of each page in `docs/how-to/` and `docs/reference/`,
//! in order, in one bash (so `cd` and variables carry from block to block), from the
//! repository's root, with a home of its own and the agent's ports moved to free ones
//! through the agent's own environment variables (the commands stay as a reader types
//! them). A page whose first line is `<!-- guide-test: after PAGE -->` runs PAGE's blocks
//! first. A guide that drifts from the code fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::agent::kill_fleet;
use crate::support::docker::{docker, docker_or_skip, free_port};
use crate::support::images::publish;
use crate::support::registry::{TestRegistry, registry_or_skip};
use crate::support::{REPO, example_server_bin};

/// One `sh` block: where it starts, and its text.
struct Block {
    line: usize,
    text: String,
}

/// The fenced blocks of `markdown` with their language; `sh` ones are run.
fn fenced(markdown: &str) -> Vec<(String, Block)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Block)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (&mut open, fence) {
            (None, true) => {
                let lang = line.trim_start().trim_start_matches('`').trim().to_owned();
                open = Some((
                    lang,
                    Block {
                        line: i + 2,
                        text: String::new(),
                    },
                ));
            }
            (Some(_), true) => blocks.push(open.take().expect("an open block")),
            (Some((_, block)), false) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, false) => {}
        }
    }
    assert!(open.is_none(), "a fence is never closed");
    blocks
}

/// The page a page runs after, from its first line.
fn after(page: &Path, markdown: &str) -> Option<PathBuf> {
    let first = markdown.lines().next()?;
    let name = first
        .strip_prefix("<!-- guide-test: after ")?
        .strip_suffix(" -->")?;
    Some(page.parent()?.join(name))
}

/// The script of `page`: the pages it runs after, then its own blocks, each announced.
fn script(page: &Path) -> String {
    let markdown = std::fs::read_to_string(page)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", page.display()));
    let mut text = after(page, &markdown)
        .map(|p| script(&p))
        .unwrap_or_default();
    let name = page
        .strip_prefix(REPO)
        .unwrap_or(page)
        .display()
        .to_string();
    for (lang, block) in fenced(&markdown) {
        // A shell block in another spelling would silently not run.
        assert!(
            !["bash", "shell", "console", "zsh"].contains(&lang.as_str()),
            "{name}:{}: a shell block must be `sh` to be run",
            block.line
        );
        if lang == "sh" {
            text.push_str(&format!(
                "echo '::: {name}:{}' >&2\n{}",
                block.line, block.text
            ));
        }
    }
    text
}

/// Runs `page` (a path under `docs/`) and fails with its output when a command fails.
fn run(page: &str) {
    run_with(page, &[]);
}

/// [`run`], with `env` set for the page (what a reader would have set).
fn run_with(page: &str, env: &[(&str, &str)]) {
    let page = Path::new(REPO).join("docs").join(page);
    let home = tempfile::tempdir().unwrap();
    let api = free_port();
    let gateway = free_port();
    let program = format!(
        "set -euo pipefail\n\
         trap 'kill $(jobs -p) 2> /dev/null || true; wait 2> /dev/null || true' EXIT\n{}",
        script(&page)
    );
    let mut command = Command::new("timeout");
    command
        .args(["600", "bash", "--noprofile", "--norc", "-c", &program])
        .current_dir(REPO)
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .env("MCP_ORCHESTRATION_LISTEN", format!("127.0.0.1:{api}"))
        .env("MCP_ORCHESTRATION_URL", format!("http://127.0.0.1:{api}"))
        .env(
            "MCP_ORCHESTRATION_GATEWAY_LISTEN",
            format!("127.0.0.1:{gateway}"),
        )
        .envs(env.iter().copied());
    for var in [
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "MCP_ORCHESTRATION_CONFIG",
        "MCP_ORCHESTRATION_TRUST_POLICY",
        "MCP_ORCHESTRATION_DATA_DIR",
        "MCP_ORCHESTRATION_API_KEY",
        "CLAUDE_CONFIG_DIR",
        "CODEX_HOME",
    ] {
        command.env_remove(var);
    }
    // The official MCP Python SDK, where CI installed it, is the `python3` a guide finds.
    if let Ok(python) = std::env::var("MCP_TEST_PYTHON_MCP") {
        let dir = Path::new(&python).parent().expect("the venv's bin");
        let path = std::env::var("PATH").unwrap_or_default();
        command.env("PATH", format!("{}:{path}", dir.display()));
    }
    // The example server the guides build is the one this test binary was built with.
    assert!(example_server_bin().exists());
    let out = command.output().expect("bash runs");
    kill_fleet(&home.path().join(".local/share/mcp-orchestration"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Shown with `--nocapture`: what a reader would have seen.
    eprintln!("{stdout}");
    if !out.status.success() {
        let log = ["mcp-fleet", "mcp-updates"]
            .iter()
            .map(|dir| {
                std::fs::read_to_string(home.path().join(dir).join("agent.log")).unwrap_or_default()
            })
            .collect::<String>();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "{} failed ({}); the last block announced on stderr is the one that failed.\n\
             --- stdout\n{stdout}\n--- stderr\n{stderr}\n--- the agent's last log lines\n{}",
            page.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn set_up_the_ecosystem() {
    run("how-to/set-up-the-ecosystem.md");
}

#[test]
fn deploy_a_new_server() {
    run("how-to/deploy-a-new-server.md");
}

#[test]
fn configure_health_monitoring() {
    run("how-to/configure-health-monitoring.md");
}

#[test]
fn troubleshoot_unhealthy_backends() {
    run("how-to/troubleshoot-unhealthy-backends.md");
}

#[test]
fn connect_mcp_clients() {
    run("how-to/connect-mcp-clients.md");
}

#[test]
fn subscribe_to_events() {
    run("how-to/subscribe-to-events.md");
}

#[test]
fn the_health_check_specification() {
    run("reference/health-check-specification.md");
}

/// The Docker runtime and a real registry: the test publishes the example server's
/// `1.0.0` into a registry of its own and hands the page its name as `IMAGE`; the page
/// publishes `1.1.0` and a broken `1.2.0` itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_automatic_updates() {
    let name = "enable_automatic_updates";
    if !docker_or_skip(name) || !registry_or_skip(name) {
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(storage.path(), false).await;
    let host = registry.host();
    let published = tokio::task::spawn_blocking(move || publish(&host, "1.0.0", "healthy"))
        .await
        .unwrap();
    let image = published.trim_end_matches(":1.0.0").to_owned();
    let page = image.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        run_with(
            "how-to/enable-automatic-updates.md",
            &[("IMAGE", page.as_str())],
        )
    })
    .await;
    // The page's server and images go, whatever happened: its containers are those of
    // server `notes` made from this registry's images.
    let notes = docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=io.mcp-orchestration.server=notes",
    ]);
    for id in notes.lines() {
        let made_from = docker(&["inspect", "--format", "{{.Config.Image}}", id]);
        if made_from.starts_with(&image) {
            let _ = Command::new("docker").args(["rm", "--force", id]).output();
        }
    }
    for tag in ["1.0.0", "1.1.0", "1.2.0"] {
        let _ = Command::new("docker")
            .args(["rmi", "--force", &format!("{image}:{tag}")])
            .output();
    }
    drop(registry);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

#[test]
fn every_page_is_run_and_linked_from_the_readme() {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let tests = std::fs::read_to_string(Path::new(REPO).join("tests/it/guides.rs")).unwrap();
    for dir in ["how-to", "reference"] {
        for entry in std::fs::read_dir(Path::new(REPO).join("docs").join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let page = format!("{dir}/{name}");
            assert!(tests.contains(&format!("\"{page}\"")), "{page} is not run");
            assert!(
                readme.contains(&format!("docs/{page}")),
                "README does not link {page}"
            );
        }
    }
}
