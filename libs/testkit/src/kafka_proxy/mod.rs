//! A secured Kafka endpoint in front of librdkafka's mock cluster, which has neither a TLS
//! nor a SASL listener of its own. One proxy port per mock broker:
//!
//! - terminates TLS (mTLS when the config has a client CA), when asked;
//! - answers SaslHandshake and SaslAuthenticate itself, when asked: PLAIN, SCRAM-SHA-256,
//!   SCRAM-SHA-512 (server side) and OAUTHBEARER (a token check the test supplies). Its
//!   ApiVersions answer gains those two API keys, and any other request before the client
//!   has authenticated closes the connection, as a broker does;
//! - passes the Kafka protocol through, rewriting Metadata (and FindCoordinator) answers so
//!   the brokers they list are the proxy's ports, so clients that follow them stay secured.

use anyhow::Context;
use ballast_kafka::sasl::scram::{attribute, ScramHash};
use ballast_security::{TlsConfig, TlsServer};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiVersionsResponse, FindCoordinatorResponse, MetadataResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod rewrite;
mod sasl;

use rewrite::responses;
use sasl::{authenticate, handshake, Login};
pub use sasl::{SaslUsers, TokenCheck};

const METADATA: i16 = 3;
const FIND_COORDINATOR: i16 = 10;
const SASL_HANDSHAKE: i16 = 17;
const API_VERSIONS: i16 = 18;
const SASL_AUTHENTICATE: i16 = 36;

/// The proxy in front of every broker of a cluster; stops on drop.
#[derive(Debug)]
pub struct KafkaProxy {
    /// `127.0.0.1:PORT,…`: the secured bootstrap list.
    pub bootstrap: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

type Pending = Arc<Mutex<HashMap<i32, (i16, i16)>>>;

/// A client connection: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Writer = Arc<tokio::sync::Mutex<tokio::io::WriteHalf<Box<dyn Io>>>>;

impl KafkaProxy {
    /// Proxies each `host:port` of `upstream` (the mock cluster's bootstrap list), with
    /// the server side of `tls` when given and SASL for `sasl` when given.
    pub async fn start(
        upstream: &str,
        tls: Option<&TlsConfig>,
        sasl: Option<SaslUsers>,
    ) -> anyhow::Result<Self> {
        let server = tls.map(TlsServer::load).transpose()?;
        let sasl = sasl.map(Arc::new);
        let mut ports = HashMap::new();
        let mut listeners = Vec::new();
        for up in ballast_kafka::bootstrap_list(upstream) {
            let up_port: i32 = up
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .with_context(|| format!("bad broker address {up}"))?;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            ports.insert(up_port, listener.local_addr()?.port() as i32);
            listeners.push((listener, up));
        }
        let ports = Arc::new(ports);
        let bootstrap = listeners
            .iter()
            .map(|(l, _)| l.local_addr().map(|a| a.to_string()))
            .collect::<Result<Vec<_>, _>>()?
            .join(",");
        let tasks = listeners
            .into_iter()
            .map(|(listener, up)| {
                let (server, ports, sasl) = (server.clone(), ports.clone(), sasl.clone());
                tokio::spawn(async move {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let (server, ports, up, sasl) =
                            (server.clone(), ports.clone(), up.clone(), sasl.clone());
                        tokio::spawn(async move {
                            // A refused handshake, a failed login or a closed peer ends
                            // this connection.
                            let _ = serve(tcp, &up, server.as_ref(), sasl, &ports).await;
                        });
                    }
                })
            })
            .collect();
        Ok(Self { bootstrap, tasks })
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve(
    tcp: TcpStream,
    upstream: &str,
    tls: Option<&TlsServer>,
    sasl: Option<Arc<SaslUsers>>,
    ports: &HashMap<i32, i32>,
) -> anyhow::Result<()> {
    let client: Box<dyn Io> = match tls {
        Some(tls) => Box::new(tls.accept(tcp).await?.0),
        None => Box::new(tcp),
    };
    let up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true).ok();
    let (cr, cw) = tokio::io::split(client);
    let cw: Writer = Arc::new(tokio::sync::Mutex::new(cw));
    let (ur, uw) = up.into_split();
    let pending: Pending = Arc::default();
    let advertise_sasl = sasl.is_some();
    tokio::select! {
        r = requests(cr, uw, pending.clone(), cw.clone(), sasl) => r,
        r = responses(ur, cw, pending, ports, advertise_sasl) => r,
    }
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> anyhow::Result<Option<Vec<u8>>> {
    let len = match r.read_i32().await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    anyhow::ensure!(
        (0..=64 * 1024 * 1024).contains(&len),
        "bad frame length {len}"
    );
    let mut buf = vec![0; len as usize];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> anyhow::Result<()> {
    w.write_i32(frame.len() as i32).await?;
    w.write_all(frame).await?;
    Ok(())
}

/// Client to broker: SASL answered here until the client has logged in; after that,
/// passed through, each request's API key and version remembered by correlation id.
async fn requests<R, W>(
    mut r: R,
    mut w: W,
    pending: Pending,
    client: Writer,
    sasl: Option<Arc<SaslUsers>>,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut login = if sasl.is_some() {
        Login::Start
    } else {
        Login::Done
    };
    while let Some(frame) = read_frame(&mut r).await? {
        anyhow::ensure!(frame.len() >= 8, "short request");
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if let (Some(users), false) = (&sasl, matches!(login, Login::Done)) {
            match key {
                API_VERSIONS => {}
                SASL_HANDSHAKE => {
                    let (answer, next) = handshake(users, frame, version)?;
                    login = next;
                    write_frame(&mut *client.lock().await, &answer).await?;
                    continue;
                }
                SASL_AUTHENTICATE => {
                    let (answer, next) = authenticate(users, login, frame, version)?;
                    write_frame(&mut *client.lock().await, &answer).await?;
                    match next {
                        Some(next) => login = next,
                        // A broker closes the connection after a failed login.
                        None => anyhow::bail!("authentication failed"),
                    }
                    continue;
                }
                other => anyhow::bail!("request {other} before authentication"),
            }
        }
        pending
            .lock()
            .expect("pending lock")
            .insert(correlation, (key, version));
        write_frame(&mut w, &frame).await?;
    }
    Ok(())
}

fn respond<T: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &T,
) -> anyhow::Result<Vec<u8>> {
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, T::header_version(version))?;
    body.encode(&mut out, version)?;
    Ok(out.to_vec())
}

/// How a [`SecureKafka`] listens.
#[derive(Debug, Clone, Default)]
pub struct Listener {
    /// TLS with a broker certificate from the test CA.
    pub tls: bool,
    /// With `tls`: accept only clients whose certificate the test CA signed (mTLS).
    pub require_client_cert: bool,
    /// SASL logins the proxy accepts.
    pub sasl: Option<SaslUsers>,
}

/// A mock cluster reachable only through the proxy: the cluster, the proxy in front of
/// it, and the CA that signed the brokers' certificate (127.0.0.1, localhost); its files
/// go on drop.
#[derive(Debug)]
pub struct SecureKafka {
    pub cluster: ballast_kafka::EmbeddedCluster,
    pub proxy: KafkaProxy,
    pub ca: ballast_security::pki::Authority,
    pub dir: std::path::PathBuf,
}

impl SecureKafka {
    /// TLS only; with `require_client_cert`, mTLS.
    pub async fn tls(require_client_cert: bool) -> anyhow::Result<Self> {
        Self::start(Listener {
            tls: true,
            require_client_cert,
            sasl: None,
        })
        .await
    }

    pub async fn start(listener: Listener) -> anyhow::Result<Self> {
        use ballast_security::pki::{Authority, Name};
        let dir = std::env::temp_dir().join(crate::deps::unique("ballast-kafka-secure"));
        let ca = Authority::create(&dir, "kafka CA")?;
        let broker = ca.issue(
            "broker",
            "kafka",
            &[
                Name::Dns("localhost"),
                Name::Ip(std::net::IpAddr::from([127, 0, 0, 1])),
            ],
        )?;
        let cluster = ballast_kafka::EmbeddedCluster::start(Default::default())?;
        let tls = TlsConfig {
            cert_file: Some(broker.cert_file),
            key_file: Some(broker.key_file),
            client_ca_file: listener.require_client_cert.then(|| ca.ca_file.clone()),
            ..TlsConfig::default()
        };
        let proxy = KafkaProxy::start(
            cluster.bootstrap_servers(),
            listener.tls.then_some(&tls),
            listener.sasl,
        )
        .await?;
        Ok(Self {
            cluster,
            proxy,
            ca,
            dir,
        })
    }
}

impl Drop for SecureKafka {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
