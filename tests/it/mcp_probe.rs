//! The `mcp` probe kind against real MCP servers: the example server (protocol revisions
//! with the `initialize` handshake, answered with `ping`) and an rmcp server that speaks
//! only 2026-07-28 (answered with `server/discover`).

use std::borrow::Cow;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mcp_orchestration::health::{ProbeOutcome, Prober};
use mcp_orchestration::manifest::ProbeKind;
use rmcp::ServerHandler;
use rmcp::model::{Implementation, ProtocolVersion, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::support::example_server_bin;

/// Generous, because a loaded machine can be slow to start a process.
const START_DEADLINE: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running example server; killed when dropped.
struct ExampleServer {
    port: u16,
    _child: tokio::process::Child,
}

async fn example_server(version: &str) -> ExampleServer {
    let mut child = tokio::process::Command::new(example_server_bin())
        .args(["--port", "0", "--host", "127.0.0.1", "--version", version])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the example server starts");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let port = tokio::time::timeout(START_DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("stderr is readable") {
            if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                return digits.parse::<u16>().expect("a port in the start-up line");
            }
        }
        panic!("the example server exited before saying where it listens");
    })
    .await
    .expect("the example server says where it listens");
    // Keep draining stderr so the server never blocks writing to a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    ExampleServer {
        port,
        _child: child,
    }
}

#[tokio::test]
async fn the_example_server_answers_ping() {
    let server = example_server("1.0.0").await;
    let prober = Prober::new();
    // Several probes in a row: each opens a session and ends it; none gets in the way of
    // the next.
    for _ in 0..3 {
        let r = prober
            .probe(
                ProbeKind::Mcp,
                ([127, 0, 0, 1], server.port).into(),
                "/mcp",
                PROBE_TIMEOUT,
            )
            .await;
        assert_eq!(r.outcome, ProbeOutcome::Healthy, "{}", r.detail);
        assert_eq!(r.detail, "MCP ping answered (protocol 2025-06-18)");
        assert_eq!(r.version.as_deref(), Some("1.0.0"));
    }
}

#[tokio::test]
async fn the_wrong_mcp_path_is_unhealthy() {
    let server = example_server("1.0.0").await;
    let r = Prober::new()
        .probe(
            ProbeKind::Mcp,
            ([127, 0, 0, 1], server.port).into(),
            "/not-mcp",
            PROBE_TIMEOUT,
        )
        .await;
    assert_eq!(r.outcome, ProbeOutcome::Unhealthy, "{}", r.detail);
    assert_eq!(r.detail, "MCP initialize failed: HTTP 404");
}

/// An MCP server that speaks only 2026-07-28, which has no `initialize` handshake.
#[derive(Clone)]
struct ModernOnly;

static MODERN_ONLY: [ProtocolVersion; 1] = [ProtocolVersion::V_2026_07_28];

impl ServerHandler for ModernOnly {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().build())
            .with_server_info(Implementation::new("modern-only", "2.0.0"))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&MODERN_ONLY)
    }
}

/// Serves [`ModernOnly`] at `/mcp` on loopback until the returned guard drops.
async fn modern_only_server() -> (u16, tokio_util::sync::DropGuard) {
    let token = CancellationToken::new();
    let config = StreamableHttpServerConfig::default().with_cancellation_token(token.child_token());
    let service = StreamableHttpService::new(
        || Ok(ModernOnly),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = token.clone().cancelled_owned();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    (port, token.drop_guard())
}

#[tokio::test]
async fn a_server_on_2026_07_28_answers_server_discover() {
    let (port, _server) = modern_only_server().await;
    let r = Prober::new()
        .probe(
            ProbeKind::Mcp,
            ([127, 0, 0, 1], port).into(),
            "/mcp",
            PROBE_TIMEOUT,
        )
        .await;
    assert_eq!(r.outcome, ProbeOutcome::Healthy, "{}", r.detail);
    assert_eq!(
        r.detail,
        "MCP server/discover answered (protocol 2026-07-28)"
    );
    assert_eq!(r.version.as_deref(), Some("2.0.0"));
}
