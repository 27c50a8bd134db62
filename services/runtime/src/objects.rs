//! JetStream object stores: open (or create) a bucket, and read the digest NATS keeps per
//! object. Bucket names are in `fleetbus_schemas::subjects`.

use async_nats::jetstream::{self, object_store};

/// A bucket could not be opened nor created.
#[derive(Debug, thiserror::Error)]
#[error("cannot open or create bucket '{bucket}': {source}")]
pub struct BucketError {
    /// The bucket.
    pub bucket: String,
    /// Why creating it failed.
    #[source]
    pub source: jetstream::context::CreateObjectStoreError,
}

/// Opens a bucket, creating it (file storage) when it does not exist yet.
pub async fn bucket(
    js: &jetstream::Context,
    name: &str,
) -> Result<object_store::ObjectStore, BucketError> {
    match js.get_object_store(name).await {
        Ok(b) => Ok(b),
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: name.to_owned(),
                description: Some(format!("fleetbus {name}")),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|source| BucketError {
                bucket: name.to_owned(),
                source,
            }),
    }
}

/// SHA-256 (hex) from an object store digest (`SHA-256=<base64url>`).
pub fn digest_hex(digest: Option<&str>) -> Option<String> {
    use base64::Engine;
    let b64 = digest?.strip_prefix("SHA-256=")?;
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64))
        .ok()?;
    Some(hex::encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_store_digests_convert_to_hex() {
        use base64::Engine;
        use sha2::Digest;
        let sum = sha2::Sha256::digest(b"abc");
        let d = format!(
            "SHA-256={}",
            base64::engine::general_purpose::URL_SAFE.encode(sum)
        );
        assert_eq!(digest_hex(Some(&d)), Some(hex::encode(sum)));
        assert_eq!(digest_hex(Some("MD5=x")), None);
    }
}
