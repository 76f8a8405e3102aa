//! `mcp-orchestration events [--server S] [--follow]`: health transitions, recovery
//! attempts and overrides, oldest first; `--follow` keeps printing new ones.

use std::time::Duration;

use serde_json::Value;

use super::client::Client;
use super::exit;
use super::output::{self, OutputFormat, text};
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this server's events.
    #[arg(long)]
    server: Option<String>,
    /// Keep printing new events as they happen (Ctrl-C stops).
    #[arg(long, short)]
    follow: bool,
    /// How many past events to show first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// JSON lines, one event per line.
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
}

fn print(e: &Value, json: bool) {
    if json {
        println!("{e}");
        return;
    }
    let change = match (e["from_state"].as_str(), e["to_state"].as_str()) {
        (Some(f), Some(t)) => format!("{f} → {}", output::severity_word(t)),
        _ => String::new(),
    };
    println!(
        "{}  {:<24} {:<12} {:<22} {}",
        text(e, "at"),
        text(e, "server_id"),
        text(e, "kind"),
        change,
        text(e, "detail")
    );
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    let json = args.output == OutputFormat::Json;
    let filter = args
        .server
        .as_ref()
        .map(|s| format!("&server={s}"))
        .unwrap_or_default();
    let first: Value = client.get(&format!("/health/events?limit={}{filter}", args.limit))?;
    let mut events = first["events"].as_array().cloned().unwrap_or_default();
    events.reverse();
    let mut last = events.last().and_then(|e| e["id"].as_i64()).unwrap_or(0);
    for e in &events {
        print(e, json);
    }
    if !args.follow {
        return Ok(exit::OK);
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let next: Value = client.get(&format!("/health/events?limit=1000&after={last}{filter}"))?;
        let mut new = next["events"].as_array().cloned().unwrap_or_default();
        new.reverse();
        for e in &new {
            print(e, json);
            last = last.max(e["id"].as_i64().unwrap_or(last));
        }
    }
}
