//! A call's progress, from its backend to its client: a client that sends a
//! `progressToken` with a `tools/call` hears the backend's `notifications/progress` for it,
//! under its own token, on the call's stream.
//!
//! On the short way (`forward`) a call has an answer stream of its own, so what arrives
//! there with the client's token is that call's progress. A call through the backend's rmcp
//! session shares that session with every client's calls, and two clients may well pick
//! the same token (rmcp numbers them per session, the Python SDK uses the request id):
//! rmcp's client puts a token of its own, unique in the session, on every request it
//! sends, and [`Routes`] maps that one back to the client's call. The session's event
//! streams hand progress to the routes as they are read (`BackendHttp::tap`), not through
//! rmcp's handler: rmcp runs each notification's handler as a task of its own, which may
//! run after the answer that followed it was taken, and then the client would hear it
//! after the answer, or not at all.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use tokio::sync::mpsc;

/// How long progress that came before its call was routed is kept for it, and how much.
const EARLY_KEPT: Duration = Duration::from_secs(1);
const EARLY_MAX: usize = 64;

/// The client's side of a call that asked for progress: its token, and where its
/// notifications go.
#[derive(Clone)]
pub struct Progress {
    token: ProgressToken,
    to: To,
}

#[derive(Clone)]
enum To {
    /// The client's rmcp session, which puts it on the call's stream.
    Session(Peer<RoleServer>),
    /// The shortcut's answer to the call (`shortcut`).
    Answer(mpsc::UnboundedSender<ProgressNotificationParam>),
}

impl Progress {
    /// Progress for the call of `peer`'s client that chose `token`.
    pub fn to_session(token: ProgressToken, peer: Peer<RoleServer>) -> Progress {
        Progress {
            token,
            to: To::Session(peer),
        }
    }

    /// Progress for a call answered by the shortcut, which reads it from `answer`.
    pub fn to_answer(
        token: ProgressToken,
        answer: mpsc::UnboundedSender<ProgressNotificationParam>,
    ) -> Progress {
        Progress {
            token,
            to: To::Answer(answer),
        }
    }

    /// The token the client chose.
    pub fn token(&self) -> &ProgressToken {
        &self.token
    }

    /// Passes a backend's `progress` on to the client, under the client's token. A client
    /// gone meanwhile is no failure of the call.
    pub async fn forward(&self, mut progress: ProgressNotificationParam) {
        progress.progress_token = self.token.clone();
        match &self.to {
            To::Session(peer) => {
                if let Err(e) = peer.notify_progress(progress).await {
                    tracing::debug!(error = %e, "a call's progress did not reach its client");
                }
            }
            To::Answer(answer) => {
                let _ = answer.send(progress);
            }
        }
    }
}

/// The calls of one backend session that asked for progress, by the token the session
/// sent them with (each call a [`Progress`], a plain value in unit tests).
pub struct Routes<T = Progress> {
    state: Mutex<State<T>>,
}

struct State<T> {
    open: HashMap<ProgressToken, T>,
    /// Progress for no open call: a call is routed once its request is on its way, and a
    /// quick backend may be heard from before that.
    early: VecDeque<(Instant, ProgressNotificationParam)>,
}

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Routes {
            state: Mutex::new(State {
                open: HashMap::new(),
                early: VecDeque::new(),
            }),
        }
    }
}

impl<T: Clone> Routes<T> {
    /// Routes the progress under `token` to `call` until the guard is dropped; returns
    /// what was heard for it already, in order.
    pub fn open(
        &self,
        token: ProgressToken,
        call: T,
    ) -> (Route<'_, T>, Vec<ProgressNotificationParam>) {
        let mut heard = Vec::new();
        if let Ok(mut state) = self.state.lock() {
            heard = state.unrouted(&token);
            state.open.insert(token.clone(), call);
        }
        (
            Route {
                routes: self,
                token,
            },
            heard,
        )
    }

    /// The call `progress` belongs to; progress for none is kept a moment for a call
    /// about to be routed.
    pub fn route(&self, progress: &ProgressNotificationParam) -> Option<T> {
        let mut state = self.state.lock().ok()?;
        if let Some(call) = state.open.get(&progress.progress_token) {
            return Some(call.clone());
        }
        let now = Instant::now();
        while state
            .early
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > EARLY_KEPT)
            || state.early.len() >= EARLY_MAX
        {
            state.early.pop_front();
        }
        state.early.push_back((now, progress.clone()));
        None
    }
}

impl<T> State<T> {
    /// The progress under `token` heard for no open call, taken out in order.
    fn unrouted(&mut self, token: &ProgressToken) -> Vec<ProgressNotificationParam> {
        let mut heard = Vec::new();
        self.early.retain(|(_, p)| {
            let mine = p.progress_token == *token;
            if mine {
                heard.push(p.clone());
            }
            !mine
        });
        heard
    }
}

impl Routes {
    /// Passes `progress` on to its call, or keeps it a moment for a call about to be
    /// routed.
    pub async fn pass_on(&self, progress: ProgressNotificationParam) {
        if let Some(call) = self.route(&progress) {
            call.forward(progress).await;
        }
    }
}

/// A routed token; dropped when its call has its answer, after which progress for it is
/// dropped too.
pub struct Route<'a, T = Progress> {
    routes: &'a Routes<T>,
    token: ProgressToken,
}

impl<T> Drop for Route<'_, T> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.routes.state.lock() {
            state.open.remove(&self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::NumberOrString;

    fn token(n: i64) -> ProgressToken {
        ProgressToken(NumberOrString::Number(n))
    }

    fn heard(n: i64, progress: f64) -> ProgressNotificationParam {
        ProgressNotificationParam::new(token(n), progress)
    }

    #[test]
    fn progress_reaches_the_call_of_its_token_while_the_call_is_open() {
        let routes = Routes::<&str>::default();
        let (first, _) = routes.open(token(1), "first");
        let (_second, _) = routes.open(token(2), "second");
        assert_eq!(routes.route(&heard(1, 1.0)), Some("first"));
        assert_eq!(routes.route(&heard(2, 1.0)), Some("second"));
        drop(first);
        assert_eq!(
            routes.route(&heard(1, 2.0)),
            None,
            "late progress of an ended call"
        );
        assert_eq!(routes.route(&heard(2, 2.0)), Some("second"));
    }

    #[test]
    fn progress_heard_before_its_call_is_routed_is_handed_over_in_order() {
        let routes = Routes::<&str>::default();
        assert_eq!(routes.route(&heard(3, 1.0)), None);
        assert_eq!(routes.route(&heard(4, 1.0)), None);
        assert_eq!(routes.route(&heard(3, 2.0)), None);
        let (_route, early) = routes.open(token(3), "third");
        let early: Vec<f64> = early.iter().map(|p| p.progress).collect();
        assert_eq!(early, [1.0, 2.0]);
        // Handed over once; another call's stays for it.
        let (_again, none) = routes.open(token(3), "third");
        assert!(none.is_empty());
        let (_fourth, early) = routes.open(token(4), "fourth");
        assert_eq!(early.len(), 1);
    }

    #[test]
    fn unrouted_progress_is_kept_within_bounds() {
        let routes = Routes::<&str>::default();
        for n in 0..(EARLY_MAX as i64 * 2) {
            assert_eq!(routes.route(&heard(n, 1.0)), None);
        }
        assert_eq!(routes.state.lock().unwrap().early.len(), EARLY_MAX);
        let (_oldest, early) = routes.open(token(0), "oldest");
        assert!(early.is_empty(), "the oldest made room");
        let (_newest, early) = routes.open(token(EARLY_MAX as i64 * 2 - 1), "newest");
        assert_eq!(early.len(), 1);
    }
}
