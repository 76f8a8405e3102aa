//! The profiles' endpoints: `/profiles/{id}/mcp` shows only what the applied manifest's
//! profile `id` names (its servers; of each, every tool or the listed ones),
//! `/servers/{id}/mcp` one server, and `GET /profiles` says what each profile shows and
//! which listed tools no server offers.
//!
//! Each profile gets its own MCP service, made at its first request, with its own client
//! sessions kept under `gateway-sessions/profiles/{id}/`: a session opened on one profile's
//! path is never restored on another's. A profile a commit removes answers 404 to new
//! requests, and its open sessions see an empty catalog (with `list_changed`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::backends::Backends;
use super::service::{Gateway, Scope, Sessions, http_service, open_sessions};
use super::sessions::{SessionFiles, SessionKey};
use super::shortcut::Endpoint;
use crate::api::ApiError;
use crate::fleet::ControlError;
use crate::manifest::{DEFAULT_PROFILE, Profile};

/// The profiles' MCP services, made as they are first asked for.
pub struct Endpoints {
    gateway: Gateway,
    backends: Backends,
    key: SessionKey,
    /// `gateway-sessions/profiles` in the data dir.
    sessions_dir: PathBuf,
    any_host: bool,
    shutdown: CancellationToken,
    /// Std lock: held only to look up or insert, never across an await.
    services: Mutex<HashMap<Scope, (Endpoint, Arc<Sessions>)>>,
}

impl Endpoints {
    pub fn new(
        gateway: Gateway,
        backends: Backends,
        key: SessionKey,
        sessions_dir: PathBuf,
        any_host: bool,
        shutdown: CancellationToken,
    ) -> Endpoints {
        Endpoints {
            gateway,
            backends,
            key,
            sessions_dir,
            any_host,
            shutdown,
            services: Mutex::new(HashMap::new()),
        }
    }

    /// The service of `scope`, made now if this is the first request for it. `default`
    /// is the whole fleet.
    async fn service(&self, scope: &Scope) -> std::io::Result<Endpoint> {
        if let Some((service, _)) = self.services().get(scope) {
            return Ok(service.clone());
        }
        // The sessions' directory is made and pruned on the blocking pool, outside the
        // lock; if two first requests race, the first service stored wins.
        let (dir, key) = (self.sessions_dir(scope), self.key.clone());
        let files = tokio::task::spawn_blocking(move || SessionFiles::open(dir, key))
            .await
            .map_err(std::io::Error::other)??;
        let sessions = Arc::new(Sessions::new(self.key.clone()));
        let gateway = match scope {
            Scope::Profile(id) if id == DEFAULT_PROFILE => self.gateway.clone(),
            _ => self.gateway.scoped(scope.clone()),
        };
        let service = Endpoint::new(
            http_service(
                gateway.clone(),
                sessions.clone(),
                Arc::new(files),
                self.any_host,
                self.shutdown.clone(),
            ),
            gateway,
            sessions.clone(),
            self.any_host,
        );
        let mut services = self.services();
        let (service, _) = services.entry(scope.clone()).or_insert((service, sessions));
        Ok(service.clone())
    }

    fn services(&self) -> std::sync::MutexGuard<'_, HashMap<Scope, (Endpoint, Arc<Sessions>)>> {
        self.services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sessions_dir(&self, scope: &Scope) -> PathBuf {
        match scope {
            Scope::Profile(id) => self.sessions_dir.join(id),
            // Beside `profiles/`: `{data-dir}/gateway-sessions/servers/{id}`.
            Scope::Server(id) => self
                .sessions_dir
                .parent()
                .unwrap_or(&self.sessions_dir)
                .join("servers")
                .join(id),
        }
    }

    /// The sessions of every path made so far, out of the lock so they can be awaited.
    fn all_sessions(&self) -> Vec<Arc<Sessions>> {
        self.services().values().map(|(_, s)| s.clone()).collect()
    }

    /// Closes the sessions on the profiles' paths no request named for `idle`.
    pub async fn close_idle(&self, idle: std::time::Duration) {
        for s in self.all_sessions() {
            s.close_idle(idle).await;
        }
    }

    /// Client sessions open on the profiles' paths.
    pub async fn open_sessions(&self) -> usize {
        let mut n = 0;
        for s in self.all_sessions() {
            n += open_sessions(&s).await;
        }
        n
    }
}

/// The header a streamable HTTP client names its session in.
const SESSION_ID: &str = "mcp-session-id";

/// Any method on `/profiles/{id}/mcp`: the profile's MCP endpoint (`default`'s is the
/// whole fleet, as `/mcp`).
pub async fn profile_mcp(
    State(endpoints): State<Arc<Endpoints>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let known = id == DEFAULT_PROFILE || endpoints.gateway.control().view.profile(&id).is_some();
    serve(
        &endpoints,
        Scope::Profile(id.clone()),
        known,
        request,
        || ControlError::profile_not_found(&id),
    )
    .await
}

/// Any method on `/servers/{id}/mcp`: one server's tools, prompts and resources, under
/// the same names as on `/mcp`.
pub async fn server_mcp(
    State(endpoints): State<Arc<Endpoints>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let known = endpoints.gateway.control().view.has_server(&id);
    serve(
        &endpoints,
        Scope::Server(id.clone()),
        known,
        request,
        || ControlError::server_not_found(&id),
    )
    .await
}

/// A scope that went away (a commit removed the profile or the server) keeps serving the
/// sessions opened on it, with nothing in them, but opens no new ones: a request without
/// a session id (an `initialize`) is refused.
async fn serve(
    endpoints: &Endpoints,
    scope: Scope,
    known: bool,
    request: Request,
    missing: impl FnOnce() -> ControlError,
) -> Response {
    let opened = endpoints
        .services
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains_key(&scope);
    // Only a request on an open session goes through to a scope that went away.
    let on_a_session = request.headers().contains_key(SESSION_ID);
    let served = known || (opened && on_a_session);
    if !served {
        return ApiError::from(missing()).into_response();
    }
    match endpoints.service(&scope).await {
        Ok(service) => service.handle(request).await.into_response(),
        Err(e) => ApiError::from(ControlError::Internal(format!(
            "cannot keep the sessions of {scope:?} in {}: {e}",
            endpoints.sessions_dir(&scope).display()
        )))
        .into_response(),
    }
}

/// One profile as the gateway serves it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProfileView {
    pub id: String,
    pub description: Option<String>,
    /// Its MCP endpoint on the gateway's listener: `/mcp` for `default`,
    /// `/profiles/{id}/mcp` for the others.
    pub path: String,
    /// The servers it shows.
    pub servers: Vec<String>,
    /// The tools it shows now, under their gateway names.
    pub tools: Vec<String>,
    /// Tools the profile lists that their server does not offer now (server → tool
    /// names): a typo, or a tool the running version lacks.
    pub missing_tools: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProfilesView {
    pub profiles: Vec<ProfileView>,
}

/// `GET /profiles`: `default` and every profile of the applied manifest.
pub async fn list(State(endpoints): State<Arc<Endpoints>>) -> Json<ProfilesView> {
    let fleet = endpoints.gateway.control().fleet();
    let whole = Profile {
        id: DEFAULT_PROFILE.to_owned(),
        description: Some("Every server of the fleet".to_owned()),
        servers: fleet
            .servers
            .iter()
            .map(|s| crate::manifest::ProfileServer {
                id: s.id.clone(),
                tools: None,
            })
            .collect(),
    };
    let profiles = std::iter::once(whole)
        .chain(fleet.profiles.iter().cloned())
        .map(|p| view(&endpoints.backends, p))
        .collect();
    Json(ProfilesView { profiles })
}

fn view(backends: &Backends, p: Profile) -> ProfileView {
    let mut tools = Vec::new();
    let mut missing_tools = BTreeMap::new();
    for s in &p.servers {
        let Some(backend) = backends.get(&s.id) else {
            continue;
        };
        tools.extend(
            backend
                .served(&s.id)
                .filter(|(_, tool)| p.shows_tool(&s.id, &tool.name))
                .map(|(name, _)| name),
        );
        let missing: Vec<String> = s
            .tools
            .iter()
            .flatten()
            .filter(|t| {
                !backend
                    .offer
                    .tools
                    .iter()
                    .any(|offered| offered.name == **t)
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            missing_tools.insert(s.id.clone(), missing);
        }
    }
    ProfileView {
        path: if p.id == DEFAULT_PROFILE {
            "/mcp".to_owned()
        } else {
            format!("/profiles/{}/mcp", p.id)
        },
        servers: p.servers.iter().map(|s| s.id.clone()).collect(),
        id: p.id,
        description: p.description,
        tools,
        missing_tools,
    }
}
