//! How Ballast reaches secured brokers. One setting maps onto both Kafka clients, so they
//! can never disagree: librdkafka (the producer and consumers) gets `security.protocol`,
//! `ssl.*` and `sasl.*` properties (and OAUTHBEARER tokens from [`KafkaContext`]), and the
//! protocol-level metadata client gets a rustls connector with the same CA and client
//! certificate and the same SASL credentials.

use crate::sasl::{KafkaSasl, SaslAuth};
use crate::KafkaContext;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    /// TLS to every broker (mTLS with `kafka.ssl.cert_file` and `key_file`).
    Ssl,
    /// SASL (`kafka.sasl`) without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    /// librdkafka's `security.protocol` value.
    fn rdkafka_name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSsl {
    /// PEM CA bundle that signs the brokers' certificates; unset, the system's CA
    /// certificates (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set), as for a managed cluster
    /// with public certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that require mTLS.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's PEM private key.
    pub key_file: Option<PathBuf>,
}

/// librdkafka properties, in the order they are set.
pub type RdkafkaProperties = Vec<(&'static str, String)>;

/// The security part of the Kafka config, shared by the producer, consumers and the
/// metadata client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    pub ssl: KafkaSsl,
    pub sasl: KafkaSasl,
}

/// librdkafka properties that only `kafka.security_protocol`, `kafka.ssl.*` and
/// `kafka.sasl.*` may set.
const OWNED_PREFIXES: [&str; 3] = ["security.protocol", "ssl.", "sasl."];

impl KafkaSecurity {
    pub fn validate(
        &self,
        properties: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), crate::Error> {
        let bad = |m: String| Err(crate::Error::Config(m));
        if let Some(k) = properties
            .keys()
            .find(|k| OWNED_PREFIXES.iter().any(|p| k.starts_with(p)))
        {
            return bad(format!(
                "kafka.properties may not set {k}: use kafka.security_protocol, kafka.ssl.* and kafka.sasl.*, which apply to every Kafka client Ballast runs"
            ));
        }
        if self.ssl.cert_file.is_some() != self.ssl.key_file.is_some() {
            return bad("kafka.ssl.cert_file and kafka.ssl.key_file go together".into());
        }
        if !self.protocol.uses_tls() && (self.ssl.ca_file.is_some() || self.ssl.cert_file.is_some())
        {
            return bad(format!(
                "kafka.ssl.* is set but kafka.security_protocol is {}",
                self.protocol.rdkafka_name()
            ));
        }
        self.sasl.validate(self.protocol.uses_sasl())
    }

    /// The SASL credentials, secrets read from their files; `None` without SASL.
    pub fn sasl_auth(&self) -> Result<Option<SaslAuth>, crate::Error> {
        if !self.protocol.uses_sasl() {
            return Ok(None);
        }
        self.sasl.resolve()
    }

    /// The librdkafka properties for these settings (secrets read from their files), and
    /// the client context that supplies OAUTHBEARER tokens.
    pub fn rdkafka_config(&self) -> Result<(RdkafkaProperties, KafkaContext), crate::Error> {
        let mut out = vec![(
            "security.protocol",
            self.protocol.rdkafka_name().to_string(),
        )];
        let auth = self.sasl_auth()?;
        if let Some(auth) = &auth {
            auth.rdkafka_properties(&mut out);
        }
        if self.protocol.uses_tls() {
            let path = |p: &PathBuf| p.display().to_string();
            if let Some(ca) = &self.ssl.ca_file {
                out.push(("ssl.ca.location", path(ca)));
            }
            if let (Some(c), Some(k)) = (&self.ssl.cert_file, &self.ssl.key_file) {
                out.push(("ssl.certificate.location", path(c)));
                out.push(("ssl.key.location", path(k)));
            }
        }
        Ok((out, KafkaContext::new(auth.as_ref())))
    }

    /// The metadata client's TLS connector, for `ssl` and `sasl_ssl`.
    pub fn tls_connector(&self) -> Result<Option<tokio_rustls::TlsConnector>, crate::Error> {
        if !self.protocol.uses_tls() {
            return Ok(None);
        }
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cfg_err = |m: String| crate::Error::Config(m);
        let mut roots = rustls::RootCertStore::empty();
        match &self.ssl.ca_file {
            Some(ca) => {
                for cert in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| cfg_err(format!("kafka.ssl.ca_file {}: {e}", ca.display())))?
                {
                    let cert = cert
                        .map_err(|e| cfg_err(format!("kafka.ssl.ca_file {}: {e}", ca.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| cfg_err(format!("kafka.ssl.ca_file {}: {e}", ca.display())))?;
                }
            }
            None => {
                let (added, _) =
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if added == 0 {
                    return Err(cfg_err(
                        "kafka.security_protocol uses TLS, kafka.ssl.ca_file is not set, and no system CA certificates were found".into(),
                    ));
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg_err(format!("tls: {e}")))?
        .with_root_certificates(roots);
        let config = match (&self.ssl.cert_file, &self.ssl.key_file) {
            (Some(c), Some(k)) => {
                let certs = CertificateDer::pem_file_iter(c)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| cfg_err(format!("kafka.ssl.cert_file {}: {e}", c.display())))?;
                let key = PrivateKeyDer::from_pem_file(k)
                    .map_err(|e| cfg_err(format!("kafka.ssl.key_file {}: {e}", k.display())))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| cfg_err(format!("kafka.ssl client certificate: {e}")))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(config))))
    }
}
