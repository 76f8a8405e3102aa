//! `status` and `revisions`: what the agent runs and what it did with each commit.

use anyhow::Context;
use serde_json::Value;

use super::client::Client;
use super::exit;
use super::output::{self, OutputFormat, outln, text};
use crate::settings::Settings;
use crate::source::short_commit;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One server's id; all servers when omitted.
    server: Option<String>,
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct ServerArg {
    /// The server's id.
    server: String,
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn stop(settings: &Settings, args: ServerArg) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    let answer: Value = client.send(
        reqwest::Method::DELETE,
        &format!("/servers/{}", args.server),
    )?;
    match args.output {
        OutputFormat::Json => output::print_json(&answer),
        OutputFormat::Text => outln!(
            "{} stopped ({} instance(s) removed); it stays stopped until `mcp-orchestration deploy {}`",
            args.server,
            text(&answer, "stopped_instances"),
            args.server
        ),
    }
    Ok(exit::OK)
}

pub fn deploy(settings: &Settings, args: ServerArg) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    let answer: Value = client.send(
        reqwest::Method::POST,
        &format!("/servers/{}/deploy", args.server),
    )?;
    match args.output {
        OutputFormat::Json => output::print_json(&answer),
        OutputFormat::Text => outln!(
            "{}: deploy requested; follow it with `mcp-orchestration status {}`",
            args.server,
            args.server
        ),
    }
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct RevisionsArgs {
    #[command(subcommand)]
    show: Option<RevisionsCommand>,
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long, short, value_enum, default_value_t, global = true)]
    output: OutputFormat,
}

#[derive(Debug, clap::Subcommand)]
enum RevisionsCommand {
    /// One commit's run: its stages, timings and errors.
    Show {
        /// A commit id or a prefix of at least 4 characters.
        commit: String,
    },
}

pub fn status(settings: &Settings, args: StatusArgs) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    if let Some(id) = &args.server {
        let server: Value = client.get(&format!("/servers/{id}/status"))?;
        match args.output {
            OutputFormat::Json => output::print_json(&server),
            OutputFormat::Text => {
                for key in [
                    "id",
                    "state",
                    "desired_version",
                    "running_version",
                    "health",
                    "health_since",
                    "health_reason",
                    "update_available",
                    "pinned_version",
                    "endpoint",
                    "transport",
                    "instance_id",
                    "revision",
                    "since",
                    "reason",
                ] {
                    outln!("{key:>16}: {}", text(&server, key));
                }
            }
        }
        return Ok(if text(&server, "state") == "failed" {
            exit::BAD
        } else {
            exit::OK
        });
    }
    let fleet: Value = client.get("/servers")?;
    match args.output {
        OutputFormat::Json => output::print_json(&fleet),
        OutputFormat::Text => {
            let servers = fleet
                .get("servers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let rows: Vec<Vec<String>> = servers
                .iter()
                .map(|s| {
                    let mut reason = text(s, "reason");
                    reason = reason.lines().next().unwrap_or_default().to_owned();
                    vec![
                        text(s, "id"),
                        text(s, "state"),
                        text(s, "health"),
                        text(s, "desired_version"),
                        text(s, "running_version"),
                        text(s, "endpoint"),
                        reason,
                    ]
                })
                .collect();
            output::table(
                &[
                    "SERVER", "STATE", "HEALTH", "DESIRED", "RUNNING", "ENDPOINT", "REASON",
                ],
                &rows,
            );
            let notes: Vec<String> = servers.iter().flat_map(server_notes).collect();
            if !notes.is_empty() {
                outln!();
                for note in notes {
                    outln!("{note}");
                }
            }
            let applied = text(&fleet, "applied_revision");
            outln!("\napplied revision: {}", short_commit(&applied));
            // A head that is not in force: say why, so a rejected push is not missed.
            let head = text(&fleet, "head");
            if head != "-" && head != applied {
                let newest: Value = client.get("/revisions?limit=1").unwrap_or(Value::Null);
                let run = &newest["revisions"][0];
                if run["commit_id"] == head.as_str() {
                    let result = text(run, "result");
                    let why = run["errors"][0]["message"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| run["reason"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let why = why.lines().next().unwrap_or_default().to_owned();
                    outln!(
                        "branch head {}: {result}{}",
                        short_commit(&head),
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {why}")
                        }
                    );
                } else {
                    outln!("branch head {}: not applied yet", short_commit(&head));
                }
            }
            for (key, label) in [
                ("source_error", "source error"),
                (
                    "runtime_error",
                    "runtime error (the servers shown are the last seen)",
                ),
                ("store_error", "state database error"),
            ] {
                if let Some(e) = fleet.get(key).and_then(Value::as_str) {
                    outln!("{label}: {e}");
                }
            }
        }
    }
    Ok(exit::OK)
}

pub fn revisions(settings: &Settings, args: RevisionsArgs) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    match args.show {
        Some(RevisionsCommand::Show { commit }) => {
            let run: Value = client.get(&format!("/revisions/{commit}"))?;
            match args.output {
                OutputFormat::Json => output::print_json(&run),
                OutputFormat::Text => print_run(&run),
            }
            let result = text(&run, "result");
            Ok(if result == "rejected" || result == "failed" {
                exit::BAD
            } else {
                exit::OK
            })
        }
        None => {
            let list: Value = client.get(&format!("/revisions?limit={}", args.limit))?;
            let runs = list
                .get("revisions")
                .and_then(Value::as_array)
                .cloned()
                .context("no revisions in the answer")?;
            match args.output {
                OutputFormat::Json => output::print_json(&runs),
                OutputFormat::Text => {
                    let rows: Vec<Vec<String>> = runs
                        .iter()
                        .map(|r| {
                            vec![
                                short_commit(&text(r, "commit_id")).to_owned(),
                                text(r, "result"),
                                text(r, "seen_at"),
                                text(r, "trigger"),
                                text(r, "message"),
                                text(r, "reason")
                                    .lines()
                                    .next()
                                    .unwrap_or_default()
                                    .to_owned(),
                            ]
                        })
                        .collect();
                    output::table(
                        &["COMMIT", "RESULT", "SEEN", "TRIGGER", "MESSAGE", "REASON"],
                        &rows,
                    );
                }
            }
            Ok(exit::OK)
        }
    }
}

fn print_run(run: &Value) {
    outln!("commit   {}", text(run, "commit_id"));
    outln!("author   {}", text(run, "author"));
    outln!("message  {}", text(run, "message"));
    outln!(
        "seen     {} ({})",
        text(run, "seen_at"),
        text(run, "trigger")
    );
    outln!("result   {}", output::severity_word(&text(run, "result")));
    if let Some(reason) = run.get("reason").and_then(Value::as_str) {
        outln!("reason   {}", reason.replace('\n', "\n         "));
    }
    outln!("\nstages:");
    for s in run
        .get("stages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let took = match (
            s.get("started_at")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
            s.get("finished_at")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
        ) {
            (Some(a), Some(b)) => format!("{:.0} ms", b.duration_since(a).as_secs_f64() * 1000.0),
            _ => "-".to_owned(),
        };
        let detail = s.get("detail").and_then(Value::as_str).unwrap_or("");
        outln!(
            "  {:<9} {:<10} {:>8}  {}",
            text(s, "stage"),
            text(s, "status"),
            took,
            detail
        );
    }
    let errors = run
        .get("errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !errors.is_empty() {
        outln!("\nerrors:");
        for e in errors {
            let d: Result<crate::manifest::Diagnostic, _> = serde_json::from_value(e);
            if let Ok(d) = d {
                outln!("  {d}");
            }
        }
    }
}

/// What an operator must not miss about a server, one line each: a hold, a stop, a
/// version blocked as failed, a rollout under way, a newer version waiting.
fn server_notes(s: &Value) -> Vec<String> {
    let id = text(s, "id");
    let mut notes = Vec::new();
    if let Some(v) = s["pinned_version"].as_str() {
        notes.push(format!(
            "{id}: held at {v} by an operator rollback; `mcp-orchestration rollout resume {id}` lifts it"
        ));
    }
    match s["state"].as_str() {
        Some("stopped") => notes.push(format!(
            "{id}: stopped by an operator; `mcp-orchestration deploy {id}` starts it again"
        )),
        Some("failed") => notes.push(format!(
            "{id}: {} blocked as failed: {}",
            text(s, "desired_version"),
            text(s, "reason").lines().next().unwrap_or_default()
        )),
        _ => {}
    }
    if s["health"] == "starting" {
        notes.push(format!(
            "{id}: rollout in progress (to {})",
            text(s, "desired_version")
        ));
    }
    if let Some(v) = s["update_available"].as_str() {
        notes.push(format!(
            "{id}: {v} is available (the update policy does not apply it by itself)"
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn holds_stops_failures_and_rollouts_are_spelled_out() {
        let notes = server_notes(&json!({
            "id": "a", "state": "failed", "desired_version": "1.2.0",
            "reason": "a 1.2.0 failed its health gate\nlast log lines", "pinned_version": "1.0.0",
            "health": "starting", "update_available": "1.3.0"
        }));
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert!(notes[0].contains("held at 1.0.0"));
        assert!(notes[1].contains("1.2.0 blocked as failed: a 1.2.0 failed its health gate"));
        assert!(notes[2].contains("rollout in progress"));
        assert!(notes[3].contains("1.3.0 is available"));
        assert!(server_notes(&json!({"id": "b", "state": "running"})).is_empty());
    }
}
