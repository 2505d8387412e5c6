//! S3 blobs and presigned URLs.

use crate::ports::{BlobStore, PresignedRequest, StoreError};
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(client: Client, bucket: impl Into<String>) -> S3Blobs {
        S3Blobs {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn from_sdk(
        sdk: &aws_config::SdkConfig,
        bucket: impl Into<String>,
        endpoint_override: bool,
    ) -> S3Blobs {
        S3Blobs::new(S3Blobs::client(sdk, endpoint_override), bucket)
    }

    /// The client for `sdk`; path-style addressing when an endpoint override
    /// (the emulator) is set, since `bucket.127.0.0.1` does not resolve.
    pub fn client(sdk: &aws_config::SdkConfig, endpoint_override: bool) -> Client {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(endpoint_override)
            .build();
        Client::from_conf(config)
    }
}

fn to_request(p: aws_sdk_s3::presigning::PresignedRequest, ttl: Duration) -> PresignedRequest {
    let headers: BTreeMap<String, String> = p
        .headers()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
        .map(|(k, v)| (canonical_header(k), v.to_string()))
        .collect();
    PresignedRequest {
        method: p.method().to_string(),
        url: p.uri().to_string(),
        headers,
        expires_at: OffsetDateTime::now_utc() + ttl,
    }
}

fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        ttl: Duration,
    ) -> Result<PresignedRequest, StoreError> {
        let config = PresigningConfig::expires_in(ttl).context("presigning config")?;
        let presigned = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(content_length).context("content length")?)
            .presigned(config)
            .await
            .context("presigning PutObject")?;
        let mut request = to_request(presigned, ttl);
        // Content-Length is signed; clients must send exactly this many bytes.
        request
            .headers
            .entry("Content-Type".into())
            .or_insert_with(|| content_type.to_string());
        Ok(request)
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<PresignedRequest, StoreError> {
        let config = PresigningConfig::expires_in(ttl).context("presigning config")?;
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .context("presigning GetObject")?;
        Ok(to_request(presigned, ttl))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .context("S3 PutObject")?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.body
                    .collect()
                    .await
                    .context("reading S3 object")?
                    .into_bytes()
                    .to_vec(),
            )),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(err) => Err(anyhow!(err).context("S3 GetObject").into()),
        }
    }

    /// A ranged `GetObject`: only the head travels.
    async fn get_head(&self, key: &str, len: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let last = len.saturating_sub(1);
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes=0-{last}"))
            .send()
            .await
        {
            Ok(out) => {
                let mut bytes = out
                    .body
                    .collect()
                    .await
                    .context("reading S3 object")?
                    .into_bytes()
                    .to_vec();
                bytes.truncate(len);
                Ok(Some(bytes))
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            // An empty object has no byte 0: S3 answers 416.
            Err(err)
                if err
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 416) =>
            {
                Ok(Some(Vec::new()))
            }
            Err(err) => Err(anyhow!(err).context("S3 GetObject (range)").into()),
        }
    }
}
