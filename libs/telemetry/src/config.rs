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
}

/// What every service config offers the bootstrap. Implement it with
/// [`impl_service_config!`](crate::impl_service_config).
pub trait ServiceConfig: Serialize + serde::de::DeserializeOwned + Default {
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

    /// The effective config as YAML.
    fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
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
