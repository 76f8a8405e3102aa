//! The client-configuration operations, one implementation behind every surface: the
//! seed's `/v1/` routes, the agent's MCP tools and (through the API) the CLI. A
//! configuration is for one (client, profile): it starts as the entry pointing at that
//! profile on the gateway; a draft (kept in SQLite, so every surface edits the same one and
//! it survives restarts) adds or removes entries; `validate` checks it; `publish` signs it
//! into an immutable artifact; `deploy` writes an artifact's entries into the client's file
//! on this host. What is decided from values alone (the base entry, validation, the diff)
//! is in pure functions below; files and keys are touched on the blocking pool.

use std::collections::{BTreeMap, BTreeSet};
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

/// More entries than this in one configuration is a mistake: clients slow down and models
/// get confused well before it.
pub const MAX_ENTRIES: usize = 50;

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

/// A problem `validate_config` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConfigProblem {
    /// `EMPTY_CONFIG`, `TOO_MANY_SERVERS`, `INVALID_NAME`, `INVALID_TYPE`, `MISSING_COMMAND`,
    /// `MISSING_URL`, `URL_NOT_SUPPORTED`, `UNRESOLVED_PLACEHOLDER`, `SECRET_IN_CLEAR`,
    /// `UNKNOWN_TARGET` (a warning: a gateway path the applied manifest does not serve).
    pub code: String,
    /// Where: the entry name and field (`fleet.headers.Authorization`).
    pub path: String,
    pub message: String,
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

/// One difference, field by field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FieldChange {
    /// `entry.field.subfield`.
    pub path: String,
    /// `added` (in the published configuration, not in what was compared), `removed`, or
    /// `changed`.
    pub change: String,
    /// What the compared configuration has.
    pub deployed: Option<Value>,
    /// What the published configuration has.
    pub published: Option<Value>,
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
                payload: match &latest {
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
        let draft = self.draft(client, profile).await?;
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
        let (latest, stored_draft) = self.latest_and_draft(c.id, profile).await?;
        let parent = latest.map(|a| a.id().to_owned());
        // The draft is forgotten only if it still is what was signed.
        let from_draft = if draft.exists {
            stored_draft.map(|d| d.payload)
        } else {
            None
        };
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

/// A deploy the agent makes writes only below the home directory whose client files it
/// manages: a project directory outside it, or a file whose symlinks lead out of it (or
/// nowhere), is refused. An API or MCP caller cannot make it write elsewhere on its host.
fn confine(
    scope: &Scope,
    target: &std::path::Path,
    home: &std::path::Path,
) -> Result<(), ControlError> {
    let home = real_path(home);
    let refused = |code: &'static str, message: String| ControlError::Refused {
        code,
        message,
        details: json!({ "home": home.display().to_string() }),
    };
    if let Scope::Project(dir) = scope {
        let real = match std::fs::canonicalize(dir) {
            Ok(real) if dir.is_absolute() && real.is_dir() => real,
            _ => {
                return Err(refused(
                    "PROJECT_DIR_NOT_FOUND",
                    format!(
                        "`{}` is not an existing directory (by absolute path) on the agent's host",
                        dir.display()
                    ),
                ));
            }
        };
        if !real.starts_with(&home) {
            return Err(refused(
                "PROJECT_DIR_OUTSIDE_HOME",
                format!(
                    "`{}` is outside {}, the home whose client files the agent manages",
                    dir.display(),
                    home.display()
                ),
            ));
        }
    }
    if target.symlink_metadata().is_ok() && !target.exists() {
        return Err(refused(
            "CLIENT_FILE_INVALID",
            format!(
                "{} is a symlink that leads nowhere; it was left untouched",
                target.display()
            ),
        ));
    }
    // The nearest part of the path that exists, with its symlinks resolved, must lie in
    // the home (or above it, when the home itself is still to be made).
    let existing = target.ancestors().find(|a| a.exists());
    if let Some(existing) = existing {
        let real = real_path(existing);
        if !real.starts_with(&home) && !home.starts_with(&real) {
            return Err(refused(
                "CLIENT_FILE_OUTSIDE_HOME",
                format!(
                    "{} leads to {}, outside {}, the home whose client files the agent manages",
                    target.display(),
                    real.display(),
                    home.display()
                ),
            ));
        }
    }
    Ok(())
}

/// `path` with the symlinks of its longest existing part resolved (the rest, still to be
/// made, cannot hold any).
fn real_path(path: &std::path::Path) -> PathBuf {
    for existing in path.ancestors() {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let rest = path
                .strip_prefix(existing)
                .unwrap_or(std::path::Path::new(""));
            return real.join(rest);
        }
    }
    path.to_owned()
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

/// What [`install`] did.
#[derive(Debug)]
pub struct Installed {
    pub deployed: super::deploy::Deployed,
    pub entries: Vec<String>,
    pub removed: Vec<String>,
}

/// Why [`install`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the artifact's payload is not an object of entries")]
    NotEntries,
    #[error(transparent)]
    Deploy(#[from] super::deploy::DeployError),
}

/// Writes `payload`'s entries into the client's file at `path`, removing the entries of
/// `previously` (what an earlier deploy of the same configuration wrote) that are no longer
/// in it. An entry of the same name that was not ours is refused unless `force`, or unless
/// it already is exactly ours (checked under the file's lock). Shared by the agent's
/// deploy and the CLI's.
pub fn install(
    path: &std::path::Path,
    client: &Client,
    payload: &Value,
    previously: &BTreeSet<String>,
    force: bool,
) -> Result<Installed, InstallError> {
    let managed: BTreeMap<String, Value> = payload
        .as_object()
        .ok_or(InstallError::NotEntries)?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let deployed = super::deploy::deploy_guarded(path, client, &managed, previously, !force)?;
    Ok(Installed {
        deployed,
        entries: managed.keys().cloned().collect(),
        removed: previously
            .iter()
            .filter(|n| !managed.contains_key(*n))
            .cloned()
            .collect(),
    })
}

/// Why the entries of a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Deploy(#[from] super::deploy::DeployError),
}

/// The entries named `names` in the client's file at `path` (none when it does not
/// exist).
pub fn read_entries(
    path: &std::path::Path,
    client: &Client,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, Value>, ReadError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| super::deploy::DeployError::NotUtf8 {
            path: path.to_owned(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(super::deploy::DeployError::Io {
                action: "read",
                path: path.to_owned(),
                source: e,
            }
            .into());
        }
    };
    Ok(super::edit::read_managed(client, path, &text, names)
        .map_err(super::deploy::DeployError::from)?)
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

/// `validate_config`'s rules, on values: (errors, warnings).
pub fn validate_payload(
    c: &Client,
    payload: &Value,
    gateway: Option<&str>,
    known_target: &dyn Fn(&str) -> bool,
) -> (Vec<ConfigProblem>, Vec<ConfigProblem>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let problem = |code: &str, path: &str, message: String| ConfigProblem {
        code: code.to_owned(),
        path: path.to_owned(),
        message,
    };
    let Some(entries) = payload.as_object() else {
        errors.push(problem(
            "INVALID_TYPE",
            "",
            "a configuration is an object of entries by name".to_owned(),
        ));
        return (errors, warnings);
    };
    if entries.is_empty() {
        errors.push(problem(
            "EMPTY_CONFIG",
            "",
            "the configuration has no entry; add a server or a profile".to_owned(),
        ));
    }
    if entries.len() > MAX_ENTRIES {
        errors.push(problem(
            "TOO_MANY_SERVERS",
            "",
            format!(
                "{} entries, more than {MAX_ENTRIES}: use a profile to group servers behind one entry",
                entries.len()
            ),
        ));
    }
    for (name, entry) in entries {
        if name.is_empty() || name.chars().any(char::is_control) {
            errors.push(problem(
                "INVALID_NAME",
                name,
                format!("{name:?} is not an entry name"),
            ));
        }
        let Some(fields) = entry.as_object() else {
            errors.push(problem(
                "INVALID_TYPE",
                name,
                "an entry is an object".to_owned(),
            ));
            continue;
        };
        let at = |field: &str| format!("{name}.{field}");
        let url_field = match c.shape {
            Shape::Bridge => None,
            Shape::Http { url_field, .. } => Some(url_field),
            Shape::CodexHttp => Some("url"),
        };
        let has = |field: &str| fields.contains_key(field);
        match (c.shape, url_field) {
            (Shape::Bridge, _) => {
                if has("url") || has("serverUrl") || has("httpUrl") {
                    errors.push(problem(
                        "URL_NOT_SUPPORTED",
                        name,
                        format!(
                            "{} takes no URLs in its file: use a stdio entry (`command`, `args`), such as the `mcp-orchestration gateway` bridge",
                            c.display_name
                        ),
                    ));
                } else if !has("command") {
                    errors.push(problem(
                        "MISSING_COMMAND",
                        name,
                        "a stdio entry needs `command`".to_owned(),
                    ));
                }
            }
            (_, Some(url_field)) if !has(url_field) && !has("command") => {
                errors.push(problem(
                    "MISSING_URL",
                    name,
                    format!("{} reads an HTTP server's address from `{url_field}`; a stdio entry needs `command`", c.display_name),
                ));
            }
            _ => {}
        }
        let expect_string = |field: &str, errors: &mut Vec<ConfigProblem>| {
            if let Some(v) = fields.get(field)
                && !v.is_string()
            {
                errors.push(problem(
                    "INVALID_TYPE",
                    &at(field),
                    "must be a string".to_owned(),
                ));
            }
        };
        for field in ["command", "url", "serverUrl", "httpUrl", "type"] {
            expect_string(field, &mut errors);
        }
        if let Some(args) = fields.get("args")
            && !args
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string))
        {
            errors.push(problem(
                "INVALID_TYPE",
                &at("args"),
                "must be a list of strings".to_owned(),
            ));
        }
        for field in ["env", "headers", "http_headers"] {
            if let Some(v) = fields.get(field)
                && !v
                    .as_object()
                    .is_some_and(|o| o.values().all(Value::is_string))
            {
                errors.push(problem(
                    "INVALID_TYPE",
                    &at(field),
                    "must be an object of strings".to_owned(),
                ));
            }
        }
        let mut texts = Vec::new();
        strings_in(entry, name, &mut texts);
        for (path, text) in texts {
            if let Some(placeholder) = unresolved(c.env_ref, text) {
                errors.push(problem(
                    "UNRESOLVED_PLACEHOLDER",
                    &path,
                    format!(
                        "`{placeholder}` is not something {} expands: give a value, or an environment variable as {}",
                        c.display_name,
                        match c.env_ref {
                            EnvRef::Braces | EnvRef::DollarOrBraces => "${NAME}",
                            EnvRef::EnvColon => "${env:NAME}",
                            EnvRef::Unsupported => "nothing (this client expands no variables)",
                        }
                    ),
                ));
            }
        }
        for path in entry::secrets_in_clear(c, entry) {
            errors.push(problem(
                "SECRET_IN_CLEAR",
                &format!("{name}.{path}"),
                "a credential written in clear; name an environment variable instead, which the client reads when it starts".to_owned(),
            ));
        }
        if let (Some(base), Some(url)) = (
            gateway,
            url_field
                .and_then(|f| fields.get(f))
                .and_then(Value::as_str),
        ) && let Some(path) = url.strip_prefix(base)
            && !known_target(path)
        {
            warnings.push(problem(
                "UNKNOWN_TARGET",
                &at(url_field.unwrap_or("url")),
                format!("the gateway serves nothing at `{path}` under the applied manifest"),
            ));
        }
    }
    (errors, warnings)
}

/// Every string in `value`, with its path.
fn strings_in<'a>(value: &'a Value, path: &str, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => out.push((path.to_owned(), s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings_in(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(fields) => {
            for (k, v) in fields {
                strings_in(v, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// The first placeholder in `text` the client does not expand: a `${...}` outside its
/// syntax, or a template word such as `{port}` (which only the agent's manifest expands).
fn unresolved(env_ref: EnvRef, text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let dollar = bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{');
        let brace = bytes[i] == b'{' && (i == 0 || bytes[i - 1] != b'$');
        if dollar || brace {
            let open = if dollar { i + 2 } else { i + 1 };
            let len = text[open..].find('}')?;
            let inner = &text[open..open + len];
            let whole = &text[i..open + len + 1];
            let word = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            if dollar {
                let fine = match env_ref {
                    EnvRef::Braces => word(inner.split_once(":-").map_or(inner, |(name, _)| name)),
                    EnvRef::DollarOrBraces => word(inner),
                    EnvRef::EnvColon => inner.strip_prefix("env:").is_some_and(word),
                    EnvRef::Unsupported => false,
                };
                if !fine {
                    return Some(whole.to_owned());
                }
            } else if word(inner) {
                return Some(whole.to_owned());
            }
            i = open + len + 1;
        } else {
            i += 1;
        }
    }
    None
}

/// `diff_config`'s status of `subject` against `published` and the older artifacts
/// (newest first), with the id of the older one it matches.
pub fn diff_status(
    subject: &Value,
    published: &Value,
    older: &[(String, Value)],
) -> (&'static str, Option<String>) {
    if subject.as_object().is_none_or(|o| o.is_empty()) {
        return ("not_deployed", None);
    }
    if subject == published {
        return ("up_to_date", None);
    }
    match older.iter().find(|(_, payload)| payload == subject) {
        Some((id, _)) => ("outdated", Some(id.clone())),
        None => ("diverged", None),
    }
}

/// Field-level differences between `deployed` and `published`, sorted by path.
pub fn field_diff(deployed: &Value, published: &Value) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    walk("", Some(deployed), Some(published), &mut changes);
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

fn walk(
    path: &str,
    deployed: Option<&Value>,
    published: Option<&Value>,
    out: &mut Vec<FieldChange>,
) {
    match (deployed, published) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&sub, a.get(k), b.get(k), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange {
            path: path.to_owned(),
            change: match (a, b) {
                (None, Some(_)) => "added",
                (Some(_), None) => "removed",
                _ => "changed",
            }
            .to_owned(),
            deployed: a.cloned(),
            published: b.cloned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> &'static Client {
        registry::client(id).unwrap()
    }

    fn codes(problems: &[ConfigProblem]) -> Vec<(&str, &str)> {
        problems
            .iter()
            .map(|p| (p.code.as_str(), p.path.as_str()))
            .collect()
    }

    #[test]
    fn validation_reports_each_seed_code_where_it_is() {
        let known = |path: &str| path == "/mcp";
        let gw = Some("http://127.0.0.1:7071");
        let check = |id: &str, payload: Value| validate_payload(client(id), &payload, gw, &known);

        assert_eq!(codes(&check("cursor", json!({})).0), [("EMPTY_CONFIG", "")]);
        assert_eq!(codes(&check("cursor", json!([])).0), [("INVALID_TYPE", "")]);
        let many: serde_json::Map<String, Value> = (0..=MAX_ENTRIES)
            .map(|i| (format!("s{i}"), json!({ "url": "http://127.0.0.1:1/mcp" })))
            .collect();
        assert_eq!(
            codes(&check("cursor", Value::Object(many)).0),
            [("TOO_MANY_SERVERS", "")]
        );
        assert_eq!(
            codes(&check("claude-desktop", json!({ "a": { "args": [] } })).0),
            [("MISSING_COMMAND", "a")]
        );
        assert_eq!(
            codes(&check("claude-desktop", json!({ "a": { "url": "http://x/mcp" } })).0),
            [("URL_NOT_SUPPORTED", "a")]
        );
        assert_eq!(
            codes(&check("windsurf", json!({ "a": { "url": "http://x/mcp" } })).0),
            [("MISSING_URL", "a")]
        );
        assert_eq!(
            codes(
                &check(
                    "cursor",
                    json!({ "a": { "command": "x", "args": "--port 1" } })
                )
                .0
            ),
            [("INVALID_TYPE", "a.args")]
        );
        assert_eq!(
            codes(
                &check(
                    "cursor",
                    json!({ "a": { "command": "x", "env": { "N": 1 } } })
                )
                .0
            ),
            [("INVALID_TYPE", "a.env")]
        );
        // Cursor expands ${env:NAME}; a manifest template word or another syntax is not.
        assert_eq!(
            codes(
                &check(
                    "cursor",
                    json!({ "a": { "command": "srv", "args": ["--port", "{port}", "${HOME}"] } })
                )
                .0
            ),
            [
                ("UNRESOLVED_PLACEHOLDER", "a.args[1]"),
                ("UNRESOLVED_PLACEHOLDER", "a.args[2]")
            ]
        );
        assert!(
            check(
                "cursor",
                json!({ "a": { "url": "http://127.0.0.1:7071/mcp",
                               "headers": { "Authorization": "Bearer ${env:KEY}" } } })
            )
            .0
            .is_empty()
        );
        assert_eq!(
            codes(
                &check(
                    "cursor",
                    json!({ "a": { "url": "http://127.0.0.1:7071/mcp",
                                   "headers": { "Authorization": "Bearer s3cr3t" } } })
                )
                .0
            ),
            [("SECRET_IN_CLEAR", "a.headers.Authorization")]
        );
        // Claude Code reads ${VAR} and ${VAR:-default}.
        assert!(
            check(
                "claude-code",
                json!({ "a": { "type": "http", "url": "http://127.0.0.1:7071/mcp",
                               "headers": { "Authorization": "Bearer ${KEY:-none}" } } })
            )
            .0
            .is_empty()
        );
        let (errors, warnings) = check(
            "cursor",
            json!({ "a": { "url": "http://127.0.0.1:7071/profiles/gone/mcp" } }),
        );
        assert!(errors.is_empty());
        assert_eq!(codes(&warnings), [("UNKNOWN_TARGET", "a.url")]);
    }

    #[test]
    fn diff_statuses_and_fields() {
        let v1 = json!({ "fleet": { "url": "http://a/mcp" } });
        let v2 = json!({ "fleet": { "url": "http://b/mcp", "headers": { "X": "${env:K}" } } });
        let older = vec![("sha256:v1".to_owned(), v1.clone())];
        assert_eq!(diff_status(&json!({}), &v2, &older), ("not_deployed", None));
        assert_eq!(diff_status(&v2, &v2, &older), ("up_to_date", None));
        assert_eq!(
            diff_status(&v1, &v2, &older),
            ("outdated", Some("sha256:v1".to_owned()))
        );
        let edited = json!({ "fleet": { "url": "http://c/mcp" } });
        assert_eq!(diff_status(&edited, &v2, &older), ("diverged", None));
        let changes = field_diff(&v1, &v2);
        assert_eq!(
            changes,
            vec![
                FieldChange {
                    path: "fleet.headers".into(),
                    change: "added".into(),
                    deployed: None,
                    published: Some(json!({ "X": "${env:K}" })),
                },
                FieldChange {
                    path: "fleet.url".into(),
                    change: "changed".into(),
                    deployed: Some(json!("http://a/mcp")),
                    published: Some(json!("http://b/mcp")),
                },
            ]
        );
        // The same inputs in another key order give the same list.
        let reordered: Value =
            serde_json::from_str(r#"{"fleet":{"headers":{"X":"${env:K}"},"url":"http://b/mcp"}}"#)
                .unwrap();
        assert_eq!(field_diff(&v1, &reordered), changes);
    }

    #[test]
    fn entry_names_and_paths() {
        assert_eq!(entry_name("default"), "mcp-orchestration");
        assert_eq!(entry_name("dev"), "mcp-orchestration-dev");
        assert_eq!(path_of_profile("default"), "/mcp");
        assert_eq!(path_of_profile("dev"), "/profiles/dev/mcp");
        assert_eq!(path_of_server("gh"), "/servers/gh/mcp");
    }

    #[test]
    fn install_refuses_an_entry_it_did_not_write_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp.json");
        let original =
            "{\n  \"mcpServers\": {\n    \"fleet\": { \"url\": \"http://theirs/mcp\" }\n  }\n}\n";
        std::fs::write(&path, original).unwrap();
        let ours = json!({ "fleet": { "url": "http://127.0.0.1:7071/mcp" } });
        let e = install(&path, client("cursor"), &ours, &BTreeSet::new(), false).unwrap_err();
        assert!(
            matches!(
                e,
                InstallError::Deploy(super::super::deploy::DeployError::Unmanaged { ref names, .. })
                    if names == &["fleet"]
            ),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
        // Forced, it replaces the entry; the next deploy of ours knows it is ours.
        let done = install(&path, client("cursor"), &ours, &BTreeSet::new(), true).unwrap();
        assert!(done.deployed.changed);
        let previously: BTreeSet<String> = ["fleet".to_owned()].into();
        let again = install(&path, client("cursor"), &ours, &previously, false).unwrap();
        assert!(!again.deployed.changed);
        // An entry that is already exactly ours is taken over without `force`.
        let fresh = install(&path, client("cursor"), &ours, &BTreeSet::new(), false).unwrap();
        assert!(!fresh.deployed.changed);
    }
}
