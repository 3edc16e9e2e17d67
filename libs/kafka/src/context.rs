//! The librdkafka client context: OAUTHBEARER token refreshes and librdkafka's own error
//! reports. It has a module of its own so librdkafka's lines carry the target
//! `ballast_kafka::context`, not the SASL module's.

use crate::sasl::{SaslAuth, TokenSource};

/// The librdkafka client context of every Ballast producer and consumer: it answers
/// OAUTHBEARER token refreshes from the configured source and logs client errors.
#[derive(Debug, Clone, Default)]
pub struct KafkaContext {
    tokens: Option<TokenSource>,
}

impl KafkaContext {
    pub fn new(auth: Option<&SaslAuth>) -> Self {
        Self {
            tokens: match auth {
                Some(SaslAuth::Bearer(source)) => Some(source.clone()),
                _ => None,
            },
        }
    }
}

impl rdkafka::ClientContext for KafkaContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        let source = self
            .tokens
            .as_ref()
            .ok_or("kafka.sasl.mechanism is not OAUTHBEARER or AWS_MSK_IAM")?;
        let t = source.fetch_blocking().inspect_err(|e| {
            tracing::error!(error = %e, "kafka OAUTHBEARER token refresh failed");
        })?;
        Ok(rdkafka::client::OAuthToken {
            token: t.token,
            principal_name: t.principal,
            lifetime_ms: t.expires_at_ms,
        })
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::error!(error = %error, "librdkafka: {reason}");
    }
}

impl rdkafka::consumer::ConsumerContext for KafkaContext {}
