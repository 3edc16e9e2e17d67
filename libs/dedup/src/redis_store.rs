//! The Redis backend. One key per (group, id), all of a group's keys under one hash tag
//! (`{<prefix>:<group>}`) so a batch is one script call on one Redis Cluster slot.
//!
//! Groups and ids are escaped in keys (`%`, `{`, `}`, `:` as `%XX`), so none can close
//! the hash tag or pose as another key.
//!
//! Values: `P:<fence>:<owner>` while a lease is live (the key's TTL is the lease), and
//! `D:<fence>` once committed (TTL `done_window`).
//!
//! Claim takes a range of fences with one `INCRBY`, then pipelines one `SET NX PX` per id;
//! only ids that were taken need a second pipeline (`GET`, `PTTL`) to say DONE or
//! IN_PROGRESS. A re-claim after a lease expired runs its `INCRBY` after the first claim's,
//! so its fence is higher. Commit, release and extend are Lua compare-and-set on the fence.

use crate::types::*;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port/db`, or `rediss://` for TLS. AUTH goes in the URL
    /// (`redis://user:password@host:6379`).
    pub url: String,
    /// A file holding the URL (with its password), e.g. a mounted Secret; wins over `url`.
    pub url_file: Option<std::path::PathBuf>,
    /// Seed nodes of a Redis Cluster; when set, `url` is ignored.
    pub cluster_urls: Vec<String>,
    /// For `rediss://`: the CA (PEM) that signs the server's certificate, instead of the
    /// public roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// For `rediss://` with mutual TLS: the client certificate and key (PEM).
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The client certificate's PEM private key, for Redis with mTLS.
    pub tls_key_file: Option<std::path::PathBuf>,
    /// Prefix of every key this store writes, so several deployments can share one Redis.
    pub key_prefix: String,
    /// How long a committed id stays DONE.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub done_window: Duration,
    /// The deadline of one connection attempt to Redis.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub connect_timeout: Duration,
    /// The deadline of one Redis command.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub response_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            url_file: None,
            cluster_urls: Vec::new(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            key_prefix: "ballast:dedup".into(),
            done_window: Duration::from_secs(7 * 24 * 3600),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
        }
    }
}

/// Shared by commit, release and extend: check the fence and the owner, then act.
/// ARGV[1] = action (commit|release|extend), ARGV[2] = ttl ms, ARGV[3] = owner,
/// ARGV[4..] = fences. Returns per key: 0 ok, 1 not claimed, 2 done, 3 stale fence,
/// 4 another owner.
const FENCED: &str = r#"
local out = {}
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if not v then
    out[i] = 1
  elseif string.sub(v, 1, 1) == 'D' then
    out[i] = 2
  else
    local fence, owner = string.match(v, '^P:(%d+):(.*)$')
    if fence ~= ARGV[i + 3] then
      out[i] = 3
    elseif owner ~= ARGV[3] then
      out[i] = 4
    else
      if ARGV[1] == 'commit' then
        redis.call('SET', KEYS[i], 'D:' .. fence, 'PX', ARGV[2])
      elseif ARGV[1] == 'release' then
        redis.call('DEL', KEYS[i])
      else
        redis.call('PEXPIRE', KEYS[i], ARGV[2])
      end
      out[i] = 0
    end
  end
end
return out
"#;

/// Escapes the characters that structure a key (`{`, `}`, `:`) and the escape itself, so
/// no group or id can end the hash tag early or pose as another key.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '{', '}', ':']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

pub struct RedisStore {
    conn: Conn,
    prefix: String,
    done_window: Duration,
    fenced: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Installs rustls' ring provider once, for `rediss://` connections.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(path: &std::path::Path, key: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| StoreError::Invalid(format!("{key} {}: {e}", path.display())))
}

impl RedisConfig {
    /// The URL, from `url_file` when set.
    pub fn resolved_url(&self) -> Result<String, StoreError> {
        match &self.url_file {
            Some(f) => Ok(String::from_utf8_lossy(&read(f, "redis.url_file")?)
                .trim()
                .to_string()),
            None => Ok(self.url.clone()),
        }
    }

    /// The CA and client certificate for `rediss://`, when any is configured.
    fn certificates(&self) -> Result<Option<redis::TlsCertificates>, StoreError> {
        let client_tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                client_cert: read(c, "redis.tls_cert_file")?,
                client_key: read(k, "redis.tls_key_file")?,
            }),
            (None, None) => None,
            _ => {
                return Err(StoreError::Invalid(
                    "redis.tls_cert_file and redis.tls_key_file go together".into(),
                ))
            }
        };
        let root_cert = self
            .tls_ca_file
            .as_deref()
            .map(|f| read(f, "redis.tls_ca_file"))
            .transpose()?;
        Ok(
            (client_tls.is_some() || root_cert.is_some()).then_some(redis::TlsCertificates {
                client_tls,
                root_cert,
            }),
        )
    }
}

impl RedisStore {
    /// Connects to one Redis or to a Redis Cluster.
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, StoreError> {
        install_tls_provider();
        let certs = cfg.certificates()?;
        let conn = if cfg.cluster_urls.is_empty() {
            let url = cfg.resolved_url()?;
            let client = match &certs {
                Some(c) => redis::Client::build_with_tls(url.as_str(), c.clone()),
                None => redis::Client::open(url.as_str()),
            }
            .map_err(|e| StoreError::Invalid(format!("redis.url: {e}")))?;
            let mc = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.connect_timeout))
                .set_response_timeout(Some(cfg.response_timeout))
                .set_number_of_retries(1);
            Conn::Single(
                ConnectionManager::new_with_config(client, mc)
                    .await
                    .map_err(unavailable)?,
            )
        } else {
            let mut builder = redis::cluster::ClusterClient::builder(cfg.cluster_urls.clone());
            if let Some(c) = certs {
                builder = builder.certs(c);
            }
            let client = builder
                .connection_timeout(cfg.connect_timeout)
                .response_timeout(cfg.response_timeout)
                .retries(1)
                .build()
                .map_err(|e| StoreError::Invalid(format!("redis.cluster_urls: {e}")))?;
            Conn::Cluster(client.get_async_connection().await.map_err(unavailable)?)
        };
        Ok(Self {
            conn,
            prefix: cfg.key_prefix.clone(),
            done_window: cfg.done_window,
            fenced: Script::new(FENCED),
        })
    }

    fn tag(&self, group: &str) -> String {
        format!("{{{}:{}}}", self.prefix, escape(group))
    }

    fn id_key(&self, tag: &str, id: &str) -> String {
        format!("{tag}:i:{}", escape(id))
    }

    /// What in the server's settings breaks the dedup guarantee, as warnings: an eviction
    /// policy other than `noeviction` (every claim and DONE mark has a TTL, so `volatile-*`
    /// policies evict them too), and no persistence (a restart forgets them). Empty when
    /// the settings are sound; a note when `CONFIG GET` is not permitted.
    pub async fn durability_warnings(&self) -> Vec<String> {
        let mut pipe = redis::pipe();
        pipe.cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .cmd("CONFIG")
            .arg("GET")
            .arg("save");
        let answers: Result<Vec<Vec<String>>, StoreError> = self.query(&pipe).await;
        let answers = match answers {
            Ok(a) => a,
            Err(e) => {
                return vec![format!(
                    "cannot read the redis settings (CONFIG GET: {e}); make sure maxmemory-policy is noeviction and persistence is on"
                )]
            }
        };
        let value = |i: usize| {
            answers
                .get(i)
                .and_then(|kv| kv.get(1))
                .cloned()
                .unwrap_or_default()
        };
        let mut warnings = Vec::new();
        let policy = value(0);
        if policy != "noeviction" {
            warnings.push(format!(
                "redis maxmemory-policy is {policy}: under memory pressure it evicts claims and DONE marks, and ids are processed again; set maxmemory-policy noeviction"
            ));
        }
        if value(1) != "yes" && value(2).trim().is_empty() {
            warnings.push(
                "redis persistence is off (appendonly no, no save points): a restart forgets every claim and DONE mark; enable appendonly".into(),
            );
        }
        warnings
    }

    async fn run(&self, inv: &mut redis::ScriptInvocation<'_>) -> Result<Vec<i64>, StoreError> {
        async fn go<C: ConnectionLike + Send>(
            c: &mut C,
            inv: &mut redis::ScriptInvocation<'_>,
        ) -> Result<Vec<i64>, StoreError> {
            inv.invoke_async(c).await.map_err(unavailable)
        }
        match self.conn.clone() {
            Conn::Single(mut c) => go(&mut c, inv).await,
            Conn::Cluster(mut c) => go(&mut c, inv).await,
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        async fn go<C: ConnectionLike + Send, T: redis::FromRedisValue>(
            c: &mut C,
            pipe: &redis::Pipeline,
        ) -> Result<T, StoreError> {
            pipe.query_async(c).await.map_err(unavailable)
        }
        match self.conn.clone() {
            Conn::Single(mut c) => go(&mut c, pipe).await,
            Conn::Cluster(mut c) => go(&mut c, pipe).await,
        }
    }

    async fn fenced(
        &self,
        group: &str,
        entries: &[(String, u64)],
        action: &str,
        ttl: Duration,
        owner: &str,
    ) -> Result<Vec<FenceOutcome>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let tag = self.tag(group);
        let mut inv = self.fenced.prepare_invoke();
        for (id, _) in entries {
            inv.key(self.id_key(&tag, id));
        }
        inv.arg(action).arg(ttl.as_millis() as u64).arg(owner);
        for (_, fence) in entries {
            inv.arg(*fence);
        }
        let codes = self.run(&mut inv).await?;
        Ok(entries
            .iter()
            .zip(codes)
            .map(|((id, _), code)| {
                let reason = match code {
                    0 => None,
                    1 => Some(REASON_NOT_CLAIMED),
                    2 => Some(REASON_DONE),
                    4 => Some(REASON_OWNER),
                    _ => Some(REASON_STALE),
                };
                fence_outcome(id, reason)
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl DedupStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn claim(
        &self,
        group: &str,
        ids: &[String],
        lease: Duration,
        owner: &str,
    ) -> Result<Vec<Claimed>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let tag = self.tag(group);
        let n = ids.len() as u64;
        let mut incr = redis::pipe();
        incr.incr(format!("{tag}:f"), n);
        let (top,): (u64,) = self.query(&incr).await?;
        let lease_ms = lease.as_millis().max(1) as u64;
        let first = top - n + 1;
        let mut sets = redis::pipe();
        for (i, id) in ids.iter().enumerate() {
            sets.cmd("SET")
                .arg(self.id_key(&tag, id))
                .arg(format!("P:{}:{owner}", first + i as u64))
                .arg("NX")
                .arg("PX")
                .arg(lease_ms);
        }
        let won: Vec<Option<String>> = self.query(&sets).await?;
        let taken: Vec<usize> = (0..ids.len()).filter(|&i| won[i].is_none()).collect();
        let mut existing: Vec<(Option<String>, i64)> = Vec::new();
        if !taken.is_empty() {
            let mut looks = redis::pipe();
            for &i in &taken {
                let key = self.id_key(&tag, &ids[i]);
                looks.get(&key).pttl(&key);
            }
            let flat: Vec<redis::Value> = self.query(&looks).await?;
            existing = flat
                .chunks_exact(2)
                .map(|p| {
                    (
                        redis::from_redis_value_ref(&p[0]).ok().flatten(),
                        redis::from_redis_value_ref(&p[1]).unwrap_or(-2),
                    )
                })
                .collect();
        }
        let now = SystemClock.now_ms();
        let mut looked = existing.into_iter();
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                if won[i].is_some() {
                    return Claimed {
                        id: id.clone(),
                        state: ClaimState::New,
                        fence: first + i as u64,
                        lease_expires_unix_ms: now + lease_ms as i64,
                    };
                }
                let (value, ttl) = looked.next().unwrap_or((None, -2));
                match value {
                    Some(v) if v.starts_with('D') => Claimed {
                        id: id.clone(),
                        state: ClaimState::Done,
                        fence: 0,
                        lease_expires_unix_ms: 0,
                    },
                    // A lease that ended between the SET and the GET still counts as taken:
                    // the caller retries, never gets a false NEW.
                    _ => Claimed {
                        id: id.clone(),
                        state: ClaimState::InProgress,
                        fence: 0,
                        lease_expires_unix_ms: if ttl > 0 { now + ttl } else { now },
                    },
                }
            })
            .collect())
    }

    async fn commit(
        &self,
        group: &str,
        entries: &[(String, u64)],
        owner: &str,
    ) -> Result<Vec<FenceOutcome>, StoreError> {
        self.fenced(group, entries, "commit", self.done_window, owner)
            .await
    }

    async fn release(
        &self,
        group: &str,
        entries: &[(String, u64)],
        owner: &str,
    ) -> Result<Vec<FenceOutcome>, StoreError> {
        self.fenced(group, entries, "release", Duration::ZERO, owner)
            .await
    }

    async fn extend(
        &self,
        group: &str,
        entries: &[(String, u64)],
        lease: Duration,
        owner: &str,
    ) -> Result<Vec<FenceOutcome>, StoreError> {
        self.fenced(
            group,
            entries,
            "extend",
            lease.max(Duration::from_millis(1)),
            owner,
        )
        .await
    }

    async fn check(&self, group: &str, ids: &[String]) -> Result<Vec<Checked>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let tag = self.tag(group);
        let keys: Vec<String> = ids.iter().map(|id| self.id_key(&tag, id)).collect();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.get(k).pttl(k);
        }
        let values: Vec<redis::Value> = self.query(&pipe).await?;
        let now = SystemClock.now_ms();
        Ok(ids
            .iter()
            .zip(values.chunks_exact(2))
            .map(|(id, pair)| {
                let value: Option<String> = redis::from_redis_value_ref(&pair[0]).ok().flatten();
                let ttl: i64 = redis::from_redis_value_ref(&pair[1]).unwrap_or(-2);
                let state = match value.as_deref() {
                    None => None,
                    Some(v) if v.starts_with('D') => Some(ClaimState::Done),
                    Some(_) => Some(ClaimState::InProgress),
                };
                Checked {
                    id: id.clone(),
                    state,
                    lease_expires_unix_ms: if state == Some(ClaimState::InProgress) && ttl > 0 {
                        now + ttl
                    } else {
                        0
                    },
                }
            })
            .collect())
    }
}
