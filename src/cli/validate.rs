//! `mcp-orchestration validate [PATH]`

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::exit;
use super::output::{self, OutputFormat, outln};
use crate::manifest::{self, Diagnostic, MANIFEST_FILE, Severity};
use crate::settings::{Settings, env};
use crate::source::read_repo_files;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A manifest file, or a directory holding ecosystem-manifest.yaml (and optionally
    /// policies/ and trust-policy.yaml).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// The operator's trust policy (allowed images and commands); default: the shipped one.
    #[arg(long, env = env::TRUST_POLICY, value_name = "FILE")]
    pub trust_policy: Option<PathBuf>,
    /// Check also what this runtime cannot honour (e.g. `replicas` outside Swarm)
    /// [default: not checked]
    #[arg(long, env = env::RUNTIME, value_enum)]
    runtime: Option<super::agent::RuntimeArg>,
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let trust = settings.load_trust_policy()?;
    let files =
        read_at(&args.path).with_context(|| format!("cannot validate {}", args.path.display()))?;
    let on_host = manifest::host_command_check(&trust);
    let (diagnostics, summary, code) = match manifest::check_with(
        &files,
        &trust,
        manifest::Host {
            command: Some(&on_host),
            runtime: args.runtime.map(|r| r.kind().target()),
        },
    ) {
        Ok(checked) => {
            let ids: Vec<&str> = checked
                .manifest
                .servers
                .iter()
                .map(|s| s.id.as_str())
                .collect();
            let summary = format!(
                "{}: valid ({} server{}{}{})",
                files.manifest.path,
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                if ids.is_empty() { "" } else { ": " },
                ids.join(", ")
            );
            (checked.warnings, summary, exit::OK)
        }
        Err(diagnostics) => {
            let errors = count(&diagnostics, Severity::Error);
            let warnings = count(&diagnostics, Severity::Warning);
            let summary = format!(
                "{}: invalid: {errors} error{}, {warnings} warning{}",
                files.manifest.path,
                plural(errors),
                plural(warnings)
            );
            (diagnostics, summary, exit::BAD)
        }
    };
    match args.output {
        OutputFormat::Json => output::print_json(&diagnostics),
        OutputFormat::Text => {
            for d in &diagnostics {
                let line = d.to_string();
                let word = d.severity.to_string();
                outln!(
                    "{}",
                    line.replacen(
                        &format!(" {word}:"),
                        &format!(" {}:", output::severity(&word)),
                        1
                    )
                );
            }
            outln!("{summary}");
        }
    }
    Ok(code)
}

/// The files at `path`: a manifest file, or a directory holding `ecosystem-manifest.yaml`
/// (with `policies/` and `trust-policy.yaml` beside it).
pub(super) fn read_at(path: &Path) -> Result<crate::manifest::RepoFiles, crate::source::ReadError> {
    let (dir, file) = if path.is_dir() {
        (path.to_owned(), PathBuf::from(MANIFEST_FILE))
    } else {
        let parent = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        (parent.to_owned(), name)
    };
    read_repo_files(&dir, &file)
}

fn count(diagnostics: &[Diagnostic], severity: Severity) -> usize {
    diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .count()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
