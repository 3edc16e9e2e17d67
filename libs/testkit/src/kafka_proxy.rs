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

const METADATA: i16 = 3;
const FIND_COORDINATOR: i16 = 10;
const SASL_HANDSHAKE: i16 = 17;
const API_VERSIONS: i16 = 18;
const SASL_AUTHENTICATE: i16 = 36;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
const SCRAM_ITERATIONS: u32 = 4096;

/// Checks an OAUTHBEARER token: the principal, or why it is refused.
pub type TokenCheck = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// The SASL side of the proxy: who may log in, and how.
#[derive(Clone, Default)]
pub struct SaslUsers {
    /// User to password, for PLAIN and SCRAM.
    pub passwords: HashMap<String, String>,
    /// The mechanisms offered, by name (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`,
    /// `OAUTHBEARER`).
    pub mechanisms: Vec<&'static str>,
    /// OAUTHBEARER's token check.
    pub tokens: Option<TokenCheck>,
}

impl std::fmt::Debug for SaslUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslUsers")
            .field("users", &self.passwords.keys().collect::<Vec<_>>())
            .field("mechanisms", &self.mechanisms)
            .finish_non_exhaustive()
    }
}

impl SaslUsers {
    /// One user with `password`, offered every password mechanism.
    pub fn user(name: &str, password: &str) -> Self {
        Self {
            passwords: HashMap::from([(name.to_string(), password.to_string())]),
            mechanisms: vec!["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
            tokens: None,
        }
    }

    /// OAUTHBEARER only, with `check` deciding on each token.
    pub fn bearer(check: impl Fn(&str) -> Result<String, String> + Send + Sync + 'static) -> Self {
        Self {
            passwords: HashMap::new(),
            mechanisms: vec!["OAUTHBEARER"],
            tokens: Some(Arc::new(check)),
        }
    }
}

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

/// Where one connection's login stands.
enum Login {
    /// No mechanism chosen yet.
    Start,
    /// SaslHandshake chose this mechanism.
    Chosen(&'static str),
    /// SCRAM: the server's first message is out.
    ScramSent {
        hash: ScramHash,
        password: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
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

fn handshake(users: &SaslUsers, frame: Vec<u8>, version: i16) -> anyhow::Result<(Vec<u8>, Login)> {
    let mut buf = Bytes::from(frame);
    let header = RequestHeader::decode(&mut buf, SaslHandshakeRequest::header_version(version))?;
    let req = SaslHandshakeRequest::decode(&mut buf, version)?;
    anyhow::ensure!(
        version >= 1,
        "SaslHandshake v0 (unframed SASL) is not served"
    );
    let chosen = users
        .mechanisms
        .iter()
        .find(|m| **m == req.mechanism.as_str())
        .copied();
    let resp = SaslHandshakeResponse::default()
        .with_error_code(if chosen.is_some() {
            0
        } else {
            UNSUPPORTED_SASL_MECHANISM
        })
        .with_mechanisms(
            users
                .mechanisms
                .iter()
                .map(|m| StrBytes::from_static_str(m))
                .collect(),
        );
    let next = chosen.map_or(Login::Start, Login::Chosen);
    Ok((respond(header.correlation_id, version, &resp)?, next))
}

/// One SaslAuthenticate step: the answer, and the next state (`None`: login failed).
fn authenticate(
    users: &SaslUsers,
    login: Login,
    frame: Vec<u8>,
    version: i16,
) -> anyhow::Result<(Vec<u8>, Option<Login>)> {
    let mut buf = Bytes::from(frame);
    let header = RequestHeader::decode(&mut buf, SaslAuthenticateRequest::header_version(version))?;
    let req = SaslAuthenticateRequest::decode(&mut buf, version)?;
    let message = String::from_utf8_lossy(&req.auth_bytes).into_owned();
    let answer = |code: i16, error: Option<String>, bytes: String| {
        let resp = SaslAuthenticateResponse::default()
            .with_error_code(code)
            .with_error_message(error.map(StrBytes::from_string))
            .with_auth_bytes(Bytes::from(bytes.into_bytes()));
        respond(header.correlation_id, version, &resp)
    };
    let refuse = |mechanism: &str| {
        Ok((
            answer(
                SASL_AUTHENTICATION_FAILED,
                Some(format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                )),
                String::new(),
            )?,
            None,
        ))
    };
    match login {
        Login::Chosen("PLAIN") => {
            let mut parts = message.split('\0');
            let (_authzid, user, password) = (parts.next(), parts.next(), parts.next());
            match (user, password) {
                (Some(u), Some(p)) if users.passwords.get(u).is_some_and(|x| x == p) => {
                    Ok((answer(0, None, String::new())?, Some(Login::Done)))
                }
                _ => refuse("PLAIN"),
            }
        }
        Login::Chosen(m @ ("SCRAM-SHA-256" | "SCRAM-SHA-512")) => {
            let hash = if m == "SCRAM-SHA-256" {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let Some(bare) = message
                .strip_prefix("n,,")
                .or_else(|| message.strip_prefix("y,,"))
            else {
                return refuse(m);
            };
            let user = attribute(bare, 'n').map(|u| u.replace("=2C", ",").replace("=3D", "="));
            let (Some(password), Some(client_nonce)) = (
                user.and_then(|u| users.passwords.get(&u).cloned()),
                attribute(bare, 'r'),
            ) else {
                return refuse(m);
            };
            let nonce = format!("{client_nonce}{}", B64.encode(random::<18>()?));
            let server_first = format!(
                "r={nonce},s={},i={SCRAM_ITERATIONS}",
                B64.encode(random::<16>()?)
            );
            Ok((
                answer(0, None, server_first.clone())?,
                Some(Login::ScramSent {
                    hash,
                    password,
                    client_first_bare: bare.to_string(),
                    server_first,
                    nonce,
                }),
            ))
        }
        Login::ScramSent {
            hash,
            password,
            client_first_bare,
            server_first,
            nonce,
        } => {
            let name = if hash == ScramHash::Sha256 {
                "SCRAM-SHA-256"
            } else {
                "SCRAM-SHA-512"
            };
            let (Some(without_proof), Some(proof)) = (
                message.rsplit_once(",p=").map(|(w, _)| w),
                attribute(&message, 'p').and_then(|p| B64.decode(p).ok()),
            ) else {
                return refuse(name);
            };
            if attribute(&message, 'r') != Some(nonce.as_str()) {
                return refuse(name);
            }
            let salt = attribute(&server_first, 's')
                .and_then(|s| B64.decode(s).ok())
                .context("own salt")?;
            let salted = hash.salted_password(
                &password,
                &salt,
                NonZeroU32::new(SCRAM_ITERATIONS).expect("nonzero"),
            );
            let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
            let stored_key = hash.digest(&hash.hmac(&salted, b"Client Key"));
            let signature = hash.hmac(&stored_key, auth_message.as_bytes());
            let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
            if proof.len() != signature.len() || hash.digest(&client_key) != stored_key {
                return refuse(name);
            }
            let server_key = hash.hmac(&salted, b"Server Key");
            let verifier = B64.encode(hash.hmac(&server_key, auth_message.as_bytes()));
            Ok((answer(0, None, format!("v={verifier}"))?, Some(Login::Done)))
        }
        Login::Chosen("OAUTHBEARER") => {
            let token = message
                .split('\x01')
                .find_map(|kv| kv.strip_prefix("auth=Bearer "))
                .map(str::to_string);
            let verdict = match (&users.tokens, token) {
                (Some(check), Some(t)) => check(&t),
                _ => Err("no token".into()),
            };
            match verdict {
                Ok(_principal) => Ok((answer(0, None, String::new())?, Some(Login::Done))),
                Err(why) => Ok((
                    answer(
                        SASL_AUTHENTICATION_FAILED,
                        Some(format!("OAUTHBEARER token refused: {why}")),
                        String::new(),
                    )?,
                    None,
                )),
            }
        }
        _ => Ok((
            answer(
                ILLEGAL_SASL_STATE,
                Some("SaslAuthenticate before SaslHandshake".into()),
                String::new(),
            )?,
            None,
        )),
    }
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(out)
}

/// Broker to client: Metadata answers name the proxy's ports, ApiVersions answers offer
/// SASL when the proxy serves it; everything else passes.
async fn responses<R>(
    mut r: R,
    w: Writer,
    pending: Pending,
    ports: &HashMap<i32, i32>,
    advertise_sasl: bool,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
{
    while let Some(frame) = read_frame(&mut r).await? {
        let correlation = frame
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(-1);
        let request = pending.lock().expect("pending lock").remove(&correlation);
        let frame = match request {
            Some((METADATA, version)) => rewrite_metadata(frame, version, ports)?,
            Some((FIND_COORDINATOR, version)) => rewrite_coordinator(frame, version, ports)?,
            Some((API_VERSIONS, version)) if advertise_sasl => offer_sasl(frame, version),
            _ => frame,
        };
        write_frame(&mut *w.lock().await, &frame).await?;
    }
    Ok(())
}

/// ApiVersions with SaslHandshake (v0–1) and SaslAuthenticate (v0–2) added. An answer that
/// does not decode at the asked version (an UNSUPPORTED_VERSION answer is v0) passes.
fn offer_sasl(frame: Vec<u8>, version: i16) -> Vec<u8> {
    let rewrite = || -> anyhow::Result<Vec<u8>> {
        let mut buf = Bytes::from(frame.clone());
        let header_version = ApiVersionsResponse::header_version(version);
        let header = ResponseHeader::decode(&mut buf, header_version)?;
        let mut resp = ApiVersionsResponse::decode(&mut buf, version)?;
        anyhow::ensure!(resp.error_code == 0, "an error answer");
        for (key, max) in [(SASL_HANDSHAKE, 1), (SASL_AUTHENTICATE, 2)] {
            resp.api_keys.retain(|k| k.api_key != key);
            resp.api_keys.push(
                ApiVersion::default()
                    .with_api_key(key)
                    .with_min_version(0)
                    .with_max_version(max),
            );
        }
        let mut out = BytesMut::new();
        header.encode(&mut out, header_version)?;
        resp.encode(&mut out, version)?;
        Ok(out.to_vec())
    };
    rewrite().unwrap_or(frame)
}

fn rewrite_metadata(
    frame: Vec<u8>,
    version: i16,
    ports: &HashMap<i32, i32>,
) -> anyhow::Result<Vec<u8>> {
    let mut buf = Bytes::from(frame);
    let header_version = MetadataResponse::header_version(version);
    let header = ResponseHeader::decode(&mut buf, header_version)?;
    let mut resp = MetadataResponse::decode(&mut buf, version)?;
    for b in &mut resp.brokers {
        if let Some(p) = ports.get(&b.port) {
            b.port = *p;
        }
    }
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version)?;
    resp.encode(&mut out, version)?;
    Ok(out.to_vec())
}

fn rewrite_coordinator(
    frame: Vec<u8>,
    version: i16,
    ports: &HashMap<i32, i32>,
) -> anyhow::Result<Vec<u8>> {
    let mut buf = Bytes::from(frame);
    let header_version = FindCoordinatorResponse::header_version(version);
    let header = ResponseHeader::decode(&mut buf, header_version)?;
    let mut resp = FindCoordinatorResponse::decode(&mut buf, version)?;
    if let Some(p) = ports.get(&resp.port) {
        resp.port = *p;
    }
    for c in &mut resp.coordinators {
        if let Some(p) = ports.get(&c.port) {
            c.port = *p;
        }
    }
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version)?;
    resp.encode(&mut out, version)?;
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
