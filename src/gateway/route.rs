//! Where a call goes, decided from the server's place in the fleet view alone (pure): to
//! its instance, with a warning when it is degraded, or nowhere, with the seed's
//! `BACKEND_UNHEALTHY` answer naming every tool the backend contributes.

use jiff::Timestamp;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::json;

use crate::fleet::ServerView;
use crate::health::HealthState;

/// The decision for one call.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// Call the instance at `endpoint`; `warning` goes into the result's `_meta`.
    Call {
        endpoint: String,
        warning: Option<String>,
    },
    /// Answer `BACKEND_UNHEALTHY` without calling anything.
    Unhealthy(Unavailable),
}

/// Why a backend takes no calls, in the words of the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Unavailable {
    pub backend: String,
    /// The health state, or the deployment state when nothing runs (`stopped`, `failed`,
    /// `pending`, `removing`).
    pub state: String,
    pub since: Timestamp,
    pub reason: Option<String>,
    /// What the user (or their agent) can do about it.
    pub suggested_action: String,
}

/// Routes a call to `server`: a running instance that is not known to be broken takes it.
/// `unknown` (just switched to, or not probed yet) and `starting` (a rollout is testing a
/// new instance while this one still serves) are routed: the instance in the view is the
/// one the executor has published, and it passed its health gate or is the one serving.
pub fn route(server: &ServerView) -> Route {
    let id = &server.id;
    let unavailable = |state: &str, since: Timestamp, reason: Option<String>, action: String| {
        Route::Unhealthy(Unavailable {
            backend: id.clone(),
            state: state.to_owned(),
            since,
            reason,
            suggested_action: action,
        })
    };
    let not_running = || {
        let action = match server.state.as_str() {
            "stopped" => {
                format!("an operator stopped it; `mcp-orchestration deploy {id}` starts it again")
            }
            "failed" => {
                format!("its version failed to roll out; see `mcp-orchestration history {id}`")
            }
            "removing" => "it is leaving the fleet".to_owned(),
            _ => "it is not running yet; retry in a moment".to_owned(),
        };
        unavailable(&server.state, server.since, server.reason.clone(), action)
    };
    let Some(endpoint) = server.endpoint.clone() else {
        return not_running();
    };
    if server.state == "stopped" || server.state == "removing" {
        return not_running();
    }
    let since = server.health_since.unwrap_or(server.since);
    match server.health {
        Some(HealthState::Unhealthy) => unavailable(
            "unhealthy",
            since,
            server.health_reason.clone(),
            format!("retry later: the agent is recovering it (`mcp-orchestration status {id}`)"),
        ),
        Some(HealthState::Failed) => unavailable(
            "failed",
            since,
            server.health_reason.clone(),
            format!(
                "recovery gave up; see `mcp-orchestration events --server {id}`, then restart it (POST /servers/{id}/restart)"
            ),
        ),
        Some(HealthState::Degraded) => Route::Call {
            endpoint,
            warning: Some(format!(
                "backend '{}' is degraded since {since}{}",
                server.id,
                server
                    .health_reason
                    .as_deref()
                    .map(|r| format!(": {}", first_line(r)))
                    .unwrap_or_default()
            )),
        },
        _ => Route::Call {
            endpoint,
            warning: None,
        },
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

impl Unavailable {
    /// The answer to a call that cannot be routed: a tool error whose text starts with
    /// `BACKEND_UNHEALTHY` and whose structured content says which backend, since when, why,
    /// what to do, and which tools share its fate.
    pub fn answer(&self, affected_tools: Vec<String>) -> CallToolResult {
        let message = format!("Backend '{}' is currently {}", self.backend, self.state);
        let suggested_action = &self.suggested_action;
        let why = self
            .reason
            .as_deref()
            .map(|r| format!(" ({})", first_line(r)))
            .unwrap_or_default();
        let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
            "BACKEND_UNHEALTHY: {message} since {}{why}; {suggested_action}",
            self.since
        ))]);
        result.structured_content = Some(json!({
            "error": "BACKEND_UNHEALTHY",
            "backend": self.backend,
            "state": self.state,
            "since": self.since,
            "message": message,
            "reason": self.reason,
            "suggested_action": suggested_action,
            "affected_tools": affected_tools,
        }));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Transport;

    fn running(health: Option<HealthState>) -> ServerView {
        ServerView {
            id: "files".into(),
            name: None,
            transport: Transport::StreamableHttp,
            endpoint: Some("http://127.0.0.1:9000/mcp".into()),
            desired_version: "1.0.0".into(),
            running_version: Some("1.0.0".into()),
            state: "running".into(),
            reason: None,
            instance_id: Some("i1".into()),
            revision: None,
            since: Timestamp::UNIX_EPOCH,
            update_available: None,
            pinned_version: None,
            health,
            health_since: Some(Timestamp::UNIX_EPOCH),
            health_reason: Some("HTTP 503\nmore".into()),
            gateway_tools: None,
            gateway_calls: None,
            tasks: Vec::new(),
            blocked_by: Vec::new(),
            held_by_window: None,
        }
    }

    #[test]
    fn healthy_unknown_and_starting_instances_take_calls() {
        for h in [
            Some(HealthState::Healthy),
            Some(HealthState::Unknown),
            Some(HealthState::Starting),
            None,
        ] {
            assert_eq!(
                route(&running(h)),
                Route::Call {
                    endpoint: "http://127.0.0.1:9000/mcp".into(),
                    warning: None
                },
                "{h:?}"
            );
        }
    }

    #[test]
    fn a_degraded_instance_takes_calls_with_a_warning() {
        let Route::Call {
            warning: Some(w), ..
        } = route(&running(Some(HealthState::Degraded)))
        else {
            panic!("not routed with a warning");
        };
        assert!(w.contains("'files' is degraded"), "{w}");
        assert!(w.ends_with(": HTTP 503"), "{w}");
    }

    #[test]
    fn unhealthy_failed_stopped_and_absent_instances_take_none() {
        for h in [HealthState::Unhealthy, HealthState::Failed] {
            let Route::Unhealthy(u) = route(&running(Some(h))) else {
                panic!("{h:?} routed");
            };
            assert_eq!(u.state, h.to_string());
        }
        let mut stopped = running(None);
        stopped.state = "stopped".into();
        stopped.endpoint = None;
        let Route::Unhealthy(u) = route(&stopped) else {
            panic!("stopped routed");
        };
        assert_eq!(u.state, "stopped");
    }

    #[test]
    fn the_unhealthy_answer_names_the_backend_and_its_tools() {
        let Route::Unhealthy(u) = route(&running(Some(HealthState::Unhealthy))) else {
            panic!("routed");
        };
        let r = u.answer(vec!["files_read".into(), "files_write".into()]);
        assert_eq!(r.is_error, Some(true));
        let text = serde_json::to_value(&r.content).unwrap();
        assert!(
            text[0]["text"]
                .as_str()
                .unwrap()
                .starts_with("BACKEND_UNHEALTHY: Backend 'files' is currently unhealthy"),
            "{text}"
        );
        let s = r.structured_content.unwrap();
        assert_eq!(s["backend"], "files");
        assert_eq!(s["affected_tools"], json!(["files_read", "files_write"]));
        assert_eq!(s["message"], "Backend 'files' is currently unhealthy");
    }
}
