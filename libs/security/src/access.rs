//! Who is calling, and what they may do.
//!
//! - **Authentication.** A bearer token (`authorization: Bearer …`), whose SHA-256 the
//!   config holds (inline as hex, or in a file), or the client certificate's principal
//!   under mTLS. A call without valid credentials fails whole with UNAUTHENTICATED.
//! - **Authorization.** One policy file shared by all services, reloaded when it
//!   changes: principal → grants. With `auth.policy_file` set, anything not granted is
//!   denied; without it, services run open and say so at start.

use crate::reload::Watched;
use anyhow::Context;
use ballast_core::ErrorCode;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One bearer token: the principal it names, and its SHA-256 (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub principal: String,
    /// Lower-case hex SHA-256 of the token (`printf %s TOKEN | sha256sum`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// A file holding the hex SHA-256 (a mounted Secret); reloaded with the policy.
    #[serde(default)]
    pub sha256_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The policy file (YAML); authentication and authorization are on when set.
    pub policy_file: Option<PathBuf>,
    /// Bearer tokens this service accepts, each `{principal, sha256}` or `{principal,
    /// sha256_file}`: the SHA-256 (hex) of the token, never the token.
    pub tokens: Vec<TokenConfig>,
    /// How often the policy and token files are checked for changes.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub reload_interval: Duration,
    /// Set by `ballast-dev up`: running open is expected there, so no warning.
    #[serde(skip)]
    pub quiet_when_open: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            policy_file: None,
            tokens: Vec::new(),
            reload_interval: Duration::from_secs(10),
            quiet_when_open: false,
        }
    }
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        self.policy_file.is_some()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.tokens.is_empty() && self.policy_file.is_none() {
            anyhow::bail!("auth.tokens are set but auth.policy_file is not: tokens mean nothing without a policy");
        }
        for t in &self.tokens {
            anyhow::ensure!(
                !t.principal.is_empty(),
                "auth.tokens: a token has no principal"
            );
            match (&t.sha256, &t.sha256_file) {
                (Some(h), None) => {
                    parse_hash(h)
                        .with_context(|| format!("auth.tokens[{}].sha256", t.principal))?;
                }
                (None, Some(_)) => {}
                _ => anyhow::bail!(
                    "auth.tokens[{}]: set exactly one of sha256 and sha256_file",
                    t.principal
                ),
            }
        }
        anyhow::ensure!(
            !self.reload_interval.is_zero(),
            "auth.reload_interval must be positive"
        );
        Ok(())
    }
}

fn parse_hash(hex_str: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(hex_str.trim()).context("not hex")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a SHA-256 is 32 bytes (64 hex digits)"))
}

/// The hex SHA-256 of a token, as the config holds it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Retry-admin actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryAction {
    /// Stats, ListDeadLetters.
    Read,
    /// Redrive, Purge.
    Write,
}

/// Topology actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TopologyAction {
    /// GetTopology, Watch.
    Read,
    /// MarkBrokerDraining, ClearBrokerDraining.
    MarkDraining,
    /// The assignment and reassignment planners.
    Plan,
}

/// What one principal may do, as the policy file writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GrantsConfig {
    /// Topic globs the principal may produce to.
    pub produce: Vec<String>,
    /// Consumer-group globs for dedup claims.
    pub dedup: Vec<String>,
    pub retry: Vec<RetryAction>,
    pub topology: Vec<TopologyAction>,
}

/// The policy file. Bearer-token principals and client-certificate principals are kept
/// apart, so a certificate whose name equals a token principal's gets nothing of its.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Grants of bearer-token principals (`auth.tokens[].principal`).
    pub tokens: BTreeMap<String, GrantsConfig>,
    /// Grants of client-certificate principals (the URI SAN, else the DNS SAN, else the
    /// CN).
    pub certificates: BTreeMap<String, GrantsConfig>,
    /// The older single section: a name that `auth.tokens` lists is a token principal
    /// only, any other name a certificate principal only.
    pub principals: BTreeMap<String, GrantsConfig>,
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    Token,
    Certificate,
}

/// One action a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Produce { topic: &'a str },
    Dedup { group: &'a str },
    Retry(RetryAction),
    Topology(TopologyAction),
}

impl std::fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Produce { topic } => write!(f, "produce to topic {topic:?}"),
            Action::Dedup { group } => write!(f, "use dedup group {group:?}"),
            Action::Retry(RetryAction::Read) => f.write_str("read the retry admin (retry: read)"),
            Action::Retry(RetryAction::Write) => {
                f.write_str("change the dead-letter store (retry: write)")
            }
            Action::Topology(TopologyAction::Read) => f.write_str("read topology (topology: read)"),
            Action::Topology(TopologyAction::MarkDraining) => {
                f.write_str("mark brokers draining (topology: mark_draining)")
            }
            Action::Topology(TopologyAction::Plan) => {
                f.write_str("plan assignments (topology: plan)")
            }
        }
    }
}

#[derive(Debug)]
struct Grants {
    produce: GlobSet,
    dedup: GlobSet,
    retry: Vec<RetryAction>,
    topology: Vec<TopologyAction>,
}

fn globs(principal: &str, what: &str, patterns: &[String]) -> anyhow::Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(
            Glob::new(p)
                .with_context(|| format!("policy: {principal}.{what}: bad pattern {p:?}"))?,
        );
    }
    Ok(b.build()?)
}

impl Grants {
    fn compile(principal: &str, g: &GrantsConfig) -> anyhow::Result<Self> {
        Ok(Self {
            produce: globs(principal, "produce", &g.produce)?,
            dedup: globs(principal, "dedup", &g.dedup)?,
            retry: g.retry.clone(),
            topology: g.topology.clone(),
        })
    }

    fn allows(&self, action: &Action<'_>) -> bool {
        match action {
            Action::Produce { topic } => self.produce.is_match(topic),
            Action::Dedup { group } => self.dedup.is_match(group),
            Action::Retry(a) => self.retry.contains(a),
            Action::Topology(a) => self.topology.contains(a),
        }
    }
}

/// Tokens and grants, as loaded at one moment.
#[derive(Debug, Default)]
struct Loaded {
    tokens: HashMap<[u8; 32], String>,
    grants: HashMap<(PrincipalKind, String), Arc<Grants>>,
}

impl Loaded {
    fn grants(&self, kind: PrincipalKind, principal: &str) -> Option<Arc<Grants>> {
        self.grants.get(&(kind, principal.to_string())).cloned()
    }
}

fn load(cfg: &AuthConfig) -> anyhow::Result<Loaded> {
    let Some(path) = &cfg.policy_file else {
        return Ok(Loaded::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("auth.policy_file {}: cannot read it", path.display()))?;
    let policy: PolicyConfig = serde_yaml::from_str(&text)
        .with_context(|| format!("auth.policy_file {}: not a valid policy", path.display()))?;
    let token_principals: std::collections::HashSet<&str> =
        cfg.tokens.iter().map(|t| t.principal.as_str()).collect();
    let mut grants = HashMap::new();
    let sections = [
        ("tokens", Some(PrincipalKind::Token), &policy.tokens),
        (
            "certificates",
            Some(PrincipalKind::Certificate),
            &policy.certificates,
        ),
        ("principals", None, &policy.principals),
    ];
    for (section, kind, entries) in sections {
        for (principal, g) in entries {
            let kind = kind.unwrap_or(if token_principals.contains(principal.as_str()) {
                PrincipalKind::Token
            } else {
                PrincipalKind::Certificate
            });
            let compiled = Arc::new(Grants::compile(principal, g)?);
            anyhow::ensure!(
                grants.insert((kind, principal.clone()), compiled).is_none(),
                "auth.policy_file {}: {section}.{principal} is granted twice (a name under \
                 principals is a token principal when auth.tokens lists it, else a \
                 certificate principal)",
                path.display()
            );
        }
    }
    let mut tokens = HashMap::new();
    for t in &cfg.tokens {
        let hash = match (&t.sha256, &t.sha256_file) {
            (Some(h), _) => parse_hash(h)?,
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f).with_context(|| {
                    format!(
                        "auth.tokens[{}].sha256_file {}: cannot read it",
                        t.principal,
                        f.display()
                    )
                })?;
                parse_hash(&text).with_context(|| {
                    format!("auth.tokens[{}].sha256_file {}", t.principal, f.display())
                })?
            }
            (None, None) => anyhow::bail!("auth.tokens[{}]: no sha256", t.principal),
        };
        tokens.insert(hash, t.principal.clone());
    }
    Ok(Loaded { tokens, grants })
}

/// Who made a call, and what the policy grants them at that moment.
#[derive(Debug, Clone)]
pub struct Caller {
    /// None when the service runs open.
    pub principal: Option<String>,
    /// How the principal was proved; None when the service runs open.
    pub kind: Option<PrincipalKind>,
    /// The SHA-256 of the bearer token, so a stream can see it is still valid.
    token: Option<[u8; 32]>,
    grants: Option<Arc<Grants>>,
    open: bool,
}

impl Caller {
    fn open() -> Self {
        Self {
            principal: None,
            kind: None,
            token: None,
            grants: None,
            open: true,
        }
    }

    pub fn allows(&self, action: Action<'_>) -> bool {
        self.open || self.grants.as_ref().is_some_and(|g| g.allows(&action))
    }

    /// PERMISSION_DENIED unless the policy grants `action`.
    pub fn require(&self, action: Action<'_>) -> Result<(), tonic::Status> {
        if self.allows(action) {
            return Ok(());
        }
        Err(ErrorCode::PermissionDenied.status(self.denial(action)))
    }

    /// Why `action` is not allowed, for a per-record error.
    pub fn denial(&self, action: Action<'_>) -> String {
        let kind = match self.kind {
            Some(PrincipalKind::Token) => "token principal",
            Some(PrincipalKind::Certificate) => "certificate principal",
            None => "principal",
        };
        format!(
            "{kind} {:?} may not {action} (auth.policy_file grants it nothing of the kind)",
            self.principal.as_deref().unwrap_or("")
        )
    }
}

/// Who is at the other end of a connection: its address, and the principal its client
/// certificate names (mTLS). The server puts it in each request's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub remote: Option<std::net::SocketAddr>,
    pub principal: Option<String>,
}

/// A service's authenticator and policy, reloaded on change. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Access {
    cfg: Arc<AuthConfig>,
    loaded: Arc<RwLock<Arc<Loaded>>>,
    files: Arc<Watched>,
}

impl Access {
    /// Loads the policy and tokens; an error names the key and file.
    pub fn load(cfg: &AuthConfig) -> anyhow::Result<Self> {
        cfg.validate()?;
        let loaded = load(cfg)?;
        let mut files: Vec<PathBuf> = cfg.policy_file.iter().cloned().collect();
        files.extend(cfg.tokens.iter().filter_map(|t| t.sha256_file.clone()));
        Ok(Self {
            cfg: Arc::new(cfg.clone()),
            loaded: Arc::new(RwLock::new(Arc::new(loaded))),
            files: Arc::new(Watched::new(files)),
        })
    }

    /// No authentication, everything allowed.
    pub fn open() -> Self {
        Self::load(&AuthConfig::default()).expect("the default auth config loads")
    }

    pub fn enforced(&self) -> bool {
        self.cfg.enabled()
    }

    /// Re-reads the files now if they changed; a bad file keeps the last good policy.
    pub fn reload_if_changed(&self) {
        if !self.files.changed() {
            return;
        }
        match load(&self.cfg) {
            Ok(l) => {
                *self.loaded.write().expect("policy lock") = Arc::new(l);
                tracing::info!("auth policy reloaded");
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "auth policy changed but does not load; keeping the previous one"
            ),
        }
    }

    /// Checks the files every `auth.reload_interval` until the task is aborted.
    pub fn spawn_reload(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.enforced() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.cfg.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.reload_if_changed();
            }
        }))
    }

    /// Who made this call: a bearer token first, else the connection's client
    /// certificate. UNAUTHENTICATED without valid credentials.
    pub fn authenticate<T>(&self, request: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
        if !self.enforced() {
            return Ok(Caller::open());
        }
        let loaded = self.loaded.read().expect("policy lock").clone();
        let (kind, token, principal) = match request.metadata().get("authorization") {
            Some(v) => {
                let token = v
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        ErrorCode::Unauthenticated
                            .status("the authorization header must be \"Bearer <token>\"")
                    })?;
                let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
                let principal = loaded.tokens.get(&hash).cloned().ok_or_else(|| {
                    ErrorCode::Unauthenticated.status("the bearer token is not valid")
                })?;
                (PrincipalKind::Token, Some(hash), principal)
            }
            None => {
                let principal = request
                    .extensions()
                    .get::<PeerInfo>()
                    .and_then(|p| p.principal.clone())
                    .ok_or_else(|| {
                        ErrorCode::Unauthenticated.status(
                            "no credentials: send a bearer token (authorization: Bearer …) or a client certificate",
                        )
                    })?;
                (PrincipalKind::Certificate, None, principal)
            }
        };
        Ok(Caller {
            grants: loaded.grants(kind, &principal),
            principal: Some(principal),
            kind: Some(kind),
            token,
            open: false,
        })
    }

    /// `caller` under the policy and tokens loaded now, not those of when its call began:
    /// long-lived streams call this for every message. UNAUTHENTICATED when its bearer
    /// token no longer names it.
    pub fn refresh(&self, caller: &Caller) -> Result<Caller, tonic::Status> {
        let (Some(kind), Some(principal)) = (caller.kind, caller.principal.as_deref()) else {
            return Ok(caller.clone());
        };
        let loaded = self.loaded.read().expect("policy lock").clone();
        if let Some(hash) = &caller.token {
            if loaded.tokens.get(hash).map(String::as_str) != Some(principal) {
                return Err(ErrorCode::Unauthenticated.status(
                    "the bearer token is no longer valid (auth.tokens changed); reconnect with a valid one",
                ));
            }
        }
        Ok(Caller {
            grants: loaded.grants(kind, principal),
            ..caller.clone()
        })
    }

    /// Authenticates and requires one action.
    pub fn check<T>(
        &self,
        request: &tonic::Request<T>,
        action: Action<'_>,
    ) -> Result<Caller, tonic::Status> {
        let caller = self.authenticate(request)?;
        caller.require(action)?;
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn request(token: Option<&str>, peer: Option<&str>) -> tonic::Request<()> {
        let mut r = tonic::Request::new(());
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        if let Some(p) = peer {
            r.extensions_mut().insert(PeerInfo {
                remote: None,
                principal: Some(p.into()),
            });
        }
        r
    }

    #[test]
    fn tokens_certificates_and_grants() {
        let dir = std::env::temp_dir().join(format!("ballast-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = write(
            &dir,
            "policy.yaml",
            "tokens:\n  orders:\n    produce: [\"orders.*\"]\n  spiffe://ops:\n    retry: [read]\n    topology: [read, mark_draining]\n\
             certificates:\n  spiffe://ops:\n    retry: [read]\n    topology: [read, mark_draining]\n",
        );
        let hash_file = write(
            &dir,
            "ops.sha256",
            &format!("{}\n", token_sha256("ops-secret")),
        );
        let access = Access::load(&AuthConfig {
            policy_file: Some(policy.clone()),
            tokens: vec![
                TokenConfig {
                    principal: "orders".into(),
                    sha256: Some(token_sha256("orders-secret")),
                    sha256_file: None,
                },
                TokenConfig {
                    principal: "spiffe://ops".into(),
                    sha256: None,
                    sha256_file: Some(hash_file),
                },
            ],
            ..AuthConfig::default()
        })
        .unwrap();

        let e = access.authenticate(&request(None, None)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = access
            .authenticate(&request(Some("nope"), None))
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("not valid"), "{e:?}");

        let orders = access
            .authenticate(&request(Some("orders-secret"), None))
            .unwrap();
        assert!(orders.allows(Action::Produce { topic: "orders.eu" }));
        assert!(!orders.allows(Action::Produce { topic: "payments" }));
        assert!(!orders.allows(Action::Retry(RetryAction::Read)));

        // A token wins over the certificate; the certificate alone names its principal.
        let ops = access
            .authenticate(&request(None, Some("spiffe://ops")))
            .unwrap();
        assert!(ops.allows(Action::Retry(RetryAction::Read)));
        let e = ops.require(Action::Retry(RetryAction::Write)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("retry: write"), "{e:?}");
        assert!(!ops.allows(Action::Topology(TopologyAction::Plan)));

        // A principal the policy does not list is authenticated and granted nothing.
        let stranger = access
            .authenticate(&request(None, Some("stranger")))
            .unwrap();
        assert!(!stranger.allows(Action::Produce { topic: "orders.eu" }));

        // Reload: a grant appears; a broken file keeps the last good policy.
        std::fs::write(
            &policy,
            "tokens:\n  orders:\n    produce: [\"orders.*\", payments]\n",
        )
        .unwrap();
        access.reload_if_changed();
        let orders = access
            .authenticate(&request(Some("orders-secret"), None))
            .unwrap();
        assert!(orders.allows(Action::Produce { topic: "payments" }));
        std::fs::write(&policy, "principals: [not, a, map").unwrap();
        access.reload_if_changed();
        let orders = access
            .authenticate(&request(Some("orders-secret"), None))
            .unwrap();
        assert!(orders.allows(Action::Produce { topic: "payments" }));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A certificate named like a token principal gets none of its grants, in either
    /// policy format; a name granted twice is refused.
    #[test]
    fn token_and_certificate_principals_are_kept_apart() {
        let dir = std::env::temp_dir().join(format!("ballast-kinds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = vec![TokenConfig {
            principal: "orders".into(),
            sha256: Some(token_sha256("orders-secret")),
            sha256_file: None,
        }];
        for text in [
            "tokens:\n  orders:\n    produce: [\"orders.*\"]\ncertificates:\n  spiffe://ops:\n    retry: [read]\n",
            // The older single section: `orders` is listed in auth.tokens, so it is a token
            // principal only.
            "principals:\n  orders:\n    produce: [\"orders.*\"]\n  spiffe://ops:\n    retry: [read]\n",
        ] {
            let policy = write(&dir, "policy.yaml", text);
            let access = Access::load(&AuthConfig {
                policy_file: Some(policy),
                tokens: tokens.clone(),
                ..AuthConfig::default()
            })
            .unwrap();
            let by_token = access
                .authenticate(&request(Some("orders-secret"), None))
                .unwrap();
            assert!(by_token.allows(Action::Produce { topic: "orders.eu" }), "{text}");
            let impostor = access
                .authenticate(&request(None, Some("orders")))
                .unwrap();
            assert!(!impostor.allows(Action::Produce { topic: "orders.eu" }), "{text}");
            assert!(
                impostor.denial(Action::Produce { topic: "orders.eu" }).contains("certificate principal"),
                "{text}"
            );
            let ops = access
                .authenticate(&request(None, Some("spiffe://ops")))
                .unwrap();
            assert!(ops.allows(Action::Retry(RetryAction::Read)), "{text}");
        }
        let policy = write(
            &dir,
            "twice.yaml",
            "tokens:\n  orders: {}\nprincipals:\n  orders: {}\n",
        );
        let err = Access::load(&AuthConfig {
            policy_file: Some(policy),
            tokens,
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("granted twice"), "{err:#}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A caller taken when a stream opened follows later reloads through `refresh`, and
    /// a rotated token ends it.
    #[test]
    fn refresh_follows_reloads_and_token_rotation() {
        let dir = std::env::temp_dir().join(format!("ballast-refresh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = write(
            &dir,
            "policy.yaml",
            "tokens:\n  orders:\n    produce: [orders]\n",
        );
        let hash = write(&dir, "orders.sha256", &token_sha256("orders-secret"));
        let access = Access::load(&AuthConfig {
            policy_file: Some(policy.clone()),
            tokens: vec![TokenConfig {
                principal: "orders".into(),
                sha256: None,
                sha256_file: Some(hash.clone()),
            }],
            ..AuthConfig::default()
        })
        .unwrap();
        let opened = access
            .authenticate(&request(Some("orders-secret"), None))
            .unwrap();
        std::fs::write(&policy, "tokens:\n  orders:\n    produce: [payments]\n").unwrap();
        access.reload_if_changed();
        assert!(
            opened.allows(Action::Produce { topic: "orders" }),
            "the old copy"
        );
        let now = access.refresh(&opened).unwrap();
        assert!(!now.allows(Action::Produce { topic: "orders" }));
        assert!(now.allows(Action::Produce { topic: "payments" }));
        std::fs::write(&hash, token_sha256("rotated")).unwrap();
        access.reload_if_changed();
        let e = access.refresh(&opened).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn open_allows_everything_and_bad_config_is_named() {
        let open = Access::open();
        assert!(!open.enforced());
        let c = open.authenticate(&request(None, None)).unwrap();
        assert!(c.allows(Action::Retry(RetryAction::Write)));

        let e = AuthConfig {
            tokens: vec![TokenConfig {
                principal: "x".into(),
                sha256: Some(token_sha256("t")),
                sha256_file: None,
            }],
            ..AuthConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("auth.policy_file"), "{e}");
        let e = AuthConfig {
            policy_file: Some("/p".into()),
            tokens: vec![TokenConfig {
                principal: "x".into(),
                sha256: Some("plaintext-token".into()),
                sha256_file: None,
            }],
            ..AuthConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(format!("{e:#}").contains("auth.tokens[x].sha256"), "{e:#}");
    }
}
