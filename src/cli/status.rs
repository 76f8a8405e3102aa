//! `status` and `revisions`: what the agent runs and what it did with each commit.

use super::client::Client;
use super::exit;
use super::output::{self, OutputFormat, first_line, or_dash, outln};
use crate::fleet::{DeployRequested, FleetView, RevisionPage, ServerView, Stopped};
use crate::health::HealthState;
use crate::settings::Settings;
use crate::source::short_commit;
use crate::store::{RunRecord, RunResult};

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
    let answer: Stopped = client.send(
        reqwest::Method::DELETE,
        &format!("/servers/{}", args.server),
    )?;
    match args.output {
        OutputFormat::Json => output::print_json(&answer),
        OutputFormat::Text => outln!(
            "{} stopped ({} instance(s) removed); it stays stopped until `mcp-orchestration deploy {}`",
            args.server,
            answer.stopped_instances,
            args.server
        ),
    }
    Ok(exit::OK)
}

pub fn deploy(settings: &Settings, args: ServerArg) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    let answer: DeployRequested = client.send(
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

/// What `healthcheck` reads of `GET /health`.
#[derive(serde::Deserialize)]
struct AgentHealth {
    status: String,
    starting: Option<String>,
}

/// `healthcheck`: exit 0 when the agent answers `GET /health`, 1 when it does not (a
/// container's `HEALTHCHECK` reads exactly that). A degraded agent (its repository or
/// runtime unreachable) still answers, and still runs its servers: 0, with the word.
pub fn healthcheck(settings: &Settings) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    match client.get::<AgentHealth>("/health") {
        Ok(h) => {
            match h.starting {
                Some(step) => outln!("{} (starting: {step})", h.status),
                None => outln!("{}", h.status),
            }
            Ok(exit::OK)
        }
        Err(e) => {
            output::errln!("unhealthy: {e:#}");
            Ok(exit::BAD)
        }
    }
}

pub fn status(settings: &Settings, args: StatusArgs) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    if let Some(id) = &args.server {
        let server: ServerView = client.get(&format!("/servers/{id}/status"))?;
        match args.output {
            OutputFormat::Json => output::print_json(&server),
            OutputFormat::Text => print_server(&server),
        }
        return Ok(if server.state == "failed" {
            exit::BAD
        } else {
            exit::OK
        });
    }
    let fleet: FleetView = client.get("/servers")?;
    match args.output {
        OutputFormat::Json => output::print_json(&fleet),
        OutputFormat::Text => print_fleet(&client, &fleet),
    }
    Ok(exit::OK)
}

fn print_server(s: &ServerView) {
    let rows: [(&str, String); 18] = [
        ("id", s.id.clone()),
        ("state", s.state.clone()),
        ("desired_version", s.desired_version.clone()),
        ("running_version", or_dash(s.running_version.as_ref())),
        ("health", or_dash(s.health)),
        ("health_since", or_dash(s.health_since)),
        ("health_reason", or_dash(s.health_reason.as_ref())),
        ("update_available", or_dash(s.update_available.as_ref())),
        ("pinned_version", or_dash(s.pinned_version.as_ref())),
        ("endpoint", or_dash(s.endpoint.as_ref())),
        ("gateway_tools", or_dash(s.gateway_tools)),
        ("transport", s.transport.as_str().to_owned()),
        ("instance_id", or_dash(s.instance_id.as_ref())),
        ("revision", or_dash(s.revision.as_ref())),
        ("since", s.since.to_string()),
        ("reason", or_dash(s.reason.as_ref())),
        (
            "blocked_by",
            if s.blocked_by.is_empty() {
                "-".to_owned()
            } else {
                s.blocked_by.join(", ")
            },
        ),
        (
            "held_by_window",
            s.held_by_window.as_ref().map_or_else(
                || "-".to_owned(),
                |h| format!("{} {}", h.what.as_deref().unwrap_or("-"), window_wait(h)),
            ),
        ),
    ];
    for (key, value) in rows {
        outln!("{key:>16}: {value}");
    }
    // Swarm's tasks, one line each: where each replica runs and whether it serves.
    for (i, t) in s.tasks.iter().enumerate() {
        let key = if i == 0 { "tasks" } else { "" };
        outln!("{key:>16}: {}", task_line(t));
    }
}

/// `task 4c1f0e9a2b3d  node 7d2e1f0a9b8c  10.0.0.3:30001  running  healthy` (plus Swarm's
/// message when there is one).
fn task_line(t: &crate::fleet::TaskView) -> String {
    let short = |id: &str| id.get(..12).unwrap_or(id).to_owned();
    let task = &t.task;
    let mut line = format!(
        "task {}  node {}  {}  {}",
        short(&task.id),
        short(&task.node),
        task.endpoint
            .map_or_else(|| "-".to_owned(), |e| e.to_string()),
        task.state
    );
    if let Some(h) = t.health {
        line.push_str(&format!("  {h}"));
    }
    if let Some(m) = &task.message {
        line.push_str(&format!(" ({m})"));
    }
    line
}

fn print_fleet(client: &Client, fleet: &FleetView) {
    let rows: Vec<Vec<String>> = fleet
        .servers
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.state.clone(),
                or_dash(s.health),
                s.desired_version.clone(),
                or_dash(s.running_version.as_ref()),
                or_dash(s.endpoint.as_ref()),
                or_dash(s.gateway_tools),
                first_line(s.reason.as_deref()),
            ]
        })
        .collect();
    output::table(
        &[
            "SERVER", "STATE", "HEALTH", "DESIRED", "RUNNING", "ENDPOINT", "TOOLS", "REASON",
        ],
        &rows,
    );
    let notes: Vec<String> = fleet.servers.iter().flat_map(server_notes).collect();
    if !notes.is_empty() {
        outln!();
        for note in notes {
            outln!("{note}");
        }
    }
    let applied = fleet.applied_revision.as_deref();
    outln!("\napplied revision: {}", applied.map_or("-", short_commit));
    for w in &fleet.windows {
        let servers = if w.servers.is_empty() {
            String::new()
        } else {
            format!(" for {}", w.servers.join(", "))
        };
        let holds = if w.applies_to.contains(&crate::sync_windows::Change::Commit) {
            "registry upgrades and commits"
        } else {
            "registry upgrades"
        };
        let kind = match w.kind {
            crate::sync_windows::Kind::Deny => "holds",
            crate::sync_windows::Kind::Allow => "lets through",
        };
        outln!(
            "sync window \"{}\" open until {}: {kind} {holds}{servers}",
            w.name,
            w.until
        );
    }
    if let Some(h) = &fleet.commit_held {
        outln!(
            "commit {} {}",
            h.what.as_deref().map_or("-", short_commit),
            window_wait(h)
        );
    }
    // A head that is not in force: say why, so a rejected push is not missed.
    if let Some(head) = fleet.head.as_deref()
        && Some(head) != applied
    {
        let newest = client
            .get::<RevisionPage>("/revisions?limit=1")
            .ok()
            .and_then(|page| page.revisions.into_iter().next());
        match newest {
            Some(run) if run.commit_id == head => {
                let why = run
                    .errors
                    .first()
                    .map(|e| e.message.as_str())
                    .or(run.reason.as_deref());
                let why = first_line(why);
                outln!(
                    "branch head {}: {}{}",
                    short_commit(head),
                    run.result,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                );
            }
            _ => outln!("branch head {}: not applied yet", short_commit(head)),
        }
    }
    for (error, label) in [
        (&fleet.source_error, "source error"),
        (
            &fleet.runtime_error,
            "runtime error (the servers shown are the last seen)",
        ),
        (&fleet.store_error, "state database error"),
    ] {
        if let Some(e) = error {
            outln!("{label}: {e}");
        }
    }
}

pub fn revisions(settings: &Settings, args: RevisionsArgs) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    match args.show {
        Some(RevisionsCommand::Show { commit }) => {
            let run: RunRecord = client.get(&format!("/revisions/{commit}"))?;
            match args.output {
                OutputFormat::Json => output::print_json(&run),
                OutputFormat::Text => print_run(&run),
            }
            Ok(
                if matches!(run.result, RunResult::Rejected | RunResult::Failed) {
                    exit::BAD
                } else {
                    exit::OK
                },
            )
        }
        None => {
            let page: RevisionPage = client.get(&format!("/revisions?limit={}", args.limit))?;
            match args.output {
                OutputFormat::Json => output::print_json(&page.revisions),
                OutputFormat::Text => {
                    let rows: Vec<Vec<String>> = page
                        .revisions
                        .iter()
                        .map(|r| {
                            vec![
                                short_commit(&r.commit_id).to_owned(),
                                r.result.to_string(),
                                r.seen_at.to_string(),
                                r.trigger.clone(),
                                or_dash(r.message.as_ref()),
                                first_line(r.reason.as_deref()),
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

fn print_run(run: &RunRecord) {
    outln!("commit   {}", run.commit_id);
    outln!("author   {}", or_dash(run.author.as_ref()));
    outln!("message  {}", or_dash(run.message.as_ref()));
    outln!("seen     {} ({})", run.seen_at, run.trigger);
    outln!("result   {}", output::severity_word(run.result.as_str()));
    if let Some(reason) = &run.reason {
        outln!("reason   {}", reason.replace('\n', "\n         "));
    }
    outln!("\nstages:");
    for s in &run.stages {
        let took = s.finished_at.map_or_else(
            || "-".to_owned(),
            |end| {
                format!(
                    "{:.0} ms",
                    end.duration_since(s.started_at).as_secs_f64() * 1000.0
                )
            },
        );
        outln!(
            "  {:<9} {:<10} {:>8}  {}",
            s.stage.as_str(),
            s.status.as_str(),
            took,
            s.detail.as_deref().unwrap_or("")
        );
    }
    if !run.plan.is_empty() {
        outln!("\nplan:");
        super::plan::print_servers(&run.plan);
    }
    if !run.errors.is_empty() {
        outln!("\nerrors:");
        for e in &run.errors {
            outln!("  {e}");
        }
    }
}

/// What an operator must not miss about a server, one line each: a hold, a stop, a
/// version blocked as failed, a rollout under way, a newer version waiting.
fn server_notes(s: &ServerView) -> Vec<String> {
    let id = &s.id;
    let mut notes = Vec::new();
    if let Some(v) = &s.pinned_version {
        notes.push(format!(
            "{id}: held at {v} by an operator rollback; `mcp-orchestration rollout resume {id}` lifts it"
        ));
    }
    match s.state.as_str() {
        "stopped" => notes.push(format!(
            "{id}: stopped by an operator; `mcp-orchestration deploy {id}` starts it again"
        )),
        "failed" => notes.push(format!(
            "{id}: {} blocked as failed: {}",
            s.desired_version,
            first_line(s.reason.as_deref())
        )),
        _ => {}
    }
    if !s.blocked_by.is_empty() {
        notes.push(format!(
            "{id}: waits for {} to be healthy (depends_on)",
            s.blocked_by.join(", ")
        ));
    }
    if s.health == Some(HealthState::Starting) {
        notes.push(format!(
            "{id}: rollout in progress (to {})",
            s.desired_version
        ));
    }
    if let Some(v) = &s.update_available {
        notes.push(format!(
            "{id}: {v} is available (the update policy does not apply it by itself)"
        ));
    }
    if let Some(h) = &s.held_by_window {
        notes.push(format!(
            "{id}: the upgrade to {} {}; `mcp-orchestration deploy {id}` applies it now",
            h.what.as_deref().unwrap_or("a newer version"),
            window_wait(h)
        ));
    }
    notes
}

/// `waits for sync window "freeze" (deny) until 2026-12-05T18:00:00Z`.
fn window_wait(h: &crate::sync_windows::Held) -> String {
    let until = h.until.map_or_else(
        || "no allow window opens within 400 days".to_owned(),
        |u| format!("until {u}"),
    );
    match h.kind {
        crate::sync_windows::Kind::Deny => {
            format!("waits for sync window \"{}\" (deny) {until}", h.window)
        }
        crate::sync_windows::Kind::Allow => format!(
            "waits outside the allow windows; \"{}\" opens {until}",
            h.window
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(fields: serde_json::Value) -> ServerView {
        let mut v = json!({
            "transport": "streamable-http", "desired_version": "1.0.0",
            "since": "2026-11-27T00:00:00Z", "name": null, "endpoint": null,
            "running_version": null, "reason": null, "instance_id": null, "revision": null,
            "update_available": null, "pinned_version": null, "health": null,
            "health_since": null, "health_reason": null,
        });
        for (k, f) in fields.as_object().unwrap() {
            v[k] = f.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_swarm_task_line_names_task_node_endpoint_state_health_and_swarms_message() {
        let s = view(json!({ "id": "a", "state": "running", "tasks": [
            { "id": "abcdefghijklmnopqrstuvwxy", "node": "n0123456789abcdef", "endpoint": "10.0.0.3:30001",
              "state": "running", "desired_state": "running", "health": "healthy" },
            { "id": "t2", "node": "n2", "endpoint": null, "state": "pending",
              "desired_state": "running", "message": "no suitable node" },
        ]}));
        assert_eq!(
            task_line(&s.tasks[0]),
            "task abcdefghijkl  node n0123456789a  10.0.0.3:30001  running  healthy"
        );
        assert_eq!(
            task_line(&s.tasks[1]),
            "task t2  node n2  -  pending (no suitable node)"
        );
    }

    #[test]
    fn holds_stops_failures_and_rollouts_are_spelled_out() {
        let notes = server_notes(&view(json!({
            "id": "a", "state": "failed", "desired_version": "1.2.0",
            "reason": "a 1.2.0 failed its health gate\nlast log lines", "pinned_version": "1.0.0",
            "health": "starting", "update_available": "1.3.0"
        })));
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert!(notes[0].contains("held at 1.0.0"));
        assert!(notes[1].contains("1.2.0 blocked as failed: a 1.2.0 failed its health gate"));
        assert!(notes[2].contains("rollout in progress"));
        assert!(notes[3].contains("1.3.0 is available"));
        assert!(server_notes(&view(json!({"id": "b", "state": "running"}))).is_empty());
    }
}
