//! Why an operation on the fleet could not be carried out, in four kinds every surface can
//! show: the HTTP API maps them to status codes, the MCP tools to tool errors, and both
//! carry the same stable code and message.

use serde_json::{Value, json};

use crate::store::StoreError;

/// What an operator asked for does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    Server,
    Rollout,
    Revision,
    /// A profile of the applied manifest (`default` always exists).
    Profile,
    /// An MCP client the agent writes configurations for.
    Client,
    /// A published configuration artifact.
    Artifact,
    /// A commit of the watched repository, as the agent's mirror has it.
    Commit,
    /// A webhook subscription.
    Subscription,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{}", not_found_message(*.what, .id))]
    NotFound { what: Missing, id: String },
    /// The request is understood but the fleet's state does not allow it now.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (a version that is not one, a limit out of range).
    #[error("{0}")]
    Invalid(String),
    /// The agent could not do its part; the message carries every cause.
    #[error("{0}")]
    Internal(String),
    /// Well-formed, but what it names is in a state that refuses it, for a reason a client
    /// can act on (a configuration that does not validate, an artifact whose signature does
    /// not hold, a user's file that is not valid JSON): a conflict with a code of its own
    /// and structured details.
    #[error("{message}")]
    Refused {
        code: &'static str,
        message: String,
        details: Value,
    },
}

fn not_found_message(what: Missing, id: &str) -> String {
    match what {
        Missing::Server => format!("no server `{id}` in the applied manifest"),
        Missing::Rollout => format!("no rollout `{id}`"),
        Missing::Revision => {
            format!("no run for a commit starting with `{id}` (give at least 4 hex characters)")
        }
        Missing::Client => {
            format!("no MCP client `{id}` (`GET /v1/clients` lists the clients known)")
        }
        Missing::Artifact => format!("no published configuration artifact `{id}`"),
        Missing::Commit => format!(
            "no commit `{id}` in the agent's mirror of the repository (it holds what the agent last fetched of its branch)"
        ),
        Missing::Subscription => {
            format!("no webhook subscription `{id}` (`GET /v1/webhooks` lists the subscriptions)")
        }
        Missing::Profile => format!(
            "no profile `{id}` in the applied manifest (`default` is the whole fleet; the gateway's `GET /profiles` lists the others)"
        ),
    }
}

impl ControlError {
    pub fn server_not_found(id: &str) -> ControlError {
        ControlError::NotFound {
            what: Missing::Server,
            id: id.to_owned(),
        }
    }

    pub fn not_found(what: Missing, id: &str) -> ControlError {
        ControlError::NotFound {
            what,
            id: id.to_owned(),
        }
    }

    pub fn profile_not_found(id: &str) -> ControlError {
        ControlError::NotFound {
            what: Missing::Profile,
            id: id.to_owned(),
        }
    }

    /// The stable code both surfaces report (documented with the API's error envelope).
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::NotFound {
                what: Missing::Server,
                ..
            } => "SERVER_NOT_FOUND",
            ControlError::NotFound {
                what: Missing::Rollout,
                ..
            } => "ROLLOUT_NOT_FOUND",
            ControlError::NotFound {
                what: Missing::Revision,
                ..
            } => "REVISION_NOT_FOUND",
            ControlError::NotFound {
                what: Missing::Profile,
                ..
            } => "PROFILE_NOT_FOUND",
            ControlError::NotFound {
                what: Missing::Client,
                ..
            } => "CLIENT_NOT_FOUND",
            ControlError::NotFound {
                what: Missing::Artifact,
                ..
            } => "ARTIFACT_NOT_FOUND",
            ControlError::NotFound {
                what: Missing::Commit,
                ..
            } => "COMMIT_NOT_FOUND",
            ControlError::NotFound {
                what: Missing::Subscription,
                ..
            } => "SUBSCRIPTION_NOT_FOUND",
            ControlError::Refused { code, .. } => code,
            ControlError::Conflict(_) => "CONFLICT",
            ControlError::Invalid(_) => "VALIDATION_FAILED",
            ControlError::Internal(_) => "INTERNAL",
        }
    }

    /// Structured context for a client (`{"server_id": …}`), or null.
    pub fn details(&self) -> Value {
        match self {
            ControlError::NotFound {
                what: Missing::Server,
                id,
            } => json!({ "server_id": id }),
            ControlError::NotFound {
                what: Missing::Profile,
                id,
            } => json!({ "profile": id }),
            ControlError::NotFound {
                what: Missing::Client,
                id,
            } => json!({ "client": id }),
            ControlError::NotFound {
                what: Missing::Artifact,
                id,
            } => json!({ "artifact": id }),
            ControlError::NotFound {
                what: Missing::Commit,
                id,
            } => json!({ "commit": id }),
            ControlError::NotFound {
                what: Missing::Subscription,
                id,
            } => json!({ "subscription": id }),
            ControlError::Refused { details, .. } => details.clone(),
            _ => Value::Null,
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> ControlError {
        ControlError::Internal(crate::error_text::chain(&e))
    }
}

impl From<crate::subscriptions::SubscriptionError> for ControlError {
    fn from(e: crate::subscriptions::SubscriptionError) -> ControlError {
        use crate::subscriptions::SubscriptionError as E;
        match e {
            E::NotFound(id) => ControlError::not_found(Missing::Subscription, &id),
            E::Invalid(message) => ControlError::Invalid(message),
            // Well formed, but the operator's trust policy says no; a client can act on it
            // (ask for the prefix to be listed).
            E::Refused(message) => ControlError::Refused {
                code: "URL_NOT_ALLOWED",
                message,
                details: Value::Null,
            },
            E::Store(e) => e.into(),
        }
    }
}
