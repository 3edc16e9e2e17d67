//! The one service bootstrap: load or dump the config, start telemetry, bind, serve gRPC
//! with health and reflection, serve `/metrics`, and shut down in order on a signal.

use crate::config::{ConfigArgs, ServiceConfig};
use anyhow::Context;
use ballast_security::{PeerInfo, TlsConfig, TlsServer};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

/// The shutdown future [`run_service`] hands to a service.
pub type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service binary's whole `main`: parse the shared command line (`--config`,
/// `--dump-config`) under the binary's own name, version and about (`clap::command!()`),
/// then [`run_service`] on a multi-threaded runtime.
pub fn service_main<C, F, Fut>(command: clap::Command, run: F) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use clap::{Args, FromArgMatches};
    let matches = ConfigArgs::augment_args(command).get_matches();
    let args = ConfigArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run_service::<C, F, Fut>(&args, run))
}

/// Load the config (or print it for `--dump-config`), start logging and tracing, bind both
/// listeners, and run until a shutdown signal.
pub async fn run_service<C, F, Fut>(args: &ConfigArgs, run: F) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if args.print_schema {
        println!(
            "{}",
            serde_json::to_string_pretty(&crate::reference::schema::<C>())?
        );
        return Ok(());
    }
    let config = C::load(args.config.as_deref())?;
    if args.dump_config {
        print!("{}", config.to_yaml());
        return Ok(());
    }
    let _telemetry = crate::init(config.telemetry())?;
    let (listen, admin_listen) = config.listen_addrs();
    let (listener, admin) = bind_listeners(listen, admin_listen).await?;
    run(config, listener, admin, Box::pin(crate::shutdown_signal())).await
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

/// Everything a service serves besides its own gRPC service: gRPC health (one named
/// service plus the server as a whole, ""), reflection, the admin endpoint, and the
/// shutdown sequence:
/// 1. health goes NOT_SERVING;
/// 2. the gRPC server stops accepting (the future of [`Host::stopping`] fires);
/// 3. in-flight calls finish within the grace period;
/// 4. the admin endpoint stops.
#[derive(Debug)]
pub struct Host {
    health: Health,
    stop: watch::Receiver<bool>,
    grace: Duration,
    admin: tokio::task::JoinHandle<std::io::Result<()>>,
    tls: Option<TlsServer>,
    reloads: Reloads,
}

/// Background reloads (certificates, policy), stopped with the host.
#[derive(Debug, Default)]
struct Reloads(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Reloads {
    fn drop(&mut self) {
        for r in &self.0 {
            r.abort();
        }
    }
}

/// Sets the health of one gRPC service and of the server as a whole.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
    service: &'static str,
    /// Mirrors the status for the admin port's `/readyz`.
    ready: Arc<std::sync::atomic::AtomicBool>,
}

impl Health {
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        self.reporter.set_service_status(self.service, status).await;
        self.ready
            .store(serving, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Host {
    /// Serves the admin endpoint on `admin` now; health starts NOT_SERVING for the gRPC
    /// service `S` (by its `NamedService::NAME`) and for the server as a whole.
    pub async fn start<S: tonic::server::NamedService>(
        admin: TcpListener,
        registry: Registry,
        grace: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let (tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        let health = Health {
            reporter: HealthReporter::new(),
            service: S::NAME,
            ready: Arc::default(),
        };
        health.set_serving(false).await;
        let admin = tokio::spawn(crate::serve_admin(
            admin,
            Arc::new(registry),
            health.ready.clone(),
            fired(stop.clone()),
        ));
        Self {
            health,
            stop,
            grace,
            admin,
            tls: None,
            reloads: Reloads::default(),
        }
    }

    /// Serves gRPC over TLS (mTLS with `client_ca_file`) when `tls.cert_file` is set,
    /// reloading the files as they change; plaintext otherwise.
    pub fn secure(&mut self, tls: &TlsConfig) -> anyhow::Result<()> {
        if !tls.enabled() {
            return Ok(());
        }
        let server = TlsServer::load(tls)?;
        self.reloads.0.push(server.spawn_reload(tls.clone()));
        self.tls = Some(server);
        tracing::info!(mtls = tls.client_ca_file.is_some(), "grpc served over tls");
        Ok(())
    }

    /// The service's authenticator and policy, reloaded as the files change. Without
    /// `auth.policy_file` the service runs open, and says so (unless `ballast-dev up` set
    /// `quiet_when_open`).
    pub fn access(
        &mut self,
        auth: &ballast_security::AuthConfig,
    ) -> anyhow::Result<ballast_security::Access> {
        let access = ballast_security::Access::load(auth)?;
        match access.spawn_reload() {
            Some(task) => self.reloads.0.push(task),
            None if !auth.quiet_when_open => tracing::warn!(
                service = self.health.service,
                "AUTH IS OFF: auth.policy_file is not set, so anyone who can reach this service may call every method; set auth.policy_file (and tls.*) before exposing it"
            ),
            None => {}
        }
        Ok(access)
    }

    /// Connections to serve gRPC on: see [`incoming`]; TLS when [`Host::secure`] set it.
    pub fn incoming(
        &self,
        listener: TcpListener,
        max_connections: Option<usize>,
    ) -> impl futures::Stream<Item = std::io::Result<Accepted>> {
        incoming(listener, max_connections, self.tls.clone())
    }

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The gRPC health service to add to the server.
    pub fn health_service(&self) -> tonic_health::pb::health_server::HealthServer<HealthService> {
        tonic_health::pb::health_server::HealthServer::new(HealthService::from_health_reporter(
            self.health.reporter.clone(),
        ))
    }

    /// Turns true at shutdown: for loops that must stop pulling work.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Resolves at shutdown, after health went NOT_SERVING: the gRPC server's shutdown
    /// future.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let (stop, health) = (self.stop.clone(), self.health.clone());
        async move {
            fired(stop).await;
            health.set_serving(false).await;
            tracing::info!("not serving; draining in-flight requests");
        }
    }

    /// A gRPC server with health and reflection; add the service's own and pass it to
    /// [`Host::serve_router`]. (A server with tower layers is built by the caller and
    /// driven with [`Host::serve`].)
    pub fn router(&self) -> anyhow::Result<tonic::transport::server::Router> {
        let (reflection, reflection_v1alpha) = grpc_reflection()?;
        Ok(tonic::transport::Server::builder()
            .add_service(self.health_service())
            .add_service(reflection)
            .add_service(reflection_v1alpha))
    }

    /// Serves `router` on `listener` (TCP_NODELAY) until shutdown; see [`Host::serve`].
    pub async fn serve_router(
        self,
        router: tonic::transport::server::Router,
        listener: TcpListener,
    ) -> anyhow::Result<()> {
        let stopping = self.stopping();
        let conns = self.incoming(listener, None);
        self.serve(router.serve_with_incoming_shutdown(conns, stopping))
            .await
    }

    /// Drives `server` (a gRPC server built with [`Host::stopping`] as its shutdown) until
    /// it ends, or until the grace period after shutdown has passed; then waits for the
    /// admin endpoint to stop.
    pub async fn serve(
        self,
        server: impl Future<Output = Result<(), tonic::transport::Error>>,
    ) -> anyhow::Result<()> {
        let grace = self.grace;
        let deadline = {
            let stop = self.stop.clone();
            async move {
                fired(stop).await;
                tokio::time::sleep(grace).await;
            }
        };
        tokio::select! {
            res = server => res.context("grpc server")?,
            _ = deadline => tracing::warn!(?grace, "shutdown grace elapsed; dropping unfinished requests"),
        }
        match self.admin.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "admin server"),
            Err(e) => tracing::warn!(error = %e, "admin server task"),
            Ok(Ok(())) => {}
        }
        Ok(())
    }
}

async fn fired(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// Accepted connections, with Nagle's algorithm off (answers are small and latency
/// matters; tonic sets TCP_NODELAY only on listeners it binds itself), and at most
/// `max_connections` open at once when set: past it, new connections wait in the listen
/// backlog until one closes. With `tls`, each completes its handshake first (many at
/// once, each within the handshake timeout); one that fails is logged and dropped, and
/// never stops the server.
pub fn incoming(
    listener: TcpListener,
    max_connections: Option<usize>,
    tls: Option<TlsServer>,
) -> impl futures::Stream<Item = std::io::Result<Accepted>> {
    use futures::StreamExt;
    let slots = max_connections.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    let tcp = futures::stream::unfold((listener, slots), |(listener, slots)| async move {
        let slot = match &slots {
            Some(s) => Some(s.clone().acquire_owned().await.ok()?),
            None => None,
        };
        let accepted = listener.accept().await.map(|(stream, remote)| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY");
            }
            (
                Conn {
                    stream,
                    _slot: slot,
                },
                remote,
            )
        });
        Some((accepted, (listener, slots)))
    });
    match tls {
        None => tcp
            .map(|r| {
                r.map(|(conn, remote)| Accepted {
                    io: Io::Plain(conn),
                    peer: PeerInfo {
                        remote: Some(remote),
                        principal: None,
                    },
                })
            })
            .left_stream(),
        Some(tls) => tcp
            .map(move |r| {
                let tls = tls.clone();
                async move {
                    let (conn, remote) = match r {
                        Ok(c) => c,
                        Err(e) => return Some(Err(e)),
                    };
                    match tls.accept(conn).await {
                        Ok((stream, principal)) => Some(Ok(Accepted {
                            io: Io::Tls(Box::new(stream)),
                            peer: PeerInfo {
                                remote: Some(remote),
                                principal,
                            },
                        })),
                        Err(e) => {
                            tracing::info!(%remote, error = format!("{e:#}"), "tls handshake refused");
                            None
                        }
                    }
                }
            })
            .buffer_unordered(256)
            .filter_map(futures::future::ready)
            .right_stream(),
    }
}

/// A served connection, plaintext or TLS, and who is at the other end (in each request's
/// extensions as [`PeerInfo`]).
#[derive(Debug)]
pub struct Accepted {
    io: Io,
    peer: PeerInfo,
}

#[derive(Debug)]
enum Io {
    Plain(Conn),
    Tls(Box<tokio_rustls::server::TlsStream<Conn>>),
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

macro_rules! delegate {
    ($self:ident, $io:ident => $call:expr) => {
        match &mut $self.get_mut().io {
            Io::Plain($io) => {
                let $io = std::pin::Pin::new($io);
                $call
            }
            Io::Tls($io) => {
                let $io = std::pin::Pin::new(&mut **$io);
                $call
            }
        }
    };
}

impl tokio::io::AsyncRead for Accepted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, io => io.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for Accepted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate!(self, io => io.poll_write(cx, buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, io => io.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(c) => c.is_write_vectored(),
            Io::Tls(t) => t.is_write_vectored(),
        }
    }
}

/// An accepted connection; it frees its `max_connections` slot when it closes.
#[derive(Debug)]
pub struct Conn {
    stream: tokio::net::TcpStream,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// gRPC reflection over every Ballast API and gRPC health, as each service serves it (so
/// `grpcurl` works without proto files), in both versions clients speak: v1, and v1alpha
/// (grpcurl before 1.9 and many other tools ask only for v1alpha).
#[allow(clippy::type_complexity)]
pub fn grpc_reflection() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ballast_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let fail = |e| anyhow::anyhow!("building grpc reflection: {e}");
    Ok((
        builder().build_v1().map_err(fail)?,
        builder().build_v1alpha().map_err(fail)?,
    ))
}
