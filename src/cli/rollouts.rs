//! `history`, `rollout show|retry|resume` and `rollback`: what happened to a server's
//! versions and why, and steering them.

use std::time::{Duration, Instant};

use anyhow::bail;
use reqwest::Method;
use serde_json::Value;

use super::client::Client;
use super::exit;
use super::output::{self, OutputFormat, outln, text};
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    server: String,
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    command: RolloutCommand,
    #[arg(long, short, value_enum, default_value_t, global = true)]
    output: OutputFormat,
}

#[derive(Debug, clap::Subcommand)]
enum RolloutCommand {
    /// One rollout's timeline: steps, every probe of its health gate, the reason.
    Show { id: i64 },
    /// Forget a server's failed versions and try again.
    Retry { server: String },
    /// Lift an operator rollback: the update policy applies again.
    Resume { server: String },
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    server: String,
    /// The version to go back to [default: the one before the current]
    #[arg(long)]
    to: Option<String>,
    /// Allow a --to version that never rolled out successfully on this server.
    #[arg(long, requires = "to")]
    force: bool,
    /// Give up waiting after this long (the rollback itself goes on).
    #[arg(long, default_value = "300s")]
    timeout: String,
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn history(settings: &Settings, args: HistoryArgs) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    let answer: Value = client.get(&format!(
        "/servers/{}/rollouts?limit={}",
        args.server, args.limit
    ))?;
    let rollouts = answer["rollouts"].as_array().cloned().unwrap_or_default();
    match args.output {
        OutputFormat::Json => output::print_json(&rollouts),
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = rollouts
                .iter()
                .map(|r| {
                    vec![
                        text(r, "id"),
                        text(r, "started_at"),
                        text(r, "trigger"),
                        text(r, "action"),
                        format!("{} → {}", text(r, "from_version"), text(r, "to_version")),
                        output::severity_word(&text(r, "outcome")),
                        text(r, "reason")
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID", "STARTED", "TRIGGER", "ACTION", "VERSIONS", "OUTCOME", "REASON",
                ],
                &rows,
            );
        }
    }
    Ok(exit::OK)
}

fn print_rollout(r: &Value) {
    outln!(
        "rollout  {} ({} of {}, trigger {})",
        text(r, "id"),
        text(r, "action"),
        text(r, "server_id"),
        text(r, "trigger")
    );
    outln!(
        "versions {} → {}",
        text(r, "from_version"),
        text(r, "to_version")
    );
    if r["image"].is_string() {
        outln!("image    {}", text(r, "image"));
    }
    outln!("strategy {}", text(r, "strategy"));
    outln!("outcome  {}", output::severity_word(&text(r, "outcome")));
    if r["rolled_back_to"].is_string() {
        outln!("restored {}", text(r, "rolled_back_to"));
    }
    if let Some(reason) = r["reason"].as_str() {
        outln!("reason   {}", reason.replace('\n', "\n         "));
    }
    outln!("\ntimeline:");
    for s in r["steps"].as_array().into_iter().flatten() {
        outln!(
            "  {}  {:<20} {}",
            text(s, "at"),
            text(s, "step"),
            s["detail"].as_str().unwrap_or("")
        );
    }
    let probes = r["probes"].as_array().cloned().unwrap_or_default();
    if !probes.is_empty() {
        outln!("\nhealth gate probes:");
        for p in probes {
            outln!(
                "  {}  {:<11} {:>7.1} ms  {}",
                text(&p, "at"),
                text(&p, "outcome"),
                p["latency_ms"].as_f64().unwrap_or(0.0),
                text(&p, "detail").chars().take(100).collect::<String>()
            );
        }
    }
}

pub fn rollout(settings: &Settings, args: RolloutArgs) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    match args.command {
        RolloutCommand::Show { id } => {
            let r: Value = client.get(&format!("/rollouts/{id}"))?;
            match args.output {
                OutputFormat::Json => output::print_json(&r),
                OutputFormat::Text => print_rollout(&r),
            }
            Ok(
                if text(&r, "outcome") == "succeeded" || text(&r, "outcome") == "in_progress" {
                    exit::OK
                } else {
                    exit::BAD
                },
            )
        }
        RolloutCommand::Retry { server } => {
            let r: Value =
                client.send(Method::POST, &format!("/servers/{server}/rollout/retry"))?;
            match args.output {
                OutputFormat::Json => output::print_json(&r),
                OutputFormat::Text => {
                    outln!("{server}: failed versions forgotten; the agent tries again now")
                }
            }
            Ok(exit::OK)
        }
        RolloutCommand::Resume { server } => {
            let r: Value =
                client.send(Method::POST, &format!("/servers/{server}/rollout/resume"))?;
            match args.output {
                OutputFormat::Json => output::print_json(&r),
                OutputFormat::Text if r["resumed"] == true => {
                    outln!("{server}: resumed; its update policy applies again")
                }
                OutputFormat::Text => outln!("{server}: was not held by a rollback"),
            }
            Ok(exit::OK)
        }
    }
}

/// Asks for a rollback, then follows the rollout it causes, printing each step as it
/// happens, and exits 1 unless it succeeds.
pub fn rollback(settings: &Settings, args: RollbackArgs) -> anyhow::Result<u8> {
    let timeout = crate::settings::parse_duration(&args.timeout).map_err(anyhow::Error::msg)?;
    let client = Client::new(settings)?;
    let before: Value = client.get(&format!("/servers/{}/rollouts?limit=1", args.server))?;
    let last_id = before["rollouts"][0]["id"].as_i64().unwrap_or(0);
    let body = match &args.to {
        Some(v) => serde_json::json!({ "to": v, "force": args.force }),
        None => serde_json::json!({}),
    };
    let answer: Value = client.send_json(
        Method::POST,
        &format!("/servers/{}/rollback", args.server),
        &body,
    )?;
    let target = text(&answer, "rollback_to");
    let quiet = args.output == OutputFormat::Json;
    if !quiet {
        outln!(
            "rolling {} back to {target} (auto-update paused until `mcp-orchestration rollout resume {}`)",
            args.server,
            args.server
        );
    }
    let started = Instant::now();
    let mut printed = 0usize;
    loop {
        let list: Value = client.get(&format!("/servers/{}/rollouts?limit=5", args.server))?;
        let newest = list["rollouts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| {
                r["id"].as_i64().unwrap_or(0) > last_id
                    && r["to_version"].as_str() == Some(target.as_str())
            })
            .cloned();
        if let Some(r) = newest {
            let id = r["id"].as_i64().unwrap_or(0);
            let detail: Value = client.get(&format!("/rollouts/{id}"))?;
            let steps = detail["steps"].as_array().cloned().unwrap_or_default();
            if !quiet {
                for s in steps.iter().skip(printed) {
                    outln!(
                        "  {:<20} {}",
                        text(s, "step"),
                        s["detail"].as_str().unwrap_or("")
                    );
                }
            }
            printed = steps.len();
            let outcome = text(&detail, "outcome");
            if outcome != "in_progress" {
                if quiet {
                    output::print_json(&detail);
                } else {
                    outln!("{}: {}", args.server, output::severity_word(&outcome));
                    if let Some(reason) = detail["reason"].as_str() {
                        outln!("{reason}");
                    }
                }
                return Ok(if outcome == "succeeded" {
                    exit::OK
                } else {
                    exit::BAD
                });
            }
        } else {
            let view: Value = client.get(&format!("/servers/{}", args.server))?;
            if view["running_version"].as_str() == Some(target.as_str())
                && view["state"] == "running"
            {
                if !quiet {
                    outln!("{} already runs {target}", args.server);
                }
                return Ok(exit::OK);
            }
        }
        if started.elapsed() > timeout {
            bail!(
                "the rollback did not finish within {:?}; follow it with `mcp-orchestration history {}`",
                timeout,
                args.server
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
