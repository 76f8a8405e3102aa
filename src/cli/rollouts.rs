//! `history`, `rollout show|retry|resume` and `rollback`: what happened to a server's
//! versions and why, and steering them.

use std::time::{Duration, Instant};

use super::client::Client;
use super::exit;
use super::output::{self, OutputFormat, first_line, or_dash, outln};
use crate::fleet::{DeployRequested, Resumed, RolledBack, RolloutDetail, RolloutPage, ServerView};
use crate::settings::Settings;
use crate::store::{RolloutOutcome, RolloutRecord};
use anyhow::bail;
use reqwest::Method;

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
    let page: RolloutPage = client.get(&format!(
        "/servers/{}/rollouts?limit={}",
        args.server, args.limit
    ))?;
    match args.output {
        OutputFormat::Json => output::print_json(&page.rollouts),
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = page
                .rollouts
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.started_at.to_string(),
                        r.trigger.clone(),
                        r.action.to_string(),
                        format!(
                            "{} → {}",
                            or_dash(r.from_version.as_ref()),
                            or_dash(r.to_version.as_ref())
                        ),
                        output::severity_word(r.outcome.as_str()),
                        first_line(r.reason.as_deref()),
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

fn print_rollout(detail: &RolloutDetail) {
    let r = &detail.rollout;
    outln!(
        "rollout  {} ({} of {}, trigger {})",
        r.id,
        r.action,
        r.server_id,
        r.trigger
    );
    outln!(
        "versions {} → {}",
        or_dash(r.from_version.as_ref()),
        or_dash(r.to_version.as_ref())
    );
    if let Some(image) = &r.image {
        outln!("image    {image}");
    }
    outln!("strategy {}", or_dash(r.strategy.as_ref()));
    outln!("outcome  {}", output::severity_word(r.outcome.as_str()));
    if let Some(restored) = &r.rolled_back_to {
        outln!("restored {restored}");
    }
    if let Some(reason) = &r.reason {
        outln!("reason   {}", reason.replace('\n', "\n         "));
    }
    if let Some(diff) = &r.tool_diff {
        outln!("\ntools:");
        if diff.added.is_empty() && diff.removed.is_empty() && diff.changed.is_empty() {
            outln!("  the same as the running version");
        }
        for name in &diff.added {
            outln!("  + {name}");
        }
        for name in &diff.removed {
            outln!("  - {name}");
        }
        for change in &diff.changed {
            let kind = if change.breaking { "! " } else { "~ " };
            outln!("  {kind}{}  {}", change.name, change.why.join("; "));
        }
    }
    outln!("\ntimeline:");
    for s in &detail.steps {
        outln!(
            "  {}  {:<20} {}",
            s.at,
            s.step,
            s.detail.as_deref().unwrap_or("")
        );
    }
    if !detail.probes.is_empty() {
        outln!("\nhealth gate probes:");
        for p in &detail.probes {
            outln!(
                "  {}  {:<11} {:>7.1} ms  {}",
                p.at,
                p.outcome,
                p.latency_ms,
                p.detail.chars().take(100).collect::<String>()
            );
        }
    }
}

pub fn rollout(settings: &Settings, args: RolloutArgs) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    match args.command {
        RolloutCommand::Show { id } => {
            let detail: RolloutDetail = client.get(&format!("/rollouts/{id}"))?;
            match args.output {
                OutputFormat::Json => output::print_json(&detail),
                OutputFormat::Text => print_rollout(&detail),
            }
            Ok(match detail.rollout.outcome {
                RolloutOutcome::Succeeded | RolloutOutcome::InProgress => exit::OK,
                _ => exit::BAD,
            })
        }
        RolloutCommand::Retry { server } => {
            let answer: DeployRequested =
                client.send(Method::POST, &format!("/servers/{server}/rollout/retry"))?;
            match args.output {
                OutputFormat::Json => output::print_json(&answer),
                OutputFormat::Text => {
                    outln!("{server}: failed versions forgotten; the agent tries again now")
                }
            }
            Ok(exit::OK)
        }
        RolloutCommand::Resume { server } => {
            let answer: Resumed =
                client.send(Method::POST, &format!("/servers/{server}/rollout/resume"))?;
            match args.output {
                OutputFormat::Json => output::print_json(&answer),
                OutputFormat::Text if answer.resumed => {
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
    let rollouts = |limit: usize| -> anyhow::Result<Vec<RolloutRecord>> {
        let page: RolloutPage =
            client.get(&format!("/servers/{}/rollouts?limit={limit}", args.server))?;
        Ok(page.rollouts)
    };
    let last_id = rollouts(1)?.first().map_or(0, |r| r.id);
    let body = match &args.to {
        Some(v) => serde_json::json!({ "to": v, "force": args.force }),
        None => serde_json::json!({}),
    };
    let answer: RolledBack = client.send_json(
        Method::POST,
        &format!("/servers/{}/rollback", args.server),
        &body,
    )?;
    let target = answer.rollback_to;
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
    let mut progress = super::progress::Progress::new(!quiet);
    let mut doing = format!(
        "rolling {} back to {target}: waiting for the rollout",
        args.server
    );
    loop {
        let newest = rollouts(5)?
            .into_iter()
            .find(|r| r.id > last_id && r.to_version.as_deref() == Some(target.as_str()));
        if let Some(r) = newest {
            let detail: RolloutDetail = client.get(&format!("/rollouts/{}", r.id))?;
            if !quiet {
                for s in detail.steps.iter().skip(printed) {
                    progress.line(&format!(
                        "  {:<20} {}",
                        s.step,
                        s.detail.as_deref().unwrap_or("")
                    ));
                }
            }
            printed = detail.steps.len();
            if let Some(last) = detail.steps.last() {
                doing = format!("rolling {} back to {target}: {}", args.server, last.step);
            }
            let outcome = detail.rollout.outcome;
            if outcome != RolloutOutcome::InProgress {
                progress.clear();
                if quiet {
                    output::print_json(&detail);
                } else {
                    outln!(
                        "{}: {}",
                        args.server,
                        output::severity_word(outcome.as_str())
                    );
                    if let Some(reason) = &detail.rollout.reason {
                        outln!("{reason}");
                    }
                }
                return Ok(if outcome == RolloutOutcome::Succeeded {
                    exit::OK
                } else {
                    exit::BAD
                });
            }
        } else {
            let view: ServerView = client.get(&format!("/servers/{}", args.server))?;
            if view.running_version.as_deref() == Some(target.as_str()) && view.state == "running" {
                progress.clear();
                if !quiet {
                    outln!("{} already runs {target}", args.server);
                }
                return Ok(exit::OK);
            }
        }
        if started.elapsed() > timeout {
            progress.clear();
            bail!(
                "the rollback did not finish within {:?}; follow it with `mcp-orchestration history {}`",
                timeout,
                args.server
            );
        }
        progress.tick(&doing);
        std::thread::sleep(Duration::from_millis(200));
    }
}
