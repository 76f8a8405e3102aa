//! The profiles' endpoints: `/profiles/{id}/mcp` shows only what the applied manifest's
//! profile `id` names (its servers; of each, every tool or the listed ones), and
//! `GET /profiles` says what each profile shows and which listed tools no server offers.
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
use super::service::{Gateway, HttpService, Sessions, http_service, open_sessions};
use super::sessions::{SessionFiles, SessionKey};
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
    services: Mutex<HashMap<String, (HttpService, Arc<Sessions>)>>,
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

    /// Profile `id`'s service, made now if it is the first request for it.
    fn service(&self, id: &str) -> std::io::Result<HttpService> {
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((service, _)) = services.get(id) {
            return Ok(service.clone());
        }
        let files = SessionFiles::open(self.sessions_dir.join(id), self.key.clone())?;
        let sessions = Arc::new(Sessions::new(self.key.clone()));
        let gateway = if id == DEFAULT_PROFILE {
            self.gateway.clone()
        } else {
            self.gateway.for_profile(id)
        };
        let service = http_service(
            gateway,
            sessions.clone(),
            Arc::new(files),
            self.any_host,
            self.shutdown.clone(),
        );
        services.insert(id.to_owned(), (service.clone(), sessions));
        Ok(service)
    }

    /// Client sessions open on the profiles' paths.
    pub async fn open_sessions(&self) -> usize {
        let sessions: Vec<Arc<Sessions>> = self
            .services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|(_, s)| s.clone())
            .collect();
        let mut n = 0;
        for s in sessions {
            n += open_sessions(&s).await;
        }
        n
    }
}

/// The header a streamable HTTP client names its session in.
const SESSION_ID: &str = "mcp-session-id";

/// Any method on `/profiles/{id}/mcp`: the profile's MCP endpoint (`default`'s is the
/// whole fleet, as `/mcp`).
pub async fn mcp(
    State(endpoints): State<Arc<Endpoints>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let known = id == DEFAULT_PROFILE || endpoints.gateway.control().view.profile(&id).is_some();
    // A profile that was removed keeps serving the sessions opened on it (with nothing
    // in them), but opens no new ones: only a request on a session goes through.
    let opened = endpoints
        .services
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains_key(&id);
    let on_a_session = request.headers().contains_key(SESSION_ID);
    let served = known || (opened && on_a_session);
    if !served {
        return ApiError::from(ControlError::profile_not_found(&id)).into_response();
    }
    match endpoints.service(&id) {
        Ok(service) => service
            .handle(request)
            .await
            .map(axum::body::Body::new)
            .into_response(),
        Err(e) => ApiError::from(ControlError::Internal(format!(
            "cannot keep profile `{id}`'s sessions in {}: {e}",
            endpoints.sessions_dir.join(&id).display()
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
            .filter(|t| !backend.tools.iter().any(|offered| offered.name == **t))
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
