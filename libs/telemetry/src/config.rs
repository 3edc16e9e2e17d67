//! Service configuration: defaults, then a YAML file, then `BALLAST_*` environment
//! variables; validation; and the YAML dump of `--dump-config`.

use crate::TelemetryConfig;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;

/// Loads a service config: its defaults, then the YAML file if given, then `BALLAST_*`
/// environment variables (nested keys joined by `__`, e.g. `BALLAST_KAFKA__WRITE_TIMEOUT`).
/// `BALLAST_CONFIG` names the file and is not a key. Unknown keys are errors when `T` denies
/// them.
pub fn load_config<T>(file: Option<&Path>) -> anyhow::Result<T>
where
    T: Serialize + serde::de::DeserializeOwned + Default,
{
    use figment::providers::{Env, Format, Serialized, Yaml};
    let mut fig = figment::Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        anyhow::ensure!(
            path.exists(),
            "config file {} does not exist",
            path.display()
        );
        fig = fig.merge(Yaml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed("BALLAST_").ignore(&["config"]).split("__"));
    fig.extract().map_err(|e| anyhow::anyhow!("config: {e}"))
}

/// The command line every service binary shares.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// YAML config file. `BALLAST_*` environment variables override it (nested keys joined
    /// by `__`, e.g. BALLAST_KAFKA__BOOTSTRAP_SERVERS).
    #[arg(long, short, env = "BALLAST_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective config as YAML and exit.
    #[arg(long)]
    pub dump_config: bool,
    /// Print the config's JSON Schema (for editors, e.g. yaml-language-server) and exit.
    #[arg(long, conflicts_with = "dump_config")]
    pub print_schema: bool,
}

/// What every service config offers the bootstrap. Implement it with
/// [`impl_service_config!`](crate::impl_service_config).
pub trait ServiceConfig:
    Serialize + serde::de::DeserializeOwned + Default + schemars::JsonSchema
{
    /// Checks every setting, naming the bad one.
    fn validate(&self) -> anyhow::Result<()>;
    fn telemetry(&self) -> &TelemetryConfig;
    /// The gRPC and the admin (metrics, health) addresses.
    fn listen_addrs(&self) -> (SocketAddr, SocketAddr);

    /// Defaults, then the YAML file, then `BALLAST_*` variables; then validation.
    fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let cfg: Self = load_config(file)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Defaults, then `yaml`, then validation: a config file's text, without the
    /// environment.
    fn from_yaml(yaml: &str) -> anyhow::Result<Self> {
        use figment::providers::{Format, Serialized, Yaml};
        let cfg: Self = figment::Figment::from(Serialized::defaults(Self::default()))
            .merge(Yaml::string(yaml))
            .extract()
            .map_err(|e| anyhow::anyhow!("config: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The effective config as YAML, secrets redacted (see [`redact`]).
    fn to_yaml(&self) -> String {
        match serde_yaml::to_value(self) {
            Ok(mut v) => {
                redact(&mut v);
                serde_yaml::to_string(&v)
                    .unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
            }
            Err(e) => format!("# cannot render config: {e}\n"),
        }
    }
}

/// Implements [`ServiceConfig`] for a config struct with `listen`, `admin_listen` and
/// `telemetry` fields and an inherent `validate` whose error converts to `anyhow::Error`.
#[macro_export]
macro_rules! impl_service_config {
    ($config:ty) => {
        impl $crate::ServiceConfig for $config {
            #[allow(clippy::needless_question_mark)] // the inherent error may not be anyhow's
            fn validate(&self) -> $crate::anyhow::Result<()> {
                Ok(<$config>::validate(self)?)
            }

            fn telemetry(&self) -> &$crate::TelemetryConfig {
                &self.telemetry
            }

            fn listen_addrs(&self) -> (::std::net::SocketAddr, ::std::net::SocketAddr) {
                (self.listen, self.admin_listen)
            }
        }
    };
}

/// What stands in for a secret in `--dump-config`.
pub const REDACTED: &str = "<redacted>";

/// Replaces secrets in a config tree: the value of every key that names one (`password`,
/// `secret`, `token`, as in `sasl.password` or `secret_access_key`), and in every URL the
/// password of its credentials (`redis://user:PASSWORD@host`) and the value of every query
/// parameter that names a secret (`postgres://db/app?password=PASSWORD`).
pub fn redact(value: &mut serde_yaml::Value) {
    use serde_yaml::Value;
    match value {
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                // `*_file` keys name where a secret is, not the secret.
                let secret_key = k.as_str().is_some_and(names_a_secret);
                if secret_key
                    && !v.is_null()
                    && !v.is_bool()
                    && !matches!(v, Value::Mapping(_) | Value::Sequence(_))
                {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Some(r) = redact_url(s) {
                *s = r;
            }
        }
        _ => {}
    }
}

/// Whether a key names a secret. `*_file` keys name where a secret is, not the secret.
fn names_a_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    !k.ends_with("_file")
        && ["password", "secret", "token"]
            .iter()
            .any(|s| k.contains(s))
}

/// A URL (`scheme://…`) with the password of its credentials and the values of its
/// secret query parameters replaced; None when it has neither.
fn redact_url(s: &str) -> Option<String> {
    let start = s.find("://")? + 3;
    let query_start = s[start..].find('?').map(|i| start + i);
    let authority_end = s[start..query_start.unwrap_or(s.len())]
        .find('/')
        .map_or(query_start.unwrap_or(s.len()), |i| start + i);
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    let head = &s[..query_start.unwrap_or(s.len())];
    match s[start..authority_end].rfind('@').map(|at| at + start) {
        Some(at) if s[start..at].contains(':') => {
            let colon = s[start..at].find(':').map(|c| c + start).unwrap_or(at);
            out.push_str(&s[..=colon]);
            out.push_str(REDACTED);
            out.push_str(&head[at..]);
            changed = true;
        }
        _ => out.push_str(head),
    }
    if let Some(q) = query_start {
        out.push('?');
        let (query, fragment) = match s[q + 1..].split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (&s[q + 1..], None),
        };
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((k, v)) if !v.is_empty() && names_a_secret(k) => {
                    changed = true;
                    format!("{k}={REDACTED}")
                }
                _ => param.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let mut v: serde_yaml::Value = serde_yaml::from_str(
            "redis:\n  url: redis://:hunter2@cache:6379/0\n  cluster_urls: [redis://u:pw@r1:6379, redis://r2:6379]\n\
             failover:\n  database_url: postgres://app:s3cret@db/ballast\n  sqs:\n    secret_access_key: AKIASECRET\n    access_key_id: AKIA\n\
             kafka:\n  properties:\n    sasl.password: pw\n    sasl.username: alice\n  token_file: null\n  secret_access_key_file: /run/secrets/sqs\n\
             dedup:\n  url: postgres://db/ballast?sslmode=require&password=qpass&user=app\n  other: redis://u:upw@r3:6379/0?auth_token=tok9#frag\n",
        )
        .unwrap();
        redact(&mut v);
        let out = serde_yaml::to_string(&v).unwrap();
        for secret in [
            "hunter2",
            "s3cret",
            "AKIASECRET",
            ": pw",
            "u:pw@",
            "qpass",
            "upw",
            "tok9",
        ] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        for kept in [
            "redis://:<redacted>@cache:6379/0",
            "redis://u:<redacted>@r1:6379",
            "redis://r2:6379",
            "postgres://app:<redacted>@db/ballast",
            "access_key_id: AKIA",
            "sasl.username: alice",
            "token_file: null",
            "secret_access_key_file: /run/secrets/sqs",
            "postgres://db/ballast?sslmode=require&password=<redacted>&user=app",
            "redis://u:<redacted>@r3:6379/0?auth_token=<redacted>#frag",
        ] {
            assert!(out.contains(kept), "{kept} missing:\n{out}");
        }
    }
}
