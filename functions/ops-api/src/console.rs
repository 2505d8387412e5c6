//! The back-office console (`/console`): one page, its script and its
//! style sheet, compiled into the function (`include_str!`) and served by
//! the operator API itself, so the console and `/v1/ops/...` share one
//! origin: no CORS, and a Content-Security-Policy that allows nothing but
//! this origin's own script, style and API.
//!
//! The operator logs in with their operator key, which the page keeps in
//! `sessionStorage` (gone with the tab) and sends as `Authorization:
//! Bearer` on every call. Nothing is ever kept in a cookie, so a page of
//! another site cannot make the browser send the key (no cross-site request
//! forgery rides on ambient credentials); [`same_origin`] refuses, besides,
//! every write whose `Origin` or `Sec-Fetch-Site` says it comes from
//! another site's page.

use crate::App;
use axum::extract::Request;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use order_api::ApiError;
use std::sync::Arc;

const PAGE: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// Nothing but this origin's script, style, images and API; no inline
/// script or style, no frames, no forms posted anywhere, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; \
     form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// [`CONTENT_SECURITY_POLICY`], with images also from `image_origin`
/// (where the print files' previews are served: the prints bucket).
pub fn content_security_policy(image_origin: Option<&str>) -> String {
    match image_origin {
        Some(origin) => CONTENT_SECURITY_POLICY.replace(
            "img-src 'self' data: blob:;",
            &format!("img-src 'self' {origin} data: blob:;"),
        ),
        None => CONTENT_SECURITY_POLICY.to_string(),
    }
}

/// The scheme, host and port of the print files' presigned links (a probe
/// link is signed: signing makes no request), for the policy's `img-src`.
async fn image_origin(app: &App) -> Option<String> {
    let prints = app.ops.prints.as_ref()?;
    let link = prints
        .presign_get("console/probe.jpg", std::time::Duration::from_secs(60))
        .await
        .ok()?;
    let uri: http::Uri = link.url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    // Only what a policy source can name: no path, no query.
    let authority = uri.authority()?.as_str();
    (scheme == "https" || scheme == "http")
        .then(|| format!("{scheme}://{authority}"))
        .filter(|o| !o.contains([';', ',', ' ', '\'', '*']))
}

fn served(body: &'static str, content_type: &'static str, policy: &str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(policy) = HeaderValue::from_str(policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    } else {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// `GET /console`: the page.
pub async fn page(State(app): State<Arc<App>>) -> Response {
    let policy = content_security_policy(image_origin(&app).await.as_deref());
    served(PAGE, "text/html; charset=utf-8", &policy)
}

/// `GET /console/{file}`: the script and the style sheet.
pub async fn asset(file: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    match file.as_ref().map(|Path(f)| f.as_str()) {
        Ok("console.js") => Ok(served(
            SCRIPT,
            "text/javascript; charset=utf-8",
            CONTENT_SECURITY_POLICY,
        )),
        Ok("console.css") => Ok(served(
            STYLE,
            "text/css; charset=utf-8",
            CONTENT_SECURITY_POLICY,
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the console has /console, /console/console.js and /console/console.css",
        )),
    }
}

/// Whether the request says it comes from another site's page: an
/// `Origin` whose host is not the request's `Host`, or `Sec-Fetch-Site:
/// cross-site`. A client that is not a browser sends neither.
fn cross_site(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    origin_host.is_none() || origin_host != host
}

/// Refuses a write (any method but GET and HEAD) from another site's page
/// with a 403 that says where to act instead.
pub async fn same_origin(request: Request, next: Next) -> Response {
    let reads = [Method::GET, Method::HEAD];
    if !reads.contains(request.method()) && cross_site(request.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "a request from another site's page is refused; act from the console (/console) or an API client",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_another_sites_page_is_cross_site() {
        assert!(!cross_site(&headers(&[("host", "ops.example.com")])));
        assert!(!cross_site(&headers(&[
            ("host", "ops.example.com"),
            ("origin", "https://ops.example.com"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(cross_site(&headers(&[
            ("host", "ops.example.com"),
            ("origin", "https://evil.example.net"),
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "null"),
        ])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
    }
}
