//! Host keys: the algorithms fleetbus accepts, and reading the key a server presents (for
//! `fleetctl host trust`) without logging in. The executor pins keys with these types.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::HashAlg;
use russh::{client, Preferred};
use serde::{Deserialize, Serialize};

use crate::RemoteError;

/// A pinned host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinned {
    /// Key algorithm (`ssh-ed25519`).
    pub algorithm: String,
    /// `SHA256:…` fingerprint.
    pub fingerprint: String,
}

/// Modern algorithms only: no SHA-1 key exchange or signatures, no CBC, no SHA-1 MACs.
pub fn modern_algorithms() -> Preferred {
    use russh::keys::{Algorithm, EcdsaCurve};
    use russh::{cipher, compression, kex, mac};
    Preferred {
        kex: Cow::Owned(vec![
            kex::CURVE25519,
            kex::CURVE25519_PRE_RFC_8731,
            kex::ECDH_SHA2_NISTP256,
            kex::ECDH_SHA2_NISTP384,
            kex::ECDH_SHA2_NISTP521,
            kex::DH_G16_SHA512,
            kex::DH_G14_SHA256,
            kex::EXTENSION_SUPPORT_AS_CLIENT,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
        ]),
        key: Cow::Owned(vec![
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]),
        cipher: Cow::Owned(vec![
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
            cipher::AES_256_CTR,
            cipher::AES_128_CTR,
        ]),
        mac: Cow::Owned(vec![
            mac::HMAC_SHA512_ETM,
            mac::HMAC_SHA256_ETM,
            mac::HMAC_SHA256,
        ]),
        compression: Cow::Owned(vec![compression::NONE]),
    }
}

struct Scanner {
    seen: Arc<Mutex<Option<Pinned>>>,
}

impl client::Handler for Scanner {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKey,
    ) -> Result<bool, Self::Error> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Pinned {
            algorithm: key.algorithm().as_str().to_string(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        });
        // Never log in: this only reads the key a human is about to trust.
        Ok(false)
    }
}

/// Reads the host key a server presents (for `fleetctl host trust`: show the fingerprint to a
/// person, who compares it out of band before pinning it with a `trust_key` command).
pub async fn scan_host_key(
    address: &str,
    port: u16,
    timeout: Duration,
) -> Result<Pinned, RemoteError> {
    let addr = format!("{address}:{port}");
    let seen = Arc::new(Mutex::new(None));
    let config = Arc::new(client::Config {
        preferred: modern_algorithms(),
        ..Default::default()
    });
    let handler = Scanner { seen: seen.clone() };
    let attempt = async {
        let socket = tokio::net::TcpStream::connect((address, port))
            .await
            .map_err(|e| RemoteError::Connect {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        let _ = client::connect_stream(config, socket, handler).await;
        Ok::<_, RemoteError>(())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| RemoteError::Timeout {
            what: format!("reading the host key of {addr}"),
            secs: timeout.as_secs(),
        })??;
    let key = seen.lock().unwrap_or_else(|p| p.into_inner()).take();
    key.ok_or_else(|| RemoteError::Session {
        addr,
        reason: "the server presented no host key (no common algorithm?)".into(),
    })
}
