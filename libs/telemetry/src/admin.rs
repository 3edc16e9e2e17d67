//! The admin HTTP endpoint: Prometheus `/metrics`, `/healthz` (the process answers) and
//! `/readyz` (the gRPC health status, for probes that cannot speak gRPC over TLS).

use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;

/// Serves `GET /metrics` (Prometheus text format), `GET /healthz` and `GET /readyz`
/// (200 while `ready` holds, else 503) until `shutdown`.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::{http::header, response::IntoResponse, routing::get, Router};
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(e) => (
                            [(header::CONTENT_TYPE, "text/plain")],
                            format!("encoding metrics failed: {e}"),
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let serving = ready.load(std::sync::atomic::Ordering::Relaxed);
                async move {
                    if serving {
                        (axum::http::StatusCode::OK, "serving")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not serving")
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
