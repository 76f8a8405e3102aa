//! The command line: parses arguments with clap, resolves settings once and runs a command.
//! Business logic lives in the library modules; commands only read, call and print.

mod agent;
mod client;
mod completions;
mod config;
mod deployments;
mod events;
mod mcp;
mod output;
mod plan;
mod progress;
mod rollouts;
mod status;
mod validate;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::settings::{LogFormat, Overrides, Settings, env};
pub use output::OutputFormat;

/// Exit codes: what the checked thing was like, or that we could not check it.
pub mod exit {
    pub const OK: u8 = 0;
    /// The thing checked is bad (an invalid manifest, a failed rollout).
    pub const BAD: u8 = 1;
    /// Usage or environment error: a missing file, an unreadable setting.
    pub const ERROR: u8 = 2;
}

/// `--version`: the crate's version and the commit it was built from (`build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MCP_ORCHESTRATION_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "mcp-orchestration",
    version = VERSION,
    about = "A GitOps agent that runs a fleet of MCP servers from a git repository"
)]
pub struct Cli {
    /// YAML config file; each key mirrors a flag.
    #[arg(long, global = true, env = env::CONFIG, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, env = env::LOG_FORMAT, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log filter, e.g. `info` or `mcp_orchestration=debug`.
    #[arg(long, global = true, env = env::LOG, value_name = "FILTER")]
    log_level: Option<String>,
    /// The agent the CLI talks to.
    #[arg(long, global = true, env = env::URL, value_name = "URL")]
    agent_url: Option<String>,
    /// API key: accepted by `agent`, sent by the other commands [default: the agent's
    /// generated `<data-dir>/api-key`]. A flag's value is visible to every user in `ps`:
    /// prefer the environment variable or `--api-keys-file`
    #[arg(long, global = true, env = env::API_KEY, value_name = "KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The agent's data dir: state, logs, the repository mirror, the generated API key
    /// [default: ~/.local/share/mcp-orchestration]
    #[arg(long, global = true, env = env::DATA_DIR, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a manifest (and the repo's policies) and print every problem with its location.
    Validate(validate::Args),
    /// What a manifest (a working copy's, or a commit's with --commit) would change in the
    /// running fleet: exit 0 no change, 1 changes, 2 an error or a manifest it would reject.
    Plan(plan::Args),
    /// Print the JSON Schema of ecosystem-manifest.yaml, for editors and CI.
    Schema,
    /// Run the GitOps agent: watch the manifest repository and keep the fleet converged.
    Agent(Box<agent::Args>),
    /// Show the fleet (or one server): desired and running version, state, endpoint.
    Status(status::StatusArgs),
    /// List the runs of recent commits, or show one (`revisions show COMMIT`).
    Revisions(status::RevisionsArgs),
    /// Stop a server and keep it stopped (syncs leave it alone) until `deploy`.
    Stop(status::ServerArg),
    /// Deploy a server again: lifts a stop and retries a version that failed.
    Deploy(status::ServerArg),
    /// A server's rollouts, newest first: trigger, versions, outcome, reason.
    History(rollouts::HistoryArgs),
    /// Inspect one rollout, or retry/resume a server's rollouts.
    Rollout(rollouts::RolloutArgs),
    /// Roll a server back to the previous (or a named) version and hold it there.
    Rollback(rollouts::RollbackArgs),
    /// Health transitions, recovery attempts and overrides; `--follow` for live ones.
    Events(events::Args),
    /// Serve the agent's MCP tools on stdio (for desktop clients), forwarded to its `/mcp`.
    Mcp,
    /// Serve the gateway's tools (every server's, or a profile's with `--profile`) on stdio,
    /// for desktop clients that speak only stdio, such as Claude Desktop; forwarded to the
    /// gateway's `/mcp` (or `/profiles/PROFILE/mcp`).
    Gateway(mcp::GatewayArgs),
    /// MCP clients' configurations: drafts, validation, signed artifacts, and deploying
    /// them into the clients' files on this machine (or the agent's).
    Config(config::Args),
    /// Webhook subscriptions: the agent's events (runs, rollouts, health, holds) delivered
    /// as signed JSON POSTs; list, delete, and the deliveries given up on.
    Webhooks(webhooks::Args),
    /// Exit 0 when the agent answers `GET /health`, 1 when not (a container's HEALTHCHECK).
    Healthcheck,
    /// Print the shell completion script: `source <(mcp-orchestration completions bash)`.
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff), or write one per command with `--dir`.
    Man(completions::ManArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let trust_policy = match &cli.command {
        Command::Validate(a) => a.trust_policy.clone(),
        Command::Agent(a) => a.trust_policy.clone(),
        _ => None,
    };
    let mut agent_options = match &cli.command {
        Command::Agent(a) => a.options(),
        _ => crate::settings::AgentOptions::default(),
    };
    agent_options.data_dir = cli.data_dir.clone();
    let settings = match Settings::resolve(Overrides {
        config: cli.config,
        trust_policy,
        log_format: cli.log_format.map(|f| match f {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        }),
        log_level: cli.log_level,
        agent_url: cli.agent_url,
        api_key: cli.api_key,
        agent: agent_options,
    }) {
        Ok(s) => s,
        Err(e) => return fail(&anyhow::Error::new(e)),
    };
    // Held to the end of `main`: dropping it flushes the last log lines.
    let _logging = init_logging(&settings);
    let result = match cli.command {
        Command::Validate(args) => validate::run(&settings, args),
        Command::Plan(args) => plan::run(&settings, args),
        Command::Schema => {
            output::print_json(&crate::manifest::schema::json_schema());
            Ok(exit::OK)
        }
        Command::Agent(_) => agent::run(&settings),
        Command::Status(args) => status::status(&settings, args),
        Command::Revisions(args) => status::revisions(&settings, args),
        Command::Stop(args) => status::stop(&settings, args),
        Command::Deploy(args) => status::deploy(&settings, args),
        Command::History(args) => rollouts::history(&settings, args),
        Command::Rollout(args) => rollouts::rollout(&settings, args),
        Command::Rollback(args) => rollouts::rollback(&settings, args),
        Command::Events(args) => events::run(&settings, args),
        Command::Mcp => mcp::run(&settings, &crate::mcp::Endpoint::agent(&settings.agent_url)),
        Command::Gateway(args) => args
            .endpoint()
            .and_then(|endpoint| mcp::run(&settings, &endpoint)),
        Command::Config(args) => config::run(&settings, args),
        Command::Webhooks(args) => webhooks::run(&settings, args),
        Command::Healthcheck => status::healthcheck(&settings),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    };
    match result {
        // Output lost to a failing stdout (not one its reader closed) is a failed command.
        Ok(_) if output::stdout_failed() => ExitCode::from(exit::ERROR),
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    output::errln!("{}: {e:#}", output::paint_error("error"));
    ExitCode::from(exit::ERROR)
}

/// stderr for the log writer thread: a write that fails (its reader went away: `agent |
/// tee log` after Ctrl-C) is dropped, never reported, since reporting it would be another
/// write to the same broken stderr (`eprintln!` panics there).
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// How many log lines may wait for the writer thread before new ones are dropped.
const LOG_QUEUE_LINES: usize = 4096;

/// Logs go through a bounded, lossy queue to a writer thread: a task that logs never
/// blocks on a stderr nobody reads, never panics on one that is closed, and the signal
/// handler keeps working either way. Lines that do not fit in the queue are dropped.
fn init_logging(settings: &Settings) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        // The queue is allocated (and touched) whole up front: the default 128,000 lines
        // cost 4 MB of resident memory for a burst nobody needs queued.
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("mcp-orchestration-log")
        .finish(QuietStderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .log_internal_errors(false)
        .with_ansi(output::color_enabled_for_stderr());
    // A second init (in tests that call `main` twice) is harmless, hence `try_init`.
    let _ = match settings.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}
