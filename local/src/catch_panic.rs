//! The local server's last line: a handler that panics answers
//! `500 {"error": {"code": "internal_error", ...}}` like every other error,
//! instead of hyper dropping the connection with no answer at all. (On
//! Lambda, the runtime catches the panic and API Gateway answers 500.)
//! The panic itself is still reported by the panic hook, on stderr.

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;

/// Middleware (`axum::middleware::from_fn(catch_panic)`): runs the request,
/// and turns a panic into the JSON 500.
pub async fn catch_panic(request: Request, next: Next) -> Response {
    let route = format!("{} {}", request.method(), request.uri().path());
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            tracing::error!(route, panic = %message, "a handler panicked; answered 500");
            let body = serde_json::json!({ "error": {
                "code": "internal_error",
                "message": "the request could not be completed; retry later",
            }});
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    /// A handler with a bug: it indexes without checking.
    async fn item(axum::extract::Path(n): axum::extract::Path<usize>) -> &'static str {
        ["fine"][n]
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_the_json_error_body() {
        let router = Router::new()
            .route("/items/{n}", get(item))
            .layer(axum::middleware::from_fn(catch_panic));
        let call = |path: &'static str| {
            let router = router.clone();
            async move {
                let request = Request::builder().uri(path).body(Body::empty()).unwrap();
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                    .await
                    .unwrap();
                (status, bytes)
            }
        };
        let (status, body) = call("/items/7").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal_error");
        // The server goes on answering.
        let (status, body) = call("/items/0").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"fine"[..]));
    }
}
