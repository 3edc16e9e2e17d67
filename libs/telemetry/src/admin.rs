//! The admin HTTP endpoint: Prometheus `/metrics` and `/healthz`.

use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;

/// Serves `GET /metrics` (Prometheus text format) and `GET /healthz` until `shutdown`.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
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
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
