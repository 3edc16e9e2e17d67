//! Telemetry and server plumbing shared by every Ballast binary: structured logs, optional
//! OTLP traces, the Prometheus `/metrics` endpoint on an admin port, shutdown signals, and
//! accepted connections with TCP_NODELAY.
//!
//! It owns no service metrics itself; each service registers its own in a
//! `prometheus_client` registry and hands it to [`serve_admin`].

use anyhow::Context;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// A tracing filter, e.g. `info` or `ballast_gateway=debug`. `RUST_LOG` wins when set.
    pub log_level: String,
    pub log_format: LogFormat,
    /// An OTLP/gRPC collector endpoint such as `http://127.0.0.1:4317`; traces are off
    /// when unset.
    pub otlp_endpoint: Option<String>,
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
    let fmt = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
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
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .context("installing the tracing subscriber")?;
    Ok(guard)
}

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

/// Loads a service config: its defaults, then the YAML file if given, then `BALLAST_*`
/// environment variables (nested keys joined by `__`, e.g. `BALLAST_KAFKA__WRITE_TIMEOUT`).
/// `BALLAST_CONFIG` names the file and is not a key. Unknown keys are errors when `T` denies
/// them.
pub fn load_config<T>(file: Option<&std::path::Path>) -> anyhow::Result<T>
where
    T: Serialize + serde::de::DeserializeOwned + Default,
{
    use figment::providers::{Env, Format, Serialized, Yaml};
    let mut fig = figment::Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        anyhow::ensure!(
            path.exists(),
            "config file {} does not exist",
            path.display()
        );
        fig = fig.merge(Yaml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed("BALLAST_").ignore(&["config"]).split("__"));
    fig.extract().map_err(|e| anyhow::anyhow!("config: {e}"))
}

/// The command line every service binary shares.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// YAML config file. `BALLAST_*` environment variables override it (nested keys joined
    /// by `__`, e.g. BALLAST_KAFKA__BOOTSTRAP_SERVERS).
    #[arg(long, short, env = "BALLAST_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective config as YAML and exit.
    #[arg(long)]
    pub dump_config: bool,
}

/// What a service's config offers [`run_service`].
pub trait ServiceConfig: Sized {
    /// Defaults, then the YAML file, then `BALLAST_*` variables; then validation.
    fn load(file: Option<&std::path::Path>) -> anyhow::Result<Self>;
    fn to_yaml(&self) -> String;
    fn telemetry(&self) -> &TelemetryConfig;
    /// The gRPC and the admin (metrics, health) addresses.
    fn listen_addrs(&self) -> (std::net::SocketAddr, std::net::SocketAddr);
}

/// The shutdown future [`run_service`] hands to a service.
pub type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service binary's body: load the config (or print it for `--dump-config`), start
/// logging and tracing, bind both listeners, and run until a shutdown signal.
pub async fn run_service<C, F, Fut>(args: &ConfigArgs, run: F) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C, tokio::net::TcpListener, tokio::net::TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = C::load(args.config.as_deref())?;
    if args.dump_config {
        print!("{}", config.to_yaml());
        return Ok(());
    }
    let _telemetry = init(config.telemetry())?;
    let (listen, admin_listen) = config.listen_addrs();
    let (listener, admin) = bind_listeners(listen, admin_listen).await?;
    run(config, listener, admin, Box::pin(shutdown_signal())).await
}

/// Binds a service's gRPC and admin listeners, naming the config key on failure.
pub async fn bind_listeners(
    listen: std::net::SocketAddr,
    admin_listen: std::net::SocketAddr,
) -> anyhow::Result<(tokio::net::TcpListener, tokio::net::TcpListener)> {
    let grpc = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding listen address {listen}"))?;
    let admin = tokio::net::TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("binding admin_listen address {admin_listen}"))?;
    Ok((grpc, admin))
}

/// Accepted connections with Nagle's algorithm off: answers are small and latency matters.
/// (tonic sets TCP_NODELAY only on listeners it binds itself.)
pub fn incoming_nodelay(
    listener: tokio::net::TcpListener,
) -> impl futures_core::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY");
            }
        }
        conn
    })
}

/// Resolves on the first SIGTERM or Ctrl-C. A second signal exits the process at once.
pub async fn shutdown_signal() {
    wait_signal().await;
    tracing::info!("shutdown signal received; draining (send again to exit at once)");
    tokio::spawn(async {
        wait_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// gRPC reflection over every Ballast API and gRPC health, as each service serves it (so
/// `grpcurl` works without proto files).
pub fn grpc_reflection() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ballast_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| anyhow::anyhow!("building grpc reflection: {e}"))
}
