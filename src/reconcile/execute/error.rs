//! Why the executor could not carry out a change, and whether trying again later can
//! succeed without anyone changing anything.

use crate::runtime::RuntimeError;

#[derive(Clone, Debug, thiserror::Error)]
pub enum ExecuteError {
    /// Another change holds the server's lock (recovery never fights a rollout).
    #[error("a rollout is in progress; recovery waits")]
    Busy,
    /// The runtime could not do its part.
    #[error("{doing}: {source}")]
    Runtime {
        doing: &'static str,
        #[source]
        source: RuntimeError,
    },
    /// The rollout ran and failed: the new instance did not pass its health gate (or could
    /// not start at all); the reason carries what explains it.
    #[error("{0}")]
    Failed(String),
    /// A server it depends on is not healthy (or its own change failed): nothing was done,
    /// and the change waits for it.
    #[error("waits for {}: {why}", .on.join(", "))]
    Blocked { on: Vec<String>, why: String },
}

impl ExecuteError {
    pub fn runtime(doing: &'static str) -> impl FnOnce(RuntimeError) -> ExecuteError {
        move |source| ExecuteError::Runtime { doing, source }
    }

    /// Whether the same change can succeed later as it is: the server was busy, or the
    /// runtime itself was unavailable (a Docker daemon restarting). A failed gate is the
    /// version's or the spec's doing, and is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecuteError::Busy => true,
            ExecuteError::Runtime { source, .. } => source.is_retryable(),
            ExecuteError::Failed(_) => false,
            ExecuteError::Blocked { .. } => true,
        }
    }
}
