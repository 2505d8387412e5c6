//! `printworks ops show|release|reprint|cancel|resolve ORDER ...`,
//! `printworks ops flags|stuck` and `printworks ops dlq list|show|redrive`:
//! the operator
//! API from a terminal. Each command is one request of the operator API,
//! with the operator's key: over HTTP to `printworks up` (or a deployed
//! API), or, with `--aws-table`, through the same ops-api router run in
//! this process on the deployed table (the table's stream carries the
//! action's events on, as it does for the Lambda). Either way the key
//! decides who acts, the role what is allowed, and the Idempotency-Key
//! that the action happens once.

use anyhow::Context;
use axum::Router;
use http::{Method, Request};
use serde_json::Value;
use tower::ServiceExt;

/// Where the requests go.
pub enum Target {
    /// An operator API's base URL (`http://127.0.0.1:3000`).
    Http(String),
    /// An ops-api router in this process (on a deployed table).
    Router(Router),
}

/// One operator request.
#[derive(Debug, Clone)]
pub struct OpsRequest {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    pub idempotency_key: Option<String>,
}

impl OpsRequest {
    pub fn show(order: &str) -> OpsRequest {
        OpsRequest {
            method: Method::GET,
            path: format!("/v1/ops/orders/{order}"),
            body: None,
            idempotency_key: None,
        }
    }

    /// The open payment flags and refund requests (`GET /v1/ops/flags`).
    pub fn flags() -> OpsRequest {
        OpsRequest {
            method: Method::GET,
            path: "/v1/ops/flags".into(),
            body: None,
            idempotency_key: None,
        }
    }

    /// The orders announced stuck and still in that state (`GET /v1/ops/stuck`).
    pub fn stuck() -> OpsRequest {
        OpsRequest {
            method: Method::GET,
            path: "/v1/ops/stuck".into(),
            body: None,
            idempotency_key: None,
        }
    }

    /// The dead-letter queues and their depths (`GET /v1/ops/dlq`).
    pub fn dead_letter_queues() -> OpsRequest {
        OpsRequest {
            method: Method::GET,
            path: "/v1/ops/dlq".into(),
            body: None,
            idempotency_key: None,
        }
    }

    /// A look at `queue`'s dead letters (`GET /v1/ops/dlq/{queue}`).
    pub fn dead_letters(queue: &str) -> OpsRequest {
        OpsRequest {
            method: Method::GET,
            path: format!("/v1/ops/dlq/{queue}"),
            body: None,
            idempotency_key: None,
        }
    }

    /// `queue`'s dead letters sent back to it, once per `key`.
    pub fn redrive(queue: &str, key: String) -> OpsRequest {
        OpsRequest {
            method: Method::POST,
            path: format!("/v1/ops/dlq/{queue}/redrive"),
            body: None,
            idempotency_key: Some(key),
        }
    }

    /// `action` (release, reprint, cancel, resolve) with `body`, once per `key`.
    pub fn act(order: &str, action: &str, body: Value, key: String) -> OpsRequest {
        OpsRequest {
            method: Method::POST,
            path: format!("/v1/ops/orders/{order}/{action}"),
            body: Some(body),
            idempotency_key: Some(key),
        }
    }
}

/// The answer: status, whether it replays an earlier request, JSON body.
#[derive(Debug, Clone)]
pub struct OpsAnswer {
    pub status: u16,
    pub replayed: bool,
    pub body: Value,
}

/// Sends `request` with the operator `key` to `target`.
pub async fn send(target: &Target, key: &str, request: &OpsRequest) -> anyhow::Result<OpsAnswer> {
    let body = request
        .body
        .as_ref()
        .map(|b| b.to_string())
        .unwrap_or_default();
    let (status, replayed, bytes) = match target {
        Target::Http(base) => {
            let url = format!("{}{}", base.trim_end_matches('/'), request.path);
            let mut builder = reqwest::Client::new()
                .request(request.method.clone(), &url)
                .bearer_auth(key)
                .timeout(std::time::Duration::from_secs(30));
            if let Some(k) = &request.idempotency_key {
                builder = builder.header("idempotency-key", k);
            }
            if request.body.is_some() {
                builder = builder
                    .header("content-type", "application/json")
                    .body(body);
            }
            let response = builder
                .send()
                .await
                .with_context(|| format!("{} {url}", request.method))?;
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            (status, replayed, response.bytes().await?.to_vec())
        }
        Target::Router(router) => {
            let mut builder = Request::builder()
                .method(request.method.clone())
                .uri(&request.path)
                .header("authorization", format!("Bearer {key}"));
            if let Some(k) = &request.idempotency_key {
                builder = builder.header("idempotency-key", k);
            }
            if request.body.is_some() {
                builder = builder.header("content-type", "application/json");
            }
            let response = router
                .clone()
                .oneshot(builder.body(axum::body::Body::from(body))?)
                .await?;
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let bytes = axum::body::to_bytes(response.into_body(), 4 << 20).await?;
            (status, replayed, bytes.to_vec())
        }
    };
    let body = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the operator API answered {status} with a body that is not JSON: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        )
    })?;
    Ok(OpsAnswer {
        status,
        replayed,
        body,
    })
}

/// The dead-letter queues (`ops dlq list`), a look at one (`ops dlq
/// show`) or a redrive (`ops dlq redrive`), in lines.
pub fn dlq_summary(body: &Value) -> String {
    let mut out = String::new();
    for queue in body["queues"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<24} {} dead letters (in {})\n",
            queue["queue"].as_str().unwrap_or("?"),
            queue["depth"],
            queue["dead_letter_queue"].as_str().unwrap_or("?")
        ));
    }
    if body.get("messages").is_some() {
        out.push_str(&format!(
            "{}: {} dead letters\n",
            body["queue"].as_str().unwrap_or("?"),
            body["depth"]
        ));
        for m in body["messages"].as_array().into_iter().flatten() {
            let what = &m["message"];
            let about = match what["kind"].as_str() {
                Some("event") => format!(
                    "event {} {} of order {}",
                    what["type"].as_str().unwrap_or("?"),
                    what["event_id"].as_str().unwrap_or("?"),
                    what["order_id"].as_str().unwrap_or("?")
                ),
                Some("job") | Some("job_report") => format!(
                    "{} {}",
                    what["kind"].as_str().unwrap_or("?"),
                    what["job_id"].as_str().unwrap_or("?")
                ),
                Some(kind) => kind.to_string(),
                None => "?".into(),
            };
            out.push_str(&format!(
                "  {}  received {} times, {}, {} bytes: {about}\n",
                m["message_id"].as_str().unwrap_or("?"),
                m["receive_count"],
                m["at"].as_str().unwrap_or("-"),
                m["bytes"]
            ));
        }
    }
    if let Some(redrive) = body.get("redrive") {
        let how = match (redrive["moved"].as_u64(), redrive["task"].as_str()) {
            (Some(moved), _) => format!("{moved} messages moved back"),
            (None, Some(task)) => format!("SQS message move task {task}"),
            _ => "nothing to move".into(),
        };
        out.push_str(&format!(
            "{}: redriven by {} ({how}; {} were dead)\n",
            body["queue"].as_str().unwrap_or("?"),
            body["action"]["operator"].as_str().unwrap_or("?"),
            body["depth_before"]
        ));
    }
    if out.is_empty() {
        out.push_str("no dead-letter queue");
    }
    out.trim_end().to_string()
}

/// The stuck orders (`ops stuck`), one line each.
pub fn stuck_summary(body: &Value) -> String {
    let mut out = String::new();
    for order in body["orders"].as_array().into_iter().flatten() {
        let actions: Vec<&str> = order["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "{} ({}, {} since {} at plant {}; handed over again {} times); you may: {}\n",
            order["order_id"].as_str().unwrap_or("?"),
            order["tenant"].as_str().unwrap_or("?"),
            order["state"].as_str().unwrap_or("?"),
            order["since"].as_str().unwrap_or("?"),
            order["plant"].as_str().unwrap_or("-"),
            order["nudges"],
            if actions.is_empty() {
                "nothing".to_string()
            } else {
                actions.join(", ")
            }
        ));
    }
    if out.is_empty() {
        out.push_str("nothing stuck");
    }
    out.trim_end().to_string()
}

/// The open flags and refund requests (`ops flags`), one line each.
pub fn flags_summary(body: &Value) -> String {
    let mut out = String::new();
    for order in body["orders"].as_array().into_iter().flatten() {
        let id = order["order_id"].as_str().unwrap_or("?");
        out.push_str(&format!(
            "{id} ({}, {})\n",
            order["tenant"].as_str().unwrap_or("?"),
            order["state"].as_str().unwrap_or("?")
        ));
        for flag in order["flags"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  flag {}  {}  {}\n",
                flag["flag"],
                flag["code"].as_str().unwrap_or("?"),
                flag["message"].as_str().unwrap_or("")
            ));
        }
        for refund in order["refund_requests"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  refund  {} ({} minor units of {}) of payment {}, since {}\n",
                refund["reason"].as_str().unwrap_or("?"),
                refund["amount"],
                order["currency"].as_str().unwrap_or("?"),
                refund["payment_id"].as_str().unwrap_or("-"),
                refund["raised_at"].as_str().unwrap_or("?")
            ));
        }
    }
    if out.is_empty() {
        out.push_str("nothing open: no payment flag, no refund request");
    }
    out.trim_end().to_string()
}

/// A short account of an operator view or action result, for a person.
pub fn summary(body: &Value) -> String {
    let order = &body["order"];
    let mut out = format!(
        "order {} of {}: {} (attempt {})",
        order["id"].as_str().unwrap_or("?"),
        order["tenant"].as_str().unwrap_or("?"),
        order["state"].as_str().unwrap_or("?"),
        order["attempt"].as_u64().unwrap_or(1),
    );
    if let Some(reason) = order["hold"]["reason"].as_str() {
        out.push_str(&format!("\n  on hold: {reason}"));
    }
    if let Some(action) = body.get("action") {
        out.push_str(&format!(
            "\n  done: {} by {} ({})",
            action["action"].as_str().unwrap_or("?"),
            action["operator"].as_str().unwrap_or("?"),
            action["reason"].as_str().unwrap_or("")
        ));
    }
    for line in body["timeline"].as_array().into_iter().flatten() {
        let what = [
            line["job_id"].as_str(),
            line["plant"].as_str(),
            line["operator"].as_str(),
            line["detail"].as_str(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        out.push_str(&format!(
            "\n  {}  {:<22} {what}",
            line["at"].as_str().unwrap_or(""),
            line["event"].as_str().unwrap_or("")
        ));
    }
    let allowed: Vec<&str> = body["allowed_actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    out.push_str(&format!("\n  you may now: {}", allowed.join(", ")));
    out
}

/// The error of a refused request, for a person: its message, and what is
/// allowed instead when the API said so.
pub fn refusal(answer: &OpsAnswer) -> anyhow::Error {
    let error = &answer.body["error"];
    let mut message = format!(
        "{} {}: {}",
        answer.status,
        error["code"].as_str().unwrap_or("error"),
        error["message"].as_str().unwrap_or("")
    );
    if let Some(allowed) = error["details"]["allowed_actions"].as_array()
        && !message.contains("allowed now")
    {
        let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
        message.push_str(&format!(" (allowed now: {})", names.join(", ")));
    }
    anyhow::anyhow!(message)
}
