//! Structured logs to stderr and optional OTLP trace export.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// A tracing filter, e.g. `info` or `ballast_gateway=debug`. `RUST_LOG` wins when set.
    pub log_level: String,
    /// `text` for people, `json` for log pipelines.
    pub log_format: LogFormat,
    /// An OTLP/gRPC collector endpoint such as `http://127.0.0.1:4317`; traces are off
    /// when unset.
    pub otlp_endpoint: Option<String>,
    /// The service name logs and traces carry.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            service_name: "ballast".into(),
        }
    }
}

/// Keeps the trace pipeline alive; flushes it on drop.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("trace exporter shutdown: {e}");
            }
        }
    }
}

/// Installs the global tracing subscriber. Logs go to stderr, so stdout stays free for
/// machine-readable output. Call once per process.
pub fn init(cfg: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log_level))
        .with_context(|| format!("invalid log_level {:?}", cfg.log_level))?;
    // Each layer has its own filter: the write path's DEBUG spans (target
    // `ballast::trace`) reach the OTLP layer without turning on debug logs.
    let fmt = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let mut guard = TelemetryGuard::default();
    let otel = match &cfg.otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry::trace::TracerProvider as _;
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .context("building the otlp exporter")?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(cfg.service_name.clone())
                        .build(),
                )
                .build();
            let tracer = provider.tracer(cfg.service_name.clone());
            guard.provider = Some(provider);
            let spans = tracing_subscriber::filter::Targets::new()
                .with_default(tracing::Level::INFO)
                .with_target(crate::trace::TARGET, tracing::Level::TRACE);
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(spans),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .context("installing the tracing subscriber")?;
    Ok(guard)
}
