//! The notification ledger on SQLite: one row per notification (its
//! record as JSON, its status and due time in columns for the sweep) and
//! one counter per (tenant, channel, UTC day). A claim reads the row and
//! the counter and writes both in one writer job, which is one transaction
//! (savepoint) on the single writer thread: two claims can never interleave.

use super::db::{json_err, sql};
use super::store::SqliteStore;
use crate::domain::notify::{Channel, cap_day, next_day};
use crate::domain::order::OrderId;
use crate::domain::tenant::TenantId;
use crate::ports::{
    Claim, NotificationRecord, NotificationStatus, NotificationStore, SendCount, StoreError,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::time::Duration;
use time::OffsetDateTime;

fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn status_name(status: &NotificationStatus) -> &'static str {
    match status {
        NotificationStatus::Sending { .. } => "sending",
        NotificationStatus::Sent { .. } => "sent",
        NotificationStatus::Deferred { .. } => "deferred",
        NotificationStatus::Failed { .. } => "failed",
        NotificationStatus::Retry => "retry",
    }
}

fn load(c: &Connection, id: &str) -> Result<Option<NotificationRecord>, StoreError> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM notifications WHERE id = ?1")
        .map_err(sql)?
        .query_row([id], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    doc.map(|d| serde_json::from_str(&d).map_err(json_err))
        .transpose()
}

fn save(c: &Connection, record: &NotificationRecord) -> Result<(), StoreError> {
    let doc = serde_json::to_string(record).map_err(json_err)?;
    let due = match &record.status {
        NotificationStatus::Deferred { until } => Some(millis(*until)),
        _ => None,
    };
    c.prepare_cached(
        "INSERT INTO notifications (id, tenant_id, status, due_at_ms, doc) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET status = excluded.status, due_at_ms = excluded.due_at_ms, doc = excluded.doc",
    )
    .map_err(sql)?
    .execute(params![
        record.id,
        record.tenant.as_str(),
        status_name(&record.status),
        due,
        doc
    ])
    .map_err(sql)?;
    Ok(())
}

fn add_to_counter(
    c: &Connection,
    tenant: &str,
    channel: Channel,
    day: time::Date,
    delta: i64,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO notify_counters (tenant_id, channel, day, sent) VALUES (?1, ?2, ?3, max(?4, 0))
         ON CONFLICT(tenant_id, channel, day) DO UPDATE SET sent = max(sent + ?4, 0)",
    )
    .map_err(sql)?
    .execute(params![tenant, channel.as_str(), day.to_string(), delta])
    .map_err(sql)?;
    Ok(())
}

/// One more notification deferred by the cap of (tenant, channel, day).
fn add_deferred(
    c: &Connection,
    tenant: &str,
    channel: Channel,
    day: time::Date,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO notify_counters (tenant_id, channel, day, sent, deferred) VALUES (?1, ?2, ?3, 0, 1)
         ON CONFLICT(tenant_id, channel, day) DO UPDATE SET deferred = deferred + 1",
    )
    .map_err(sql)?
    .execute(params![tenant, channel.as_str(), day.to_string()])
    .map_err(sql)?;
    Ok(())
}

fn counter(
    c: &Connection,
    tenant: &str,
    channel: Channel,
    day: time::Date,
) -> Result<u32, StoreError> {
    let sent: Option<i64> = c
        .prepare_cached(
            "SELECT sent FROM notify_counters WHERE tenant_id = ?1 AND channel = ?2 AND day = ?3",
        )
        .map_err(sql)?
        .query_row(params![tenant, channel.as_str(), day.to_string()], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql)?;
    Ok(sent.unwrap_or(0).clamp(0, u32::MAX as i64) as u32)
}

/// The claim rules of [`NotificationStore::claim`], inside one transaction.
fn claim_in(
    c: &Connection,
    candidate: &NotificationRecord,
    limit: u32,
    now: OffsetDateTime,
    lease: Duration,
) -> Result<Claim, StoreError> {
    let mut record = match load(c, &candidate.id)? {
        Some(existing) => existing,
        None => candidate.clone(),
    };
    if let Some(found) = record.status.blocks_claim(now) {
        return Ok(found);
    }
    let channel = record.channel();
    let day = cap_day(now);
    let tenant = record.tenant.as_str().to_string();
    if counter(c, &tenant, channel, day)? >= limit {
        let until = next_day(now);
        record.status = NotificationStatus::Deferred { until };
        save(c, &record)?;
        add_deferred(c, &tenant, channel, day)?;
        return Ok(Claim::Deferred(until));
    }
    add_to_counter(c, &tenant, channel, day, 1)?;
    record.attempts += 1;
    record.status = NotificationStatus::Sending {
        lease_until: now + lease,
        counted_day: day,
    };
    save(c, &record)?;
    Ok(Claim::Acquired(Box::new(record)))
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn claim(
        &self,
        candidate: &NotificationRecord,
        limit: u32,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let candidate = candidate.clone();
        self.db()
            .write(move |c| claim_in(c, &candidate, limit, now, lease))
            .await
    }

    async fn finish(
        &self,
        id: &str,
        status: NotificationStatus,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.db()
            .write(move |c| {
                let mut record = load(c, &id)?
                    .ok_or_else(|| anyhow::anyhow!("no notification {id} to finish"))?;
                if let (
                    NotificationStatus::Failed { .. },
                    NotificationStatus::Sending { counted_day, .. },
                ) = (&status, &record.status)
                {
                    // Nothing went out: it does not count against the cap.
                    add_to_counter(
                        c,
                        record.tenant.as_str(),
                        record.channel(),
                        *counted_day,
                        -1,
                    )?;
                }
                record.status = status;
                save(c, &record)
            })
            .await
    }

    async fn release(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.db()
            .write(move |c| {
                let Some(mut record) = load(c, &id)? else {
                    return Ok(());
                };
                if let NotificationStatus::Sending { counted_day, .. } = record.status {
                    add_to_counter(c, record.tenant.as_str(), record.channel(), counted_day, -1)?;
                    record.status = NotificationStatus::Retry;
                    save(c, &record)?;
                }
                Ok(())
            })
            .await
    }

    async fn due_deferred(
        &self,
        now: OffsetDateTime,
        max: usize,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let docs: Vec<String> = self
            .db()
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT doc FROM notifications WHERE status = 'deferred' AND due_at_ms <= ?1
                         ORDER BY due_at_ms, id LIMIT ?2",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![millis(now), max as i64], |r| r.get(0))
                    .map_err(sql)?;
                rows.collect::<Result<Vec<String>, _>>().map_err(sql)
            })
            .await?;
        docs.iter()
            .map(|d| serde_json::from_str(d).map_err(json_err))
            .collect()
    }

    async fn notification(&self, id: &str) -> Result<Option<NotificationRecord>, StoreError> {
        let id = id.to_string();
        self.db().read(move |c| load(c, &id)).await
    }

    async fn sent_on(
        &self,
        tenant: &TenantId,
        channel: Channel,
        day: time::Date,
    ) -> Result<u32, StoreError> {
        let tenant = tenant.as_str().to_string();
        self.db()
            .read(move |c| counter(c, &tenant, channel, day))
            .await
    }

    async fn for_order(
        &self,
        tenant: &TenantId,
        order: &OrderId,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let (tenant, order) = (tenant.as_str().to_string(), order.as_str().to_string());
        let docs: Vec<String> = self
            .db()
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT doc FROM notifications
                         WHERE tenant_id = ?1 AND json_extract(doc, '$.order_id') = ?2 ORDER BY rowid",
                    )
                    .map_err(sql)?;
                let rows = stmt.query_map([tenant, order], |r| r.get(0)).map_err(sql)?;
                rows.collect::<Result<Vec<String>, _>>().map_err(sql)
            })
            .await?;
        let mut records = docs
            .iter()
            .map(|d| serde_json::from_str::<NotificationRecord>(d).map_err(json_err))
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by_key(|r| r.created_at);
        Ok(records)
    }

    async fn send_counts(
        &self,
        from: time::Date,
        to: time::Date,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<SendCount>, StoreError> {
        let tenant = tenant.map(|t| t.as_str().to_string());
        let rows: Vec<(String, String, String, i64, i64)> = self
            .db()
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT day, tenant_id, channel, sent, deferred FROM notify_counters
                         WHERE day BETWEEN ?1 AND ?2 AND (?3 IS NULL OR tenant_id = ?3)
                           AND (sent > 0 OR deferred > 0)
                         ORDER BY day, tenant_id, channel",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![from.to_string(), to.to_string(), tenant], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .map_err(sql)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql)
            })
            .await?;
        rows.into_iter()
            .map(|(day, tenant, channel, sent, deferred)| {
                Ok(SendCount {
                    day: parse_day(&day)?,
                    tenant: TenantId::parse(&tenant).map_err(|e| {
                        StoreError::Unexpected(anyhow::anyhow!(
                            "a counter's tenant {tenant:?}: {e}"
                        ))
                    })?,
                    channel: Channel::parse(&channel).ok_or_else(|| {
                        StoreError::Unexpected(anyhow::anyhow!(
                            "unknown channel {channel:?} counted"
                        ))
                    })?,
                    sent: sent.clamp(0, u32::MAX as i64) as u32,
                    deferred: deferred.clamp(0, u32::MAX as i64) as u32,
                })
            })
            .collect()
    }
}

fn parse_day(day: &str) -> Result<time::Date, StoreError> {
    time::Date::parse(day, &time::format_description::well_known::Iso8601::DATE)
        .map_err(|e| StoreError::Unexpected(anyhow::anyhow!("a counter's day {day:?}: {e}")))
}

impl SqliteStore {
    /// Every notification of an order (tests, `printworks demo`).
    pub async fn notifications_of(
        &self,
        order_id: &crate::domain::order::OrderId,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let order = order_id.as_str().to_string();
        let docs: Vec<String> = self
            .db()
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT doc FROM notifications WHERE json_extract(doc, '$.order_id') = ?1 ORDER BY rowid",
                    )
                    .map_err(sql)?;
                let rows = stmt.query_map([order], |r| r.get(0)).map_err(sql)?;
                rows.collect::<Result<Vec<String>, _>>().map_err(sql)
            })
            .await?;
        docs.iter()
            .map(|d| serde_json::from_str(d).map_err(json_err))
            .collect()
    }
}
