//! The client side: TLS (with a client certificate for mTLS) and a bearer token on every
//! call. The CLI and the services' own client connections (gateway → topology) use it.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How a client reaches a secured server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSecurity {
    /// PEM CA bundle that signs the server's certificate; TLS is on when set.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mTLS.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's PEM private key.
    pub key_file: Option<PathBuf>,
    /// A file holding the bearer token sent on every call.
    pub token_file: Option<PathBuf>,
    /// The bearer token itself (the CLI's `--token` / `BALLAST_TOKEN`); never in YAML.
    #[serde(skip)]
    pub token: Option<String>,
    /// Send the token without TLS to a host other than this one (a trusted network, or a
    /// sidecar that encrypts). Off: such an endpoint is refused, since anyone on the path
    /// could read the token.
    pub allow_plaintext_token: bool,
}

/// Adds `authorization: Bearer …` to every call when a token is set.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel that sends the configured credentials.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

impl ClientSecurity {
    pub fn tls(&self) -> bool {
        self.ca_file.is_some()
    }

    fn bearer(&self) -> anyhow::Result<Bearer> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("token file {}: cannot read it", f.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let value = token
            .map(|t| {
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .context("the token is not valid header text")
            })
            .transpose()?;
        Ok(Bearer(value))
    }

    /// Refuses to send a bearer token in plaintext to another host, unless
    /// `allow_plaintext_token` says so. Loopback and TLS are fine.
    pub fn check_token_transport(&self, url: &str) -> anyhow::Result<()> {
        let has_token = self.token.is_some() || self.token_file.is_some();
        if !has_token || self.tls() || self.allow_plaintext_token {
            return Ok(());
        }
        let uri: tonic::transport::Uri =
            url.parse().with_context(|| format!("bad endpoint {url}"))?;
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        anyhow::ensure!(
            loopback,
            "refusing to send a bearer token in plaintext to {url}: anyone on the path could \
             read it. Give the server's CA (ca_file, or --tls-ca) to use TLS, or on a trusted \
             network set allow_plaintext_token: true (--allow-plaintext-token)"
        );
        Ok(())
    }

    /// The endpoint for `url`, with TLS when a CA is configured (an `http://` URL becomes
    /// `https://`). A token in plaintext to another host is refused
    /// ([`Self::check_token_transport`]).
    pub fn endpoint(&self, url: &str) -> anyhow::Result<Endpoint> {
        self.check_token_transport(url)?;
        if self.cert_file.is_some() != self.key_file.is_some() {
            anyhow::bail!("a client certificate needs both its cert and key files");
        }
        if !self.tls() {
            anyhow::ensure!(
                self.cert_file.is_none(),
                "a client certificate needs TLS: give the server's CA too"
            );
            return Endpoint::from_shared(url.to_string())
                .with_context(|| format!("bad endpoint {url}"));
        }
        let url = match url.strip_prefix("http://") {
            Some(rest) => format!("https://{rest}"),
            None => url.to_string(),
        };
        let ca_file = self.ca_file.as_ref().expect("checked above");
        let ca = std::fs::read(ca_file)
            .with_context(|| format!("CA file {}: cannot read it", ca_file.display()))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let (Some(c), Some(k)) = (&self.cert_file, &self.key_file) {
            let cert = std::fs::read(c)
                .with_context(|| format!("client certificate {}: cannot read it", c.display()))?;
            let key = std::fs::read(k)
                .with_context(|| format!("client key {}: cannot read it", k.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad endpoint {url}"))?
            .tls_config(tls)
            .context("client tls config")
    }

    /// Wraps a connected channel so every call carries the token.
    pub fn wrap(&self, channel: Channel) -> anyhow::Result<AuthChannel> {
        Ok(InterceptedService::new(channel, self.bearer()?))
    }

    /// Connects to `url` with these credentials.
    pub async fn connect(&self, url: &str) -> anyhow::Result<AuthChannel> {
        let channel = self
            .endpoint(url)?
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        self.wrap(channel)
    }
}

/// Turns `host:port` into a gRPC endpoint URL (`http://host:port`); a URL is kept as it is.
pub fn service_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_in_plaintext_only_to_this_host_or_when_allowed() {
        let with_token = ClientSecurity {
            token: Some("t".into()),
            ..ClientSecurity::default()
        };
        let err = with_token
            .endpoint("http://10.0.0.1:50051")
            .expect_err("plaintext to another host")
            .to_string();
        assert!(
            err.contains("allow_plaintext_token") && err.contains("--tls-ca"),
            "{err}"
        );
        let from_file = ClientSecurity {
            token_file: Some("/run/secrets/token".into()),
            ..ClientSecurity::default()
        };
        assert!(from_file.endpoint("http://topology:50054").is_err());
        for url in [
            "http://127.0.0.1:50051",
            "http://localhost:50051",
            "http://[::1]:50051",
        ] {
            with_token
                .endpoint(url)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let allowed = ClientSecurity {
            allow_plaintext_token: true,
            ..with_token.clone()
        };
        allowed.endpoint("http://10.0.0.1:50051").unwrap();
        ClientSecurity::default()
            .endpoint("http://10.0.0.1:50051")
            .unwrap();
    }
}
