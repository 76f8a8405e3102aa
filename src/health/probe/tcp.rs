//! The TCP probe: a connection to the port within the timeout is healthy. For servers
//! that answer neither the health standard nor MCP.

use std::time::Duration;

use super::ProbeOutcome;

pub(super) async fn tcp_probe(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> (ProbeOutcome, String, Option<String>, Option<f64>) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (
            ProbeOutcome::Healthy,
            "port accepts connections".to_owned(),
            None,
            None,
        ),
        Ok(Err(e)) => (ProbeOutcome::Unreachable, e.to_string(), None, None),
        Err(_) => (
            ProbeOutcome::Unreachable,
            format!("no connection within {:.1}s", timeout.as_secs_f64()),
            None,
            None,
        ),
    }
}
