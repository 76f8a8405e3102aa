//! `GET /events`: every state change as Server-Sent Events, and `GET /events/history` for
//! the same log as JSON.
//!
//! Each SSE event carries the log id as its `id:`, so a client that reconnects with
//! `Last-Event-ID` (browsers' `EventSource` does so by itself) gets everything after it that
//! is still retained, then the live stream, with nothing twice. A subscriber that falls
//! behind the live broadcast re-reads the log instead of losing events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::ApiError;
use super::ApiState;
use crate::store::{Event, EventFilter};

/// Events re-read from the log per query while catching a client up.
const PAGE: usize = 500;
/// At most this many past events are replayed when a client asks for a backlog.
pub(super) const MAX_BACKLOG: usize = 1000;

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Only this server's events.
    server: Option<String>,
    /// Only events whose kind starts with this (`health`, `rollout`, `run.finished`).
    kind: Option<String>,
    /// Replay the newest N retained events (of `server` when given, of every kind) before
    /// the live ones (ignored with `Last-Event-ID` / `after`, which replay everything
    /// after that id).
    #[schemars(range(max = MAX_BACKLOG))]
    backlog: Option<usize>,
    /// Like `Last-Event-ID`, for clients that cannot set headers.
    #[schemars(range(min = 0))]
    after: Option<i64>,
}

struct Filter {
    server: Option<String>,
    kind: Option<String>,
}

impl Filter {
    fn wants(&self, e: &Event) -> bool {
        self.server
            .as_deref()
            .is_none_or(|s| e.server_id.as_deref() == Some(s))
            && self.kind.as_deref().is_none_or(|k| e.kind.starts_with(k))
    }
}

fn sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.id.to_string())
        .event(e.kind.clone())
        .json_data(e)
        .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event"))
}

/// `GET /events?server=&kind=&backlog=&after=`, honouring `Last-Event-ID`.
pub async fn stream(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    ApiError::validation_failed(
                        "Last-Event-ID must be an event id (a non-negative integer)",
                    )
                })
        })
        .transpose()?;
    let resume_after = crate::fleet::after(header.or(q.after))?;
    let backlog = q.backlog.unwrap_or(0);
    if backlog > MAX_BACKLOG {
        return Err(ApiError::validation_failed(format!(
            "`backlog` is at most {MAX_BACKLOG}"
        )));
    }
    let filter = Filter {
        server: q.server,
        kind: q.kind,
    };
    // Where the stream starts is read before subscribing, and the log is read after: an
    // event committed in between is in the log, and duplicates are skipped by id.
    let mut notice = None;
    let start = match resume_after {
        Some(id) => {
            let latest = latest_id(&state).await?;
            if id > latest {
                // An id this log never gave (its data dir was wiped, or another agent's):
                // waiting for ids to pass it would hide everything until then.
                notice = Some(reset_note(id, latest));
                latest
            } else {
                id
            }
        }
        None if backlog > 0 => {
            let server = filter.server.clone();
            let newest = state
                .control
                .store
                .call(move |s| {
                    s.latest_events(EventFilter::server(server.as_deref()), None, backlog)
                })
                .await
                .map_err(|e| ApiError::internal(crate::error_text::chain(&e)))?;
            match newest.last() {
                Some(oldest) => oldest.id - 1,
                None => latest_id(&state).await?,
            }
        }
        None => latest_id(&state).await?,
    };
    let live = state.control.store.subscribe();
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    let resuming = resume_after.is_some() && notice.is_none();
    tokio::spawn(feed(state, filter, start, resuming, notice, live, tx));
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The note that replaces a resume id newer than the log: the stream follows from `latest`.
fn reset_note(after: i64, latest: i64) -> SseEvent {
    let data = json!({
        "after": after,
        "latest": latest,
        "message": "the log has no event this new; following from its newest",
    });
    SseEvent::default().event("reset").data(data.to_string())
}

/// The id of the newest event in the log (0 when empty): a live-only stream starts there.
async fn latest_id(state: &ApiState) -> Result<i64, ApiError> {
    Ok(state
        .control
        .store
        .call(|s| s.latest_events(EventFilter::default(), None, 1))
        .await
        .map_err(|e| ApiError::internal(crate::error_text::chain(&e)))?
        .first()
        .map_or(0, |e| e.id))
}

/// Sends the client every event after `last`: first from the log, page by page, then live;
/// a lag behind the broadcast goes back to the log. Ends when the client goes away or the
/// agent shuts down (so graceful shutdown is never held up, not even by a client that
/// stopped reading). `resuming` asks to be told when pruned events were missed; `notice`
/// goes first.
async fn feed(
    state: Arc<ApiState>,
    filter: Filter,
    mut last: i64,
    resuming: bool,
    notice: Option<SseEvent>,
    mut live: broadcast::Receiver<Event>,
    tx: mpsc::Sender<SseEvent>,
) {
    let shutdown = state.shutdown.clone();
    let send = async |event: SseEvent| {
        tokio::select! {
            sent = tx.send(event) => sent.is_ok(),
            _ = shutdown.cancelled() => false,
        }
    };
    if let Some(notice) = notice
        && !send(notice).await
    {
        return;
    }
    let mut from_log = true;
    let mut first_page = resuming;
    loop {
        if from_log {
            let after = last;
            let page = match state
                .control
                .store
                .call(move |s| s.events_after(Some(after), EventFilter::default(), PAGE))
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %crate::error_text::chain(&e), "cannot read the event log for a subscriber");
                    return;
                }
            };
            if std::mem::take(&mut first_page)
                && let Some(e) = page.first().filter(|e| e.id > last + 1)
            {
                // Ids have no holes but pruning: say what is gone, without an id of its own.
                let gap = SseEvent::default().event("gap").data(
                    json!({
                        "after": last,
                        "next": e.id,
                        "message": "events between these ids were pruned from the log",
                    })
                    .to_string(),
                );
                if !send(gap).await {
                    return;
                }
            }
            from_log = page.len() == PAGE;
            for e in page {
                last = e.id;
                if filter.wants(&e) && !send(sse(&e)).await {
                    return;
                }
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
            received = live.recv() => match received {
                Ok(e) if e.id <= last => {}
                Ok(e) => {
                    last = e.id;
                    if filter.wants(&e) && !send(sse(&e)).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => from_log = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    server: Option<String>,
    /// Only events whose kind starts with this (`health`, `rollout`, `run.finished`).
    kind: Option<String>,
    /// Events after this id, oldest first; without it, the newest `limit`.
    #[schemars(range(min = 0))]
    after: Option<i64>,
    /// How many (a value outside the range is refused).
    #[schemars(range(min = 1, max = crate::fleet::EVENTS_LIMIT.1), extend("default" = crate::fleet::EVENTS_LIMIT.0))]
    limit: Option<usize>,
}

/// `GET /events/history?server=&kind=&after=&limit=`: the retained log as JSON, oldest first.
pub async fn history(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<crate::fleet::EventPage>, ApiError> {
    let limit = crate::fleet::limit(q.limit, crate::fleet::EVENTS_LIMIT)?;
    let after = crate::fleet::after(q.after)?;
    let events = state
        .control
        .store
        .call(move |s| {
            let filter = EventFilter {
                server: q.server.as_deref(),
                kind: q.kind.as_deref(),
            };
            match after {
                Some(after) => s.events_after(Some(after), filter, limit),
                None => {
                    let mut newest = s.latest_events(filter, None, limit)?;
                    newest.reverse();
                    Ok(newest)
                }
            }
        })
        .await
        .map_err(|e| ApiError::internal(crate::error_text::chain(&e)))?;
    Ok(Json(crate::fleet::EventPage { events }))
}
