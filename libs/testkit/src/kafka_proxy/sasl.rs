//! The SASL server: SaslHandshake and SaslAuthenticate answered by the proxy itself (PLAIN,
//! SCRAM-SHA-256 and SCRAM-SHA-512 on the server side, OAUTHBEARER by a check the test supplies).

use super::*;

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
const SCRAM_ITERATIONS: u32 = 4096;

/// Checks an OAUTHBEARER token: the principal, or why it is refused.
pub type TokenCheck = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// The SASL side of the proxy: who may log in, and how.
#[derive(Clone, Default)]
pub struct SaslUsers {
    /// User to password, for PLAIN and SCRAM.
    pub passwords: HashMap<String, String>,
    /// The mechanisms offered, by name (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`,
    /// `OAUTHBEARER`).
    pub mechanisms: Vec<&'static str>,
    /// OAUTHBEARER's token check.
    pub tokens: Option<TokenCheck>,
}

impl std::fmt::Debug for SaslUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslUsers")
            .field("users", &self.passwords.keys().collect::<Vec<_>>())
            .field("mechanisms", &self.mechanisms)
            .finish_non_exhaustive()
    }
}

impl SaslUsers {
    /// One user with `password`, offered every password mechanism.
    pub fn user(name: &str, password: &str) -> Self {
        Self {
            passwords: HashMap::from([(name.to_string(), password.to_string())]),
            mechanisms: vec!["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
            tokens: None,
        }
    }

    /// OAUTHBEARER only, with `check` deciding on each token.
    pub fn bearer(check: impl Fn(&str) -> Result<String, String> + Send + Sync + 'static) -> Self {
        Self {
            passwords: HashMap::new(),
            mechanisms: vec!["OAUTHBEARER"],
            tokens: Some(Arc::new(check)),
        }
    }
}

/// Where one connection's login stands.
pub(super) enum Login {
    /// No mechanism chosen yet.
    Start,
    /// SaslHandshake chose this mechanism.
    Chosen(&'static str),
    /// SCRAM: the server's first message is out.
    ScramSent {
        hash: ScramHash,
        password: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

pub(super) fn handshake(
    users: &SaslUsers,
    frame: Vec<u8>,
    version: i16,
) -> anyhow::Result<(Vec<u8>, Login)> {
    let mut buf = Bytes::from(frame);
    let header = RequestHeader::decode(&mut buf, SaslHandshakeRequest::header_version(version))?;
    let req = SaslHandshakeRequest::decode(&mut buf, version)?;
    anyhow::ensure!(
        version >= 1,
        "SaslHandshake v0 (unframed SASL) is not served"
    );
    let chosen = users
        .mechanisms
        .iter()
        .find(|m| **m == req.mechanism.as_str())
        .copied();
    let resp = SaslHandshakeResponse::default()
        .with_error_code(if chosen.is_some() {
            0
        } else {
            UNSUPPORTED_SASL_MECHANISM
        })
        .with_mechanisms(
            users
                .mechanisms
                .iter()
                .map(|m| StrBytes::from_static_str(m))
                .collect(),
        );
    let next = chosen.map_or(Login::Start, Login::Chosen);
    Ok((respond(header.correlation_id, version, &resp)?, next))
}

/// One SaslAuthenticate step: the answer, and the next state (`None`: login failed).
pub(super) fn authenticate(
    users: &SaslUsers,
    login: Login,
    frame: Vec<u8>,
    version: i16,
) -> anyhow::Result<(Vec<u8>, Option<Login>)> {
    let mut buf = Bytes::from(frame);
    let header = RequestHeader::decode(&mut buf, SaslAuthenticateRequest::header_version(version))?;
    let req = SaslAuthenticateRequest::decode(&mut buf, version)?;
    let message = String::from_utf8_lossy(&req.auth_bytes).into_owned();
    let answer = |code: i16, error: Option<String>, bytes: String| {
        let resp = SaslAuthenticateResponse::default()
            .with_error_code(code)
            .with_error_message(error.map(StrBytes::from_string))
            .with_auth_bytes(Bytes::from(bytes.into_bytes()));
        respond(header.correlation_id, version, &resp)
    };
    let refuse = |mechanism: &str| {
        Ok((
            answer(
                SASL_AUTHENTICATION_FAILED,
                Some(format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                )),
                String::new(),
            )?,
            None,
        ))
    };
    match login {
        Login::Chosen("PLAIN") => {
            let mut parts = message.split('\0');
            let (_authzid, user, password) = (parts.next(), parts.next(), parts.next());
            match (user, password) {
                (Some(u), Some(p)) if users.passwords.get(u).is_some_and(|x| x == p) => {
                    Ok((answer(0, None, String::new())?, Some(Login::Done)))
                }
                _ => refuse("PLAIN"),
            }
        }
        Login::Chosen(m @ ("SCRAM-SHA-256" | "SCRAM-SHA-512")) => {
            let hash = if m == "SCRAM-SHA-256" {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let Some(bare) = message
                .strip_prefix("n,,")
                .or_else(|| message.strip_prefix("y,,"))
            else {
                return refuse(m);
            };
            let user = attribute(bare, 'n').map(|u| u.replace("=2C", ",").replace("=3D", "="));
            let (Some(password), Some(client_nonce)) = (
                user.and_then(|u| users.passwords.get(&u).cloned()),
                attribute(bare, 'r'),
            ) else {
                return refuse(m);
            };
            let nonce = format!("{client_nonce}{}", B64.encode(random::<18>()?));
            let server_first = format!(
                "r={nonce},s={},i={SCRAM_ITERATIONS}",
                B64.encode(random::<16>()?)
            );
            Ok((
                answer(0, None, server_first.clone())?,
                Some(Login::ScramSent {
                    hash,
                    password,
                    client_first_bare: bare.to_string(),
                    server_first,
                    nonce,
                }),
            ))
        }
        Login::ScramSent {
            hash,
            password,
            client_first_bare,
            server_first,
            nonce,
        } => {
            let name = if hash == ScramHash::Sha256 {
                "SCRAM-SHA-256"
            } else {
                "SCRAM-SHA-512"
            };
            let (Some(without_proof), Some(proof)) = (
                message.rsplit_once(",p=").map(|(w, _)| w),
                attribute(&message, 'p').and_then(|p| B64.decode(p).ok()),
            ) else {
                return refuse(name);
            };
            if attribute(&message, 'r') != Some(nonce.as_str()) {
                return refuse(name);
            }
            let salt = attribute(&server_first, 's')
                .and_then(|s| B64.decode(s).ok())
                .context("own salt")?;
            let salted = hash.salted_password(
                &password,
                &salt,
                NonZeroU32::new(SCRAM_ITERATIONS).expect("nonzero"),
            );
            let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
            let stored_key = hash.digest(&hash.hmac(&salted, b"Client Key"));
            let signature = hash.hmac(&stored_key, auth_message.as_bytes());
            let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
            if proof.len() != signature.len() || hash.digest(&client_key) != stored_key {
                return refuse(name);
            }
            let server_key = hash.hmac(&salted, b"Server Key");
            let verifier = B64.encode(hash.hmac(&server_key, auth_message.as_bytes()));
            Ok((answer(0, None, format!("v={verifier}"))?, Some(Login::Done)))
        }
        Login::Chosen("OAUTHBEARER") => {
            let token = message
                .split('\x01')
                .find_map(|kv| kv.strip_prefix("auth=Bearer "))
                .map(str::to_string);
            let verdict = match (&users.tokens, token) {
                (Some(check), Some(t)) => check(&t),
                _ => Err("no token".into()),
            };
            match verdict {
                Ok(_principal) => Ok((answer(0, None, String::new())?, Some(Login::Done))),
                Err(why) => Ok((
                    answer(
                        SASL_AUTHENTICATION_FAILED,
                        Some(format!("OAUTHBEARER token refused: {why}")),
                        String::new(),
                    )?,
                    None,
                )),
            }
        }
        _ => Ok((
            answer(
                ILLEGAL_SASL_STATE,
                Some("SaslAuthenticate before SaslHandshake".into()),
                String::new(),
            )?,
            None,
        )),
    }
}

pub(super) fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(out)
}
