//! How commands print: tables and colour for people, JSON for scripts.
//!
//! Every line a command prints goes through [`write_line`] (the `outln!` macro), never
//! `println!`: `println!` panics when stdout is a pipe its reader closed
//! (`mcp-orchestration status | head`), because Rust ignores SIGPIPE. We keep SIGPIPE
//! ignored rather than restoring its default, since the agent and `events --follow` write
//! to sockets, where a peer that goes away must be an error to handle, never a silent
//! death; instead a closed stdout is noticed here, the rest of the output is dropped, and
//! the command ends with its usual exit code.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};

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

/// What became of stdout: [`OPEN`], [`CLOSED`] by its reader, or [`FAILED`] otherwise.
static STDOUT: AtomicU8 = AtomicU8::new(OPEN);
const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const FAILED: u8 = 2;

/// Prints a line on stdout, like `println!`, through [`write_line`].
macro_rules! outln {
    () => {
        $crate::cli::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Prints a line on stderr, like `eprintln!`, but a stderr that cannot be written to is
/// not worth a panic: there is nowhere left to say anything.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_error_line(format_args!($($arg)*))
    };
}
pub(crate) use errln;

/// Writes `args` and a newline to stdout. Once stdout is closed (its reader had enough) or
/// failing, everything after is dropped; a failure other than a closed pipe is said once
/// on stderr, and [`stdout_failed`] makes the command exit with an error.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    if STDOUT.load(Ordering::Relaxed) != OPEN {
        return;
    }
    let mut out = std::io::stdout().lock();
    // Stdout is line-buffered, so the newline sends the line and any error shows here.
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT.store(CLOSED, Ordering::Relaxed);
        } else {
            STDOUT.store(FAILED, Ordering::Relaxed);
            write_error_line(format_args!("error: cannot write to stdout: {e}"));
        }
    }
}

pub fn write_error_line(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Whether stdout still takes output: a command that would print for ever (`events
/// --follow`) stops when its reader has gone.
pub fn stdout_open() -> bool {
    STDOUT.load(Ordering::Relaxed) == OPEN
}

/// Whether writing to stdout failed for another reason than its reader closing it (a full
/// disk, say): the output is incomplete, so the command did not do its job.
pub fn stdout_failed() -> bool {
    STDOUT.load(Ordering::Relaxed) == FAILED
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    // Serialising our own plain data types cannot fail.
    match serde_json::to_string_pretty(value) {
        Ok(text) => outln!("{text}"),
        Err(e) => errln!("error: cannot print JSON: {e}"),
    }
}

/// Colours a result word: green for good, red for bad.
pub fn severity_word(word: &str) -> String {
    let code = match word {
        "applied" | "succeeded" | "running" | "healthy" | "in sync" => "32",
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
        outln!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// An optional field of an agent's answer as text for a table: `-` when absent.
pub fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The first line of a reason, for a table cell.
pub fn first_line(text: Option<&str>) -> String {
    text.and_then(|t| t.lines().next())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    /// A tidy check: one `println!` in a command brings back the panic on a closed pipe.
    #[test]
    fn commands_print_through_outln_and_never_println() {
        let sources = [
            ("agent.rs", include_str!("agent.rs")),
            ("client.rs", include_str!("client.rs")),
            ("config.rs", include_str!("config.rs")),
            ("deployments.rs", include_str!("deployments.rs")),
            ("events.rs", include_str!("events.rs")),
            ("mcp.rs", include_str!("mcp.rs")),
            ("mod.rs", include_str!("mod.rs")),
            ("rollouts.rs", include_str!("rollouts.rs")),
            ("status.rs", include_str!("status.rs")),
            ("validate.rs", include_str!("validate.rs")),
        ];
        for (name, text) in sources {
            for macro_call in ["println!(", "print!(", "eprint!(", "eprintln!("] {
                let found = text.match_indices(macro_call).any(|(i, _)| {
                    // `eprintln!(` contains `println!(`: only a whole word counts.
                    !text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                assert!(
                    !found,
                    "src/cli/{name} uses {macro_call}: use outln!/errln!"
                );
            }
        }
    }
}
