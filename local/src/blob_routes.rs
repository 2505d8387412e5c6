//! The local blob server: honours the presigned URLs of
//! [`FsBlobStore`](printworks::adapters::local::blobs::FsBlobStore), as S3
//! does for the AWS adapter, so a storefront's upload flow works locally.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use printworks::adapters::local::blobs::{BlobAccessError, FsBlobStore};
use printworks::faults::Faults;
use printworks::ports::BlobStore;
use std::collections::BTreeMap;
use std::sync::Arc;

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
    (status, axum::Json(body)).into_response()
}

fn denied(e: BlobAccessError) -> Response {
    match e {
        BlobAccessError::BadKey => error(StatusCode::BAD_REQUEST, "bad_key", e.to_string()),
        BlobAccessError::Mismatch(_) => error(
            StatusCode::BAD_REQUEST,
            "signed_header_mismatch",
            e.to_string(),
        ),
        BlobAccessError::BadSignature | BlobAccessError::Expired => {
            error(StatusCode::FORBIDDEN, "access_denied", e.to_string())
        }
    }
}

/// The blob server of `blobs`. With the fault switch on, it answers 503
/// (with a JSON body, as S3's `SlowDown`) during the blob store's outages.
pub fn router(blobs: Arc<FsBlobStore>, faults: Faults) -> Router {
    let router = Router::new()
        .route("/blobs/{*key}", put(put_blob).get(get_blob))
        .with_state(blobs);
    if !faults.is_on() {
        return router;
    }
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let faults = faults.clone();
            async move {
                match faults.blobs() {
                    Err(e) => error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        e.to_string(),
                    ),
                    Ok(()) => next.run(request).await,
                }
            }
        },
    ))
}

async fn put_blob(
    State(blobs): State<Arc<FsBlobStore>>,
    Path(key): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let allowed = match blobs.authorize_put(&key, &query, content_type, content_length) {
        Ok(allowed) => allowed,
        Err(e) => return denied(e),
    };
    // Read at most the signed length; a longer body is refused, not truncated.
    let limit = usize::try_from(allowed.content_length).unwrap_or(usize::MAX);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) if bytes.len() as u64 == allowed.content_length => bytes,
        Ok(_) | Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "length_mismatch",
                "the body is not the signed Content-Length",
            );
        }
    };
    match blobs
        .put(&allowed.key, bytes.to_vec(), &allowed.content_type)
        .await
    {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "storing a blob failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the upload could not be stored",
            )
        }
    }
}

fn sniff(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else {
        "application/octet-stream"
    }
}

async fn get_blob(
    State(blobs): State<Arc<FsBlobStore>>,
    Path(key): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(e) = blobs.authorize_get(&key, &query) {
        return denied(e);
    }
    match blobs.get(&key).await {
        Ok(Some(bytes)) => ([(header::CONTENT_TYPE, sniff(&bytes))], bytes).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no such blob"),
        Err(e) => {
            tracing::error!(error = %e, "reading a blob failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the blob could not be read",
            )
        }
    }
}
