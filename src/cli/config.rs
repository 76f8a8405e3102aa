//! `config …`: MCP clients' configurations through a running agent's `/v1/` routes (one
//! implementation: `clients::service` behind them): clients, profiles, the configuration in
//! force, drafts, validation, publishing signed artifacts, servers, keys and diffs; and
//! deploying an artifact into a client's file on this machine, which happens here rather
//! than on the agent: the artifact is verified against the agent keys this machine pinned
//! (trust on first use, `clients::trust`), written with `clients::service::install`, and
//! recorded in the local deployments file (`deployments`) that `config status` reads.
//!
//! Exit codes: 0 ok; 1 the checked thing is bad (a configuration that does not validate, a
//! diff that finds differences, a deployment not in sync, an artifact or a client file
//! refused: the agent's refusals with a code of their own, and their local twins); 2 usage
//! or environment error
//! (an unknown client or profile, an unreachable agent, nothing published yet, a state
//! file that cannot be read).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use jiff::Timestamp;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use super::client::{Client, Refusal};
use super::deployments::{Deployment, Deployments};
use super::exit;
use super::output::{self, OutputFormat, errln, or_dash, outln};
use crate::clients::artifact::{self, Artifact};
use crate::clients::deploy::{self, DeployError, FileStatus};
use crate::clients::keys::PublicKeyInfo;
use crate::clients::registry::{self, Env, Os, Scope};
use crate::clients::service::{
    self, AvailableServers, ClientList, ConfigProblem, ConfigView, DeployReport, DeployRequest,
    DiffReport, DraftCleared, DraftView, InstallError, KeysView, ProfileList, Published,
    ValidationReport,
};
use crate::clients::trust::{KeyArg, Pinned, TrustError, TrustedKeys};
use crate::settings::Settings;

/// The file (in `settings::user_config_dir`) of the agent keys this machine trusts.
const TRUSTED_KEYS_FILE: &str = "trusted-keys.json";
/// The file (in `settings::user_state_dir`) of the deploys made from this machine.
const DEPLOYMENTS_FILE: &str = "deployments.json";

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 ok; 1 the checked thing is bad (invalid configuration, \
differences, a deployment out of sync, an artifact or client file refused); 2 usage or \
environment error (unknown client or profile, agent unreachable, nothing published)."
)]
pub struct Args {
    #[command(subcommand)]
    command: ConfigCommand,
    /// `json`: the agent's answer as it is (local deploys and `status`: the same shapes).
    #[arg(long, short, value_enum, default_value_t, global = true)]
    output: OutputFormat,
}

/// Which configuration: a client and a gateway profile.
#[derive(Debug, clap::Args)]
struct Target {
    /// The MCP client (`config clients` lists them), e.g. `cursor`, `claude-desktop`.
    #[arg(long, value_name = "CLIENT")]
    client: String,
    /// The gateway profile the configuration is for.
    #[arg(long, value_name = "PROFILE", default_value = "default")]
    profile: String,
}

impl Target {
    fn path(&self, rest: &str) -> String {
        format!("/v1/config/{}/{}{rest}", self.client, self.profile)
    }

    fn name(&self) -> String {
        format!("{}/{}", self.client, self.profile)
    }
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// The MCP clients whose files can be configured, and where each keeps its file here.
    Clients,
    /// The profiles a client can be configured with, and what is published for each.
    Profiles {
        #[arg(long, value_name = "CLIENT")]
        client: String,
    },
    /// The configuration in force: the latest published, or the initial one.
    Show(Target),
    /// The draft the next `publish` signs: show, add or remove an entry, clear it.
    Draft {
        #[command(subcommand)]
        command: DraftCommand,
    },
    /// Check the draft (or the configuration in force): every problem with its code and
    /// place; exit 1 when it has errors.
    Validate(Target),
    /// Sign the draft (or the configuration in force) into an artifact; prints its id.
    Publish(Target),
    /// The fleet's servers a configuration can include, with their gateway URLs.
    Servers,
    /// The agent's signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Compare a client's file with the latest published configuration; exit 1 when they
    /// differ.
    Diff(DiffArgs),
    /// Write the latest published configuration into the client's file on this machine
    /// (or, with --remote, on the agent's).
    Deploy(DeployArgs),
    /// Whether each client file deployed from this machine still holds what was deployed
    /// and whether a newer configuration is published; exit 1 unless all are in sync.
    Status(StatusArgs),
}

#[derive(Debug, clap::Subcommand)]
enum DraftCommand {
    /// The draft (or what a draft would start from).
    Show(Target),
    /// Add an entry: a fleet server, a profile, or an entry of the client's own shape.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["server", "target_profile", "entry_json"])))]
    Add {
        #[command(flatten)]
        target: Target,
        /// A server of the fleet, reached through the gateway (`/servers/SERVER/mcp`).
        #[arg(long, value_name = "SERVER")]
        server: Option<String>,
        /// A profile, reached through the gateway (`/profiles/PROFILE/mcp`).
        #[arg(long, value_name = "PROFILE")]
        target_profile: Option<String>,
        /// An entry as the client's file holds it (a JSON object); needs --name.
        #[arg(long, value_name = "JSON", requires = "name")]
        entry_json: Option<String>,
        /// The entry's name in the client's file [default: the server's id, or
        /// `mcp-orchestration[-PROFILE]`]
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Remove an entry, by name.
    Remove {
        #[command(flatten)]
        target: Target,
        /// The entry's name.
        name: String,
    },
    /// Throw the draft away.
    Clear(Target),
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Create the signing key if there is none.
    Init,
    /// A new signing key; artifacts signed by the old ones stay verifiable.
    Rotate,
    /// The public keys artifacts are verified with.
    List,
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    #[command(flatten)]
    target: Target,
    /// A client file on this machine to compare [default: the agent compares the client's
    /// user file on its own host].
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ScopeArg {
    User,
    Project,
}

#[derive(Debug, clap::Args)]
struct DeployArgs {
    #[command(flatten)]
    target: Target,
    /// The user's own file, or a project's [default: user; project with --project-dir]
    #[arg(long, value_enum)]
    scope: Option<ScopeArg>,
    /// The project directory for `--scope project` [default: the current directory]
    #[arg(long, value_name = "DIR")]
    project_dir: Option<PathBuf>,
    /// Trust this agent key (as `config keys list` shows it) before verifying; repeatable.
    /// Needed after the agent's key was rotated.
    #[arg(
        long = "trust-key",
        value_name = "KEY_ID=PUBLIC_KEY",
        conflicts_with = "remote"
    )]
    trust_keys: Vec<KeyArg>,
    /// Replace entries of the same names that were not written by a deploy of this
    /// configuration.
    #[arg(long)]
    force: bool,
    /// Ask the agent to deploy into the client's file on its own host instead.
    #[arg(long)]
    remote: bool,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Only this client's deployments.
    #[arg(long, value_name = "CLIENT")]
    client: Option<String>,
    /// Only this profile's deployments.
    #[arg(long, value_name = "PROFILE")]
    profile: Option<String>,
}

/// The checked thing is bad (exit 1), as opposed to not being able to check (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Bad(String);

fn bad(message: impl Into<String>) -> anyhow::Error {
    Bad(message.into()).into()
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    match execute(settings, args) {
        Ok(code) => Ok(code),
        Err(e) => Ok(report_failure(&e)),
    }
}

/// Prints why a command failed and returns its exit code: the agent's refusals with their
/// code (a 409 with a code of its own, such as `CONFIG_INVALID`, is the checked thing
/// refused: 1; a plain `CONFLICT` and the rest: 2), local refusals 1, the rest 2.
fn report_failure(e: &anyhow::Error) -> u8 {
    let error = output::paint_error("error");
    if let Some(r) = e.downcast_ref::<Refusal>() {
        errln!("{error}: {}: {r}", r.code);
        if let Some(problems) = r.details["errors"].as_array() {
            for p in problems {
                errln!(
                    "  {} at `{}`: {}",
                    p["code"].as_str().unwrap_or_default(),
                    p["path"].as_str().unwrap_or_default(),
                    p["message"].as_str().unwrap_or_default()
                );
            }
        }
        return if r.status == 409 && r.code != "CONFLICT" {
            exit::BAD
        } else {
            exit::ERROR
        };
    }
    errln!("{error}: {e:#}");
    if e.downcast_ref::<Bad>().is_some() {
        exit::BAD
    } else {
        exit::ERROR
    }
}

fn execute(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let out = args.output;
    let client = Client::new(settings)?;
    match args.command {
        ConfigCommand::Clients => {
            let list: ClientList = client.get("/v1/clients")?;
            print(out, &list, || print_clients(&list));
            Ok(exit::OK)
        }
        ConfigCommand::Profiles { client: id } => {
            let list: ProfileList = client.get(&format!("/v1/clients/{id}/profiles"))?;
            print(out, &list, || print_profiles(&list));
            Ok(exit::OK)
        }
        ConfigCommand::Show(t) => {
            let view: ConfigView = client.get(&t.path(""))?;
            print(out, &view, || print_config(&view));
            Ok(exit::OK)
        }
        ConfigCommand::Draft { command } => draft(&client, out, command),
        ConfigCommand::Validate(t) => {
            let report: ValidationReport = client.send(Method::POST, &t.path("/validate"))?;
            print(out, &report, || print_validation(&report));
            Ok(if report.valid { exit::OK } else { exit::BAD })
        }
        ConfigCommand::Publish(t) => {
            let published: Published = client.send(Method::POST, &t.path("/publish"))?;
            print(out, &published, || {
                errln!("published the configuration for {}", t.name());
                outln!("{}", published.id);
            });
            Ok(exit::OK)
        }
        ConfigCommand::Servers => {
            let servers: AvailableServers = client.get("/v1/servers")?;
            print(out, &servers, || print_servers(&servers));
            Ok(exit::OK)
        }
        ConfigCommand::Keys { command } => {
            let keys: KeysView = match command {
                KeysCommand::Init => client.send(Method::POST, "/v1/keys/initialize")?,
                KeysCommand::Rotate => client.send(Method::POST, "/v1/keys/rotate")?,
                KeysCommand::List => client.get("/v1/keys")?,
            };
            print(out, &keys, || print_keys(&keys));
            Ok(exit::OK)
        }
        ConfigCommand::Diff(args) => diff(&client, out, args),
        ConfigCommand::Deploy(args) if args.remote => deploy_remote(&client, out, args),
        ConfigCommand::Deploy(args) => deploy_here(&client, out, args),
        ConfigCommand::Status(args) => status(settings, out, args),
    }
}

/// `--output json` prints `value` (the agent's answer as it is); text runs `text`.
fn print<T: Serialize>(out: OutputFormat, value: &T, text: impl FnOnce()) {
    match out {
        OutputFormat::Json => output::print_json(value),
        OutputFormat::Text => text(),
    }
}

/// `sha256:0123456789ab`: enough of an artifact id for a table.
fn short(id: &str) -> String {
    match id.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", &hex[..hex.len().min(12)]),
        None => id.to_owned(),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn print_clients(list: &ClientList) {
    // The file on this machine, where `config deploy` writes; the agent's own host may
    // keep it elsewhere.
    let env = local_env().ok();
    let rows: Vec<Vec<String>> = list
        .clients
        .iter()
        .map(|c| {
            let here = registry::client(&c.id)
                .zip(env.as_ref())
                .and_then(|(rc, env)| {
                    registry::config_path(rc, Os::current(), &Scope::User, env).ok()
                });
            vec![
                c.id.clone(),
                c.name.clone(),
                c.format.clone(),
                c.entry.clone(),
                or_dash(here.map(|p| p.display().to_string())),
                or_dash(c.project_file.as_ref()),
            ]
        })
        .collect();
    output::table(
        &[
            "CLIENT",
            "NAME",
            "FORMAT",
            "ENTRY",
            "USER FILE",
            "PROJECT FILE",
        ],
        &rows,
    );
}

fn print_profiles(list: &ProfileList) {
    let rows: Vec<Vec<String>> = list
        .profiles
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.servers.join(","),
                or_dash(p.latest_artifact.as_deref().map(short)),
                if p.has_draft { "yes" } else { "no" }.to_owned(),
                or_dash(p.url.as_ref()),
            ]
        })
        .collect();
    output::table(&["PROFILE", "SERVERS", "PUBLISHED", "DRAFT", "URL"], &rows);
}

fn print_config(view: &ConfigView) {
    match &view.artifact {
        Some(a) => outln!(
            "{}/{}: published {} at {} (key {})",
            view.client,
            view.profile,
            a.id,
            a.created_at,
            a.key_id
        ),
        None => outln!(
            "{}/{}: nothing published yet; the initial configuration",
            view.client,
            view.profile
        ),
    }
    if view.has_draft {
        outln!("a draft is pending (`config draft show`)");
    }
    outln!("{}", pretty(&view.payload));
}

fn print_draft(view: &DraftView) {
    if view.exists {
        outln!(
            "draft for {}/{} (from {}, updated {})",
            view.client,
            view.profile,
            view.base_artifact
                .as_deref()
                .map_or_else(|| "the initial configuration".to_owned(), short),
            or_dash(view.updated_at)
        );
    } else {
        outln!(
            "no draft for {}/{}; a draft would start from {}",
            view.client,
            view.profile,
            view.base_artifact
                .as_deref()
                .map_or_else(|| "the initial configuration".to_owned(), short)
        );
    }
    outln!("{}", pretty(&view.payload));
}

fn print_problems(word: &str, problems: &[ConfigProblem]) {
    for p in problems {
        let at = if p.path.is_empty() {
            "(configuration)"
        } else {
            &p.path
        };
        outln!(
            "{}  {}  {at}: {}",
            output::severity(word),
            p.code,
            p.message
        );
    }
}

fn print_validation(report: &ValidationReport) {
    if report.valid {
        outln!(
            "{}/{}: valid{}",
            report.client,
            report.profile,
            match report.warnings.len() {
                0 => String::new(),
                n => format!(" ({n} warning(s))"),
            }
        );
    } else {
        outln!(
            "{}/{}: {} error(s)",
            report.client,
            report.profile,
            report.errors.len()
        );
    }
    print_problems("error", &report.errors);
    print_problems("warning", &report.warnings);
}

fn print_servers(servers: &AvailableServers) {
    let rows: Vec<Vec<String>> = servers
        .servers
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                or_dash(s.version.as_ref()),
                or_dash(s.health.as_ref()),
                or_dash(s.tools),
                s.profiles.join(","),
                or_dash(s.url.as_ref()),
            ]
        })
        .collect();
    output::table(
        &["SERVER", "VERSION", "HEALTH", "TOOLS", "PROFILES", "URL"],
        &rows,
    );
}

fn print_keys(keys: &KeysView) {
    if keys.created {
        outln!("created a signing key");
    }
    if keys.keys.is_empty() {
        outln!("no signing key yet: `mcp-orchestration config keys init`");
        return;
    }
    let rows: Vec<Vec<String>> = keys
        .keys
        .iter()
        .map(|k| {
            vec![
                k.key_id.clone(),
                if k.active { "yes" } else { "no" }.to_owned(),
                k.created_at.to_string(),
                k.public_key.clone(),
            ]
        })
        .collect();
    output::table(&["KEY ID", "ACTIVE", "CREATED", "PUBLIC KEY"], &rows);
}

fn draft(client: &Client, out: OutputFormat, command: DraftCommand) -> anyhow::Result<u8> {
    let view: DraftView = match command {
        DraftCommand::Show(t) => client.get(&t.path("/draft"))?,
        DraftCommand::Add {
            target,
            server,
            target_profile,
            entry_json,
            name,
        } => {
            let entry = entry_json
                .map(|text| {
                    serde_json::from_str::<Value>(&text)
                        .with_context(|| format!("--entry-json is not JSON: {text}"))
                })
                .transpose()?;
            // The agent refuses anything but one of the three shapes, with its own words.
            let mut add = serde_json::Map::new();
            for (key, value) in [
                ("server", server.map(Value::String)),
                ("profile", target_profile.map(Value::String)),
                ("entry", entry),
                ("name", name.map(Value::String)),
            ] {
                if let Some(value) = value {
                    add.insert(key.to_owned(), value);
                }
            }
            client.send_json(
                Method::POST,
                &target.path("/draft/add"),
                &Value::Object(add),
            )?
        }
        DraftCommand::Remove { target, name } => client.send_json(
            Method::POST,
            &target.path("/draft/remove"),
            &json!({ "name": name }),
        )?,
        DraftCommand::Clear(t) => {
            let cleared: DraftCleared = client.send(Method::DELETE, &t.path("/draft"))?;
            print(out, &cleared, || {
                if cleared.cleared {
                    outln!("cleared the draft for {}", t.name());
                } else {
                    outln!("there was no draft for {}", t.name());
                }
            });
            return Ok(exit::OK);
        }
    };
    print(out, &view, || print_draft(&view));
    Ok(exit::OK)
}

/// How far back `diff --file` follows a configuration's history (the agent compares with
/// as many).
const MAX_HISTORY: usize = 100;

fn diff(client: &Client, out: OutputFormat, args: DiffArgs) -> anyhow::Result<u8> {
    let t = &args.target;
    let payload = match &args.file {
        Some(path) => {
            // The entries of every name the published configurations used, read here: a
            // file still holding an older one is `outdated`, not `up_to_date` or
            // `diverged`. The history is followed through each artifact's parent.
            let view: ConfigView = client.get(&t.path(""))?;
            let c = local_client(&t.client)?;
            let keys = |v: &Value| -> Vec<String> {
                v.as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default()
            };
            let mut names: BTreeSet<String> = keys(&view.payload).into_iter().collect();
            let mut next = view.artifact.and_then(|a| a.parent);
            for _ in 0..MAX_HISTORY {
                let Some(id) = next else { break };
                let older: Value = client.get(&format!("/v1/artifacts/{id}"))?;
                names.extend(keys(&older["payload"]));
                next = older["envelope"]["parent"].as_str().map(str::to_owned);
            }
            let found = service::read_entries(path, c, &names)
                .map_err(|e| bad(crate::error_text::chain(&e)))?;
            Some(Value::Object(found.into_iter().collect()))
        }
        None => None,
    };
    let body = json!({ "client_id": t.client, "profile": t.profile, "payload": payload });
    let mut report: DiffReport = client.send_json(Method::POST, "/v1/config/diff", &body)?;
    if let Some(path) = &args.file {
        report.compared = path.display().to_string();
    }
    print(out, &report, || print_diff(&report));
    Ok(if report.status == "up_to_date" {
        exit::OK
    } else {
        exit::BAD
    })
}

fn print_diff(report: &DiffReport) {
    let published = report
        .published
        .as_deref()
        .map_or_else(|| "the initial configuration".to_owned(), short);
    let what = match report.status.as_str() {
        "up_to_date" => format!("up to date with {published}"),
        "outdated" => format!(
            "outdated: it holds {}, the latest is {published}",
            or_dash(report.matches.as_deref().map(short))
        ),
        "diverged" => format!("diverged from {published} (and every earlier artifact)"),
        "not_deployed" => format!("not deployed (none of {published}'s entries)"),
        other => other.to_owned(),
    };
    outln!(
        "{}/{} in {}: {what}",
        report.client,
        report.profile,
        report.compared
    );
    let text = |v: &Option<Value>| v.as_ref().map_or_else(|| "-".to_owned(), Value::to_string);
    for c in &report.changes {
        match c.change.as_str() {
            "added" => outln!("  + {}: {}", c.path, text(&c.published)),
            "removed" => outln!("  - {}: {}", c.path, text(&c.deployed)),
            _ => outln!(
                "  ~ {}: {} → {}",
                c.path,
                text(&c.deployed),
                text(&c.published)
            ),
        }
    }
}

/// This machine's environment as client paths read it (`HOME`, `XDG_CONFIG_HOME`,
/// `APPDATA`, `CODEX_HOME`, `CLAUDE_CONFIG_DIR`: the clients' own variables, read here
/// rather than through `settings`, whose variables are ours).
fn local_env() -> anyhow::Result<Env> {
    Ok(Env::from_vars(Os::current(), |name| {
        std::env::var_os(name)
    })?)
}

fn local_client(id: &str) -> anyhow::Result<&'static registry::Client> {
    registry::client(id).ok_or_else(|| {
        anyhow!("this CLI does not know the client `{id}` (is it older than the agent?)")
    })
}

fn deploy_remote(client: &Client, out: OutputFormat, args: DeployArgs) -> anyhow::Result<u8> {
    let t = &args.target;
    match (&args.scope, &args.project_dir) {
        (Some(ScopeArg::Project), None) => {
            return Err(anyhow!(
                "--scope project needs --project-dir (a directory on the agent's host)"
            ));
        }
        (Some(ScopeArg::User), Some(_)) => {
            return Err(anyhow!("--project-dir goes with --scope project, not user"));
        }
        _ => {}
    }
    let request = DeployRequest {
        project_dir: args.project_dir.map(|d| d.display().to_string()),
        artifact: None,
        force: args.force,
    };
    let report: DeployReport =
        client.send_json(Method::POST, &t.path("/deploy"), &json!(request))?;
    print(out, &report, || print_deploy(&report, "the agent's host"));
    Ok(exit::OK)
}

fn print_deploy(report: &DeployReport, host: &str) {
    outln!(
        "deployed {}/{} ({}) to {} on {host}",
        report.client,
        report.profile,
        report.artifact,
        report.path
    );
    let list = |names: &[String]| {
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join(", ")
        }
    };
    outln!(
        "  changed:  {}",
        if report.changed {
            "yes"
        } else {
            "no (the file already held it)"
        }
    );
    outln!("  backup:   {}", or_dash(report.backup.as_ref()));
    outln!("  written:  {}", list(&report.entries));
    outln!("  removed:  {}", list(&report.removed));
}

/// The trusted keys file and the deployments file of this user.
fn trusted_keys_path() -> anyhow::Result<PathBuf> {
    crate::settings::user_config_dir()
        .map(|d| d.join(TRUSTED_KEYS_FILE))
        .ok_or_else(|| {
            anyhow!("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the trusted keys")
        })
}

fn deployments_path() -> anyhow::Result<PathBuf> {
    crate::settings::user_state_dir()
        .map(|d| d.join(DEPLOYMENTS_FILE))
        .ok_or_else(|| {
            anyhow!("neither XDG_STATE_HOME nor HOME is set: nowhere to record deployments")
        })
}

/// A trust decision against the operator (an unknown or changed key) is the artifact
/// refused; a trust file that cannot be read or written is the environment.
fn trust_failure(e: TrustError) -> anyhow::Error {
    match e {
        TrustError::UntrustedKey { .. }
        | TrustError::KeyChanged { .. }
        | TrustError::NoKeysServed { .. }
        | TrustError::InvalidServedKey { .. } => bad(crate::error_text::chain(&e)),
        other => anyhow::Error::new(other),
    }
}

/// Makes sure the key that signed `artifact` is one this machine trusts for `url`: the
/// operator's `--trust-key`s first; then, for an agent never met, every key it serves is
/// pinned (trust on first use); for a known agent the signing key must have been pinned,
/// with the same public key the agent serves now. Returns what it pinned, for the user.
fn trust(
    trusted: &mut TrustedKeys,
    url: &str,
    artifact: &Artifact,
    served: &[PublicKeyInfo],
    explicit: &[KeyArg],
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    for key in explicit {
        if trusted.trust(url, key).map_err(trust_failure)? {
            notes.push(format!(
                "trusted key {} for {url} (--trust-key), in {}",
                key.key_id(),
                trusted.path().display()
            ));
        }
    }
    if trusted.keys(url).is_empty() {
        if let Pinned::FirstUse(ids) = trusted
            .pin_on_first_use(url, served)
            .map_err(trust_failure)?
        {
            notes.push(format!(
                "first use of {url}: pinned its key(s) {} in {}",
                ids.join(", "),
                trusted.path().display()
            ));
        }
        return Ok(notes);
    }
    let key_id = &artifact.envelope().key_id;
    let served_key = served.iter().find(|k| &k.key_id == key_id);
    let pinned = trusted.keys(url).iter().find(|k| &k.key_id == key_id);
    match (pinned, served_key) {
        (Some(pinned), Some(served)) if pinned.public_key != served.public_key => {
            Err(trust_failure(TrustError::KeyChanged {
                url: url.trim_end_matches('/').to_owned(),
                key_id: key_id.clone(),
                pinned: pinned.public_key.clone(),
                served: served.public_key.clone(),
                path: trusted.path().to_owned(),
            }))
        }
        (Some(_), _) => Ok(notes),
        (None, Some(served)) => Err(trust_failure(TrustError::UntrustedKey {
            url: url.trim_end_matches('/').to_owned(),
            key_id: key_id.clone(),
            public_key: served.public_key.clone(),
            path: trusted.path().to_owned(),
        })),
        (None, None) => Err(bad(format!(
            "the artifact {} is signed by key {key_id}, which {} does not trust and the \
             agent at {url} does not serve; nothing was written",
            artifact.id(),
            trusted.path().display()
        ))),
    }
}

/// Where `--scope`/`--project-dir` say the file is.
fn scope_of(args: &DeployArgs) -> anyhow::Result<Scope> {
    let dir = |d: Option<&PathBuf>| -> anyhow::Result<Scope> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        Ok(Scope::Project(match d {
            Some(d) => cwd.join(d),
            None => cwd,
        }))
    };
    match (args.scope, &args.project_dir) {
        (None | Some(ScopeArg::User), None) => Ok(Scope::User),
        (Some(ScopeArg::User), Some(_)) => {
            Err(anyhow!("--project-dir goes with --scope project, not user"))
        }
        (None | Some(ScopeArg::Project), d) => dir(d.as_ref()),
    }
}

fn deploy_here(client: &Client, out: OutputFormat, args: DeployArgs) -> anyhow::Result<u8> {
    let t = &args.target;
    let scope = scope_of(&args)?;
    let url = client.base().to_owned();
    let served: Value = client.get(&t.path("/artifact"))?;
    let artifact: Artifact = serde_json::from_value(served).map_err(|e| {
        bad(format!(
            "the agent at {url} served an artifact that is not one: {e}"
        ))
    })?;
    let keys: KeysView = client.get("/v1/keys")?;
    let c = local_client(&t.client)?;
    let path = registry::config_path(c, Os::current(), &scope, &local_env()?)?;
    let state_path = deployments_path()?;
    let mut state = Deployments::load(&state_path)?;

    let mut trusted = TrustedKeys::load(trusted_keys_path()?)?;
    let notes = trust(&mut trusted, &url, &artifact, &keys.keys, &args.trust_keys)?;
    for note in &notes {
        errln!("{note}");
    }
    artifact::verify_for(&artifact, c.id, &t.profile, |id| {
        trusted.verifying_key(&url, id)
    })
    .map_err(|e| {
        bad(format!(
            "refusing artifact {} from {url}: {}; {} was left as it was",
            artifact.id(),
            crate::error_text::chain(&e),
            path.display()
        ))
    })?;

    let previously: BTreeSet<String> = state
        .get(&path, c.id, &t.profile)
        .map(|d| d.entries.iter().cloned().collect())
        .unwrap_or_default();
    let installed = service::install(&path, c, artifact.payload(), &previously, args.force)
        .map_err(|e| install_failure(e, &path))?;
    state.record(
        &path,
        Deployment {
            client: c.id.to_owned(),
            profile: t.profile.clone(),
            agent_url: url.clone(),
            artifact: artifact.id().to_owned(),
            entries: installed.entries.clone(),
            digest: installed.deployed.digest.clone(),
            deployed_at: Timestamp::now(),
        },
    );
    state.save().with_context(|| {
        format!(
            "{} was written, but the record of it was not (the next deploy will not know its entries are ours)",
            installed.deployed.path.display()
        )
    })?;
    let report = DeployReport {
        client: c.id.to_owned(),
        profile: t.profile.clone(),
        path: installed.deployed.path.display().to_string(),
        artifact: artifact.id().to_owned(),
        changed: installed.deployed.changed,
        backup: installed
            .deployed
            .backup
            .as_ref()
            .map(|b| b.display().to_string()),
        entries: installed.entries,
        removed: installed.removed,
    };
    print(out, &report, || print_deploy(&report, "this machine"));
    Ok(exit::OK)
}

/// A file that cannot take the entries (not valid, read-only, locked, not writable,
/// holding an entry of the same name that is not ours) is refused with the file left as it
/// was (exit 1, as the agent's `CLIENT_FILE_*` refusals); a missing backup is the
/// environment (exit 2).
fn install_failure(e: InstallError, path: &Path) -> anyhow::Error {
    let text = crate::error_text::chain(&e);
    let refused = match &e {
        InstallError::Deploy(DeployError::Unmanaged { .. }) => {
            return bad(format!("{text} (--force replaces them)"));
        }
        InstallError::NotEntries => true,
        InstallError::Deploy(d) => !matches!(d, DeployError::NoBackup { .. }),
    };
    let text = if text.contains("untouched") {
        text
    } else {
        format!("{text}; {} was left as it was", path.display())
    };
    if refused { bad(text) } else { anyhow!(text) }
}

/// One deployment as `config status` reports it.
#[derive(Debug, Serialize)]
struct DeploymentStatus {
    path: String,
    client: String,
    profile: String,
    agent_url: String,
    /// `in_sync`, `pending_update` (the file holds the deployed artifact, a newer one is
    /// published), `modified_outside` (managed entries differ from the deployed artifact),
    /// `missing` (the file or entries are gone), `unknown` (it could not be checked).
    status: &'static str,
    deployed_artifact: String,
    latest_artifact: Option<String>,
    /// The entries modified or missing.
    entries: Vec<String>,
    deployed_at: Timestamp,
    /// Why the status is `unknown`.
    detail: Option<String>,
}

#[derive(Debug, Serialize)]
struct StatusReport {
    /// The local record of deployments read.
    state_file: String,
    deployments: Vec<DeploymentStatus>,
}

fn status(settings: &Settings, out: OutputFormat, args: StatusArgs) -> anyhow::Result<u8> {
    let state_path = deployments_path()?;
    let state = Deployments::load(&state_path)?;
    let trusted = TrustedKeys::load(trusted_keys_path()?)?;
    let mut clients: Vec<(String, Client)> = Vec::new();
    let mut rows = Vec::new();
    for (path, d) in state.all() {
        if args.client.as_ref().is_some_and(|c| c != &d.client)
            || args.profile.as_ref().is_some_and(|p| p != &d.profile)
        {
            continue;
        }
        // Each deployment is asked of the agent it came from.
        let at = d.agent_url.trim_end_matches('/').to_owned();
        if !clients.iter().any(|(u, _)| *u == at) {
            let mut s = settings.clone();
            s.agent_url = at.clone();
            clients.push((at.clone(), Client::new(&s)?));
        }
        let agent = clients
            .iter()
            .find(|(u, _)| *u == at)
            .map(|(_, c)| c)
            .ok_or_else(|| anyhow!("no client for {at}"))?;
        let mut row = DeploymentStatus {
            path: path.to_owned(),
            client: d.client.clone(),
            profile: d.profile.clone(),
            agent_url: d.agent_url.clone(),
            status: "unknown",
            deployed_artifact: d.artifact.clone(),
            latest_artifact: None,
            entries: Vec::new(),
            deployed_at: d.deployed_at,
            detail: None,
        };
        match check(agent, &trusted, Path::new(path), d) {
            Ok((status, latest, entries)) => {
                row.status = status;
                row.latest_artifact = latest;
                row.entries = entries;
            }
            // An agent that cannot be reached is no answer at all.
            Err(e)
                if e.downcast_ref::<Refusal>().is_none() && e.downcast_ref::<Bad>().is_none() =>
            {
                return Err(e);
            }
            Err(e) => row.detail = Some(format!("{e:#}")),
        }
        rows.push(row);
    }
    let report = StatusReport {
        state_file: state_path.display().to_string(),
        deployments: rows,
    };
    print(out, &report, || print_status(&report));
    Ok(
        if report.deployments.iter().all(|r| r.status == "in_sync") {
            exit::OK
        } else {
            exit::BAD
        },
    )
}

/// One deployment: what its file holds against the artifact deployed (fetched by id and
/// verified with the keys this machine trusts), and whether a newer one is published.
fn check(
    agent: &Client,
    trusted: &TrustedKeys,
    path: &Path,
    d: &Deployment,
) -> anyhow::Result<(&'static str, Option<String>, Vec<String>)> {
    let c = local_client(&d.client)?;
    let served: Value = agent.get(&format!("/v1/artifacts/{}", d.artifact))?;
    let deployed: Artifact = serde_json::from_value(served)
        .map_err(|e| bad(format!("the agent served an artifact that is not one: {e}")))?;
    artifact::verify(&deployed, |id| trusted.verifying_key(agent.base(), id)).map_err(|e| {
        bad(format!(
            "artifact {}: {}",
            d.artifact,
            crate::error_text::chain(&e)
        ))
    })?;
    if deployed.id() != d.artifact {
        return Err(bad(format!(
            "asked for artifact {}, the agent served {}",
            d.artifact,
            deployed.id()
        )));
    }
    let expected = deployed
        .payload()
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let latest: Value = agent.get(&format!("/v1/config/{}/{}/artifact", d.client, d.profile))?;
    let latest = latest["id"].as_str().map(str::to_owned);
    let on_disk =
        deploy::status(path, c, &expected).map_err(|e| bad(crate::error_text::chain(&e)))?;
    Ok(match on_disk {
        FileStatus::ModifiedOutside { entries } => ("modified_outside", latest, entries),
        FileStatus::Missing { entries } => ("missing", latest, entries),
        FileStatus::InSync if latest.as_deref() != Some(d.artifact.as_str()) => {
            ("pending_update", latest, Vec::new())
        }
        FileStatus::InSync => ("in_sync", latest, Vec::new()),
    })
}

fn print_status(report: &StatusReport) {
    if report.deployments.is_empty() {
        outln!("no deployments recorded in {}", report.state_file);
        return;
    }
    let rows: Vec<Vec<String>> = report
        .deployments
        .iter()
        .map(|r| {
            let word = r.status.replace('_', " ");
            let detail = match (r.status, &r.detail) {
                (_, Some(detail)) => detail.clone(),
                ("pending_update", _) => format!(
                    "{} is published",
                    or_dash(r.latest_artifact.as_deref().map(short))
                ),
                (_, None) if !r.entries.is_empty() => r.entries.join(", "),
                _ => String::new(),
            };
            vec![
                r.path.clone(),
                r.client.clone(),
                r.profile.clone(),
                output::severity_word(&word),
                short(&r.deployed_artifact),
                detail,
            ]
        })
        .collect();
    output::table(
        &["FILE", "CLIENT", "PROFILE", "STATUS", "DEPLOYED", "DETAIL"],
        &rows,
    );
}
