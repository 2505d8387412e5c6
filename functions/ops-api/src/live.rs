//! `GET /v1/ops/live`: the events as they are published, as server-sent
//! events, for the console's live updates (the needs-a-person list, an
//! open order, the plants). Each carries what happened to which order and
//! when (`id`, `type`, `order_id`, `tenant`, `occurred_at`), never the
//! event's data: the console reads what changed through the API, as the
//! operator may see it. A plant's operators get their plant's orders'
//! events only.
//!
//! The stream is read with `fetch` (an `EventSource` cannot send the
//! operator key); each message's `id` is its position in the feed, and a
//! reconnect sends it back as `Last-Event-ID` to miss nothing. Where there
//! is no feed (the Lambda: API Gateway's HTTP API buffers a response, it
//! cannot stream one) the route answers 501 `live_unavailable` and the
//! console polls instead.

use crate::Ops;
use crate::ops::{internal, plant_of_order};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use order_api::ApiError;
use printworks::domain::operator::{Operator, Role};
use std::time::Duration;

/// How often the feed is read.
const TICK: Duration = Duration::from_millis(400);
/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE_TICKS: u32 = 30;
/// Events read per tick.
const BATCH: usize = 200;

impl Ops {
    /// The live stream for `operator`, from `Last-Event-ID` or from now.
    pub async fn live(
        &self,
        operator: Operator,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        let Some(feed) = self.feed.clone() else {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "live_unavailable",
                "no live stream here: poll the lists and the order instead",
            ));
        };
        let start = match headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
        {
            Some(position) if position >= 0 => position,
            _ => feed.feed_end().await.map_err(internal)?,
        };
        let store = self.store.clone();
        let stop = self.live_stop.clone();
        struct Follow {
            position: i64,
            ticks: u32,
            opened: bool,
        }
        let stream = futures::stream::unfold(
            Follow {
                position: start,
                ticks: 0,
                opened: false,
            },
            move |mut state| {
                let (feed, store, operator, stop) =
                    (feed.clone(), store.clone(), operator.clone(), stop.clone());
                async move {
                    if !state.opened {
                        state.opened = true;
                        // The client knows the stream is up (and its start).
                        let hello = format!(
                            "retry: 2000\nid: {}\nevent: open\ndata: {{}}\n\n",
                            state.position
                        );
                        return Some((Ok::<_, std::convert::Infallible>(hello), state));
                    }
                    loop {
                        if stop.as_ref().is_some_and(|s| *s.borrow()) {
                            return None;
                        }
                        tokio::time::sleep(TICK).await;
                        let events = match feed.feed_after(state.position, BATCH).await {
                            Ok(events) => events,
                            Err(e) => {
                                tracing::warn!(error = %e, "live feed unavailable; trying again");
                                Vec::new()
                            }
                        };
                        let mut out = String::new();
                        for (position, event) in events {
                            state.position = position;
                            if let Role::Plant(plant) = &operator.role {
                                let order = store.find_order(&event.order_id).await.ok().flatten();
                                if order.as_ref().and_then(plant_of_order) != Some(plant.as_str()) {
                                    continue;
                                }
                            }
                            let data = serde_json::json!({
                                "id": event.id, "type": event.event_type.as_str(),
                                "order_id": event.order_id, "tenant": event.tenant,
                                "occurred_at": crate::ops::rfc3339(event.occurred_at),
                            });
                            out.push_str(&format!(
                                "id: {position}\nevent: order\ndata: {data}\n\n"
                            ));
                        }
                        state.ticks += 1;
                        if out.is_empty() && state.ticks >= KEEP_ALIVE_TICKS {
                            out.push_str(": still here\n\n");
                        }
                        if !out.is_empty() {
                            state.ticks = 0;
                            return Some((Ok(out), state));
                        }
                    }
                }
            },
        );
        let mut response = Response::new(Body::from_stream(stream));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    }
}
