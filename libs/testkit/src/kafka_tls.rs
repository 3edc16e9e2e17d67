//! A real TLS Kafka endpoint in front of librdkafka's mock cluster, which has no TLS
//! listener of its own. One proxy port per mock broker terminates TLS (mTLS when the
//! config has a client CA) and passes the Kafka protocol through; Metadata responses are
//! rewritten so the brokers they list are the proxy's ports (and so are FindCoordinator
//! answers), so clients that follow them stay on TLS.

use anyhow::Context;
use ballast_security::{TlsConfig, TlsServer};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{FindCoordinatorResponse, MetadataResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const METADATA: i16 = 3;
const FIND_COORDINATOR: i16 = 10;

/// TLS in front of every broker of a cluster; stops on drop.
#[derive(Debug)]
pub struct KafkaTlsProxy {
    /// `127.0.0.1:PORT,…`: the TLS bootstrap list.
    pub bootstrap: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

type Pending = Arc<Mutex<HashMap<i32, (i16, i16)>>>;

impl KafkaTlsProxy {
    /// Proxies each `host:port` of `upstream` (the mock cluster's bootstrap list) with
    /// the server side of `tls`.
    pub async fn start(upstream: &str, tls: &TlsConfig) -> anyhow::Result<Self> {
        let server = TlsServer::load(tls)?;
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
                let (server, ports) = (server.clone(), ports.clone());
                tokio::spawn(async move {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let (server, ports, up) = (server.clone(), ports.clone(), up.clone());
                        tokio::spawn(async move {
                            // A refused handshake or a closed peer ends this connection.
                            let _ = serve(tcp, &up, &server, &ports).await;
                        });
                    }
                })
            })
            .collect();
        Ok(Self { bootstrap, tasks })
    }
}

impl Drop for KafkaTlsProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve(
    tcp: TcpStream,
    upstream: &str,
    tls: &TlsServer,
    ports: &HashMap<i32, i32>,
) -> anyhow::Result<()> {
    let (client, _) = tls.accept(tcp).await?;
    let up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true).ok();
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = up.into_split();
    let pending: Pending = Arc::default();
    tokio::select! {
        r = requests(cr, uw, pending.clone()) => r,
        r = responses(ur, cw, pending, ports) => r,
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

/// Client to broker: passed through; each request's API key and version are remembered
/// by correlation id.
async fn requests<R, W>(mut r: R, mut w: W, pending: Pending) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while let Some(frame) = read_frame(&mut r).await? {
        if frame.len() >= 8 {
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            pending
                .lock()
                .expect("pending lock")
                .insert(correlation, (key, version));
        }
        write_frame(&mut w, &frame).await?;
    }
    Ok(())
}

/// Broker to client: Metadata answers name the proxy's ports; everything else passes.
async fn responses<R, W>(
    mut r: R,
    mut w: W,
    pending: Pending,
    ports: &HashMap<i32, i32>,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
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
            _ => frame,
        };
        write_frame(&mut w, &frame).await?;
    }
    Ok(())
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

/// A mock cluster reachable only over TLS: the cluster, the proxy in front of it, and the
/// CA that signed the brokers' certificate (127.0.0.1, localhost); its files go on drop.
#[derive(Debug)]
pub struct TlsKafka {
    pub cluster: ballast_kafka::EmbeddedCluster,
    pub proxy: KafkaTlsProxy,
    pub ca: ballast_security::pki::Authority,
    pub dir: std::path::PathBuf,
}

impl TlsKafka {
    /// With `require_client_cert`, brokers accept only clients whose certificate this CA
    /// signed (mTLS).
    pub async fn start(require_client_cert: bool) -> anyhow::Result<Self> {
        use ballast_security::pki::{Authority, Name};
        let dir = std::env::temp_dir().join(crate::deps::unique("ballast-kafka-tls"));
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
        let proxy = KafkaTlsProxy::start(
            cluster.bootstrap_servers(),
            &TlsConfig {
                cert_file: Some(broker.cert_file),
                key_file: Some(broker.key_file),
                client_ca_file: require_client_cert.then(|| ca.ca_file.clone()),
                ..TlsConfig::default()
            },
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

impl Drop for TlsKafka {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
