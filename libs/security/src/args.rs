//! How every command-line tool that calls a service reaches a secured one: TLS
//! (`--tls-ca`), a client certificate for mTLS (`--tls-cert`, `--tls-key`) and a bearer
//! token (`--token`, or better `BALLAST_TOKEN`, which keeps it out of the process list).
//! Behind the `clap` feature, for the binaries only.

use crate::{AuthChannel, ClientSecurity};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// CA bundle (PEM) that signs the service's certificate; turns TLS on.
    #[arg(long, env = "BALLAST_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    #[arg(long, env = "BALLAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mTLS.
    #[arg(long, env = "BALLAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Bearer token sent on every call.
    #[arg(long, env = "BALLAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Send the token without TLS to another host (a trusted network); refused otherwise.
    #[arg(long, env = "BALLAST_ALLOW_PLAINTEXT_TOKEN")]
    pub allow_plaintext_token: bool,
}

impl ClientArgs {
    pub fn security(&self) -> ClientSecurity {
        ClientSecurity {
            ca_file: self.tls_ca.clone(),
            cert_file: self.tls_cert.clone(),
            key_file: self.tls_key.clone(),
            token: self.token.clone(),
            token_file: None,
            allow_plaintext_token: self.allow_plaintext_token,
        }
    }

    /// Connects to a service at `addr` (`host:port` or a URL).
    pub async fn connect(&self, addr: &str) -> anyhow::Result<AuthChannel> {
        self.security().connect(&crate::service_url(addr)).await
    }
}
