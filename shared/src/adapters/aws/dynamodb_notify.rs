//! The notification ledger on the orders table (a child module of
//! `dynamodb.rs`, so it shares its item helpers). Three kinds of item:
//!
//! - the record `NOTIFY#<id>` / `NOTIFY`: `doc` (the [`NotificationRecord`]
//!   as JSON), `status`, `tenant`, `rev` (1 when created, one more per
//!   write: every write is conditional on the `rev` it read, or on the
//!   record not existing) and, while deferred, `due_at` (epoch seconds);
//! - the daily counter `NCOUNT#<tenant>#<channel>#<yyyy-mm-dd>` / `NCOUNT`:
//!   `sent`, and `expires_at` (TTL) a week after its day;
//! - the statistics' counter `STATS#NOTE` / `<yyyy-mm-dd>#<tenant>#<channel>`:
//!   `sent` and `deferred`, changed in the same transactions as the daily
//!   counter (kept, never expired: the console's statistics read a range of
//!   days with one Query);
//! - the order's list `NORDER#<tenant>#<order id>` / `<id>`, put with the
//!   record when it is created: the console's order page reads it;
//! - the deferred index `NDUE#<yyyy-mm-dd>` / `<id>`, one item per deferred
//!   record under the UTC day it is due (a copy of the record's `doc` and
//!   `due_at`), put and deleted in the same transaction as the record's
//!   change of status, so the sweep finds deferred records with one Query
//!   per day and no index on the table.
//!
//! A claim is one `TransactWriteItems`: the record (conditional on its
//! `rev`) and the counter (`ADD sent :one`, conditional on
//! `attribute_not_exists(sent) OR sent < :limit`). DynamoDB transactions
//! are serializable, so of two concurrent claims at most one finds the
//! `rev` it read, and no increment passes the limit. When the transaction
//! is cancelled, the cancellation reasons say which condition failed: a
//! changed record is read again and decided again; a full counter defers
//! the record (its put conditional on the `rev`, with a condition check
//! that the counter is still full). A conflict with a concurrent
//! transaction is retried after a short pause.

use super::{DynamoStore, Item, doc_of, failed_conditions, json, key, n, parse, s};
use crate::domain::notify::{Channel, cap_day, next_day};
use crate::domain::order::OrderId;
use crate::domain::tenant::TenantId;
use crate::ports::{
    Claim, NotificationRecord, NotificationStatus, NotificationStore, SendCount, StoreError,
};
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update,
};
use std::time::Duration;
use time::{Date, OffsetDateTime, Time};

const RECORD_SK: &str = "NOTIFY";
const COUNTER_SK: &str = "NCOUNT";
/// Counters expire a week after their day (TTL deletes within days of that).
const COUNTER_TTL_DAYS: i64 = 8;
/// How many days back the sweep looks for deferred records: a record is
/// deferred to the next day, so anything older means the sweep did not run
/// for a week.
const DUE_DAYS: i64 = 7;
/// Reads and conditional writes before a claim gives up with
/// [`StoreError::Conflict`] (the message is then retried by the queue).
const ATTEMPTS: u32 = 8;

fn record_pk(id: &str) -> String {
    format!("NOTIFY#{id}")
}

/// The statistics' notification counters' partition.
const STATS_PK: &str = "STATS#NOTE";

fn stats_sk(tenant: &str, channel: Channel, day: Date) -> String {
    format!("{day}#{tenant}#{}", channel.as_str())
}

fn order_list_pk(tenant: &str, order: &str) -> String {
    format!("NORDER#{tenant}#{order}")
}

/// `delta` sends (and `deferred` deferrals) more on the statistics'
/// counter of (tenant, channel, day); unconditional.
fn count_stats(
    table: &str,
    record: &NotificationRecord,
    day: Date,
    sent: i64,
    deferred: i64,
) -> Result<TransactWriteItem, StoreError> {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(key(
            STATS_PK.to_string(),
            &stats_sk(record.tenant.as_str(), record.channel(), day),
        )))
        .update_expression("ADD #sent :sent, #deferred :deferred")
        .expression_attribute_names("#sent", "sent")
        .expression_attribute_names("#deferred", "deferred")
        .expression_attribute_values(":sent", n(sent))
        .expression_attribute_values(":deferred", n(deferred))
        .build()
        .context("building Update")?;
    Ok(TransactWriteItem::builder().update(update).build())
}

fn counter_pk(tenant: &str, channel: Channel, day: Date) -> String {
    format!("NCOUNT#{tenant}#{}#{day}", channel.as_str())
}

fn due_pk(day: Date) -> String {
    format!("NDUE#{day}")
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

fn due_of(record: &NotificationRecord) -> Option<OffsetDateTime> {
    match record.status {
        NotificationStatus::Deferred { until } => Some(until),
        _ => None,
    }
}

/// A record as read, with the revision its next write is conditional on.
struct Stored {
    record: NotificationRecord,
    rev: u64,
}

/// What a `TransactWriteItems` did.
enum Tx {
    Done,
    /// Cancelled: per item, whether its condition failed (none failed: a
    /// conflict with a concurrent transaction).
    Cancelled(Vec<bool>),
}

impl Tx {
    fn failed(&self, item: usize) -> bool {
        matches!(self, Tx::Cancelled(failed) if failed.get(item) == Some(&true))
    }
}

/// A short, growing, jittered pause before trying a conflicting
/// transaction again.
async fn pause(attempt: u32) {
    use rand::Rng;
    let base = 10u64 * u64::from(attempt + 1);
    let jitter = rand::rng().random_range(0..=base);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

fn update(
    table: &str,
    pk: String,
    expression: &str,
    condition: &str,
    values: &[(&str, AttributeValue)],
) -> Result<TransactWriteItem, StoreError> {
    let mut update = Update::builder()
        .table_name(table)
        .set_key(Some(key(pk, COUNTER_SK)))
        .update_expression(expression)
        .condition_expression(condition);
    for (name, value) in values {
        update = update.expression_attribute_values(*name, value.clone());
    }
    Ok(TransactWriteItem::builder()
        .update(update.build().context("building Update")?)
        .build())
}

/// One more send on (tenant, channel, day), if the counter is below `limit`.
fn count_up(
    table: &str,
    record: &NotificationRecord,
    day: Date,
    limit: u32,
) -> Result<TransactWriteItem, StoreError> {
    let expires =
        day.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() + COUNTER_TTL_DAYS * 24 * 3600;
    update(
        table,
        counter_pk(record.tenant.as_str(), record.channel(), day),
        "ADD sent :one SET expires_at = :expires",
        "attribute_not_exists(sent) OR sent < :limit",
        &[
            (":one", n(1)),
            (":limit", n(limit)),
            (":expires", n(expires)),
        ],
    )
}

/// One send fewer on the counter of `day` (never below zero).
fn count_down(
    table: &str,
    record: &NotificationRecord,
    day: Date,
) -> Result<TransactWriteItem, StoreError> {
    update(
        table,
        counter_pk(record.tenant.as_str(), record.channel(), day),
        "ADD sent :minus_one",
        "sent > :zero",
        &[(":minus_one", n(-1)), (":zero", n(0))],
    )
}

/// The counter of `day` is (still) at or above `limit`.
fn still_full(
    table: &str,
    record: &NotificationRecord,
    day: Date,
    limit: u32,
) -> Result<TransactWriteItem, StoreError> {
    let check = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key(
            counter_pk(record.tenant.as_str(), record.channel(), day),
            COUNTER_SK,
        )))
        .condition_expression("sent >= :limit")
        .expression_attribute_values(":limit", n(limit))
        .build()
        .context("building ConditionCheck")?;
    Ok(TransactWriteItem::builder().condition_check(check).build())
}

/// The writes that move `observed` (`None`: not stored yet) to `next`: the
/// record first, conditional on the revision read, then the deferred
/// index kept in step (the old day's item deleted, the new day's put).
fn record_writes(
    table: &str,
    observed: Option<&Stored>,
    next: &NotificationRecord,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let doc = json(next)?;
    let rev = observed.map_or(0, |o| o.rev);
    let mut item = key(record_pk(&next.id), RECORD_SK);
    item.insert("doc".into(), s(doc.clone()));
    item.insert("status".into(), s(status_name(&next.status)));
    item.insert("tenant".into(), s(next.tenant.as_str()));
    item.insert("rev".into(), n(rev + 1));
    let due = due_of(next);
    if let Some(due) = due {
        item.insert("due_at".into(), n(due.unix_timestamp()));
    }
    let put = Put::builder().table_name(table).set_item(Some(item));
    let put = match observed {
        None => put.condition_expression("attribute_not_exists(pk)"),
        Some(_) => put
            .condition_expression("#rev = :rev")
            .expression_attribute_names("#rev", "rev")
            .expression_attribute_values(":rev", n(rev)),
    };
    let mut items = vec![
        TransactWriteItem::builder()
            .put(put.build().context("building Put")?)
            .build(),
    ];
    let old_day = observed.and_then(|o| due_of(&o.record)).map(cap_day);
    let new_day = due.map(cap_day);
    if let Some(day) = old_day.filter(|d| Some(*d) != new_day) {
        let delete = Delete::builder()
            .table_name(table)
            .set_key(Some(key(due_pk(day), &next.id)))
            .build()
            .context("building Delete")?;
        items.push(TransactWriteItem::builder().delete(delete).build());
    }
    if let (Some(day), Some(due)) = (new_day, due) {
        let mut index = key(due_pk(day), &next.id);
        index.insert("doc".into(), s(doc));
        index.insert("due_at".into(), n(due.unix_timestamp()));
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(index))
            .build()
            .context("building Put")?;
        items.push(TransactWriteItem::builder().put(put).build());
    }
    if observed.is_none() {
        // The order's list of its notifications (a pointer; the record is
        // read from its own item).
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(key(
                order_list_pk(next.tenant.as_str(), next.order_id.as_str()),
                &next.id,
            )))
            .build()
            .context("building Put")?;
        items.push(TransactWriteItem::builder().put(put).build());
    }
    Ok(items)
}

fn stored_of(item: &Item) -> Result<Stored, StoreError> {
    let rev = item
        .get("rev")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("notification item without rev"))?;
    Ok(Stored {
        record: parse(doc_of(item)?)?,
        rev,
    })
}

/// Whether a cancelled transaction lost only to contention (a concurrent
/// transaction on one of its items, throttling): worth trying again.
fn only_contention(
    err: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> bool {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(tc)) => {
            tc.cancellation_reasons().iter().all(|r| {
                matches!(
                    r.code(),
                    None | Some(
                        "None"
                            | "TransactionConflict"
                            | "ThrottlingError"
                            | "ProvisionedThroughputExceeded"
                            | "RequestLimitExceeded"
                    )
                )
            })
        }
        _ => false,
    }
}

impl DynamoStore {
    async fn load_notification(&self, id: &str) -> Result<Option<Stored>, StoreError> {
        self.get_item(record_pk(id), RECORD_SK)
            .await?
            .map(|item| stored_of(&item))
            .transpose()
    }

    async fn try_transact(&self, items: Vec<TransactWriteItem>) -> Result<Tx, StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(Tx::Done),
            Err(err) => match failed_conditions(&err) {
                Some(failed) if failed.contains(&true) || only_contention(&err) => {
                    Ok(Tx::Cancelled(failed))
                }
                // Cancelled for another reason (a validation error, an item
                // too large): trying again cannot help.
                _ => Err(anyhow!(err).context("DynamoDB TransactWriteItems").into()),
            },
        }
    }

    /// Moves record `id` to the status `next` gives for the stored one
    /// (`None`: leave it), counting the counted day down when `next` says
    /// so. Conditional on the revision read; a lost race reads again.
    async fn change_notification(
        &self,
        id: &str,
        must_exist: bool,
        next: impl Fn(&NotificationStatus) -> Option<(NotificationStatus, Option<Date>)>,
    ) -> Result<(), StoreError> {
        // Cleared when the counter is already at zero (expired by TTL):
        // the record still changes.
        let mut may_count_down = true;
        for attempt in 0..ATTEMPTS {
            let Some(observed) = self.load_notification(id).await? else {
                return match must_exist {
                    true => Err(anyhow!("no notification {id} to finish").into()),
                    false => Ok(()),
                };
            };
            let Some((status, counted_day)) = next(&observed.record.status) else {
                return Ok(());
            };
            let mut record = observed.record.clone();
            record.status = status;
            let mut items = record_writes(&self.table, Some(&observed), &record)?;
            let counts_down = match counted_day {
                Some(day) if may_count_down => {
                    items.insert(1, count_down(&self.table, &record, day)?);
                    items.push(count_stats(&self.table, &record, day, -1, 0)?);
                    true
                }
                _ => false,
            };
            match self.try_transact(items).await? {
                Tx::Done => return Ok(()),
                tx if tx.failed(0) => continue,
                tx if counts_down && tx.failed(1) => may_count_down = false,
                Tx::Cancelled(_) => pause(attempt).await,
            }
        }
        Err(StoreError::Conflict)
    }
}

#[async_trait]
impl NotificationStore for DynamoStore {
    async fn claim(
        &self,
        candidate: &NotificationRecord,
        limit: u32,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        for attempt in 0..ATTEMPTS {
            let observed = self.load_notification(&candidate.id).await?;
            let record = match &observed {
                Some(stored) => stored.record.clone(),
                None => candidate.clone(),
            };
            if let Some(found) = record.status.blocks_claim(now) {
                return Ok(found);
            }
            let day = cap_day(now);
            if limit > 0 {
                let mut acquired = record.clone();
                acquired.attempts += 1;
                acquired.status = NotificationStatus::Sending {
                    lease_until: now + lease,
                    counted_day: day,
                };
                let mut items = record_writes(&self.table, observed.as_ref(), &acquired)?;
                items.insert(1, count_up(&self.table, &acquired, day, limit)?);
                items.push(count_stats(&self.table, &acquired, day, 1, 0)?);
                match self.try_transact(items).await? {
                    Tx::Done => return Ok(Claim::Acquired(Box::new(acquired))),
                    // The record changed since we read it: decide again.
                    tx if tx.failed(0) => continue,
                    // The day's counter is full: defer, below.
                    tx if tx.failed(1) => {}
                    Tx::Cancelled(_) => {
                        pause(attempt).await;
                        continue;
                    }
                }
            }
            let until = next_day(now);
            let mut deferred = record;
            deferred.status = NotificationStatus::Deferred { until };
            let mut items = record_writes(&self.table, observed.as_ref(), &deferred)?;
            if limit > 0 {
                // A release may have made room since: then claim again.
                items.insert(1, still_full(&self.table, &deferred, day, limit)?);
            }
            items.push(count_stats(&self.table, &deferred, day, 0, 1)?);
            match self.try_transact(items).await? {
                Tx::Done => return Ok(Claim::Deferred(until)),
                tx if tx.failed(0) || tx.failed(1) => continue,
                Tx::Cancelled(_) => pause(attempt).await,
            }
        }
        Err(StoreError::Conflict)
    }

    async fn finish(
        &self,
        id: &str,
        status: NotificationStatus,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.change_notification(id, true, |current| {
            let counted_day = match (&status, current) {
                // Nothing went out: it does not count against the cap.
                (
                    NotificationStatus::Failed { .. },
                    NotificationStatus::Sending { counted_day, .. },
                ) => Some(*counted_day),
                _ => None,
            };
            Some((status.clone(), counted_day))
        })
        .await
    }

    async fn release(&self, id: &str) -> Result<(), StoreError> {
        self.change_notification(id, false, |current| match current {
            NotificationStatus::Sending { counted_day, .. } => {
                Some((NotificationStatus::Retry, Some(*counted_day)))
            }
            _ => None,
        })
        .await
    }

    async fn due_deferred(
        &self,
        now: OffsetDateTime,
        max: usize,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let today = cap_day(now);
        let mut out = Vec::new();
        // Oldest day first; within a day every record is due at its
        // midnight, so the index's order (by id) is the order due.
        for back in (0..DUE_DAYS).rev() {
            let Some(day) = today.checked_sub(time::Duration::days(back)) else {
                continue;
            };
            let mut start = None;
            loop {
                if out.len() >= max {
                    return Ok(out);
                }
                let page = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(due_pk(day)))
                    .consistent_read(true)
                    .limit(i32::try_from(max - out.len()).unwrap_or(i32::MAX))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .context("DynamoDB Query")?;
                for item in page.items() {
                    let record: NotificationRecord = parse(doc_of(item)?)?;
                    if due_of(&record).is_some_and(|due| due <= now) {
                        out.push(record);
                    }
                }
                start = page.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        out.truncate(max);
        Ok(out)
    }

    async fn notification(&self, id: &str) -> Result<Option<NotificationRecord>, StoreError> {
        Ok(self.load_notification(id).await?.map(|s| s.record))
    }

    async fn sent_on(
        &self,
        tenant: &TenantId,
        channel: Channel,
        day: Date,
    ) -> Result<u32, StoreError> {
        let sent: i64 = match self
            .get_item(counter_pk(tenant.as_str(), channel, day), COUNTER_SK)
            .await?
        {
            Some(item) => item
                .get("sent")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            None => 0,
        };
        Ok(sent.clamp(0, i64::from(u32::MAX)) as u32)
    }

    async fn for_order(
        &self,
        tenant: &TenantId,
        order: &OrderId,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let pk = order_list_pk(tenant.as_str(), order.as_str());
        let pointers = self
            .query_pages(|| {
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(&pk))
            })
            .await?;
        let mut records = Vec::with_capacity(pointers.len());
        for pointer in &pointers {
            let id = pointer
                .get("sk")
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| anyhow!("an order's notification pointer without sk"))?;
            if let Some(stored) = self.load_notification(id).await? {
                records.push(stored.record);
            }
        }
        records.sort_by_key(|r| r.created_at);
        Ok(records)
    }

    async fn send_counts(
        &self,
        from: Date,
        to: Date,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<SendCount>, StoreError> {
        let items = self
            .query_pages(|| {
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                    .expression_attribute_values(":pk", s(STATS_PK))
                    .expression_attribute_values(":from", s(format!("{from}#")))
                    .expression_attribute_values(":to", s(format!("{to}#\u{10ffff}")))
            })
            .await?;
        let number = |item: &Item, name: &str| -> u32 {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)) as u32
        };
        let mut out = Vec::new();
        for item in &items {
            let sk = item
                .get("sk")
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| anyhow!("a notification statistics item without sk"))?;
            let bad = || anyhow!("a notification statistics item {sk:?}");
            let mut parts = sk.splitn(3, '#');
            let (Some(day), Some(owner), Some(channel)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad().into());
            };
            if tenant.is_some_and(|t| t.as_str() != owner) {
                continue;
            }
            let row = SendCount {
                day: Date::parse(day, &time::format_description::well_known::Iso8601::DATE)
                    .map_err(|_| bad())?,
                tenant: TenantId::parse(owner).map_err(|_| bad())?,
                channel: Channel::parse(channel).ok_or_else(bad)?,
                sent: number(item, "sent"),
                deferred: number(item, "deferred"),
            };
            if row.sent > 0 || row.deferred > 0 {
                out.push(row);
            }
        }
        out.sort_by(|a, b| {
            (a.day, a.tenant.as_str(), a.channel.as_str()).cmp(&(
                b.day,
                b.tenant.as_str(),
                b.channel.as_str(),
            ))
        });
        Ok(out)
    }
}
