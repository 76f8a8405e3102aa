//! The client-configuration operations, one implementation behind every surface: the
//! seed's `/v1/` routes, the agent's MCP tools and (through the API) the CLI. A
//! configuration is for one (client, profile): it starts as the entry pointing at that
//! profile on the gateway; a draft (kept in SQLite, so every surface edits the same one and
//! it survives restarts) adds or removes entries; `validate` checks it; `publish` signs it
//! into an immutable artifact; `deploy` writes an artifact's entries into the client's file
//! on this host. What is decided from values alone (the base entry, validation, the diff)
//! is in pure functions below; files and keys are touched on the blocking pool.

use std::collections::BTreeSet;
use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::artifact::{self, Artifact};
use super::entry::{self, Target};
use super::keys::{Keyring, PublicKeyInfo};
use super::registry::{self, Client, EnvRef, Os, Scope, Shape};
use crate::fleet::{ControlError, Fleet, Missing};
use crate::manifest::DEFAULT_PROFILE;
use crate::store::{ConfigDeployment, ConfigDraft, Store, StoredArtifact};

pub use super::diff::{FieldChange, diff_status, field_diff};
use super::install::confine;
pub use super::install::{InstallError, Installed, ReadError, install, read_entries};
pub use super::validate::{ConfigProblem, MAX_ENTRIES, validate_payload};

/// The environment variable a client's entry names for the gateway key, when the gateway
/// needs one: the same variable the CLI and the stdio bridge read.
pub const KEY_ENV: &str = "MCP_ORCHESTRATION_API_KEY";

/// Where clients reach the gateway.
#[derive(Clone, Debug)]
pub struct GatewayAddress {
    /// `http://127.0.0.1:7071`, without a path.
    pub base_url: String,
    /// Whether a request needs a key (beyond loopback, or `--require-key-for-reads`).
    pub keys_required: bool,
}

/// This host, for deploys the agent makes itself.
#[derive(Clone, Debug)]
pub struct Host {
    pub os: Os,
    /// `None` when the agent's home directory is unknown (no `HOME`).
    pub env: Option<registry::Env>,
}

impl Host {
    /// The host the agent runs on, read from its environment once; `home` replaces the
    /// home directory (and the variables that would move files out of it).
    pub fn current(home: Option<&std::path::Path>) -> Host {
        let os = Os::current();
        let env = match home {
            Some(home) => registry::Env::from_vars(os, |name| match name {
                "HOME" | "USERPROFILE" => Some(home.as_os_str().to_owned()),
                _ => None,
            }),
            None => registry::Env::from_vars(os, |name| std::env::var_os(name)),
        };
        Host { os, env: env.ok() }
    }
}

/// The client-configuration operations.
#[derive(Clone)]
pub struct Configs {
    store: Store,
    fleet: Fleet,
    /// `<data-dir>/keys`.
    keys_dir: PathBuf,
    /// `None` while the gateway is off: there is nothing to point a client at.
    gateway: Option<GatewayAddress>,
    host: Host,
}

/// A client as `list_clients` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClientInfo {
    pub id: String,
    pub name: String,
    /// `JSON`, `JSON with comments` or `TOML`.
    pub format: String,
    /// The key its servers live under (`mcpServers`, `servers`, `context_servers`,
    /// `mcp_servers`).
    pub servers_key: String,
    /// `stdio bridge` (the file takes no URLs) or `http`.
    pub entry: String,
    /// Its user-scope file on the agent's host, when the home directory is known.
    pub user_file: Option<String>,
    /// Its project-scope file, relative to a project directory, if it has one.
    pub project_file: Option<String>,
    /// The documentation the registry's facts were checked against.
    pub source: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClientList {
    pub clients: Vec<ClientInfo>,
}

/// A profile as a client can use it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProfileInfo {
    pub id: String,
    pub description: Option<String>,
    pub servers: Vec<String>,
    /// Its MCP endpoint on the gateway, when the gateway is on.
    pub url: Option<String>,
    /// The latest configuration published for this client and profile.
    pub latest_artifact: Option<String>,
    pub has_draft: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProfileList {
    pub client: String,
    pub profiles: Vec<ProfileInfo>,
}

/// A published artifact in brief.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArtifactSummary {
    pub id: String,
    pub created_at: Timestamp,
    pub key_id: String,
    pub parent: Option<String>,
}

/// `get_config`: the configuration in force for (client, profile).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConfigView {
    pub client: String,
    pub profile: String,
    /// Entries by name, in the client's own shape.
    pub payload: Value,
    /// The artifact it is, or null when nothing is published yet (the payload is then the
    /// entry pointing at the profile on the gateway).
    pub artifact: Option<ArtifactSummary>,
    pub has_draft: bool,
}

/// `view_draft_config`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DraftView {
    pub client: String,
    pub profile: String,
    /// Whether a draft exists; when not, `payload` is what a draft would start from.
    pub exists: bool,
    pub payload: Value,
    /// The artifact the draft started from.
    pub base_artifact: Option<String>,
    pub updated_at: Option<Timestamp>,
}

/// What `add_server_to_config` adds: a fleet server (through the gateway), a profile, or
/// an entry of the client's own shape.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum AddEntry {
    Server(AddServer),
    Profile(AddProfile),
    Entry(AddCustom),
}

/// A server of the fleet, reached through the gateway at `/servers/{id}/mcp`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddServer {
    pub server: String,
    /// The entry's name in the client's file; default: the server id.
    #[serde(default)]
    #[schemars(length(min = 1), regex(pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"))]
    pub name: Option<String>,
}

/// A profile, reached at `/profiles/{id}/mcp`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddProfile {
    pub profile: String,
    /// The entry's name; default `mcp-orchestration`, or `mcp-orchestration-{profile}`.
    #[serde(default)]
    #[schemars(length(min = 1), regex(pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"))]
    pub name: Option<String>,
}

/// An entry as the client's file holds it (a custom server).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCustom {
    pub entry: serde_json::Map<String, Value>,
    #[schemars(length(min = 1), regex(pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"))]
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ValidationReport {
    pub client: String,
    pub profile: String,
    pub valid: bool,
    pub errors: Vec<ConfigProblem>,
    pub warnings: Vec<ConfigProblem>,
}

/// `publish_config`: the signed artifact.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Published {
    pub id: String,
    /// The artifact as signed: `id`, `envelope`, `payload`, `signature`.
    pub artifact: Value,
}

/// Where `deploy_config` writes on the agent's host.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// A project directory on the agent's host (absolute, existing): the client's project
    /// file there. Default: the client's user file.
    #[serde(default)]
    pub project_dir: Option<String>,
    /// The artifact to deploy; default: the latest published.
    #[serde(default)]
    pub artifact: Option<String>,
    /// Replace entries of the same names that this agent did not write.
    #[serde(default)]
    pub force: bool,
}

/// What a deploy did.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeployReport {
    pub client: String,
    pub profile: String,
    /// The file written (after following symlinks).
    pub path: String,
    pub artifact: String,
    /// Whether the file changed (deploying what is there already writes nothing).
    pub changed: bool,
    /// The previous file, kept when this deploy replaced it.
    pub backup: Option<String>,
    /// The entries written.
    pub entries: Vec<String>,
    /// Entries of an earlier deploy that this one removed.
    pub removed: Vec<String>,
}

/// `diff_config`'s input.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffRequest {
    pub client_id: String,
    pub profile: String,
    /// Entries to compare (from a file elsewhere); default: the client's user file on the
    /// agent's host.
    pub payload: Option<Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DiffReport {
    pub client: String,
    pub profile: String,
    /// `up_to_date`, `outdated` (an older published configuration), `diverged` (none that
    /// was published), or `not_deployed`.
    pub status: String,
    /// What was compared: `payload`, or the file's path.
    pub compared: String,
    /// The latest published artifact, or null (then compared with the initial
    /// configuration).
    pub published: Option<String>,
    /// The older artifact the compared configuration is, when `outdated`.
    pub matches: Option<String>,
    pub changes: Vec<FieldChange>,
}

/// A server as `list_available_servers` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AvailableServer {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub version: Option<String>,
    pub health: Option<String>,
    /// How many tools it offers through the gateway.
    pub tools: Option<usize>,
    /// The profiles that show it (`default` always).
    pub profiles: Vec<String>,
    /// Its own MCP endpoint on the gateway.
    pub url: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AvailableServers {
    pub servers: Vec<AvailableServer>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeysView {
    /// Whether this call made a key (`initialize_keys` on an empty keyring, `rotate`).
    pub created: bool,
    pub keys: Vec<PublicKeyInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DraftCleared {
    pub client: String,
    pub profile: String,
    /// Whether there was a draft.
    pub cleared: bool,
}

impl Configs {
    pub fn new(
        store: Store,
        fleet: Fleet,
        keys_dir: PathBuf,
        gateway: Option<GatewayAddress>,
        host: Host,
    ) -> Configs {
        Configs {
            store,
            fleet,
            keys_dir,
            gateway,
            host,
        }
    }

    /// `list_clients`.
    pub fn clients(&self) -> ClientList {
        let clients = registry::CLIENTS
            .iter()
            .map(|c| ClientInfo {
                id: c.id.to_owned(),
                name: c.display_name.to_owned(),
                format: c.format.to_string(),
                servers_key: c.servers_key.to_owned(),
                entry: match c.shape {
                    Shape::Bridge => "stdio bridge",
                    Shape::Http { .. } | Shape::CodexHttp => "http",
                }
                .to_owned(),
                user_file: self.host.env.as_ref().and_then(|env| {
                    registry::config_path(c, self.host.os, &Scope::User, env)
                        .ok()
                        .map(|p| p.display().to_string())
                }),
                project_file: registry::project_file(c).map(|p| p.display().to_string()),
                source: c.source.to_owned(),
            })
            .collect();
        ClientList { clients }
    }

    /// `list_profiles`: `default` and the applied manifest's profiles.
    pub async fn profiles(&self, client: &str) -> Result<ProfileList, ControlError> {
        let c = known_client(client)?;
        let view = self.fleet.get();
        let mut profiles = vec![ProfileInfo {
            id: DEFAULT_PROFILE.to_owned(),
            description: Some("Every server of the fleet".to_owned()),
            servers: view.servers.iter().map(|s| s.id.clone()).collect(),
            url: self.url(&path_of_profile(DEFAULT_PROFILE)),
            latest_artifact: None,
            has_draft: false,
        }];
        profiles.extend(view.profiles.iter().map(|p| ProfileInfo {
            id: p.id.clone(),
            description: p.description.clone(),
            servers: p.servers.iter().map(|s| s.id.clone()).collect(),
            url: self.url(&path_of_profile(&p.id)),
            latest_artifact: None,
            has_draft: false,
        }));
        let ids: Vec<String> = profiles.iter().map(|p| p.id.clone()).collect();
        let client_id = c.id.to_owned();
        let known = self
            .store
            .call(move |s| {
                ids.iter()
                    .map(|p| {
                        let latest = s.config_artifacts(&client_id, p, 1)?.pop().map(|a| a.id);
                        let draft = s.config_draft(&client_id, p)?.is_some();
                        Ok((latest, draft))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        for (p, (latest, draft)) in profiles.iter_mut().zip(known) {
            p.latest_artifact = latest;
            p.has_draft = draft;
        }
        Ok(ProfileList {
            client: c.id.to_owned(),
            profiles,
        })
    }

    /// `get_config`: the latest published configuration, or the initial one.
    pub async fn config(&self, client: &str, profile: &str) -> Result<ConfigView, ControlError> {
        let c = known_client(client)?;
        self.known_profile(profile)?;
        let (latest, draft) = self.latest_and_draft(c.id, profile).await?;
        let (payload, artifact) = match latest {
            Some(a) => (a.payload().clone(), Some(summary(&a))),
            None => (self.initial(c, profile)?, None),
        };
        Ok(ConfigView {
            client: c.id.to_owned(),
            profile: profile.to_owned(),
            payload,
            artifact,
            has_draft: draft.is_some(),
        })
    }

    /// `view_draft_config`.
    pub async fn draft(&self, client: &str, profile: &str) -> Result<DraftView, ControlError> {
        let c = known_client(client)?;
        self.known_profile(profile)?;
        let (latest, draft) = self.latest_and_draft(c.id, profile).await?;
        self.draft_view(c, profile, latest.as_ref(), draft)
    }

    /// The draft, or what one would start from: `latest` (the verified latest artifact),
    /// else the initial configuration.
    fn draft_view(
        &self,
        c: &Client,
        profile: &str,
        latest: Option<&Artifact>,
        draft: Option<ConfigDraft>,
    ) -> Result<DraftView, ControlError> {
        Ok(match draft {
            Some(d) => DraftView {
                client: c.id.to_owned(),
                profile: profile.to_owned(),
                exists: true,
                payload: parse_payload(&d.payload)?,
                base_artifact: d.base_artifact,
                updated_at: Some(d.updated_at),
            },
            None => DraftView {
                client: c.id.to_owned(),
                profile: profile.to_owned(),
                exists: false,
                payload: match latest {
                    Some(a) => a.payload().clone(),
                    None => self.initial(c, profile)?,
                },
                base_artifact: latest.map(|a| a.id().to_owned()),
                updated_at: None,
            },
        })
    }

    /// `add_server_to_config`: one entry into the draft (made from the configuration in
    /// force if there is none yet). An entry of the same name is replaced.
    pub async fn add(
        &self,
        client: &str,
        profile: &str,
        add: AddEntry,
    ) -> Result<DraftView, ControlError> {
        let c = known_client(client)?;
        self.known_profile(profile)?;
        let (name, value) = match add {
            AddEntry::Server(AddServer { server, name }) => {
                if !self.fleet.has_server(&server) {
                    return Err(ControlError::server_not_found(&server));
                }
                let name = name.unwrap_or_else(|| server.clone());
                let value = self.gateway_entry(c, &name, &path_of_server(&server), profile)?;
                (name, value)
            }
            AddEntry::Profile(AddProfile {
                profile: target,
                name,
            }) => {
                self.known_profile(&target)?;
                let name = name.unwrap_or_else(|| entry_name(&target));
                let value = self.gateway_entry(c, &name, &path_of_profile(&target), &target)?;
                (name, value)
            }
            AddEntry::Entry(AddCustom { entry, name }) => {
                let entry = Value::Object(entry);
                // A credential in clear is never kept, not even in a draft.
                let secrets = entry::secrets_in_clear(c, &entry);
                if !secrets.is_empty() {
                    return Err(ControlError::Refused {
                        code: "SECRET_IN_CLEAR",
                        message: format!(
                            "the entry holds a credential in clear at {}; name an environment variable instead ({})",
                            secrets.join(", "),
                            match c.env_ref {
                                EnvRef::Braces | EnvRef::DollarOrBraces => "${NAME}",
                                EnvRef::EnvColon => "${env:NAME}",
                                EnvRef::Unsupported =>
                                    "this client expands none: leave the credential out",
                            }
                        ),
                        details: json!({ "paths": secrets }),
                    });
                }
                (name, entry)
            }
        };
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(ControlError::Invalid(format!(
                "an entry name must be non-empty and free of control characters, not {name:?}"
            )));
        }
        self.edit_draft(c, profile, move |payload| {
            payload.insert(name, value);
            Ok(())
        })
        .await
    }

    /// `remove_server_from_config`.
    pub async fn remove(
        &self,
        client: &str,
        profile: &str,
        name: &str,
    ) -> Result<DraftView, ControlError> {
        let c = known_client(client)?;
        self.known_profile(profile)?;
        let name = name.to_owned();
        self.edit_draft(c, profile, move |payload| {
            if payload.remove(&name).is_none() {
                let names: Vec<&str> = payload.keys().map(String::as_str).collect();
                return Err(ControlError::Refused {
                    code: "ENTRY_NOT_FOUND",
                    message: format!(
                        "the configuration has no entry `{name}`; its entries are: {}",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                    details: json!({ "entries": names }),
                });
            }
            Ok(())
        })
        .await
    }

    /// `clear_draft_config`.
    pub async fn clear_draft(
        &self,
        client: &str,
        profile: &str,
    ) -> Result<DraftCleared, ControlError> {
        let c = known_client(client)?;
        self.known_profile(profile)?;
        let (client_id, p) = (c.id.to_owned(), profile.to_owned());
        let cleared = self
            .store
            .call(move |s| s.clear_config_draft(&client_id, &p))
            .await?;
        Ok(DraftCleared {
            client: c.id.to_owned(),
            profile: profile.to_owned(),
            cleared,
        })
    }

    /// `validate_config`: the draft, or the configuration in force when there is none.
    pub async fn validate(
        &self,
        client: &str,
        profile: &str,
    ) -> Result<ValidationReport, ControlError> {
        let c = known_client(client)?;
        let draft = self.draft(client, profile).await?;
        Ok(self.report(c, profile, &draft.payload))
    }

    fn report(&self, c: &Client, profile: &str, payload: &Value) -> ValidationReport {
        let view = self.fleet.get();
        let known = |path: &str| known_target(path, &view);
        let (errors, warnings) = validate_payload(c, payload, self.gateway_base(), &known);
        ValidationReport {
            client: c.id.to_owned(),
            profile: profile.to_owned(),
            valid: errors.is_empty(),
            errors,
            warnings,
        }
    }

    /// `publish_config`: signs the draft (or the configuration in force) into a new
    /// artifact, whose parent is the latest before it, and forgets the draft.
    pub async fn publish(&self, client: &str, profile: &str) -> Result<Published, ControlError> {
        let c = known_client(client)?;
        self.known_profile(profile)?;
        // One read (and one signature check of the latest artifact) serves the payload, the
        // parent and the draft to forget.
        let (latest, stored_draft) = self.latest_and_draft(c.id, profile).await?;
        let parent = latest.as_ref().map(|a| a.id().to_owned());
        // The draft is forgotten only if it still is what was signed.
        let from_draft = stored_draft.as_ref().map(|d| d.payload.clone());
        let draft = self.draft_view(c, profile, latest.as_ref(), stored_draft)?;
        let report = self.report(c, profile, &draft.payload);
        if !report.valid {
            return Err(ControlError::Refused {
                code: "CONFIG_INVALID",
                message: format!(
                    "the configuration for {}/{profile} does not validate: {}",
                    c.id,
                    report
                        .errors
                        .iter()
                        .map(|e| format!("{} at `{}`: {}", e.code, e.path, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                details: json!({ "errors": report.errors }),
            });
        }
        let keys_dir = self.keys_dir.clone();
        let (client_id, p) = (c.id.to_owned(), profile.to_owned());
        let payload = draft.payload;
        let expected_parent = parent.clone();
        let signed = tokio::task::spawn_blocking(move || {
            let keyring = Keyring::open(&keys_dir).map_err(keys_error)?;
            if keyring.active().is_none() {
                return Err(no_keys(&keys_dir));
            }
            artifact::sign(
                payload,
                &client_id,
                &p,
                Timestamp::now(),
                parent.as_deref(),
                &keyring,
            )
            .map_err(|e| ControlError::Internal(crate::error_text::chain(&e)))
        })
        .await
        .map_err(|e| ControlError::Internal(format!("the signing task failed: {e}")))??;
        let body = serde_json::to_value(&signed)
            .map_err(|e| ControlError::Internal(format!("cannot write the artifact: {e}")))?;
        let stored = StoredArtifact {
            id: signed.id().to_owned(),
            client: c.id.to_owned(),
            profile: profile.to_owned(),
            created_at: signed.envelope().created_at,
            body: body.to_string(),
        };
        let stored_it = self
            .store
            .call(move |s| {
                s.publish_config_artifact(
                    &stored,
                    expected_parent.as_deref(),
                    from_draft.as_deref(),
                )
            })
            .await?;
        if !stored_it {
            return Err(ControlError::Conflict(format!(
                "another configuration for {}/{profile} was published meanwhile; look at it (get_config) and publish again",
                c.id
            )));
        }
        Ok(Published {
            id: signed.id().to_owned(),
            artifact: body,
        })
    }

    /// One artifact, as signed.
    pub async fn artifact(&self, id: &str) -> Result<Value, ControlError> {
        let key = id.to_owned();
        let stored = self
            .store
            .call(move |s| s.config_artifact(&key))
            .await?
            .ok_or_else(|| ControlError::not_found(Missing::Artifact, id))?;
        serde_json::from_str(&stored.body)
            .map_err(|e| ControlError::Internal(format!("artifact {id} is stored unreadable: {e}")))
    }

    /// The latest artifact published for (client, profile), as signed.
    pub async fn latest_artifact(
        &self,
        client: &str,
        profile: &str,
    ) -> Result<Value, ControlError> {
        let c = known_client(client)?;
        self.known_profile(profile)?;
        let (latest, _) = self.latest_and_draft(c.id, profile).await?;
        let latest = latest.ok_or_else(|| nothing_published(c.id, profile))?;
        serde_json::to_value(&latest)
            .map_err(|e| ControlError::Internal(format!("cannot write the artifact: {e}")))
    }

    /// `deploy_config` on the agent's own host: the artifact (the latest, or the one
    /// named) is verified with the agent's keys and its entries written into the client's
    /// file, changing nothing else in it.
    pub async fn deploy(
        &self,
        client: &str,
        profile: &str,
        request: DeployRequest,
    ) -> Result<DeployReport, ControlError> {
        let c = known_client(client)?;
        self.known_profile(profile)?;
        // Checked on the file system with the target, in the blocking task below.
        let scope = match &request.project_dir {
            None => Scope::User,
            Some(dir) => Scope::Project(PathBuf::from(dir)),
        };
        let env = self.host.env.clone().ok_or_else(|| {
            ControlError::Conflict(
                "the agent's home directory is unknown (HOME is not set), so no client file can be found"
                    .to_owned(),
            )
        })?;
        let path = registry::config_path(c, self.host.os, &scope, &env).map_err(|e| {
            ControlError::Refused {
                code: "NO_PROJECT_FILE",
                message: e.to_string(),
                details: json!({ "client": c.id }),
            }
        })?;
        let artifact = match &request.artifact {
            Some(id) => {
                let wanted: Artifact = serde_json::from_value(self.artifact(id).await?)
                    .map_err(|e| ControlError::Internal(format!("artifact {id}: {e}")))?;
                wanted
            }
            None => self
                .latest_and_draft(c.id, profile)
                .await?
                .0
                .ok_or_else(|| nothing_published(c.id, profile))?,
        };
        let (client_id, p, at) = (
            c.id.to_owned(),
            profile.to_owned(),
            path.display().to_string(),
        );
        let previous = self
            .store
            .call(move |s| {
                let Some(last) = s.last_config_deployment(&client_id, &p, &at)? else {
                    return Ok(None);
                };
                s.config_artifact(&last.artifact_id)
            })
            .await?;
        let keys_dir = self.keys_dir.clone();
        let (client_id, p) = (c.id, profile.to_owned());
        let force = request.force;
        let write_path = path.clone();
        let home = env.home.clone();
        let (installed, artifact) = tokio::task::spawn_blocking(move || {
            confine(&scope, &write_path, &home)?;
            let keyring = Keyring::open(&keys_dir).map_err(keys_error)?;
            artifact::verify_for(&artifact, client_id, &p, |id| keyring.verifying_key(id))
                .map_err(untrusted)?;
            // Only what the agent itself signed decides which entries it may remove.
            let previously = previous
                .and_then(|stored| serde_json::from_str::<Artifact>(&stored.body).ok())
                .filter(|a| {
                    artifact::verify_for(a, client_id, &p, |id| keyring.verifying_key(id)).is_ok()
                })
                .map(|a| object_names(a.payload()))
                .unwrap_or_default();
            let client = known_client(client_id)?;
            let installed = install(&write_path, client, artifact.payload(), &previously, force)
                .map_err(install_error)?;
            Ok::<_, ControlError>((installed, artifact))
        })
        .await
        .map_err(|e| ControlError::Internal(format!("the deploy task failed: {e}")))??;
        let record = ConfigDeployment {
            id: 0,
            client: c.id.to_owned(),
            profile: profile.to_owned(),
            path: path.display().to_string(),
            artifact_id: artifact.id().to_owned(),
            digest: installed.deployed.digest.clone(),
            backup: installed
                .deployed
                .backup
                .as_ref()
                .map(|b| b.display().to_string()),
            changed: installed.deployed.changed,
            deployed_at: Timestamp::now(),
        };
        self.store
            .call(move |s| s.record_config_deployment(&record))
            .await?;
        Ok(DeployReport {
            client: c.id.to_owned(),
            profile: profile.to_owned(),
            path: installed.deployed.path.display().to_string(),
            artifact: artifact.id().to_owned(),
            changed: installed.deployed.changed,
            backup: installed.deployed.backup.map(|b| b.display().to_string()),
            entries: installed.entries,
            removed: installed.removed,
        })
    }

    /// `diff_config`: a configuration (given, or in the client's user file on this host)
    /// against the latest published one, field by field.
    pub async fn diff(&self, request: DiffRequest) -> Result<DiffReport, ControlError> {
        let c = known_client(&request.client_id)?;
        let profile = request.profile.clone();
        self.known_profile(&profile)?;
        let (client_id, p) = (c.id.to_owned(), profile.clone());
        let history = self
            .store
            .call(move |s| s.config_artifacts(&client_id, &p, 100))
            .await?;
        let history: Vec<Artifact> = history
            .iter()
            .map(|a| {
                serde_json::from_str(&a.body).map_err(|e| {
                    ControlError::Internal(format!("artifact {} is stored unreadable: {e}", a.id))
                })
            })
            .collect::<Result<_, _>>()?;
        let published = match history.first() {
            Some(a) => a.payload().clone(),
            None => self.initial(c, &profile)?,
        };
        let (compared, subject) = match request.payload {
            Some(payload) => ("payload".to_owned(), payload),
            None => {
                let env = self.host.env.clone().ok_or_else(|| {
                    ControlError::Conflict(
                        "the agent's home directory is unknown (HOME is not set); give `payload`"
                            .to_owned(),
                    )
                })?;
                let path = registry::config_path(c, self.host.os, &Scope::User, &env)
                    .map_err(|e| ControlError::Invalid(e.to_string()))?;
                let mut names: BTreeSet<String> = object_names(&published);
                for a in &history {
                    names.extend(object_names(a.payload()));
                }
                let client = c;
                let read_path = path.clone();
                let found =
                    tokio::task::spawn_blocking(move || read_entries(&read_path, client, &names))
                        .await
                        .map_err(|e| {
                            ControlError::Internal(format!("the read task failed: {e}"))
                        })??;
                // The user's own entries may hold credentials in clear: the answer never
                // carries them.
                let found = found
                    .into_iter()
                    .map(|(name, entry)| (name, redact_secrets(c, entry)))
                    .collect();
                (path.display().to_string(), Value::Object(found))
            }
        };
        let older: Vec<(String, Value)> = history
            .iter()
            .skip(1)
            .map(|a| (a.id().to_owned(), a.payload().clone()))
            .collect();
        let (status, matches) = diff_status(&subject, &published, &older);
        Ok(DiffReport {
            client: c.id.to_owned(),
            profile,
            status: status.to_owned(),
            compared,
            published: history.first().map(|a| a.id().to_owned()),
            matches,
            changes: field_diff(&subject, &published),
        })
    }

    /// `list_available_servers`.
    pub fn servers(&self) -> AvailableServers {
        let view = self.fleet.get();
        let servers = view
            .servers
            .iter()
            .map(|s| AvailableServer {
                id: s.id.clone(),
                name: s.name.clone(),
                description: None,
                version: s.running_version.clone(),
                health: s.health.map(|h| h.as_str().to_owned()),
                tools: s.gateway_tools,
                profiles: std::iter::once(DEFAULT_PROFILE.to_owned())
                    .chain(
                        view.profiles
                            .iter()
                            .filter(|p| p.shows_server(&s.id))
                            .map(|p| p.id.clone()),
                    )
                    .collect(),
                url: self.url(&path_of_server(&s.id)),
            })
            .collect();
        AvailableServers { servers }
    }

    /// `describe_server`.
    pub fn server(&self, id: &str) -> Result<AvailableServer, ControlError> {
        self.servers()
            .servers
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| ControlError::server_not_found(id))
    }

    /// `initialize_keys`: the first signing key, if there is none.
    pub async fn initialize_keys(&self) -> Result<KeysView, ControlError> {
        let dir = self.keys_dir.clone();
        blocking(move || {
            let (keyring, created) = Keyring::initialize(&dir).map_err(keys_error)?;
            Ok(KeysView {
                created,
                keys: keyring.public_keys(),
            })
        })
        .await
    }

    /// A new signing key; artifacts signed by the old ones stay verifiable.
    pub async fn rotate_keys(&self) -> Result<KeysView, ControlError> {
        let dir = self.keys_dir.clone();
        blocking(move || {
            let mut keyring = Keyring::open(&dir).map_err(keys_error)?;
            if keyring.is_empty() {
                return Err(no_keys(&dir));
            }
            keyring.rotate().map_err(keys_error)?;
            Ok(KeysView {
                created: true,
                keys: keyring.public_keys(),
            })
        })
        .await
    }

    /// The public keys artifacts are verified with.
    pub async fn public_keys(&self) -> Result<KeysView, ControlError> {
        let dir = self.keys_dir.clone();
        blocking(move || {
            let keyring = Keyring::open(&dir).map_err(keys_error)?;
            Ok(KeysView {
                created: false,
                keys: keyring.public_keys(),
            })
        })
        .await
    }

    fn known_profile(&self, profile: &str) -> Result<(), ControlError> {
        if profile == DEFAULT_PROFILE || self.fleet.profile(profile).is_some() {
            Ok(())
        } else {
            Err(ControlError::profile_not_found(profile))
        }
    }

    fn gateway_base(&self) -> Option<&str> {
        self.gateway.as_ref().map(|g| g.base_url.as_str())
    }

    fn url(&self, path: &str) -> Option<String> {
        self.gateway_base().map(|base| format!("{base}{path}"))
    }

    /// The entry pointing at `path` on the gateway, in the client's shape.
    fn gateway_entry(
        &self,
        c: &Client,
        name: &str,
        path: &str,
        profile: &str,
    ) -> Result<Value, ControlError> {
        let gateway = self.gateway.as_ref().ok_or_else(|| {
            ControlError::Conflict(
                "the gateway is off (--gateway-listen off), so there is no endpoint to point a client at"
                    .to_owned(),
            )
        })?;
        let mut target = Target::new(name, format!("{}{path}", gateway.base_url), profile);
        if gateway.keys_required {
            target.key_env = Some(KEY_ENV.to_owned());
        }
        entry::render(c, &target).map_err(|e| ControlError::Refused {
            code: "CLIENT_CANNOT_REFERENCE_KEY",
            message: e.to_string(),
            details: json!({ "client": c.id }),
        })
    }

    /// The configuration (client, profile) starts as: the one entry for the profile.
    fn initial(&self, c: &Client, profile: &str) -> Result<Value, ControlError> {
        let name = entry_name(profile);
        let value = self.gateway_entry(c, &name, &path_of_profile(profile), profile)?;
        Ok(json!({ name: value }))
    }

    async fn latest_and_draft(
        &self,
        client: &str,
        profile: &str,
    ) -> Result<(Option<Artifact>, Option<ConfigDraft>), ControlError> {
        let (c, p) = (client.to_owned(), profile.to_owned());
        let (latest, draft) = self
            .store
            .call(move |s| {
                Ok((
                    s.config_artifacts(&c, &p, 1)?.pop(),
                    s.config_draft(&c, &p)?,
                ))
            })
            .await?;
        let latest = latest
            .map(|a| {
                serde_json::from_str::<Artifact>(&a.body).map_err(|e| {
                    ControlError::Internal(format!("artifact {} is stored unreadable: {e}", a.id))
                })
            })
            .transpose()?;
        // What is shown, drafted from or deployed must be what was signed: a row changed
        // in the database would otherwise be signed again into a valid artifact.
        let latest = match latest {
            Some(a) => Some(self.verified(a, client, profile).await?),
            None => None,
        };
        Ok((latest, draft))
    }

    /// `artifact`, checked against the agent's keyring and its target.
    async fn verified(
        &self,
        artifact: Artifact,
        client: &str,
        profile: &str,
    ) -> Result<Artifact, ControlError> {
        let keys_dir = self.keys_dir.clone();
        let (c, p) = (client.to_owned(), profile.to_owned());
        blocking(move || {
            let keyring = Keyring::open(&keys_dir).map_err(keys_error)?;
            artifact::verify_for(&artifact, &c, &p, |id| keyring.verifying_key(id))
                .map_err(untrusted)?;
            Ok(artifact)
        })
        .await
    }

    /// Applies `change` to the draft's entries (starting one, from the configuration in
    /// force, if there is none) and stores it, in one store call: two edits at once from
    /// different surfaces both land.
    async fn edit_draft(
        &self,
        c: &Client,
        profile: &str,
        change: impl FnOnce(&mut serde_json::Map<String, Value>) -> Result<(), ControlError>
        + Send
        + 'static,
    ) -> Result<DraftView, ControlError> {
        // What a new draft starts from, decided before the store call (it may sign-check).
        let start = self.draft(c.id, profile).await?;
        let (client_id, p) = (c.id.to_owned(), profile.to_owned());
        self.store
            .call(move |s| {
                s.update_config_draft(&client_id, &p, |current| {
                    let (payload, base_artifact) = match current {
                        Some(d) => (parse_payload(&d.payload)?, d.base_artifact),
                        None => (start.payload, start.base_artifact),
                    };
                    let Value::Object(mut payload) = payload else {
                        return Err(ControlError::Internal(
                            "the draft is not a JSON object".to_owned(),
                        ));
                    };
                    change(&mut payload)?;
                    Ok(ConfigDraft {
                        client: client_id.clone(),
                        profile: p.clone(),
                        payload: Value::Object(payload).to_string(),
                        base_artifact,
                        updated_at: Timestamp::now(),
                    })
                })
            })
            .await??;
        self.draft(c.id, profile).await
    }
}

/// The entry name a profile's entry gets by default.
pub fn entry_name(profile: &str) -> String {
    if profile == DEFAULT_PROFILE {
        "mcp-orchestration".to_owned()
    } else {
        format!("mcp-orchestration-{profile}")
    }
}

/// A profile's endpoint on the gateway's listener.
pub fn path_of_profile(profile: &str) -> String {
    if profile == DEFAULT_PROFILE {
        "/mcp".to_owned()
    } else {
        format!("/profiles/{profile}/mcp")
    }
}

/// One server's endpoint on the gateway's listener.
pub fn path_of_server(server: &str) -> String {
    format!("/servers/{server}/mcp")
}

fn known_client(id: &str) -> Result<&'static Client, ControlError> {
    registry::client(id).ok_or_else(|| ControlError::not_found(Missing::Client, id))
}

fn summary(a: &Artifact) -> ArtifactSummary {
    ArtifactSummary {
        id: a.id().to_owned(),
        created_at: a.envelope().created_at,
        key_id: a.envelope().key_id.clone(),
        parent: a.envelope().parent.clone(),
    }
}

fn parse_payload(text: &str) -> Result<Value, ControlError> {
    serde_json::from_str(text)
        .map_err(|e| ControlError::Internal(format!("a draft is stored unreadable: {e}")))
}

fn object_names(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn nothing_published(client: &str, profile: &str) -> ControlError {
    ControlError::Conflict(format!(
        "nothing is published for {client}/{profile} yet: publish the configuration first"
    ))
}

fn no_keys(dir: &std::path::Path) -> ControlError {
    ControlError::Conflict(format!(
        "no signing key in {}: initialize the keys first (`mcp-orchestration config keys init`, POST /v1/keys/initialize)",
        dir.display()
    ))
}

fn keys_error(e: super::keys::KeyError) -> ControlError {
    ControlError::Internal(crate::error_text::chain(&e))
}

fn untrusted(e: artifact::VerifyError) -> ControlError {
    ControlError::Refused {
        code: "ARTIFACT_UNTRUSTED",
        message: format!(
            "the artifact does not verify: {}",
            crate::error_text::chain(&e)
        ),
        details: Value::Null,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::Internal(format!("the key task failed: {e}")))?
}

impl From<ReadError> for ControlError {
    fn from(e: ReadError) -> ControlError {
        match e {
            ReadError::Deploy(e) => deploy_error(e),
        }
    }
}

fn install_error(e: InstallError) -> ControlError {
    match e {
        InstallError::Deploy(e) => deploy_error(e),
        InstallError::NotEntries => ControlError::Internal(e.to_string()),
    }
}

/// A user's file that cannot be changed is the user's to fix: a precise refusal, with the
/// file left as it was.
fn deploy_error(e: super::deploy::DeployError) -> ControlError {
    use super::deploy::DeployError;
    if let DeployError::Unmanaged { names, .. } = &e {
        return ControlError::Refused {
            code: "UNMANAGED_ENTRY",
            message: e.to_string(),
            details: json!({ "entries": names }),
        };
    }
    let code = match &e {
        DeployError::Edit(_) | DeployError::NotUtf8 { .. } => "CLIENT_FILE_INVALID",
        DeployError::Unmanaged { .. } | DeployError::LockNotAFile { .. } => "CLIENT_FILE_INVALID",
        DeployError::ReadOnlyFile { .. } | DeployError::ReadOnlyDir { .. } => {
            "CLIENT_FILE_READ_ONLY"
        }
        DeployError::Locked { .. } => "CLIENT_FILE_LOCKED",
        DeployError::SymlinkLoop { .. } => "CLIENT_FILE_INVALID",
        // The user's file system said no (a missing parent it cannot make, a full disk):
        // theirs to fix, not the agent's failure.
        DeployError::Io { .. } => "CLIENT_FILE_UNWRITABLE",
        DeployError::NoBackup { .. } => {
            return ControlError::Internal(crate::error_text::chain(&e));
        }
    };
    ControlError::Refused {
        code,
        message: crate::error_text::chain(&e),
        details: Value::Null,
    }
}

/// `entry` with every credential in clear `secrets_in_clear` finds replaced.
fn redact_secrets(c: &Client, mut entry: Value) -> Value {
    for path in entry::secrets_in_clear(c, &entry) {
        // `headers.Authorization`, `args[3]` → a JSON pointer.
        let pointer: String = path
            .replace(']', "")
            .split(['.', '['])
            .map(|part| format!("/{}", part.replace('~', "~0").replace('/', "~1")))
            .collect();
        if let Some(at) = entry.pointer_mut(&pointer) {
            *at = json!("[redacted]");
        }
    }
    entry
}

/// Whether a gateway path names something the applied manifest serves.
fn known_target(path: &str, view: &crate::fleet::FleetView) -> bool {
    if path == "/mcp" {
        return true;
    }
    let inner = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .map(str::to_owned)
    };
    if let Some(p) = inner("/profiles/") {
        return p == DEFAULT_PROFILE || view.profiles.iter().any(|q| q.id == p);
    }
    if let Some(s) = inner("/servers/") {
        return view.servers.iter().any(|q| q.id == s);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_and_paths() {
        assert_eq!(entry_name("default"), "mcp-orchestration");
        assert_eq!(entry_name("dev"), "mcp-orchestration-dev");
        assert_eq!(path_of_profile("default"), "/mcp");
        assert_eq!(path_of_profile("dev"), "/profiles/dev/mcp");
        assert_eq!(path_of_server("gh"), "/servers/gh/mcp");
    }
}
