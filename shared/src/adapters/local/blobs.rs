//! The file-system blob store, and the presigned URLs the local HTTP server
//! honours: `PUT|GET {base}/blobs/{key}?expires=..&sig=..`, where `sig` is an
//! HMAC-SHA256 over the method, key, expiry and (for PUT) the exact content
//! type and length. The signing key is random per data directory and kept
//! beside the blobs, so URLs survive a restart.

use crate::ports::{BlobStore, Clock, PresignedRequest, StoreError};
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobAccessError {
    #[error("the key is not a valid blob key")]
    BadKey,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the URL has expired")]
    Expired,
    #[error("the request does not match what was signed: {0}")]
    Mismatch(&'static str),
}

/// A PUT the server may accept: the body must be exactly `content_length` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPut {
    pub key: String,
    pub content_type: String,
    pub content_length: u64,
}

pub struct FsBlobStore {
    root: PathBuf,
    base_url: String,
    signing_key: [u8; 32],
    clock: Arc<dyn Clock>,
}

/// Keys are relative paths of safe characters: no empty segments, and no
/// segment starting with a dot (so no `..`, and never the store's own
/// `.signing-key` or `.tmp-*` files).
pub fn key_valid(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && !seg.starts_with('.'))
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
}

fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl FsBlobStore {
    /// Opens the store under `root`; `base_url` is where the local server
    /// serves `/blobs/...` (known once the listener is bound).
    pub fn open(
        root: impl Into<PathBuf>,
        base_url: &str,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<FsBlobStore> {
        let root = root.into();
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let key_path = root.join(".signing-key");
        let signing_key = match std::fs::read(&key_path) {
            Ok(bytes) if bytes.len() == 32 => bytes
                .try_into()
                .map_err(|_| anyhow!("signing key length"))?,
            _ => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_atomic(&key_path, &key)?;
                key
            }
        };
        Ok(FsBlobStore {
            root,
            base_url: base_url.trim_end_matches('/').to_string(),
            signing_key,
            clock,
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobAccessError> {
        if key_valid(key) {
            Ok(self.root.join(key))
        } else {
            Err(BlobAccessError::BadKey)
        }
    }

    fn sign(
        &self,
        method: &str,
        key: &str,
        expires: i64,
        content_type: &str,
        content_length: Option<u64>,
    ) -> String {
        let mut mac =
            HmacSha256::new_from_slice(&self.signing_key).expect("HMAC takes any key length");
        let length = content_length.map(|l| l.to_string()).unwrap_or_default();
        mac.update(format!("{method}\n{key}\n{expires}\n{content_type}\n{length}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn check(
        &self,
        method: &str,
        key: &str,
        query: &BTreeMap<String, String>,
        content_type: &str,
        content_length: Option<u64>,
    ) -> Result<(), BlobAccessError> {
        if !key_valid(key) {
            return Err(BlobAccessError::BadKey);
        }
        let expires: i64 = query
            .get("expires")
            .and_then(|e| e.parse().ok())
            .ok_or(BlobAccessError::BadSignature)?;
        let sig = query.get("sig").ok_or(BlobAccessError::BadSignature)?;
        let mut mac =
            HmacSha256::new_from_slice(&self.signing_key).expect("HMAC takes any key length");
        let length = content_length.map(|l| l.to_string()).unwrap_or_default();
        mac.update(format!("{method}\n{key}\n{expires}\n{content_type}\n{length}").as_bytes());
        let given = hex::decode(sig).map_err(|_| BlobAccessError::BadSignature)?;
        // verify_slice compares in constant time.
        mac.verify_slice(&given)
            .map_err(|_| BlobAccessError::BadSignature)?;
        if self.clock.now().unix_timestamp() > expires {
            return Err(BlobAccessError::Expired);
        }
        Ok(())
    }

    /// Checks a presigned PUT: signature, expiry, and that the request's
    /// content type and length are the signed ones.
    pub fn authorize_put(
        &self,
        key: &str,
        query: &BTreeMap<String, String>,
        content_type: Option<&str>,
        content_length: Option<u64>,
    ) -> Result<AllowedPut, BlobAccessError> {
        let signed_type = query.get("ct").ok_or(BlobAccessError::BadSignature)?;
        let signed_len: u64 = query
            .get("len")
            .and_then(|l| l.parse().ok())
            .ok_or(BlobAccessError::BadSignature)?;
        self.check("PUT", key, query, signed_type, Some(signed_len))?;
        if content_type != Some(signed_type.as_str()) {
            return Err(BlobAccessError::Mismatch("Content-Type"));
        }
        if content_length != Some(signed_len) {
            return Err(BlobAccessError::Mismatch("Content-Length"));
        }
        Ok(AllowedPut {
            key: key.to_string(),
            content_type: signed_type.clone(),
            content_length: signed_len,
        })
    }

    pub fn authorize_get(
        &self,
        key: &str,
        query: &BTreeMap<String, String>,
    ) -> Result<(), BlobAccessError> {
        self.check("GET", key, query, "", None)
    }

    /// The file of a blob, if it exists.
    pub fn file(&self, key: &str) -> Result<Option<PathBuf>, BlobAccessError> {
        let path = self.path(key)?;
        Ok(path.is_file().then_some(path))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename, fsync
/// of the folder. A reader sees the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", path.display()))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        ttl: Duration,
    ) -> Result<PresignedRequest, StoreError> {
        self.path(key).map_err(|e| anyhow!(e))?;
        let expires_at = self.clock.now() + ttl;
        let expires = expires_at.unix_timestamp();
        let sig = self.sign("PUT", key, expires, content_type, Some(content_length));
        let url = format!(
            "{}/blobs/{key}?expires={expires}&ct={}&len={content_length}&sig={sig}",
            self.base_url,
            percent_encode(content_type)
        );
        let headers = BTreeMap::from([("Content-Type".to_string(), content_type.to_string())]);
        Ok(PresignedRequest {
            method: "PUT".into(),
            url,
            headers,
            expires_at,
        })
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<PresignedRequest, StoreError> {
        self.path(key).map_err(|e| anyhow!(e))?;
        let expires_at = self.clock.now() + ttl;
        let expires = expires_at.unix_timestamp();
        let sig = self.sign("GET", key, expires, "", None);
        let url = format!("{}/blobs/{key}?expires={expires}&sig={sig}", self.base_url);
        Ok(PresignedRequest {
            method: "GET".into(),
            url,
            headers: BTreeMap::new(),
            expires_at,
        })
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, _content_type: &str) -> Result<(), StoreError> {
        let path = self.path(key).map_err(|e| anyhow!(e))?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| anyhow!(e))??;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(key).map_err(|e| anyhow!(e))?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!(e)
                .context(format!("reading {}", path.display()))
                .into()),
        }
    }
}
