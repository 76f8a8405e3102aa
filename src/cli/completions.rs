//! `completions SHELL` and `man`: generated from the same clap definitions the parser
//! uses, so they never drift from the commands and flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;

use super::output::outln;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write a page per command (`mcp-orchestration.1`, `mcp-orchestration-status.1`, ...)
    /// into DIR instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The command line as clap knows it, named as it is installed.
fn command() -> clap::Command {
    super::Cli::command().name("mcp-orchestration")
}

/// Prints the completion script for the shell asked for.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<u8> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command(), "mcp-orchestration", &mut script);
    let script = String::from_utf8_lossy(&script);
    if args.shell == clap_complete::Shell::Bash {
        print(&bash_hyphen_fix(&script));
    } else {
        print(&script);
    }
    Ok(super::exit::OK)
}

/// Prints the main man page (section 1, roff), or writes one per command into a directory.
pub fn man(args: ManArgs) -> anyhow::Result<u8> {
    if let Some(dir) = args.dir {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(command(), &dir)
            .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        outln!("man pages written to {}", dir.display());
        return Ok(super::exit::OK);
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(command()).render(&mut page)?;
    print(&String::from_utf8_lossy(&page));
    Ok(super::exit::OK)
}

/// clap_complete's bash script spells a hyphenated program's states two ways: the loop
/// that reads the words arrives at `mcp__orchestration__subcmd__rollback`, the arms that
/// answer are labelled `mcp__subcmd__orchestration__subcmd__rollback`, so nothing past the
/// subcommand completes (clap-rs/clap#6421). The arms are respelled the loop's way; once
/// clap_complete is fixed this changes nothing.
fn bash_hyphen_fix(script: &str) -> String {
    script.replace("mcp__subcmd__orchestration", "mcp__orchestration")
}

/// Prints generated text, whose own last newline `outln!` supplies.
fn print(text: &str) {
    outln!("{}", text.trim_end_matches('\n'));
}
