//! The local bus: SNS-like fan-out of events to queues, each subscription
//! filtered by event type, and SQS-like queues with a visibility timeout,
//! redelivery, and dead-lettering after a maximum receive count. Everything
//! lives in the same SQLite file as the orders, so the outbox relay moves
//! events from the outbox to the queues in one transaction.

use super::db::{Db, json_err, sql};
use crate::domain::events::{EventEnvelope, EventType};
use crate::faults::Faults;
use crate::ports::{
    Clock, EventPublisher, MessageQueue, PublishError, QueueError, QueueMessage, StoreError,
};
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

/// Messages of a queue, by visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Ready to be received.
    pub visible: u64,
    /// Received and not yet deleted, or hidden by `change_visibility`.
    pub not_visible: u64,
}

/// The `event_type` of messages sent to a queue directly (through
/// [`LocalQueue`] or the local SQS endpoint) rather than published as
/// events.
pub const QUEUE_MESSAGE_KIND: &str = "message";

/// How often a waiting receive looks for a visible message again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct LocalBus {
    db: Arc<Db>,
    clock: Arc<dyn Clock>,
    faults: Faults,
}

fn injected(e: crate::faults::Unavailable) -> StoreError {
    StoreError::Unexpected(anyhow::anyhow!(e))
}

fn now_ms(clock: &dyn Clock) -> i64 {
    (clock.now().unix_timestamp_nanos() / 1_000_000) as i64
}

fn queue_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM queues WHERE name = ?1)")
        .map_err(sql)?
        .query_row([name], |r| r.get(0))
        .map_err(sql)
}

/// Copies each event to every queue whose subscription matches its type
/// (`copies` times: 2 when the fault switch delivers everything twice).
pub(crate) fn fan_out(
    conn: &Connection,
    events: &[EventEnvelope],
    now_ms: i64,
    copies: usize,
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
    let mut log = conn
        .prepare_cached("INSERT OR IGNORE INTO event_log (event_id, tenant_id, order_id, type, occurred_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .map_err(sql)?;
    let mut delivered = 0;
    for event in events {
        let body = serde_json::to_string(event).map_err(json_err)?;
        let kind = event.event_type.as_str();
        let at = event
            .occurred_at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Unexpected(anyhow::anyhow!(e)))?;
        log.execute(params![
            event.id,
            event.tenant.as_str(),
            event.order_id.as_str(),
            kind,
            at,
            body
        ])
        .map_err(sql)?;
        for (queue, types) in &subs {
            if types.as_ref().is_none_or(|t| t.iter().any(|x| x == kind)) {
                for _ in 0..copies {
                    let id = uuid::Uuid::new_v4().to_string();
                    insert
                        .execute(params![queue, id, kind, body, now_ms])
                        .map_err(sql)?;
                }
                delivered += 1;
            }
        }
    }
    Ok(delivered)
}

impl LocalBus {
    pub fn new(db: Arc<Db>, clock: Arc<dyn Clock>) -> LocalBus {
        LocalBus {
            db,
            clock,
            faults: Faults::off(),
        }
    }

    /// The same bus with the fault switch on: every message enqueued twice,
    /// the outbox relay crashing between publish and mark, the queues
    /// refusing calls during outages (see [`crate::faults`]).
    pub fn with_faults(mut self, faults: Faults) -> LocalBus {
        self.faults = faults;
        self
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
    ///
    /// With the fault switch on, a relay may crash between publishing and
    /// marking: the events reach their queues in one transaction and stay
    /// in the outbox, so the next relay publishes them again (as a stream
    /// batch retried after its Lambda died).
    pub async fn relay_outbox(&self, max: usize) -> Result<usize, StoreError> {
        let now = now_ms(self.clock.as_ref());
        self.faults.queues().map_err(injected)?;
        let copies = self.faults.copies(0);
        let faults = self.faults.clone();
        let (relayed, crashed) = self
            .db
            .write(move |c| {
                let rows: Vec<(i64, String)> = c
                    .prepare_cached("SELECT seq, doc FROM outbox ORDER BY seq LIMIT ?1")
                    .map_err(sql)?
                    .query_map([max as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                let Some(last) = rows.last().map(|r| r.0) else {
                    return Ok((0, false));
                };
                let events: Vec<EventEnvelope> = rows
                    .iter()
                    .map(|(_, d)| serde_json::from_str(d).map_err(json_err))
                    .collect::<Result<_, _>>()?;
                let delivered = fan_out(c, &events, now, copies)?;
                faults.duplicated(delivered * (copies - 1));
                // Rolled only when there is something to publish, so every
                // counted crash left published events in the outbox.
                let crash = faults.crash_publisher();
                if !crash {
                    c.execute("DELETE FROM outbox WHERE seq <= ?1", [last])
                        .map_err(sql)?;
                }
                Ok((rows.len(), crash))
            })
            .await?;
        if crashed {
            return Err(StoreError::Unexpected(anyhow::anyhow!(
                "injected fault: the publisher crashed after publishing {relayed} events and before marking them"
            )));
        }
        Ok(relayed)
    }

    /// Receives up to `max` visible messages and hides them for the queue's
    /// visibility timeout. A message already received `max_receive_count`
    /// times moves to the dead-letter queue instead.
    pub async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Message>, StoreError> {
        self.receive_with(queue, max, None).await
    }

    /// [`receive`](Self::receive), hiding the messages for `visibility`
    /// instead of the queue's visibility timeout when given (SQS
    /// `ReceiveMessage` with `VisibilityTimeout`).
    pub async fn receive_with(
        &self,
        queue: &str,
        max: usize,
        visibility: Option<Duration>,
    ) -> Result<Vec<Message>, StoreError> {
        self.faults.queues().map_err(injected)?;
        let now = now_ms(self.clock.as_ref());
        let queue = queue.to_string();
        let visibility_ms = visibility.map(|v| v.as_millis() as i64);
        self.db
            .write(move |c| {
                let (queue_vis_ms, max_receive, dlq): (i64, u32, Option<String>) = c
                    .prepare_cached("SELECT visibility_timeout_ms, max_receive_count, dead_letter FROM queues WHERE name = ?1")
                    .map_err(sql)?
                    .query_row([&queue], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
                    .map_err(sql)?
                    .ok_or_else(|| StoreError::Unexpected(anyhow::anyhow!("no queue named {queue}")))?;
                let vis_ms = visibility_ms.unwrap_or(queue_vis_ms);
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
        self.faults.queues().map_err(injected)?;
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
        self.faults.queues().map_err(injected)?;
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

    /// Visible and in-flight messages of a queue (SQS
    /// `ApproximateNumberOfMessages` and `...NotVisible`); 0 and 0 for an
    /// unknown queue.
    pub async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, StoreError> {
        let now = now_ms(self.clock.as_ref());
        let queue = queue.to_string();
        self.db
            .read(move |c| {
                c.query_row(
                    "SELECT COALESCE(SUM(visible_at_ms <= ?2), 0), COALESCE(SUM(visible_at_ms > ?2), 0)
                     FROM messages WHERE queue = ?1",
                    params![queue, now],
                    |r| {
                        Ok(QueueDepth {
                            visible: r.get::<_, i64>(0)? as u64,
                            not_visible: r.get::<_, i64>(1)? as u64,
                        })
                    },
                )
                .map_err(sql)
            })
            .await
    }

    pub async fn queue_exists(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.db.read(move |c| queue_exists(c, &name)).await
    }

    /// Enqueues raw messages (not events: nothing goes to the event log),
    /// all in one transaction, visible at once. `kind` fills the messages'
    /// `event_type`. Returns their message ids, in order; an unknown queue
    /// is an error and enqueues nothing.
    pub async fn send(
        &self,
        queue: &str,
        kind: &str,
        bodies: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.faults.queues().map_err(injected)?;
        let copies = self.faults.copies(bodies.len());
        let now = now_ms(self.clock.as_ref());
        let (queue, kind, bodies) = (queue.to_string(), kind.to_string(), bodies.to_vec());
        self.db
            .write(move |c| {
                if !queue_exists(c, &queue)? {
                    return Err(StoreError::Unexpected(anyhow::anyhow!("no queue named {queue}")));
                }
                let mut insert = c
                    .prepare_cached("INSERT INTO messages (queue, message_id, type, body, visible_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")
                    .map_err(sql)?;
                let mut ids = Vec::with_capacity(bodies.len());
                for body in &bodies {
                    let id = uuid::Uuid::new_v4().to_string();
                    insert
                        .execute(params![queue, id, kind, body, now])
                        .map_err(sql)?;
                    ids.push(id);
                    for _ in 1..copies {
                        let copy = uuid::Uuid::new_v4().to_string();
                        insert
                            .execute(params![queue, copy, kind, body, now])
                            .map_err(sql)?;
                    }
                }
                Ok(ids)
            })
            .await
    }

    /// [`receive_with`](Self::receive_with), waiting up to `wait` for a
    /// message when none is visible. The bus does not block: while the
    /// queue is empty it looks again every 50 ms, with a read (the writer
    /// is used only once a message is visible).
    pub async fn receive_wait(
        &self,
        queue: &str,
        max: usize,
        visibility: Option<Duration>,
        wait: Duration,
    ) -> Result<Vec<Message>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got = self.receive_with(queue, max, visibility).await?;
            if !got.is_empty() {
                return Ok(got);
            }
            loop {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(Vec::new());
                }
                tokio::time::sleep((deadline - now).min(POLL_INTERVAL)).await;
                if self.has_visible(queue).await? {
                    break;
                }
            }
        }
    }

    async fn has_visible(&self, queue: &str) -> Result<bool, StoreError> {
        let now = now_ms(self.clock.as_ref());
        let queue = queue.to_string();
        self.db
            .read(move |c| {
                c.query_row(
                    "SELECT EXISTS(SELECT 1 FROM messages WHERE queue = ?1 AND visible_at_ms <= ?2)",
                    params![queue, now],
                    |r| r.get(0),
                )
                .map_err(sql)
            })
            .await
    }

    /// One queue of the bus, as a [`MessageQueue`] (what an SQS queue is to
    /// the AWS adapter). The queue need not exist yet; calls on a queue
    /// that does not exist fail with [`QueueError::Unavailable`].
    pub fn queue(&self, name: &str) -> LocalQueue {
        LocalQueue {
            bus: self.clone(),
            name: name.to_string(),
        }
    }

    /// Every event published for an order, in the order the outbox
    /// relayed them (commit order): the order's timeline (the local bus
    /// keeps what it relayed).
    pub async fn events_of(
        &self,
        tenant: &crate::domain::tenant::TenantId,
        order: &crate::domain::order::OrderId,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let (tenant, order) = (tenant.to_string(), order.to_string());
        self.db
            .read(move |c| {
                let docs: Vec<String> = c
                    .prepare_cached(
                        "SELECT doc FROM event_log WHERE tenant_id = ?1 AND order_id = ?2 ORDER BY rowid",
                    )
                    .map_err(sql)?
                    .query_map(params![tenant, order], |r| r.get(0))
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                docs.iter()
                    .map(|d| serde_json::from_str(d).map_err(json_err))
                    .collect()
            })
            .await
    }

    /// The event log's rows after `position` (its rowid), oldest first.
    async fn log_after(
        &self,
        position: i64,
        limit: usize,
    ) -> Result<Vec<(i64, EventEnvelope)>, StoreError> {
        self.db
            .read(move |c| {
                let rows: Vec<(i64, String)> = c
                    .prepare_cached(
                        "SELECT rowid, doc FROM event_log WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                    )
                    .map_err(sql)?
                    .query_map(params![position, limit as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                rows.into_iter()
                    .map(|(at, doc)| Ok((at, serde_json::from_str(&doc).map_err(json_err)?)))
                    .collect()
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

/// The bus's dead-letter queues (`<queue>-dlq`, declared with their
/// queues): a look reads the rows, a redrive moves them back in one
/// transaction, visible at once, their receive counts started afresh.
#[async_trait]
impl crate::ports::DeadLetters for LocalBus {
    async fn dead_letter_queues(
        &self,
    ) -> Result<Vec<crate::ports::DeadLetterQueue>, crate::ports::QueueError> {
        self.db
            .read(|c| {
                let rows: Vec<(String, String, i64)> = c
                    .prepare_cached(
                        "SELECT q.name, q.dead_letter, \
                         (SELECT COUNT(*) FROM messages m WHERE m.queue = q.dead_letter) \
                         FROM queues q WHERE q.dead_letter IS NOT NULL ORDER BY q.name",
                    )
                    .map_err(sql)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                Ok(rows
                    .into_iter()
                    .map(|(queue, dlq, depth)| crate::ports::DeadLetterQueue {
                        queue,
                        dead_letter_queue: dlq,
                        depth: depth as u64,
                    })
                    .collect())
            })
            .await
            .map_err(|e| crate::ports::QueueError::Unavailable(e.into()))
    }

    async fn dead_letters(
        &self,
        queue: &str,
        max: usize,
    ) -> Result<Option<Vec<crate::ports::DeadLetter>>, crate::ports::QueueError> {
        let queue = queue.to_string();
        self.db
            .read(move |c| {
                let Some(dlq) = dead_letter_of(c, &queue)? else {
                    return Ok(None);
                };
                let rows: Vec<(String, String, u32, i64)> = c
                    .prepare_cached(
                        "SELECT message_id, body, receive_count, visible_at_ms FROM messages \
                         WHERE queue = ?1 ORDER BY seq LIMIT ?2",
                    )
                    .map_err(sql)?
                    .query_map(params![dlq, max as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                Ok(Some(
                    rows.into_iter()
                        .map(
                            |(message_id, body, receive_count, at_ms)| crate::ports::DeadLetter {
                                message_id,
                                body,
                                receive_count,
                                at: time::OffsetDateTime::from_unix_timestamp_nanos(
                                    i128::from(at_ms) * 1_000_000,
                                )
                                .ok(),
                            },
                        )
                        .collect(),
                ))
            })
            .await
            .map_err(|e| crate::ports::QueueError::Unavailable(e.into()))
    }

    async fn redrive(
        &self,
        queue: &str,
    ) -> Result<Option<crate::ports::Redrive>, crate::ports::QueueError> {
        let now = now_ms(self.clock.as_ref());
        let queue = queue.to_string();
        self.db
            .write(move |c| {
                let Some(dlq) = dead_letter_of(c, &queue)? else {
                    return Ok(None);
                };
                let moved = c
                    .execute(
                        "UPDATE messages SET queue = ?1, receive_count = 0, receipt = NULL, \
                         visible_at_ms = ?2 WHERE queue = ?3",
                        params![queue, now, dlq],
                    )
                    .map_err(sql)?;
                tracing::info!(queue, moved, "dead letters sent back");
                Ok(Some(crate::ports::Redrive {
                    moved: Some(moved as u64),
                    task: None,
                }))
            })
            .await
            .map_err(|e| crate::ports::QueueError::Unavailable(e.into()))
    }
}

/// The dead-letter queue of `queue`, if it is a queue that has one.
fn dead_letter_of(c: &Connection, queue: &str) -> Result<Option<String>, StoreError> {
    c.prepare_cached("SELECT dead_letter FROM queues WHERE name = ?1")
        .map_err(sql)?
        .query_row([queue], |r| r.get::<_, Option<String>>(0))
        .optional()
        .map_err(sql)
        .map(Option::flatten)
}

/// Publishing straight to the bus (what SNS is to the AWS publisher): the
/// events-publisher handler runs on it locally.
#[async_trait]
impl EventPublisher for LocalBus {
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), PublishError> {
        let now = now_ms(self.clock.as_ref());
        let batch = events.to_vec();
        let faults = self.faults.clone();
        let written = match faults.queues() {
            Err(e) => Err(injected(e)),
            Ok(()) => {
                let copies = faults.copies(0);
                let delivered = self
                    .db
                    .write(move |c| fan_out(c, &batch, now, copies))
                    .await;
                if let Ok(n) = delivered {
                    faults.duplicated(n * (copies - 1));
                }
                delivered
            }
        };
        written.map(|_| ()).map_err(|e| PublishError {
            failed: events.iter().map(|e| e.id.clone()).collect(),
            total: events.len(),
            cause: anyhow::anyhow!(e),
        })
    }
}

/// One queue of a [`LocalBus`] ([`LocalBus::queue`]): the local
/// [`MessageQueue`]. A waiting receive polls (see
/// [`LocalBus::receive_wait`]); messages sent through it have the
/// `event_type` [`QUEUE_MESSAGE_KIND`].
#[derive(Clone)]
pub struct LocalQueue {
    bus: LocalBus,
    name: String,
}

impl LocalQueue {
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn unavailable(e: StoreError) -> QueueError {
    match e {
        StoreError::Unexpected(e) => QueueError::Unavailable(e),
        e => QueueError::Unavailable(anyhow::anyhow!(e)),
    }
}

#[async_trait]
impl MessageQueue for LocalQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let got = self
            .bus
            .receive_wait(&self.name, max.clamp(1, 10), None, wait)
            .await
            .map_err(unavailable)?;
        Ok(got
            .into_iter()
            .map(|m| QueueMessage {
                message_id: m.message_id,
                receipt: m.receipt,
                body: m.body,
                receive_count: m.receive_count,
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        match self.bus.delete(receipt).await.map_err(unavailable)? {
            true => Ok(()),
            false => Err(QueueError::StaleReceipt),
        }
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        match self
            .bus
            .change_visibility(receipt, timeout)
            .await
            .map_err(unavailable)?
        {
            true => Ok(()),
            false => Err(QueueError::StaleReceipt),
        }
    }

    /// Sends all bodies in one transaction: all are sent, or none.
    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        if bodies.is_empty() {
            return Ok(());
        }
        self.bus
            .send(&self.name, QUEUE_MESSAGE_KIND, bodies)
            .await
            .map(|_| ())
            .map_err(|e| QueueError::NotSent {
                failed: (0..bodies.len()).collect(),
                cause: match e {
                    StoreError::Unexpected(e) => e,
                    e => anyhow::anyhow!(e),
                },
            })
    }
}

/// The bus's event log as the console's live feed: what the relay
/// published, by its position in the log.
#[async_trait::async_trait]
impl crate::ports::EventFeed for LocalBus {
    async fn feed_end(&self) -> Result<i64, StoreError> {
        self.db
            .read(|c| {
                c.query_row("SELECT COALESCE(MAX(rowid), 0) FROM event_log", [], |r| {
                    r.get(0)
                })
                .map_err(sql)
            })
            .await
    }

    async fn feed_after(
        &self,
        position: i64,
        limit: usize,
    ) -> Result<Vec<(i64, EventEnvelope)>, StoreError> {
        self.log_after(position, limit).await
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;
    use crate::adapters::local::db::Durability;
    use crate::clock::ManualClock;
    use std::time::Instant;

    async fn setup(visibility: Duration) -> (tempfile::TempDir, LocalBus, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path().join("pw.sqlite"), Durability::Normal).unwrap());
        let clock = Arc::new(ManualClock::new(
            time::macros::datetime!(2026-11-22 10:00:00 UTC),
        ));
        let bus = LocalBus::new(db, clock.clone());
        bus.declare_queue(
            "jobs",
            QueueConfig {
                visibility_timeout: visibility,
                max_receive_count: 5,
                dead_letter: None,
            },
        )
        .await
        .unwrap();
        (dir, bus, clock)
    }

    fn bodies(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{{\"n\":{i}}}")).collect()
    }

    #[tokio::test]
    async fn sent_messages_are_received_once_each_then_deleted() {
        let (_dir, bus, _clock) = setup(Duration::from_secs(30)).await;
        let ids = bus.send("jobs", "PlantJob", &bodies(3)).await.unwrap();
        assert_eq!(ids.len(), 3);
        let raw = bus.receive("jobs", 10).await.unwrap();
        assert_eq!(
            raw.iter().map(|m| &m.message_id).collect::<Vec<_>>(),
            ids.iter().collect::<Vec<_>>()
        );
        assert!(raw.iter().all(|m| m.event_type == "PlantJob"));

        let queue = bus.queue("jobs");
        queue.send_batch(&bodies(25)).await.unwrap();
        let mut got = Vec::new();
        loop {
            let batch = queue.receive(10, Duration::ZERO).await.unwrap();
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 10);
            got.extend(batch);
        }
        assert_eq!(got.len(), 25);
        let mut seen: Vec<_> = got.iter().map(|m| m.body.clone()).collect();
        seen.sort();
        let mut want = bodies(25);
        want.sort();
        assert_eq!(seen, want);
        assert!(got.iter().all(|m| m.receive_count == 1));
        assert_eq!(
            bus.queue_depth("jobs").await.unwrap(),
            QueueDepth {
                visible: 0,
                not_visible: 28
            }
        );
        for m in &got {
            queue.delete(&m.receipt).await.unwrap();
        }
        assert!(matches!(
            queue.delete(&got[0].receipt).await,
            Err(QueueError::StaleReceipt)
        ));
        assert_eq!(bus.depth("jobs").await.unwrap(), 3);
    }

    #[tokio::test]
    async fn an_undeleted_message_comes_back_and_its_old_receipt_is_stale() {
        let (_dir, bus, clock) = setup(Duration::from_secs(30)).await;
        let queue = bus.queue("jobs");
        queue.send_batch(&bodies(1)).await.unwrap();
        let first = queue.receive(10, Duration::ZERO).await.unwrap().remove(0);
        assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
        clock.advance(Duration::from_secs(31));
        let second = queue.receive(10, Duration::ZERO).await.unwrap().remove(0);
        assert_eq!(second.message_id, first.message_id);
        assert_eq!(second.receive_count, 2);
        assert!(matches!(
            queue.delete(&first.receipt).await,
            Err(QueueError::StaleReceipt)
        ));
        assert!(matches!(
            queue
                .change_visibility(&first.receipt, Duration::ZERO)
                .await,
            Err(QueueError::StaleReceipt)
        ));
        // Visible again at once, with a third delivery.
        queue
            .change_visibility(&second.receipt, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            bus.queue_depth("jobs").await.unwrap(),
            QueueDepth {
                visible: 1,
                not_visible: 0
            }
        );
        let third = queue.receive(1, Duration::ZERO).await.unwrap().remove(0);
        assert_eq!(third.receive_count, 3);
        // A per-receive visibility overrides the queue's.
        queue
            .change_visibility(&third.receipt, Duration::ZERO)
            .await
            .unwrap();
        let short = bus
            .receive_with("jobs", 1, Some(Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(short.len(), 1);
        clock.advance(Duration::from_secs(3));
        assert_eq!(bus.receive("jobs", 1).await.unwrap()[0].receive_count, 5);
    }

    #[tokio::test]
    async fn a_waiting_receive_waits_and_returns_when_a_message_arrives() {
        let (_dir, bus, _clock) = setup(Duration::from_secs(30)).await;
        let queue = bus.queue("jobs");
        let start = Instant::now();
        assert!(
            queue
                .receive(10, Duration::from_millis(300))
                .await
                .unwrap()
                .is_empty()
        );
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");

        let sender = bus.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            sender.send("jobs", "x", &bodies(1)).await.unwrap();
        });
        let start = Instant::now();
        let got = queue.receive(10, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn an_unknown_queue_is_an_error() {
        let (_dir, bus, _clock) = setup(Duration::from_secs(30)).await;
        assert!(bus.queue_exists("jobs").await.unwrap());
        assert!(!bus.queue_exists("nope").await.unwrap());
        assert!(bus.send("nope", "x", &bodies(1)).await.is_err());
        let queue = bus.queue("nope");
        assert!(matches!(
            queue.receive(1, Duration::from_millis(100)).await,
            Err(QueueError::Unavailable(_))
        ));
        match queue.send_batch(&bodies(3)).await {
            Err(QueueError::NotSent { failed, .. }) => assert_eq!(failed, vec![0, 1, 2]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            bus.queue_depth("nope").await.unwrap(),
            QueueDepth::default()
        );
    }
}
