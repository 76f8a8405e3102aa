//! How commands print: tables and colour for people, JSON for scripts.

use std::io::IsTerminal;

use clap::ValueEnum;
use serde::Serialize;

use crate::settings::env;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

fn color_allowed() -> bool {
    std::env::var_os(env::NO_COLOR).is_none_or(|v| v.is_empty())
}

pub fn color_enabled_for_stdout() -> bool {
    color_allowed() && std::io::stdout().is_terminal()
}

pub fn color_enabled_for_stderr() -> bool {
    color_allowed() && std::io::stderr().is_terminal()
}

fn paint(text: &str, code: &str, enabled: bool) -> String {
    if enabled {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

pub fn paint_error(text: &str) -> String {
    paint(text, "1;31", color_enabled_for_stderr())
}

/// Colours a severity word for stdout.
pub fn severity(text: &str) -> String {
    let code = if text == "error" { "1;31" } else { "1;33" };
    paint(text, code, color_enabled_for_stdout())
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    // Serialising our own plain data types cannot fail.
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// Colours a result word: green for good, red for bad.
pub fn severity_word(word: &str) -> String {
    let code = match word {
        "applied" | "succeeded" | "running" | "healthy" => "32",
        "rejected" | "failed" | "unhealthy" | "rolled_back" => "1;31",
        _ => "33",
    };
    paint(word, code, color_enabled_for_stdout())
}

/// Prints a left-aligned table with a header row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// A field of an agent's JSON answer as text for a table: strings as they are, numbers and
/// booleans printed, absent or null as `-`.
pub fn text(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}
