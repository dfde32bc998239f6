//! HTTP endpoints for the kubelet and Prometheus: `/metrics`, `/healthz`, `/readyz`.

use crate::metrics::Metrics;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

/// What the endpoints report.
#[derive(Clone)]
pub struct ServerState {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// True when this replica is ready: controllers running (leader) or standing by for the
    /// lease (follower).
    pub ready: Arc<AtomicBool>,
}

/// The router (separate from [`serve`] for tests).
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<ServerState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<ServerState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    state: ServerState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_answer() {
        let metrics = Arc::new(Metrics::new());
        metrics.reconcile_started("WorkspaceView");
        let ready = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let state = ServerState {
            metrics,
            ready: ready.clone(),
        };
        let server = tokio::spawn(serve(addr, state, shutdown.clone()));
        crate::providers::http::install_crypto_provider();
        let http = reqwest::Client::new();
        crate::providers::http::install_crypto_provider();
        let url = |p: &str| format!("http://{addr}{p}");
        let mut tries = 0;
        let health = loop {
            match http.get(url("/healthz")).send().await {
                Ok(r) => break r,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("server did not start: {e}"),
            }
        };
        assert_eq!(health.status(), 200);
        assert_eq!(http.get(url("/readyz")).send().await.unwrap().status(), 503);
        ready.store(true, Ordering::SeqCst);
        assert_eq!(http.get(url("/readyz")).send().await.unwrap().status(), 200);
        let body = http
            .get(url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            body.contains(r#"workspace_access_reconciles_total{kind="WorkspaceView"} 1"#),
            "{body}"
        );
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
