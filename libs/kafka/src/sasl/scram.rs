//! SCRAM (RFC 5802, RFC 7677) on `ring`'s HMAC, digest and PBKDF2: the client side that
//! the metadata client speaks, and the primitives a server needs to check it.
//!
//! librdkafka has its own SCRAM client for the producer and consumers; this one serves
//! the protocol-level metadata client. No maintained crate under an open licence offers
//! SCRAM-SHA-512, which Kafka clusters commonly require, so the exchange is written here
//! and checked against the RFCs' test vectors.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    /// RFC 5802's own mechanism; Kafka does not offer it. Kept for the RFC's test vector.
    #[cfg(test)]
    Sha1,
    Sha256,
    Sha512,
}

/// The fewest PBKDF2 iterations a client accepts (RFC 7677 asks for at least 4096).
pub const MIN_ITERATIONS: u32 = 4096;
/// The most PBKDF2 iterations a client computes: Kafka's own ceiling for SCRAM
/// credentials. A server asking for more would have the client spend minutes of CPU per
/// login (i=4294967295 is hours of HMAC-SHA-512).
pub const MAX_ITERATIONS: u32 = 16384;

impl ScramHash {
    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            #[cfg(test)]
            Self::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2_algorithm(self) -> pbkdf2::Algorithm {
        match self {
            #[cfg(test)]
            Self::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            Self::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Self::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn digest_algorithm(self) -> &'static digest::Algorithm {
        match self {
            #[cfg(test)]
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
            Self::Sha512 => &digest::SHA512,
        }
    }

    /// `Hi(Normalize(password), salt, i)`.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
        let mut out = vec![0; self.digest_algorithm().output_len()];
        pbkdf2::derive(
            self.pbkdf2_algorithm(),
            iterations,
            salt,
            password.as_bytes(),
            &mut out,
        );
        out
    }

    /// `HMAC(key, message)`.
    pub fn hmac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.hmac_algorithm(), key);
        hmac::sign(&key, message).as_ref().to_vec()
    }

    /// Whether `tag` is `HMAC(key, message)`, compared in constant time.
    pub fn verify_hmac(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        let key = hmac::Key::new(self.hmac_algorithm(), key);
        hmac::verify(&key, message, tag).is_ok()
    }

    /// `H(data)`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_algorithm(), data)
            .as_ref()
            .to_vec()
    }
}

/// A failed SCRAM exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scram: {0}")]
pub struct ScramError(pub String);

/// A username as a SCRAM `saslname`: `=` and `,` escaped.
pub fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// The attribute `key` of a SCRAM message (`k=value,...`).
pub fn attribute(message: &str, key: char) -> Option<&str> {
    message.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(key) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

/// The client side of one exchange: `client_first`, then `client_final` with the
/// server's first message, then `verify_server_final`.
#[derive(Debug)]
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    client_first_bare: String,
    nonce: String,
    /// `ServerKey` and `AuthMessage`, once the client's final message is made.
    server_proof: Option<(Vec<u8>, String)>,
}

impl ScramClient {
    /// With a fresh random nonce.
    pub fn new(hash: ScramHash, user: &str, password: &str) -> Result<Self, ScramError> {
        use ring::rand::SecureRandom;
        let mut raw = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| ScramError("no randomness for a nonce".into()))?;
        Ok(Self::with_nonce(hash, user, password, &B64.encode(raw)))
    }

    /// With a given nonce (the RFCs' vectors fix one).
    pub fn with_nonce(hash: ScramHash, user: &str, password: &str, nonce: &str) -> Self {
        Self {
            hash,
            password: password.to_string(),
            client_first_bare: format!("n={},r={nonce}", saslname(user)),
            nonce: nonce.to_string(),
            server_proof: None,
        }
    }

    /// `n,,n=user,r=nonce`: no channel binding, no authorization identity.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// The client's final message (with its proof) for the server's first message.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, ScramError> {
        let bad = |m: &str| ScramError(format!("{m} in the server's first message"));
        if let Some(e) = attribute(server_first, 'e') {
            return Err(ScramError(format!("server refused: {e}")));
        }
        let nonce = attribute(server_first, 'r').ok_or_else(|| bad("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(bad("a nonce that does not extend ours"));
        }
        let salt = attribute(server_first, 's')
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| bad("no salt"))?;
        let iterations: u32 = attribute(server_first, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| bad("no iteration count"))?;
        if iterations < MIN_ITERATIONS {
            return Err(ScramError(format!(
                "the server asks for {iterations} iterations, fewer than {MIN_ITERATIONS}"
            )));
        }
        if iterations > MAX_ITERATIONS {
            return Err(ScramError(format!(
                "the server asks for {iterations} iterations, more than {MAX_ITERATIONS} (Kafka's ceiling)"
            )));
        }
        let salted = self.hash.salted_password(
            &self.password,
            &salt,
            NonZeroU32::new(iterations).expect("checked above"),
        );
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_key = self.hash.hmac(&salted, b"Client Key");
        let stored_key = self.hash.digest(&client_key);
        let signature = self.hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = self.hash.hmac(&salted, b"Server Key");
        self.server_proof = Some((server_key, auth_message));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server's final message: the server proves it knows the password too.
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        if let Some(e) = attribute(server_final, 'e') {
            return Err(ScramError(format!("server refused: {e}")));
        }
        let (server_key, auth_message) = self
            .server_proof
            .as_ref()
            .ok_or_else(|| ScramError("server final message before the client's".into()))?;
        let got = attribute(server_final, 'v')
            .and_then(|v| B64.decode(v).ok())
            .ok_or_else(|| ScramError("no verifier in the server's final message".into()))?;
        if !self
            .hash
            .verify_hmac(server_key, auth_message.as_bytes(), &got)
        {
            return Err(ScramError(
                "the server's signature is wrong: it does not know the password".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(hash: ScramHash, nonce: &str, server_first: &str) -> (ScramClient, String) {
        let mut c = ScramClient::with_nonce(hash, "user", "pencil", nonce);
        assert_eq!(c.client_first(), format!("n,,n=user,r={nonce}"));
        let last = c.client_final(server_first).unwrap();
        (c, last)
    }

    /// RFC 5802 section 5.
    #[test]
    fn rfc5802_sha1_vector() {
        let (c, last) = exchange(
            ScramHash::Sha1,
            "fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        );
        assert_eq!(
            last,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        c.verify_server_final("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
            .unwrap();
        assert!(c
            .verify_server_final("v=AAAApqV8S7suAoZWja4dJRkFsKQ=")
            .is_err());
    }

    /// RFC 7677 section 3.
    #[test]
    fn rfc7677_sha256_vector() {
        let (c, last) = exchange(
            ScramHash::Sha256,
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        );
        assert_eq!(
            last,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(c.verify_server_final("e=invalid-proof").is_err());
    }

    #[test]
    fn a_weak_or_foreign_server_first_message_is_refused() {
        let mut c = ScramClient::with_nonce(ScramHash::Sha512, "user", "pencil", "abc");
        let e = c
            .client_final("r=abcdef,s=QSXCR+Q6sek8bf92,i=1024")
            .unwrap_err();
        assert!(e.0.contains("fewer than 4096"), "{e}");
        // Found by the scram fuzz target (i=5090974 ran past its 10 s timeout): a huge
        // count was minutes to hours of CPU per login, not an error.
        let e = c
            .client_final("r=abcdef,s=QSXCR+Q6sek8bf92,i=4294967295")
            .unwrap_err();
        assert!(e.0.contains("more than 16384"), "{e}");
        let e = c
            .client_final("r=xyz123,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap_err();
        assert!(e.0.contains("does not extend"), "{e}");
        let e = c.client_final("e=unknown-user").unwrap_err();
        assert!(e.0.contains("unknown-user"), "{e}");
    }

    #[test]
    fn usernames_are_escaped() {
        assert_eq!(saslname("a=b,c"), "a=3Db=2Cc");
        let c = ScramClient::new(ScramHash::Sha512, "x,y", "p").unwrap();
        assert!(c.client_first().starts_with("n,,n=x=2Cy,r="));
    }
}
