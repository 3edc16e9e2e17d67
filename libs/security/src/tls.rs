//! TLS on a gRPC server: the certificate and key (and, for mTLS, the client CA) come from
//! files, and are reloaded when the files change, as cert-manager rotates them. A reload
//! that fails keeps the last good configuration and says why.

use crate::identity;
use crate::reload::Watched;
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Whether clients must present a certificate when `client_ca_file` is set.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client without a certificate fails the handshake.
    #[default]
    Required,
    /// A client may connect without one (and authenticate with a bearer token); a
    /// certificate it presents must still chain to the CA.
    Optional,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; TLS is on when set.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle for client certificates: mTLS.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `required` refuses clients without a certificate;
    /// `optional` lets them use a bearer token instead.
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes. They are re-read when their content
    /// changes (cert-manager rotation); a bad new file keeps the old certificates and
    /// logs why.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub reload_interval: Duration,
    /// A client that has not finished its handshake by then is dropped.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: ClientAuth::Required,
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => anyhow::bail!("tls.cert_file is set but tls.key_file is not"),
            (None, Some(_)) => anyhow::bail!("tls.key_file is set but tls.cert_file is not"),
            _ => {}
        }
        if self.client_ca_file.is_some() && self.cert_file.is_none() {
            anyhow::bail!("tls.client_ca_file needs tls.cert_file and tls.key_file (mTLS is TLS)");
        }
        if self.reload_interval.is_zero() || self.handshake_timeout.is_zero() {
            anyhow::bail!("tls.reload_interval and tls.handshake_timeout must be positive");
        }
        Ok(())
    }

    fn files(&self) -> Vec<PathBuf> {
        [&self.cert_file, &self.key_file, &self.client_ca_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn read_certs(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "{key} {}: not a readable PEM certificate file",
                path.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{key} {}: no certificate in the file",
        path.display()
    );
    Ok(certs)
}

pub(crate) fn read_key(path: &Path, key: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("{key} {}: not a readable PEM private key", path.display()))
}

pub(crate) fn roots(path: &Path, key: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, key)? {
        roots
            .add(cert)
            .with_context(|| format!("{key} {}: an unusable CA certificate", path.display()))?;
    }
    Ok(roots)
}

fn server_config(cfg: &TlsConfig) -> anyhow::Result<ServerConfig> {
    let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
        anyhow::bail!("tls.cert_file and tls.key_file are required for TLS");
    };
    let certs = read_certs(cert, "tls.cert_file")?;
    let key = read_key(key, "tls.key_file")?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?;
    let builder = match &cfg.client_ca_file {
        Some(ca) => {
            let roots = Arc::new(roots(ca, "tls.client_ca_file")?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = match cfg.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .context("tls.client_ca_file: building the client verifier")?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("tls.cert_file and tls.key_file do not make a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A server's TLS: the current configuration, swapped when the files change.
#[derive(Debug, Clone)]
pub struct TlsServer {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    handshake_timeout: Duration,
    files: Arc<Watched>,
    reload_interval: Duration,
}

impl TlsServer {
    /// Loads the files; an error names the config key and the file.
    pub fn load(cfg: &TlsConfig) -> anyhow::Result<Self> {
        cfg.validate()?;
        let files = Watched::new(cfg.files());
        let config = server_config(cfg)?;
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(config))),
            handshake_timeout: cfg.handshake_timeout,
            files: Arc::new(files),
            reload_interval: cfg.reload_interval,
        })
    }

    /// Checks the files every `reload_interval` and swaps in a new configuration when they
    /// changed; runs until the returned task is aborted.
    pub fn spawn_reload(&self, cfg: TlsConfig) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.reload_if_changed(&cfg);
            }
        })
    }

    /// Swaps in the files' new content if it changed and loads; a bad file keeps the
    /// previous configuration (and says why). Returns whether a new one is in use.
    pub fn reload_if_changed(&self, cfg: &TlsConfig) -> bool {
        if !self.files.changed() {
            return false;
        }
        match server_config(cfg) {
            Ok(c) => {
                *self.current.write().expect("tls config lock") = Arc::new(c);
                tracing::info!("tls certificates reloaded");
                true
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "tls files changed but do not load; serving the previous certificates"
                );
                false
            }
        }
    }

    /// Completes the server side of a handshake on `io`, within the handshake timeout;
    /// returns the stream and the client certificate's principal, if it sent one.
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> anyhow::Result<(tokio_rustls::server::TlsStream<IO>, Option<String>)>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let config = self.current.read().expect("tls config lock").clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let stream = tokio::time::timeout(self.handshake_timeout, acceptor.accept(io))
            .await
            .map_err(|_| anyhow::anyhow!("no tls handshake within {:?}", self.handshake_timeout))?
            .context("tls handshake")?;
        let principal = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| identity::principal_of(leaf.as_ref()));
        Ok((stream, principal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Authority, Name};

    #[test]
    fn a_bad_new_certificate_keeps_the_old_one_and_a_good_one_replaces_it() {
        let dir = std::env::temp_dir().join(format!("ballast-tls-reload-{}", std::process::id()));
        let ca = Authority::create(&dir, "reload CA").unwrap();
        let issued = ca
            .issue("server", "server", &[Name::Dns("localhost")])
            .unwrap();
        let cfg = TlsConfig {
            cert_file: Some(issued.cert_file.clone()),
            key_file: Some(issued.key_file.clone()),
            ..TlsConfig::default()
        };
        let server = TlsServer::load(&cfg).unwrap();
        let first = server.current.read().unwrap().clone();
        assert!(!server.reload_if_changed(&cfg), "nothing changed");

        std::fs::write(&issued.cert_file, "not a certificate").unwrap();
        assert!(!server.reload_if_changed(&cfg));
        assert!(
            Arc::ptr_eq(&first, &server.current.read().unwrap()),
            "kept the old one"
        );

        let next = ca
            .issue("next", "server", &[Name::Dns("localhost")])
            .unwrap();
        std::fs::copy(&next.cert_file, &issued.cert_file).unwrap();
        std::fs::copy(&next.key_file, &issued.key_file).unwrap();
        assert!(server.reload_if_changed(&cfg));
        assert!(!Arc::ptr_eq(&first, &server.current.read().unwrap()));

        let e = TlsServer::load(&TlsConfig {
            cert_file: Some(dir.join("missing.pem")),
            key_file: Some(issued.key_file.clone()),
            ..TlsConfig::default()
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("tls.cert_file"), "{e:#}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
