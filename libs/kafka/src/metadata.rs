//! A protocol-level Metadata client on the `kafka-protocol` crate.
//!
//! librdkafka's metadata API does not expose broker racks, which rack-aware routing needs,
//! so Ballast asks the brokers itself: ApiVersions to negotiate, then Metadata at the
//! highest version both sides know (at most 12). It tries the brokers it knows in turn,
//! bootstrap servers first, so one dead broker never blinds it.
//!
//! On a secured cluster it speaks TLS and SASL as the producer does: SaslHandshake v1,
//! then SaslAuthenticate with PLAIN, SCRAM or an OAUTHBEARER token, and reconnects before
//! the session lifetime the broker grants runs out (KIP-368).

use crate::sasl::scram::{ScramClient, ScramHash};
use crate::sasl::{SaslAuth, SaslMechanism};
use crate::Error;
use ballast_balancer::PartitionMeta;
use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Metadata v12 is the newest this client parses; v1 is the oldest with racks.
const MAX_METADATA_VERSION: i16 = 12;
const MIN_METADATA_VERSION: i16 = 1;
/// A sanity bound on a response frame.
const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// The leader the cluster names; -1 when none. It may not be a live broker: see
    /// [`ClusterMetadata::live_leader`].
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub error_code: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub error_code: i16,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    /// Live brokers only: a broker that is down is absent.
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

impl ClusterMetadata {
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.iter().find(|t| t.name == name)
    }

    pub fn broker(&self, id: i32) -> Option<&BrokerInfo> {
        self.brokers.iter().find(|b| b.id == id)
    }

    /// The partition's leader if it is a live broker. A cluster may keep naming a dead
    /// broker as leader until an election finishes; that counts as leaderless.
    pub fn live_leader(&self, p: &PartitionInfo) -> Option<i32> {
        (p.leader >= 0 && self.broker(p.leader).is_some()).then_some(p.leader)
    }

    /// Leader and rack per partition, in the balancer's terms.
    pub fn balancer_view(&self, topic: &TopicInfo) -> Vec<PartitionMeta> {
        topic
            .partitions
            .iter()
            .map(|p| {
                let leader = self.live_leader(p);
                PartitionMeta {
                    partition: p.partition,
                    leader,
                    leader_rack: leader.and_then(|l| self.broker(l)?.rack.clone()),
                }
            })
            .collect()
    }
}

/// A broker connection: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    stream: Box<dyn Io>,
    metadata_version: i16,
    /// When the broker's SASL session lapses; the connection is replaced before then.
    reauthenticate_at: Option<Instant>,
}

/// Fetches cluster metadata over the Kafka protocol.
pub struct MetadataClient {
    bootstrap: Vec<String>,
    known: std::sync::Mutex<Vec<String>>,
    client_id: String,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
    correlation: AtomicI32,
    tls: Option<tokio_rustls::TlsConnector>,
    sasl: Option<SaslAuth>,
    /// Response bytes read from brokers, for the cost of keeping metadata fresh.
    received: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for MetadataClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataClient")
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

impl MetadataClient {
    pub fn new(bootstrap: Vec<String>, client_id: impl Into<String>, timeout: Duration) -> Self {
        Self {
            bootstrap,
            known: std::sync::Mutex::new(Vec::new()),
            client_id: client_id.into(),
            timeout,
            conn: Mutex::new(None),
            correlation: AtomicI32::new(1),
            tls: None,
            sasl: None,
            received: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Response bytes read from brokers so far.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Reaches the brokers as `security` says: TLS and SASL, secrets read from their files.
    pub fn with_security(self, security: &crate::KafkaSecurity) -> Result<Self, Error> {
        let tls = security.tls_connector()?;
        let sasl = security.sasl_auth()?;
        Ok(self.with_tls(tls).with_sasl(sasl))
    }

    /// Authenticates every connection with `sasl`.
    pub fn with_sasl(mut self, sasl: Option<SaslAuth>) -> Self {
        self.sasl = sasl;
        self
    }

    /// Speaks TLS to every broker with `tls` (see `KafkaSecurity::tls_connector`).
    pub fn with_tls(mut self, tls: Option<tokio_rustls::TlsConnector>) -> Self {
        self.tls = tls;
        self
    }

    /// Metadata for every topic. Tries the current connection, then every bootstrap and
    /// previously seen broker in turn.
    pub async fn fetch(&self) -> Result<ClusterMetadata, Error> {
        self.fetch_topics(None).await
    }

    /// Metadata for `topics` only (every topic with `None`), as [`Self::fetch`]. Brokers
    /// and racks come with every answer; a requested topic the cluster does not have is
    /// listed with its error code.
    pub async fn fetch_topics(&self, topics: Option<&[String]>) -> Result<ClusterMetadata, Error> {
        let mut guard = self.conn.lock().await;
        if guard
            .as_ref()
            .and_then(|c| c.reauthenticate_at)
            .is_some_and(|at| Instant::now() >= at)
        {
            *guard = None;
        }
        if let Some(conn) = guard.as_mut() {
            match tokio::time::timeout(self.timeout, self.metadata(conn, topics)).await {
                Ok(Ok(md)) => return Ok(self.remember(md)),
                Ok(Err(e)) => tracing::debug!(error = %e, "metadata connection failed"),
                Err(_) => tracing::debug!("metadata request timed out"),
            }
            *guard = None;
        }
        let mut candidates = self.bootstrap.clone();
        for addr in self.known.lock().expect("not poisoned").iter() {
            if !candidates.contains(addr) {
                candidates.push(addr.clone());
            }
        }
        let mut last_err = String::from("no brokers configured");
        for addr in candidates {
            let attempt = async {
                let mut conn = self.connect(&addr).await?;
                let md = self.metadata(&mut conn, topics).await?;
                Ok::<_, Error>((conn, md))
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok((conn, md))) => {
                    *guard = Some(conn);
                    return Ok(self.remember(md));
                }
                Ok(Err(e)) => last_err = format!("{addr}: {e}"),
                Err(_) => last_err = format!("{addr}: timed out after {:?}", self.timeout),
            }
        }
        Err(Error::Metadata(format!(
            "no broker answered metadata: {last_err}"
        )))
    }

    fn remember(&self, md: ClusterMetadata) -> ClusterMetadata {
        let mut known = self.known.lock().expect("not poisoned");
        *known = md
            .brokers
            .iter()
            .map(|b| format!("{}:{}", b.host, b.port))
            .collect();
        md
    }

    async fn connect(&self, addr: &str) -> Result<Conn, Error> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::Metadata(format!("connect: {e}")))?;
        tcp.set_nodelay(true).ok();
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let name = rustls::pki_types::ServerName::try_from(
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                )
                .map_err(|e| Error::Metadata(format!("broker {addr}: bad tls name: {e}")))?;
                Box::new(tls.connect(name, tcp).await.map_err(|e| {
                    Error::Metadata(format!("broker {addr}: tls handshake failed: {e}"))
                })?)
            }
        };
        let mut conn = Conn {
            stream,
            metadata_version: MIN_METADATA_VERSION,
            reauthenticate_at: None,
        };
        // ApiVersions v0 is understood by every broker; newer ones may not be.
        let resp: ApiVersionsResponse = self
            .call(
                &mut conn,
                ApiKey::ApiVersions,
                0,
                &ApiVersionsRequest::default(),
            )
            .await?;
        if resp.error_code != 0 {
            return Err(Error::Metadata(format!(
                "api versions error code {}",
                resp.error_code
            )));
        }
        let range = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Metadata as i16)
            .ok_or_else(|| Error::Metadata("broker does not serve metadata".into()))?;
        let ours = MetadataRequest::VERSIONS;
        let version = range.max_version.min(MAX_METADATA_VERSION).min(ours.max);
        if version < range.min_version.max(MIN_METADATA_VERSION) {
            return Err(Error::Metadata(format!(
                "no common metadata version (broker {}..={})",
                range.min_version, range.max_version
            )));
        }
        conn.metadata_version = version;
        if let Some(auth) = &self.sasl {
            let authenticate = resp
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::SaslAuthenticate as i16)
                .map_or(0, |k| k.max_version.clamp(0, 1));
            self.authenticate(&mut conn, addr, auth, authenticate)
                .await?;
        }
        Ok(conn)
    }

    /// SaslHandshake v1, then the mechanism's exchange in SaslAuthenticate requests.
    async fn authenticate(
        &self,
        conn: &mut Conn,
        addr: &str,
        auth: &SaslAuth,
        version: i16,
    ) -> Result<(), Error> {
        let mechanism = auth.mechanism();
        let fail = |m: String| {
            Error::Metadata(format!(
                "broker {addr}: SASL {mechanism} authentication failed: {m}"
            ))
        };
        let handshake: SaslHandshakeResponse = self
            .call(
                conn,
                ApiKey::SaslHandshake,
                1,
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(mechanism.wire_name())),
            )
            .await?;
        if handshake.error_code != 0 {
            let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(fail(format!(
                "the broker does not offer {} (error code {}; it offers {offered:?})",
                mechanism.wire_name(),
                handshake.error_code
            )));
        }
        let mut lifetime_ms = 0;
        let mut step = async |conn: &mut Conn, bytes: Vec<u8>| -> Result<Vec<u8>, Error> {
            let resp: SaslAuthenticateResponse = self
                .call(
                    conn,
                    ApiKey::SaslAuthenticate,
                    version,
                    &SaslAuthenticateRequest::default().with_auth_bytes(bytes.into()),
                )
                .await?;
            if resp.error_code != 0 {
                return Err(fail(match resp.error_message {
                    Some(m) => format!("{m} (error code {})", resp.error_code),
                    None => format!("error code {}", resp.error_code),
                }));
            }
            lifetime_ms = resp.session_lifetime_ms;
            Ok(resp.auth_bytes.to_vec())
        };
        match auth {
            SaslAuth::Plain { user, password } => {
                step(conn, format!("\0{user}\0{password}").into_bytes()).await?;
            }
            SaslAuth::Scram {
                mechanism,
                user,
                password,
            } => {
                let hash = match mechanism {
                    SaslMechanism::ScramSha256 => ScramHash::Sha256,
                    _ => ScramHash::Sha512,
                };
                let scram = |e: crate::sasl::scram::ScramError| fail(e.to_string());
                let mut client = ScramClient::new(hash, user, password).map_err(scram)?;
                let first = step(conn, client.client_first().into_bytes()).await?;
                let last = client
                    .client_final(&String::from_utf8_lossy(&first))
                    .map_err(scram)?;
                let verdict = step(conn, last.into_bytes()).await?;
                client
                    .verify_server_final(&String::from_utf8_lossy(&verdict))
                    .map_err(scram)?;
            }
            SaslAuth::Bearer(source) => {
                let token = source.fetch().await.map_err(|e| fail(e.to_string()))?;
                step(
                    conn,
                    format!("n,,\x01auth=Bearer {}\x01\x01", token.token).into_bytes(),
                )
                .await?;
            }
        }
        if lifetime_ms > 0 {
            // Reconnect once 90% of the session has passed.
            conn.reauthenticate_at =
                Some(Instant::now() + Duration::from_millis(lifetime_ms as u64 * 9 / 10));
        }
        Ok(())
    }

    async fn metadata(
        &self,
        conn: &mut Conn,
        topics: Option<&[String]>,
    ) -> Result<ClusterMetadata, Error> {
        let version = conn.metadata_version;
        let topics = topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(kafka_protocol::messages::TopicName(
                            StrBytes::from_string(n.clone()),
                        )))
                })
                .collect()
        });
        let req = MetadataRequest::default()
            .with_topics(topics)
            .with_allow_auto_topic_creation(false);
        let resp: MetadataResponse = self.call(conn, ApiKey::Metadata, version, &req).await?;
        Ok(convert(resp))
    }

    async fn call<Req, Resp>(
        &self,
        conn: &mut Conn,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, Error>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, Req::header_version(version))
            .and_then(|_| req.encode(&mut body, version))
            .map_err(|e| Error::Metadata(format!("encode: {e}")))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        let io = |e: std::io::Error| Error::Metadata(format!("io: {e}"));
        conn.stream.write_all(&frame).await.map_err(io)?;
        let len = conn.stream.read_i32().await.map_err(io)?;
        if len < 0 || len as usize > MAX_FRAME {
            return Err(Error::Metadata(format!("bad frame length {len}")));
        }
        let mut buf = vec![0u8; len as usize];
        conn.stream.read_exact(&mut buf).await.map_err(io)?;
        self.received.fetch_add(len as u64 + 4, Ordering::Relaxed);
        let mut buf = bytes::Bytes::from(buf);
        let rh = ResponseHeader::decode(&mut buf, Resp::header_version(version))
            .map_err(|e| Error::Metadata(format!("decode header: {e}")))?;
        if rh.correlation_id != correlation_id {
            return Err(Error::Metadata(format!(
                "correlation id mismatch: sent {correlation_id}, got {}",
                rh.correlation_id
            )));
        }
        let resp = Resp::decode(&mut buf, version)
            .map_err(|e| Error::Metadata(format!("decode {key:?}: {e}")))?;
        if buf.has_remaining() {
            tracing::trace!(left = buf.remaining(), "trailing bytes in response");
        }
        Ok(resp)
    }
}

fn convert(resp: MetadataResponse) -> ClusterMetadata {
    let brokers = resp
        .brokers
        .into_iter()
        .map(|b| BrokerInfo {
            id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.map(|r| r.to_string()).filter(|r| !r.is_empty()),
        })
        .collect();
    let mut topics: Vec<TopicInfo> = resp
        .topics
        .into_iter()
        .filter_map(|t| {
            let name = t.name?.0.to_string();
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.into_iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.into_iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.into_iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            Some(TopicInfo {
                name,
                error_code: t.error_code,
                internal: t.is_internal,
                partitions,
            })
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterMetadata {
        cluster_id: resp.cluster_id.map(|c| c.to_string()),
        controller_id: resp.controller_id.0,
        brokers,
        topics,
    }
}
