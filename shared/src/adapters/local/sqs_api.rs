//! A local SQS endpoint: the queues of the [`LocalBus`] behind the SQS
//! JSON protocol (`awsJson1_0`), so the real `aws-sdk-sqs` client (and so
//! `SqsQueue` (`adapters::aws::sqs`)) works against
//! `printworks up`.
//!
//! Why: the edge agents at a plant are separate processes that talk SQS
//! (receive their plant's job queue, send to `plant-events`). Pointed at
//! this endpoint (`AWS_ENDPOINT_URL=http://127.0.0.1:PORT`), the same
//! binaries run locally against the local bus, with no emulator.
//!
//! # Protocol
//!
//! `POST /` with `x-amz-target: AmazonSQS.<Action>` and a JSON body of
//! PascalCase fields (`Content-Type: application/x-amz-json-1.0`; the type
//! is not checked). Errors are HTTP 400 (500 when the store fails) with
//! `{"__type": "com.amazonaws.sqs#<Shape>", "message": ...}` and the
//! `x-amzn-query-error: <code>;Sender` header the SDK takes its error code
//! from (it is what turns an error into, say,
//! `DeleteMessageError::ReceiptHandleIsInvalid`). Queue URLs are
//! `{base_url}/queues/{name}`; a request's queue is the last segment of
//! its `QueueUrl`.
//!
//! Actions: `GetQueueUrl`, `ReceiveMessage` (`WaitTimeSeconds` is a real
//! long poll, `VisibilityTimeout` overrides the queue's, the only system
//! attribute returned is `ApproximateReceiveCount`), `DeleteMessage(Batch)`,
//! `ChangeMessageVisibility(Batch)`, `SendMessage(Batch)` and
//! `GetQueueAttributes` (`ApproximateNumberOfMessages`,
//! `...NotVisible`, `...Delayed`; other names are left out of the answer).
//! Anything else is `UnsupportedOperation`. Queues are declared by the
//! platform, not through this API.
//!
//! Differences from SQS:
//!
//! - No SigV4 check: the endpoint listens on loopback only, like the rest
//!   of `printworks up`; any credentials do.
//! - Message attributes, `DelaySeconds` other than 0 and FIFO parameters are
//!   refused (`InvalidParameterValue`) rather than ignored.
//! - A stale receipt (the message was received again, or deleted) is an
//!   error: `ReceiptHandleIsInvalid` for a delete, `InvalidParameterValue`
//!   for a visibility change (what SQS answers on an expired receipt). SQS
//!   itself accepts a delete with an earlier delivery's receipt and keeps
//!   the message. Receipts are not checked against the URL's queue.
//! - `MD5OfBody` / `MD5OfMessageBody` are real MD5s: `aws-sdk-sqs` (Rust)
//!   does not check them, but the Java, JavaScript, Go, Ruby and PHP SDKs do.
//! - Messages sent here have the bus `event_type`
//!   [`QUEUE_MESSAGE_KIND`].

use super::bus::{LocalBus, Message, QUEUE_MESSAGE_KIND};
use crate::ports::StoreError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use md5::{Digest, Md5};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The largest message body SQS takes (1 MiB since 2025), and the largest
/// batch of bodies.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Requests are JSON, so bodies may grow when escaped.
const MAX_REQUEST_BYTES: usize = 4 << 20;
const MAX_WAIT_SECS: i64 = 20;
const MAX_VISIBILITY_SECS: i64 = 12 * 60 * 60;
const MAX_BATCH: usize = 10;
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

struct Api {
    bus: LocalBus,
    base_url: String,
    stop: watch::Receiver<bool>,
}

/// The SQS endpoint at `POST /`, serving `{base_url}/queues/{name}` URLs
/// (`base_url` is the server's `http://127.0.0.1:PORT`).
pub fn router(bus: LocalBus, base_url: String) -> Router {
    // The sender goes away at once: no stop ever comes.
    let (_, stop) = watch::channel(false);
    router_with_shutdown(bus, base_url, stop)
}

/// [`router`], whose long polls end (empty) once `stop` turns true, so a
/// graceful shutdown does not wait up to 20 s for them.
pub fn router_with_shutdown(
    bus: LocalBus,
    base_url: String,
    stop: watch::Receiver<bool>,
) -> Router {
    let api = Arc::new(Api {
        bus,
        base_url: base_url.trim_end_matches('/').to_string(),
        stop,
    });
    Router::new()
        .route("/", post(handle))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(api)
}

/// An SQS error: its HTTP status, its shape (`__type`), the code the SDK
/// matches on (`x-amzn-query-error`) and a message.
#[derive(Debug)]
struct SqsError {
    status: StatusCode,
    shape: &'static str,
    code: &'static str,
    fault: &'static str,
    message: String,
}

impl SqsError {
    fn sender(shape: &'static str, code: &'static str, message: impl Into<String>) -> SqsError {
        SqsError {
            status: StatusCode::BAD_REQUEST,
            shape,
            code,
            fault: "Sender",
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> SqsError {
        SqsError::sender("InvalidParameterValue", "InvalidParameterValue", message)
    }

    fn no_queue(name: &str) -> SqsError {
        SqsError::sender(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            format!("The specified queue {name} does not exist."),
        )
    }

    fn unsupported(message: impl Into<String>) -> SqsError {
        SqsError::sender(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            message,
        )
    }

    fn batch(shape: &'static str, message: impl Into<String>) -> SqsError {
        let code = match shape {
            "EmptyBatchRequest" => "AWS.SimpleQueueService.EmptyBatchRequest",
            "TooManyEntriesInBatchRequest" => "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            "BatchEntryIdsNotDistinct" => "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
            "InvalidBatchEntryId" => "AWS.SimpleQueueService.InvalidBatchEntryId",
            _ => "AWS.SimpleQueueService.BatchRequestTooLong",
        };
        SqsError::sender(shape, code, message)
    }

    fn store(e: StoreError) -> SqsError {
        tracing::error!(error = %e, "local SQS endpoint: the store failed");
        SqsError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            shape: "InternalError",
            code: "InternalError",
            fault: "Receiver",
            message: "The local bus failed; see the printworks log.".into(),
        }
    }
}

impl IntoResponse for SqsError {
    fn into_response(self) -> Response {
        let body = json!({
            "__type": format!("com.amazonaws.sqs#{}", self.shape),
            "message": self.message,
        });
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Ok(v) = HeaderValue::from_str(&format!("{};{}", self.code, self.fault)) {
            headers.insert("x-amzn-query-error", v);
        }
        add_request_id(headers);
        response
    }
}

fn add_request_id(headers: &mut HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", v);
    }
}

fn ok(body: Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    add_request_id(headers);
    response
}

async fn handle(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = match body {
        Ok(body) => dispatch(&api, &headers, &body).await,
        Err(e) => Err(SqsError::invalid(format!(
            "The request body could not be read: {e}"
        ))),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn dispatch(api: &Api, headers: &HeaderMap, body: &[u8]) -> Result<Response, SqsError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(action) = target.strip_prefix("AmazonSQS.") else {
        return Err(SqsError::unsupported(format!(
            "x-amz-target {target:?} is not an SQS action (AmazonSQS.<Action>)"
        )));
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| SqsError::invalid(format!("The request body is not JSON: {e}")))?
    };
    if !body.is_object() {
        return Err(SqsError::invalid("The request body is not a JSON object"));
    }
    match action {
        "GetQueueUrl" => get_queue_url(api, parse(body)?).await,
        "ReceiveMessage" => receive_message(api, parse(body)?).await,
        "DeleteMessage" => delete_message(api, parse(body)?).await,
        "DeleteMessageBatch" => delete_message_batch(api, parse(body)?).await,
        "ChangeMessageVisibility" => change_message_visibility(api, parse(body)?).await,
        "ChangeMessageVisibilityBatch" => change_message_visibility_batch(api, parse(body)?).await,
        "SendMessage" => send_message(api, parse(body)?).await,
        "SendMessageBatch" => send_message_batch(api, parse(body)?).await,
        "GetQueueAttributes" => get_queue_attributes(api, parse(body)?).await,
        other => Err(SqsError::unsupported(format!(
            "{other} is not supported by the local SQS endpoint"
        ))),
    }
}

fn parse<T: DeserializeOwned>(body: Value) -> Result<T, SqsError> {
    serde_json::from_value(body).map_err(|e| {
        let message = e.to_string();
        match message.strip_prefix("missing field ") {
            Some(field) => SqsError::sender(
                "MissingParameter",
                "MissingParameter",
                format!(
                    "The request must contain the parameter {}.",
                    field.trim_matches('`')
                ),
            ),
            None => SqsError::invalid(message),
        }
    })
}

/// The queue a URL names, if the bus has it.
async fn queue_of(api: &Api, url: &str) -> Result<String, SqsError> {
    let name = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if name.is_empty() {
        return Err(SqsError::invalid(format!("{url:?} is not a queue URL")));
    }
    if api.bus.queue_exists(name).await.map_err(SqsError::store)? {
        Ok(name.to_string())
    } else {
        Err(SqsError::no_queue(name))
    }
}

fn in_range(name: &str, value: i64, min: i64, max: i64) -> Result<i64, SqsError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(SqsError::invalid(format!(
            "Value {value} for parameter {name} is invalid. Reason: Must be between {min} and {max}."
        )))
    }
}

fn md5_hex(body: &str) -> String {
    hex::encode(Md5::digest(body.as_bytes()))
}

/// Why SQS would refuse a body: empty, too long, or with characters outside
/// `#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF`.
fn body_problem(body: &str) -> Option<String> {
    if body.is_empty() {
        return Some("The message body must not be empty.".into());
    }
    if body.len() > MAX_BODY_BYTES {
        return Some(format!(
            "The message body is {} bytes, longer than {MAX_BODY_BYTES}.",
            body.len()
        ));
    }
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}');
    body.chars().find(|c| !allowed(*c)).map(|c| {
        format!(
            "Invalid binary character '#x{:X}' was found in the message body.",
            u32::from(c)
        )
    })
}

/// Parameters of a message that the local bus cannot honour.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Unsupported {
    delay_seconds: Option<i64>,
    message_attributes: Option<Map<String, Value>>,
    message_system_attributes: Option<Map<String, Value>>,
    message_group_id: Option<String>,
    message_deduplication_id: Option<String>,
}

impl Unsupported {
    fn check(&self) -> Result<(), String> {
        if self.delay_seconds.is_some_and(|d| d != 0) {
            return Err("DelaySeconds is not supported by the local SQS endpoint.".into());
        }
        if self
            .message_attributes
            .as_ref()
            .is_some_and(|m| !m.is_empty())
            || self
                .message_system_attributes
                .as_ref()
                .is_some_and(|m| !m.is_empty())
        {
            return Err("Message attributes are not supported by the local SQS endpoint.".into());
        }
        if self.message_group_id.is_some() || self.message_deduplication_id.is_some() {
            return Err(
                "The queue is not a FIFO queue: MessageGroupId and MessageDeduplicationId are not allowed."
                    .into(),
            );
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetQueueUrlRequest {
    queue_name: String,
}

async fn get_queue_url(api: &Api, req: GetQueueUrlRequest) -> Result<Response, SqsError> {
    if !api
        .bus
        .queue_exists(&req.queue_name)
        .await
        .map_err(SqsError::store)?
    {
        return Err(SqsError::no_queue(&req.queue_name));
    }
    Ok(ok(json!({
        "QueueUrl": format!("{}/queues/{}", api.base_url, req.queue_name)
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveMessageRequest {
    queue_url: String,
    max_number_of_messages: Option<i64>,
    wait_time_seconds: Option<i64>,
    visibility_timeout: Option<i64>,
    #[serde(default)]
    attribute_names: Vec<String>,
    #[serde(default)]
    message_system_attribute_names: Vec<String>,
}

async fn receive_message(api: &Api, req: ReceiveMessageRequest) -> Result<Response, SqsError> {
    let queue = queue_of(api, &req.queue_url).await?;
    let max = in_range(
        "MaxNumberOfMessages",
        req.max_number_of_messages.unwrap_or(1),
        1,
        MAX_BATCH as i64,
    )?;
    let wait = in_range(
        "WaitTimeSeconds",
        req.wait_time_seconds.unwrap_or(0),
        0,
        MAX_WAIT_SECS,
    )?;
    let visibility = req
        .visibility_timeout
        .map(|v| in_range("VisibilityTimeout", v, 0, MAX_VISIBILITY_SECS))
        .transpose()?
        .map(|v| Duration::from_secs(v as u64));
    let with_count = req
        .attribute_names
        .iter()
        .chain(&req.message_system_attribute_names)
        .any(|a| a == "All" || a == "ApproximateReceiveCount");

    let mut stop = api.stop.clone();
    let stopped = async move {
        // A closed channel never stops anything.
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    // If the client goes away (or the server stops) during the wait, this
    // future is dropped: messages received in that instant come back after
    // their visibility timeout, as with SQS.
    let got: Vec<Message> = tokio::select! {
        got = api.bus.receive_wait(&queue, max as usize, visibility, Duration::from_secs(wait as u64)) => {
            got.map_err(SqsError::store)?
        }
        () = stopped => Vec::new(),
    };
    if got.is_empty() {
        // SQS leaves `Messages` out when there are none.
        return Ok(ok(json!({})));
    }
    let messages: Vec<Value> = got
        .into_iter()
        .map(|m| {
            let mut message = json!({
                "MessageId": m.message_id,
                "ReceiptHandle": m.receipt,
                "MD5OfBody": md5_hex(&m.body),
                "Body": m.body,
            });
            if with_count {
                message["Attributes"] =
                    json!({ "ApproximateReceiveCount": m.receive_count.to_string() });
            }
            message
        })
        .collect();
    Ok(ok(json!({ "Messages": messages })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteMessageRequest {
    queue_url: String,
    receipt_handle: String,
}

fn stale_receipt(receipt: &str) -> SqsError {
    SqsError::sender(
        "ReceiptHandleIsInvalid",
        "ReceiptHandleIsInvalid",
        format!(
            "The receipt handle \"{receipt}\" is not valid: the message was received again or deleted."
        ),
    )
}

fn stale_visibility(receipt: &str) -> SqsError {
    SqsError::invalid(format!(
        "Value {receipt} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."
    ))
}

async fn delete_message(api: &Api, req: DeleteMessageRequest) -> Result<Response, SqsError> {
    queue_of(api, &req.queue_url).await?;
    if api
        .bus
        .delete(&req.receipt_handle)
        .await
        .map_err(SqsError::store)?
    {
        Ok(ok(json!({})))
    } else {
        Err(stale_receipt(&req.receipt_handle))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeMessageVisibilityRequest {
    queue_url: String,
    receipt_handle: String,
    visibility_timeout: i64,
}

async fn change_message_visibility(
    api: &Api,
    req: ChangeMessageVisibilityRequest,
) -> Result<Response, SqsError> {
    queue_of(api, &req.queue_url).await?;
    let seconds = in_range(
        "VisibilityTimeout",
        req.visibility_timeout,
        0,
        MAX_VISIBILITY_SECS,
    )?;
    if api
        .bus
        .change_visibility(&req.receipt_handle, Duration::from_secs(seconds as u64))
        .await
        .map_err(SqsError::store)?
    {
        Ok(ok(json!({})))
    } else {
        Err(stale_visibility(&req.receipt_handle))
    }
}

/// Checks a batch's entry ids: 1 to 10 entries, ids distinct, of
/// `[A-Za-z0-9_-]{1,80}`.
fn check_batch<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> Result<(), SqsError> {
    if ids.len() == 0 {
        return Err(SqsError::batch(
            "EmptyBatchRequest",
            "There should be at least one entry in the request.",
        ));
    }
    if ids.len() > MAX_BATCH {
        return Err(SqsError::batch(
            "TooManyEntriesInBatchRequest",
            format!(
                "Maximum number of entries per request are {MAX_BATCH}. You have sent {}.",
                ids.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for id in ids {
        let valid = (1..=80).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(SqsError::batch(
                "InvalidBatchEntryId",
                format!(
                    "A batch entry id can only contain alphanumeric characters, hyphens and underscores, at most 80: {id:?}"
                ),
            ));
        }
        if !seen.insert(id) {
            return Err(SqsError::batch(
                "BatchEntryIdsNotDistinct",
                format!("Id {id} repeated."),
            ));
        }
    }
    Ok(())
}

fn failed_entry(id: &str, code: &str, message: impl Into<String>) -> Value {
    json!({ "Id": id, "SenderFault": true, "Code": code, "Message": message.into() })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteMessageBatchRequest {
    queue_url: String,
    entries: Vec<DeleteEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteEntry {
    id: String,
    receipt_handle: String,
}

async fn delete_message_batch(
    api: &Api,
    req: DeleteMessageBatchRequest,
) -> Result<Response, SqsError> {
    queue_of(api, &req.queue_url).await?;
    check_batch(req.entries.iter().map(|e| e.id.as_str()))?;
    let (mut successful, mut failed) = (Vec::new(), Vec::new());
    for entry in &req.entries {
        if api
            .bus
            .delete(&entry.receipt_handle)
            .await
            .map_err(SqsError::store)?
        {
            successful.push(json!({ "Id": entry.id }));
        } else {
            failed.push(failed_entry(
                &entry.id,
                "ReceiptHandleIsInvalid",
                stale_receipt(&entry.receipt_handle).message,
            ));
        }
    }
    Ok(ok(json!({ "Successful": successful, "Failed": failed })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeMessageVisibilityBatchRequest {
    queue_url: String,
    entries: Vec<VisibilityEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VisibilityEntry {
    id: String,
    receipt_handle: String,
    #[serde(default)]
    visibility_timeout: i64,
}

async fn change_message_visibility_batch(
    api: &Api,
    req: ChangeMessageVisibilityBatchRequest,
) -> Result<Response, SqsError> {
    queue_of(api, &req.queue_url).await?;
    check_batch(req.entries.iter().map(|e| e.id.as_str()))?;
    let (mut successful, mut failed) = (Vec::new(), Vec::new());
    for entry in &req.entries {
        let seconds = match in_range(
            "VisibilityTimeout",
            entry.visibility_timeout,
            0,
            MAX_VISIBILITY_SECS,
        ) {
            Ok(s) => s,
            Err(e) => {
                failed.push(failed_entry(&entry.id, "InvalidParameterValue", e.message));
                continue;
            }
        };
        if api
            .bus
            .change_visibility(&entry.receipt_handle, Duration::from_secs(seconds as u64))
            .await
            .map_err(SqsError::store)?
        {
            successful.push(json!({ "Id": entry.id }));
        } else {
            failed.push(failed_entry(
                &entry.id,
                "InvalidParameterValue",
                stale_visibility(&entry.receipt_handle).message,
            ));
        }
    }
    Ok(ok(json!({ "Successful": successful, "Failed": failed })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessageRequest {
    queue_url: String,
    message_body: String,
    #[serde(flatten)]
    unsupported: Unsupported,
}

async fn send_message(api: &Api, req: SendMessageRequest) -> Result<Response, SqsError> {
    let queue = queue_of(api, &req.queue_url).await?;
    req.unsupported.check().map_err(SqsError::invalid)?;
    if let Some(problem) = body_problem(&req.message_body) {
        return Err(SqsError::sender(
            "InvalidMessageContents",
            "InvalidMessageContents",
            problem,
        ));
    }
    let ids = api
        .bus
        .send(
            &queue,
            QUEUE_MESSAGE_KIND,
            std::slice::from_ref(&req.message_body),
        )
        .await
        .map_err(SqsError::store)?;
    Ok(ok(json!({
        "MessageId": ids.into_iter().next().unwrap_or_default(),
        "MD5OfMessageBody": md5_hex(&req.message_body),
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessageBatchRequest {
    queue_url: String,
    entries: Vec<SendEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendEntry {
    id: String,
    message_body: String,
    #[serde(flatten)]
    unsupported: Unsupported,
}

async fn send_message_batch(api: &Api, req: SendMessageBatchRequest) -> Result<Response, SqsError> {
    let queue = queue_of(api, &req.queue_url).await?;
    check_batch(req.entries.iter().map(|e| e.id.as_str()))?;
    let total: usize = req.entries.iter().map(|e| e.message_body.len()).sum();
    if total > MAX_BODY_BYTES {
        return Err(SqsError::batch(
            "BatchRequestTooLong",
            format!("The bodies of the batch total {total} bytes, more than {MAX_BODY_BYTES}."),
        ));
    }
    let mut failed = Vec::new();
    let mut accepted = Vec::new();
    for entry in &req.entries {
        if let Err(problem) = entry.unsupported.check() {
            failed.push(failed_entry(&entry.id, "InvalidParameterValue", problem));
        } else if let Some(problem) = body_problem(&entry.message_body) {
            failed.push(failed_entry(&entry.id, "InvalidMessageContents", problem));
        } else {
            accepted.push(entry);
        }
    }
    let bodies: Vec<String> = accepted.iter().map(|e| e.message_body.clone()).collect();
    let ids = if bodies.is_empty() {
        Vec::new()
    } else {
        api.bus
            .send(&queue, QUEUE_MESSAGE_KIND, &bodies)
            .await
            .map_err(SqsError::store)?
    };
    let successful: Vec<Value> = accepted
        .iter()
        .zip(ids)
        .map(|(entry, message_id)| {
            json!({
                "Id": entry.id,
                "MessageId": message_id,
                "MD5OfMessageBody": md5_hex(&entry.message_body),
            })
        })
        .collect();
    Ok(ok(json!({ "Successful": successful, "Failed": failed })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetQueueAttributesRequest {
    queue_url: String,
    #[serde(default)]
    attribute_names: Vec<String>,
}

async fn get_queue_attributes(
    api: &Api,
    req: GetQueueAttributesRequest,
) -> Result<Response, SqsError> {
    let queue = queue_of(api, &req.queue_url).await?;
    let depth = api.bus.queue_depth(&queue).await.map_err(SqsError::store)?;
    let wants = |name: &str| req.attribute_names.iter().any(|a| a == "All" || a == name);
    let mut attributes = Map::new();
    for (name, value) in [
        ("ApproximateNumberOfMessages", depth.visible),
        ("ApproximateNumberOfMessagesNotVisible", depth.not_visible),
        ("ApproximateNumberOfMessagesDelayed", 0),
    ] {
        if wants(name) {
            attributes.insert(name.into(), Value::String(value.to_string()));
        }
    }
    Ok(ok(json!({ "Attributes": attributes })))
}
