//! `mcp-orchestration plan [PATH | --commit REV]`: what a working copy's manifest, or a
//! commit of the watched repository, would change against the running fleet. Exit codes
//! as `argocd app diff`: 0 no change, 1 changes, 2 an error (a manifest that would be
//! rejected included).

use std::path::{Path, PathBuf};

use anyhow::Context;
use reqwest::Method;

use super::client::Client;
use super::exit;
use super::output::{self, OutputFormat, or_dash, outln};
use crate::fleet::{PlanFiles, PlanReport, PlanRequest};
use crate::manifest::{Diagnostic, TextFile};
use crate::reconcile::PlannedServer;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A manifest file, or a directory holding ecosystem-manifest.yaml (and optionally
    /// policies/ and trust-policy.yaml).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Plan a commit of the repository the agent watches instead (an id, an abbreviation
    /// of one, or a branch name, as the agent last fetched it).
    #[arg(long, value_name = "REV", conflicts_with = "path")]
    commit: Option<String>,
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let request = match args.commit {
        Some(commit) => PlanRequest::Commit { commit },
        None => {
            let files = super::validate::read_at(&args.path)
                .with_context(|| format!("cannot plan {}", args.path.display()))?;
            // Bytes that are not text cannot travel as JSON text: refused here, as
            // validation would refuse them.
            let unreadable = unreadable(
                std::iter::once(&files.manifest)
                    .chain(&files.policies)
                    .chain(&files.trust),
            );
            if !unreadable.is_empty() {
                let report = PlanReport::rejected(None, None, unreadable);
                print(&report, args.output);
                return Ok(exit::ERROR);
            }
            // Named as in the repository, as the agent names a commit's files.
            let base = if args.path.is_dir() {
                args.path.clone()
            } else {
                args.path.parent().map(Path::to_owned).unwrap_or_default()
            };
            let mut files = PlanFiles::from_repo_files(&files);
            for f in std::iter::once(&mut files.manifest)
                .chain(&mut files.policies)
                .chain(&mut files.trust_policy)
            {
                if let Ok(rel) = Path::new(&f.path).strip_prefix(&base) {
                    f.path = rel.display().to_string();
                }
            }
            PlanRequest::Files { files }
        }
    };
    let client = Client::new(settings)?;
    let body = serde_json::to_value(&request).context("cannot encode the plan request")?;
    let report: PlanReport = client.send_json(Method::POST, "/plan", &body)?;
    print(&report, args.output);
    Ok(if !report.valid {
        exit::ERROR
    } else if report.changes > 0 {
        exit::BAD
    } else {
        exit::OK
    })
}

/// The errors of files that are not UTF-8 or too large to be read.
fn unreadable<'a>(files: impl Iterator<Item = &'a TextFile>) -> Vec<Diagnostic> {
    files
        .filter_map(|f| f.size_error().or_else(|| f.encoding_error()))
        .collect()
}

fn print(report: &PlanReport, format: OutputFormat) {
    match format {
        OutputFormat::Json => output::print_json(report),
        OutputFormat::Text => {
            for d in &report.diagnostics {
                outln!("{d}");
            }
            if report.valid {
                print_servers(&report.servers);
            }
            for note in &report.notes {
                outln!("note: {note}");
            }
            let against = match &report.applied_commit {
                Some(c) => format!(
                    " (against the applied commit {})",
                    crate::source::short_commit(c)
                ),
                None => " (nothing applied yet)".to_owned(),
            };
            outln!("plan: {}{against}", report.summary);
        }
    }
}

/// The plan's lines as a table, or nothing when there are none.
pub(super) fn print_servers(servers: &[PlannedServer]) {
    if servers.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            vec![
                s.server_id.clone(),
                s.action.as_str().to_owned(),
                or_dash(s.from_version.as_ref()),
                or_dash(s.to_version.as_ref()),
                if s.changed_fields.is_empty() {
                    "-".to_owned()
                } else {
                    s.changed_fields.join(", ")
                },
                or_dash(s.reason.as_ref()),
            ]
        })
        .collect();
    output::table(&["SERVER", "ACTION", "FROM", "TO", "CHANGED", "WHY"], &rows);
}
