//! `mcp-orchestration events [--server S] [--follow]`: the agent's event log (runs, rollout
//! steps, health transitions, recovery attempts, overrides), oldest first; `--follow` keeps
//! printing new ones as they happen, over `GET /events`.

use super::client::Client;
use super::exit;
use super::output::{self, OutputFormat, errln, outln};
use crate::fleet::EventPage;
use crate::settings::Settings;
use crate::store::Event;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this server's events.
    #[arg(long)]
    server: Option<String>,
    /// Keep printing new events as they happen (Ctrl-C stops); resumes by itself after a
    /// dropped connection without missing any.
    #[arg(long, short)]
    follow: bool,
    /// How many past events to show first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// JSON lines, one event per line.
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
}

fn print(e: &Event, json: bool) {
    if json {
        match serde_json::to_string(e) {
            Ok(line) => outln!("{line}"),
            Err(err) => errln!("cannot print event {}: {err}", e.id),
        }
        return;
    }
    let kind = &e.kind;
    let kind = match e.data.get("to_state").and_then(serde_json::Value::as_str) {
        Some(to) if kind == "health.transition" => {
            format!("{kind:<18} {}", output::severity_word(to))
        }
        _ => format!("{kind:<18}"),
    };
    let server = e.server_id.as_deref().unwrap_or("-");
    outln!("{}  {server:<24} {kind} {}", e.at, e.summary);
}

fn query(server: Option<&str>) -> String {
    server
        .map(|s| format!("server={}", encode(s)))
        .unwrap_or_default()
}

/// Percent-encodes a query value (server ids are DNS-like, but a typo should not break the URL).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    let json = args.output == OutputFormat::Json;
    let filter = query(args.server.as_deref());
    let first: EventPage = client.get(&format!(
        "/events/history?limit={}&{filter}",
        args.limit.clamp(1, 1000)
    ))?;
    for e in &first.events {
        print(e, json);
    }
    if !args.follow || !output::stdout_open() {
        return Ok(exit::OK);
    }
    let last = match first.events.last() {
        Some(e) => e.id,
        // Nothing of this server yet: new is whatever follows the newest event of any.
        None => {
            let newest: EventPage = client.get("/events/history?limit=1")?;
            newest.events.first().map_or(0, |e| e.id)
        }
    };
    // Following ends when the reader of stdout has gone (`events --follow | head`).
    client.follow(&format!("/events?{filter}"), Some(last), |e| {
        print(e, json);
        output::stdout_open()
    })?;
    Ok(exit::OK)
}
