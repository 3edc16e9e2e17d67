//! SASL to Kafka: the mechanisms Ballast speaks, where their secrets come from, and the
//! librdkafka context that hands OAUTHBEARER tokens to the producer and consumers.
//!
//! One `kafka.sasl` setting serves both Kafka paths. librdkafka does PLAIN and SCRAM
//! itself (given `sasl.*` properties) and asks [`KafkaContext`] for OAUTHBEARER tokens; the
//! protocol-level metadata client speaks SaslHandshake v1 and SaslAuthenticate with
//! [`SaslAuth`] (SCRAM in [`scram`]).

pub mod scram;

use crate::Error;
use ballast_core::unix_ms as now_ms;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// A SASL mechanism, as `kafka.sasl.mechanism` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// A bearer token read from `kafka.sasl.token_file`.
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
    /// Amazon MSK's IAM auth: OAUTHBEARER with a token signed from the AWS credential
    /// chain (`aws-msk-iam-sasl-signer`).
    #[serde(rename = "AWS_MSK_IAM")]
    AwsMskIam,
}

impl SaslMechanism {
    /// The name in config and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer => "OAUTHBEARER",
            Self::AwsMskIam => "AWS_MSK_IAM",
        }
    }

    /// The mechanism the broker is asked for: MSK's IAM auth rides on OAUTHBEARER.
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::AwsMskIam => "OAUTHBEARER",
            m => m.name(),
        }
    }
}

impl std::fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `kafka.sasl`: the mechanism and where its secret comes from. Secrets are only ever
/// read from files (Kubernetes Secrets); they never sit in the YAML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSasl {
    /// The SASL mechanism: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER` or
    /// `AWS_MSK_IAM`; required with `sasl_plaintext` and `sasl_ssl`.
    pub mechanism: Option<SaslMechanism>,
    /// PLAIN and SCRAM: the user (its password comes from `password_file`, read at
    /// start).
    pub username: Option<String>,
    /// PLAIN and SCRAM: a file holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// OAUTHBEARER: a file holding the token, re-read at every refresh, so a sidecar or a
    /// projected token can rotate it. A JWT's `exp` claim sets when it is refreshed;
    /// other tokens are re-read every minute.
    pub token_file: Option<PathBuf>,
    /// AWS_MSK_IAM: the cluster's region. Tokens are signed (`aws-msk-iam-sasl-signer`)
    /// with credentials from the AWS chain (env, web identity, profile, container or
    /// instance role) and sent as OAUTHBEARER.
    pub aws_region: Option<String>,
}

impl KafkaSasl {
    pub(crate) fn validate(&self, sasl_protocol: bool) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        let Some(mechanism) = self.mechanism else {
            if sasl_protocol {
                return bad("kafka.security_protocol is sasl_*, but kafka.sasl.mechanism is not set (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM)".into());
            }
            if *self != Self::default() {
                return bad("kafka.sasl.* is set but kafka.sasl.mechanism is not".into());
            }
            return Ok(());
        };
        if !sasl_protocol {
            return bad(format!(
                "kafka.sasl.mechanism is {mechanism}, but kafka.security_protocol is not sasl_plaintext or sasl_ssl"
            ));
        }
        let (needs, forbids): (&[&str], &[&str]) = match mechanism {
            SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => (
                &["username", "password_file"],
                &["token_file", "aws_region"],
            ),
            SaslMechanism::OAuthBearer => (
                &["token_file"],
                &["username", "password_file", "aws_region"],
            ),
            SaslMechanism::AwsMskIam => (
                &["aws_region"],
                &["username", "password_file", "token_file"],
            ),
        };
        let set = |k: &str| match k {
            "username" => self.username.as_deref().is_some_and(|u| !u.is_empty()),
            "password_file" => self.password_file.is_some(),
            "token_file" => self.token_file.is_some(),
            _ => self.aws_region.as_deref().is_some_and(|r| !r.is_empty()),
        };
        if let Some(k) = needs.iter().find(|k| !set(k)) {
            return bad(format!(
                "kafka.sasl.mechanism {mechanism} needs kafka.sasl.{k}"
            ));
        }
        if let Some(k) = forbids.iter().find(|k| set(k)) {
            return bad(format!(
                "kafka.sasl.{k} does not apply to kafka.sasl.mechanism {mechanism}"
            ));
        }
        Ok(())
    }

    /// The credentials, with secrets read from their files. `None` without a mechanism.
    pub fn resolve(&self) -> Result<Option<SaslAuth>, Error> {
        let Some(mechanism) = self.mechanism else {
            return Ok(None);
        };
        let user = || self.username.clone().unwrap_or_default();
        let password = || -> Result<String, Error> {
            let path = self.password_file.as_ref().ok_or_else(|| {
                Error::Config(format!(
                    "kafka.sasl.mechanism {mechanism} needs kafka.sasl.password_file"
                ))
            })?;
            read_secret(path, "kafka.sasl.password_file")
        };
        Ok(Some(match mechanism {
            SaslMechanism::Plain => SaslAuth::Plain {
                user: user(),
                password: password()?,
            },
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => SaslAuth::Scram {
                mechanism,
                user: user(),
                password: password()?,
            },
            SaslMechanism::OAuthBearer => SaslAuth::Bearer(TokenSource::File(
                self.token_file.clone().unwrap_or_default(),
            )),
            SaslMechanism::AwsMskIam => SaslAuth::Bearer(TokenSource::MskIam {
                region: self.aws_region.clone().unwrap_or_default(),
            }),
        }))
    }
}

/// A secret file's content, without the trailing newline. An empty file is an error.
fn read_secret(path: &std::path::Path, key: &str) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{key} {}: {e}", path.display())))?;
    let text = text.trim_end_matches(['\n', '\r']).to_string();
    if text.is_empty() {
        return Err(Error::Config(format!("{key} {} is empty", path.display())));
    }
    Ok(text)
}

/// Resolved SASL credentials. `Debug` never shows a secret.
#[derive(Clone)]
pub enum SaslAuth {
    Plain {
        user: String,
        password: String,
    },
    Scram {
        mechanism: SaslMechanism,
        user: String,
        password: String,
    },
    Bearer(TokenSource),
}

impl std::fmt::Debug for SaslAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain { user, .. } => write!(f, "PLAIN({user})"),
            Self::Scram {
                mechanism, user, ..
            } => write!(f, "{mechanism}({user})"),
            Self::Bearer(s) => write!(f, "OAUTHBEARER({s:?})"),
        }
    }
}

impl SaslAuth {
    pub fn mechanism(&self) -> SaslMechanism {
        match self {
            Self::Plain { .. } => SaslMechanism::Plain,
            Self::Scram { mechanism, .. } => *mechanism,
            Self::Bearer(TokenSource::File(_)) => SaslMechanism::OAuthBearer,
            Self::Bearer(TokenSource::MskIam { .. }) => SaslMechanism::AwsMskIam,
        }
    }

    /// librdkafka's `sasl.*` properties. OAUTHBEARER tokens come from [`KafkaContext`].
    pub(crate) fn rdkafka_properties(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(("sasl.mechanism", self.mechanism().wire_name().to_string()));
        match self {
            Self::Plain { user, password } | Self::Scram { user, password, .. } => {
                out.push(("sasl.username", user.clone()));
                out.push(("sasl.password", password.clone()));
            }
            Self::Bearer(_) => {}
        }
    }
}

/// Where OAUTHBEARER tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    MskIam { region: String },
}

/// A bearer token and when it lapses.
#[derive(Clone)]
pub struct BearerToken {
    pub token: String,
    pub principal: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken")
            .field("principal", &self.principal)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// How long a token without an `exp` claim is used before its file is read again.
const OPAQUE_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

impl TokenSource {
    /// A current token.
    pub async fn fetch(&self) -> Result<BearerToken, Error> {
        match self {
            Self::File(path) => {
                let token = read_secret(path, "kafka.sasl.token_file")?;
                let claims = jwt_claims(&token);
                let claim = |k: &str| claims.as_ref().and_then(|c| c.get(k).cloned());
                let expires_at_ms = claim("exp")
                    .and_then(|e| e.as_i64())
                    .map(|s| s.saturating_mul(1000))
                    .unwrap_or_else(|| now_ms() + OPAQUE_TOKEN_LIFETIME.as_millis() as i64);
                let principal = claim("sub")
                    .and_then(|s| s.as_str().map(str::to_string))
                    .unwrap_or_else(|| "ballast".into());
                Ok(BearerToken {
                    token,
                    principal,
                    expires_at_ms,
                })
            }
            Self::MskIam { region } => {
                let (token, expires_at_ms) = aws_msk_iam_sasl_signer::generate_auth_token(
                    aws_types::region::Region::new(region.clone()),
                )
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "AWS_MSK_IAM: no token from the AWS credential chain (region {region}): {e}"
                    ))
                })?;
                Ok(BearerToken {
                    token,
                    principal: "ballast".into(),
                    expires_at_ms,
                })
            }
        }
    }

    /// [`Self::fetch`] from synchronous code (librdkafka's callback), on a thread of its
    /// own so it works inside or outside a Tokio runtime.
    pub fn fetch_blocking(&self) -> Result<BearerToken, Error> {
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Config(format!("token runtime: {e}")))?
                    .block_on(self.fetch())
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Config("token fetch panicked".into())))
        })
    }
}

/// The claims of a JWT, when `token` is one.
fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (_, claims, _) = (parts.next()?, parts.next()?, parts.next()?);
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(m: SaslMechanism) -> KafkaSasl {
        KafkaSasl {
            mechanism: Some(m),
            ..KafkaSasl::default()
        }
    }

    #[test]
    fn each_mechanism_names_what_it_lacks() {
        let e = sasl(SaslMechanism::ScramSha512).validate(true).unwrap_err();
        assert!(e.to_string().contains("kafka.sasl.username"), "{e}");
        let e = sasl(SaslMechanism::OAuthBearer).validate(true).unwrap_err();
        assert!(e.to_string().contains("kafka.sasl.token_file"), "{e}");
        let e = sasl(SaslMechanism::AwsMskIam).validate(true).unwrap_err();
        assert!(e.to_string().contains("kafka.sasl.aws_region"), "{e}");
        let e = KafkaSasl::default().validate(true).unwrap_err();
        assert!(e.to_string().contains("kafka.sasl.mechanism"), "{e}");
        let mut plain = sasl(SaslMechanism::Plain);
        plain.username = Some("u".into());
        plain.password_file = Some("/p".into());
        plain.validate(true).unwrap();
        let e = plain.validate(false).unwrap_err();
        assert!(e.to_string().contains("sasl_ssl"), "{e}");
        plain.token_file = Some("/t".into());
        let e = plain.validate(true).unwrap_err();
        assert!(e.to_string().contains("token_file does not apply"), "{e}");
    }

    #[test]
    fn secrets_come_from_files_and_never_show() {
        let dir = std::env::temp_dir().join(format!("ballast-sasl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut cfg = sasl(SaslMechanism::ScramSha256);
        cfg.username = Some("ballast".into());
        cfg.password_file = Some(file.clone());
        let auth = cfg.resolve().unwrap().unwrap();
        let SaslAuth::Scram { password, .. } = &auth else {
            panic!("{auth:?}")
        };
        assert_eq!(password, "s3cret");
        assert!(!format!("{auth:?}").contains("s3cret"));
        std::fs::write(&file, "").unwrap();
        let e = cfg.resolve().unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_jwt_sets_its_own_expiry_and_principal() {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"none"}"#),
            enc(r#"{"sub":"svc-ballast","exp":4102444800}"#)
        );
        let c = jwt_claims(&jwt).unwrap();
        assert_eq!(c["sub"], "svc-ballast");
        assert!(jwt_claims("opaque-token").is_none());
    }
}
