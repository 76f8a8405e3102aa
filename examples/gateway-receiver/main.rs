//! A reference gateway receiver: the smallest server that implements the agent's gateway
//! contract, written to be read and copied by gateway authors. It keeps a routing table
//! and nothing else; it does not proxy MCP traffic.
//!
//! It carries its own copy of the contract instead of importing the agent crate, so the
//! types below are the wire format exactly as a gateway in any language sees it.
//!
//! ```text
//! gateway-receiver [--port 9090] [--host 127.0.0.1]
//!   POST /routes   the agent's backend set (run the agent with --gateway-url <this URL>)
//!   GET  /routes   the routing table held now
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Every payload carries the whole fleet, at a few hundred bytes a backend: axum's 2 MB
/// default would refuse fleets of a few thousand servers.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Parser, Debug)]
/// A reference gateway: receives the agent's backend set and serves it as a routing table.
#[command(name = "gateway-receiver")]
struct Args {
    /// Port to listen on (0 picks a free one; the start-up line shows which).
    #[arg(long, default_value_t = 9090)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
}

/// What the agent POSTs: the whole backend set, never a delta. Fields this copy does not
/// know are ignored, so a newer agent that adds one does not break an older gateway.
#[derive(Clone, Debug, Deserialize)]
struct Payload {
    /// Grows with every payload, across agent restarts too. A payload whose sequence is not
    /// above the last applied one is older news and must not overwrite the table.
    sequence: u64,
    /// The manifest commit the agent has applied; `null` before its first sync.
    revision: Option<String>,
    generated_at: Timestamp,
    /// A backend missing here has been removed.
    backends: Vec<Backend>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct Backend {
    id: String,
    /// Where MCP traffic goes, e.g. `http://127.0.0.1:41023/mcp`.
    endpoint: String,
    transport: Transport,
    /// `null` until an instance runs.
    version: Option<String>,
    /// `healthy`, `degraded`, `unhealthy`, `failed`, `starting` or `unknown`. Kept as text
    /// because it is only shown: a state this copy does not know yet must not make it
    /// refuse the whole set. `routable` is what to route by.
    health: String,
    health_since: Option<Timestamp>,
    /// The agent's decision (healthy or degraded): send traffic here or not.
    routable: bool,
}

/// Strict, unlike `health`: a transport the gateway cannot speak is a real incompatibility,
/// and refusing the set makes the agent log it and retry while the last good table stays.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Transport {
    StreamableHttp,
    Sse,
}

/// The routing table: the last applied payload.
#[derive(Debug, Default, Serialize)]
struct Table {
    /// `null` until the first payload arrives.
    sequence: Option<u64>,
    revision: Option<String>,
    generated_at: Option<Timestamp>,
    applied_at: Option<Timestamp>,
    /// Sorted by id; routable or not, so an operator can see why something gets no traffic.
    backends: Vec<Backend>,
}

/// A std mutex, not tokio's: it is never held across an await, and the check of the
/// sequence and the swap of the table must be one step or two concurrent POSTs could
/// apply out of order.
type Shared = Arc<Mutex<Table>>;

/// Problems with a payload that parsed, all of them at once.
fn problems(payload: &Payload) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, b) in payload.backends.iter().enumerate() {
        if b.id.is_empty() {
            problems.push(format!("backends[{i}].id is empty"));
        } else if !seen.insert(b.id.as_str()) {
            problems.push(format!("backends[{i}].id `{}` appears twice", b.id));
        }
        match b.endpoint.parse::<Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() => {}
            _ => problems.push(format!(
                "backends[{i}].endpoint `{}` is not an http(s) URL",
                b.endpoint
            )),
        }
    }
    problems
}

fn error(status: StatusCode, message: String) -> Response {
    log(&format!("refused a payload ({status}): {message}"));
    (status, Json(json!({ "error": message }))).into_response()
}

async fn receive(State(table): State<Shared>, body: Bytes) -> Response {
    let payload: Payload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        // Well-formed JSON of the wrong shape is 422; anything that is not JSON is 400.
        Err(e) if e.is_data() => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("not a backend set: {e}"),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let problems = problems(&payload);
    if !problems.is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, problems.join("; "));
    }

    let mut table = table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(last) = table.sequence
        && payload.sequence <= last
    {
        drop(table);
        // The same sequence is the agent's periodic resend (for gateways that restarted):
        // nothing to say. Only an older one is worth a line.
        if payload.sequence < last {
            log(&format!(
                "ignored stale sequence {} (last applied {last})",
                payload.sequence
            ));
        }
        // Acknowledged, not refused: any non-2xx makes the agent retry, and a payload that
        // is already superseded would only be sent again.
        return Json(
            json!({ "applied": false, "sequence": payload.sequence, "last_applied": last }),
        )
        .into_response();
    }
    let line = describe(&table.backends, &payload);
    let mut backends = payload.backends;
    backends.sort_by(|a, b| a.id.cmp(&b.id));
    *table = Table {
        sequence: Some(payload.sequence),
        revision: payload.revision,
        generated_at: Some(payload.generated_at),
        applied_at: Some(Timestamp::now()),
        backends,
    };
    drop(table);
    log(&line);
    Json(json!({ "applied": true, "sequence": payload.sequence })).into_response()
}

async fn routes(State(table): State<Shared>) -> Response {
    let table = table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Json(&*table).into_response()
}

/// One line per applied update: what is routable now, what is not, what came and went.
fn describe(before: &[Backend], payload: &Payload) -> String {
    let old: BTreeMap<&str, &Backend> = before.iter().map(|b| (b.id.as_str(), b)).collect();
    let new: BTreeMap<&str, &Backend> = payload
        .backends
        .iter()
        .map(|b| (b.id.as_str(), b))
        .collect();
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let routable = new
        .values()
        .filter(|b| b.routable)
        .map(|b| {
            format!(
                "{}@{} {} {}",
                b.id,
                b.version.as_deref().unwrap_or("?"),
                b.health,
                b.endpoint
            )
        })
        .collect();
    let unroutable = new
        .values()
        .filter(|b| !b.routable)
        .map(|b| format!("{} ({})", b.id, b.health))
        .collect();
    let added = new
        .keys()
        .filter(|id| !old.contains_key(*id))
        .map(|id| id.to_string())
        .collect();
    let removed = old
        .keys()
        .filter(|id| !new.contains_key(*id))
        .map(|id| id.to_string())
        .collect();
    let revision = payload
        .revision
        .as_deref()
        .map_or("none", |r| r.get(..12).unwrap_or(r));
    format!(
        "applied sequence {} (revision {revision}): routable [{}]; not routable [{}]; added [{}]; removed [{}]",
        payload.sequence,
        list(routable),
        list(unroutable),
        list(added),
        list(removed),
    )
}

fn log(line: &str) {
    eprintln!("{:.3} gateway-receiver: {line}", Timestamp::now());
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                log(&format!(
                    "cannot listen for SIGTERM ({err}); only SIGINT works"
                ));
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await {
        Ok(listener) => listener,
        Err(err) => {
            log(&format!(
                "cannot listen on {}:{}: {err}",
                args.host, args.port
            ));
            return ExitCode::from(2);
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            log(&format!("cannot read the bound address: {err}"));
            return ExitCode::from(2);
        }
    };
    let app = Router::new()
        .route("/routes", get(routes).post(receive))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Shared::default());
    log(&format!(
        "listening on http://{addr}; run the agent with --gateway-url http://{addr}/routes"
    ));
    match axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log(&format!("server error: {err}"));
            ExitCode::FAILURE
        }
    }
}
