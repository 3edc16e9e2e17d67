//! Ballast's own APIs, secured: TLS and mTLS on every gRPC server (certificates reloaded as
//! they rotate), who is calling (bearer tokens whose SHA-256 the config holds, or the
//! client certificate's SAN/CN), what they may do (one policy file shared by every service,
//! reloaded on change), and the client side of all of it.

mod access;
#[cfg(feature = "clap")]
mod args;
mod client;
mod identity;
pub mod pki;
mod reload;
mod tls;

pub use access::{
    token_sha256, Access, Action, AuthConfig, Caller, GrantsConfig, PeerInfo, PolicyConfig,
    PrincipalKind, RetryAction, TokenConfig, TopologyAction,
};
#[cfg(feature = "clap")]
pub use args::ClientArgs;
pub use client::{service_url, AuthChannel, Bearer, ClientSecurity};
pub use identity::principal_of;
pub use tls::{ClientAuth, TlsConfig, TlsServer};
