//! The local bus: SNS-like fan-out of events to queues, each subscription
//! filtered by event type, and SQS-like queues with a visibility timeout,
//! redelivery, and dead-lettering after a maximum receive count. Everything
//! lives in the same SQLite file as the orders, so the outbox relay moves
//! events from the outbox to the queues in one transaction.

use super::db::{Db, json_err, sql};
use crate::domain::events::{EventEnvelope, EventType};
use crate::ports::{Clock, EventPublisher, PublishError, StoreError};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub visibility_timeout: Duration,
    /// After this many receives without a delete, a message moves to the
    /// dead-letter queue (if any) instead of being delivered again.
    pub max_receive_count: u32,
    pub dead_letter: Option<String>,
}

/// A received message: delete it with its receipt when done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub message_id: String,
    pub receipt: String,
    pub event_type: String,
    pub body: String,
    pub receive_count: u32,
}

#[derive(Clone)]
pub struct LocalBus {
    db: Arc<Db>,
    clock: Arc<dyn Clock>,
}

fn now_ms(clock: &dyn Clock) -> i64 {
    (clock.now().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Copies each event to every queue whose subscription matches its type.
pub(crate) fn fan_out(
    conn: &Connection,
    events: &[EventEnvelope],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let subs: Vec<(String, Option<String>)> = conn
        .prepare_cached("SELECT queue, types FROM subscriptions")
        .map_err(sql)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    let subs: Vec<(String, Option<Vec<String>>)> = subs
        .into_iter()
        .map(|(q, t)| {
            Ok((
                q,
                t.map(|t| serde_json::from_str(&t))
                    .transpose()
                    .map_err(json_err)?,
            ))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut insert = conn
        .prepare_cached("INSERT INTO messages (queue, message_id, type, body, visible_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(sql)?;
    let mut delivered = 0;
    for event in events {
        let body = serde_json::to_string(event).map_err(json_err)?;
        let kind = event.event_type.as_str();
        for (queue, types) in &subs {
            if types.as_ref().is_none_or(|t| t.iter().any(|x| x == kind)) {
                let id = uuid::Uuid::new_v4().to_string();
                insert
                    .execute(params![queue, id, kind, body, now_ms])
                    .map_err(sql)?;
                delivered += 1;
            }
        }
    }
    Ok(delivered)
}

impl LocalBus {
    pub fn new(db: Arc<Db>, clock: Arc<dyn Clock>) -> LocalBus {
        LocalBus { db, clock }
    }

    /// Creates or updates a queue.
    pub async fn declare_queue(&self, name: &str, config: QueueConfig) -> Result<(), StoreError> {
        let name = name.to_string();
        self.db
            .write(move |c| {
                if let Some(dlq) = &config.dead_letter {
                    c.execute(
                        "INSERT INTO queues (name, visibility_timeout_ms, max_receive_count, dead_letter) VALUES (?1, 30000, 1000000, NULL) ON CONFLICT(name) DO NOTHING",
                        [dlq],
                    )
                    .map_err(sql)?;
                }
                c.execute(
                    "INSERT INTO queues (name, visibility_timeout_ms, max_receive_count, dead_letter) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET visibility_timeout_ms = excluded.visibility_timeout_ms,
                       max_receive_count = excluded.max_receive_count, dead_letter = excluded.dead_letter",
                    params![name, config.visibility_timeout.as_millis() as i64, config.max_receive_count, config.dead_letter],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    /// Subscribes a queue to the topic; `None` takes every event type.
    pub async fn subscribe(
        &self,
        queue: &str,
        types: Option<&[EventType]>,
    ) -> Result<(), StoreError> {
        let queue = queue.to_string();
        let types = types
            .map(|t| serde_json::to_string(&t.iter().map(|x| x.as_str()).collect::<Vec<_>>()))
            .transpose()
            .map_err(json_err)?;
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO subscriptions (queue, types) VALUES (?1, ?2) ON CONFLICT(queue) DO UPDATE SET types = excluded.types",
                    params![queue, types],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    /// Moves up to `max` events from the outbox to the subscribed queues, in
    /// one transaction: an event is either still in the outbox or in its
    /// queues. Returns how many outbox records were relayed.
    pub async fn relay_outbox(&self, max: usize) -> Result<usize, StoreError> {
        let now = now_ms(self.clock.as_ref());
        self.db
            .write(move |c| {
                let rows: Vec<(i64, String)> = c
                    .prepare_cached("SELECT seq, doc FROM outbox ORDER BY seq LIMIT ?1")
                    .map_err(sql)?
                    .query_map([max as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                let Some(last) = rows.last().map(|r| r.0) else {
                    return Ok(0);
                };
                let events: Vec<EventEnvelope> = rows
                    .iter()
                    .map(|(_, d)| serde_json::from_str(d).map_err(json_err))
                    .collect::<Result<_, _>>()?;
                fan_out(c, &events, now)?;
                c.execute("DELETE FROM outbox WHERE seq <= ?1", [last])
                    .map_err(sql)?;
                Ok(rows.len())
            })
            .await
    }

    /// Receives up to `max` visible messages and hides them for the queue's
    /// visibility timeout. A message already received `max_receive_count`
    /// times moves to the dead-letter queue instead.
    pub async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Message>, StoreError> {
        let now = now_ms(self.clock.as_ref());
        let queue = queue.to_string();
        self.db
            .write(move |c| {
                let (vis_ms, max_receive, dlq): (i64, u32, Option<String>) = c
                    .prepare_cached("SELECT visibility_timeout_ms, max_receive_count, dead_letter FROM queues WHERE name = ?1")
                    .map_err(sql)?
                    .query_row([&queue], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
                    .map_err(sql)?
                    .ok_or_else(|| StoreError::Unexpected(anyhow::anyhow!("no queue named {queue}")))?;
                let candidates: Vec<(i64, String, String, String, u32)> = c
                    .prepare_cached(
                        "SELECT seq, message_id, type, body, receive_count FROM messages
                         WHERE queue = ?1 AND visible_at_ms <= ?2 ORDER BY visible_at_ms, seq LIMIT ?3",
                    )
                    .map_err(sql)?
                    .query_map(params![queue, now, (max * 2) as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                let mut out = Vec::new();
                for (seq, message_id, event_type, body, count) in candidates {
                    if count >= max_receive {
                        match &dlq {
                            Some(dlq) => c
                                .execute(
                                    "UPDATE messages SET queue = ?1, receive_count = 0, receipt = NULL, visible_at_ms = ?2 WHERE seq = ?3",
                                    params![dlq, now, seq],
                                )
                                .map_err(sql)?,
                            None => 0,
                        };
                        if dlq.is_some() {
                            tracing::warn!(queue, message_id, receive_count = count, "message dead-lettered");
                            continue;
                        }
                    }
                    if out.len() == max {
                        break;
                    }
                    let receipt = uuid::Uuid::new_v4().simple().to_string();
                    c.execute(
                        "UPDATE messages SET receive_count = receive_count + 1, receipt = ?1, visible_at_ms = ?2 WHERE seq = ?3",
                        params![receipt, now + vis_ms, seq],
                    )
                    .map_err(sql)?;
                    out.push(Message { message_id, receipt, event_type, body, receive_count: count + 1 });
                }
                Ok(out)
            })
            .await
    }

    /// Deletes a received message. A stale receipt (the message was
    /// received again since) deletes nothing and returns false.
    pub async fn delete(&self, receipt: &str) -> Result<bool, StoreError> {
        let receipt = receipt.to_string();
        self.db
            .write(move |c| {
                Ok(
                    c.execute("DELETE FROM messages WHERE receipt = ?1", [receipt])
                        .map_err(sql)?
                        == 1,
                )
            })
            .await
    }

    /// Hides a received message for `timeout` from now (0 makes it visible).
    pub async fn change_visibility(
        &self,
        receipt: &str,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        let until = now_ms(self.clock.as_ref()) + timeout.as_millis() as i64;
        let receipt = receipt.to_string();
        self.db
            .write(move |c| {
                Ok(c.execute(
                    "UPDATE messages SET visible_at_ms = ?1 WHERE receipt = ?2",
                    params![until, receipt],
                )
                .map_err(sql)?
                    == 1)
            })
            .await
    }

    /// Messages in a queue, visible or not.
    pub async fn depth(&self, queue: &str) -> Result<u64, StoreError> {
        let queue = queue.to_string();
        self.db
            .read(move |c| {
                c.query_row(
                    "SELECT COUNT(*) FROM messages WHERE queue = ?1",
                    [queue],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
                .map_err(sql)
            })
            .await
    }

    /// Outbox records not yet relayed.
    pub async fn outbox_len(&self) -> Result<u64, StoreError> {
        self.db
            .read(|c| {
                c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
                    .map_err(sql)
            })
            .await
    }
}

/// Publishing straight to the bus (what SNS is to the AWS publisher): the
/// events-publisher handler runs on it locally.
#[async_trait]
impl EventPublisher for LocalBus {
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), PublishError> {
        let now = now_ms(self.clock.as_ref());
        let batch = events.to_vec();
        self.db
            .write(move |c| fan_out(c, &batch, now))
            .await
            .map(|_| ())
            .map_err(|e| PublishError {
                failed: events.iter().map(|e| e.id.clone()).collect(),
                total: events.len(),
                cause: anyhow::anyhow!(e),
            })
    }
}
