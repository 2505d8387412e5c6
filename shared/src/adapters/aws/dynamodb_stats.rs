//! The statistics projection on DynamoDB, in the orders table:
//!
//! - the counters, one partition per kind, sorted by day:
//!   `STATS#REV` / `<day>#<tenant>#<currency>` (`orders`, `gross`, `vat`,
//!   `refunded`), `STATS#HOLD` / `<day>#<tenant>#<code>` (`holds`) and
//!   `STATS#LEAD` / `<day>#<plant>#<sku>#<minutes>` (`orders`); a range of
//!   days is one Query per kind (`sk BETWEEN`), never a Scan;
//! - the mark of a counted event, `STATSEVT#<event id>` / `STATSEVT`,
//!   which expires (TTL) after SQS's longest retention;
//! - the mark of an order whose first shipment was counted,
//!   `STATSSHIP#<order id>` / `STATSSHIP`.
//!
//! An event is one `TransactWriteItems`: its mark (conditional on not
//! existing) and its counters (`ADD`). A delivered-again event fails the
//! mark's condition and adds nothing. Transactions on one counter at once
//! conflict; they are tried again after a short pause, and after
//! [`ATTEMPTS`] the message goes back to its queue.

use super::{DynamoStore, Item, failed_conditions, key, n, s};
use crate::domain::money::Currency;
use crate::domain::stats::{Counts, Fact, HoldCount, LeadCount, RevenueCount, StatsQuery};
use crate::domain::tenant::TenantId;
use crate::ports::{StatsStore, StoreError};
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use std::time::Duration;
use time::{Date, OffsetDateTime};

const REVENUE_PK: &str = "STATS#REV";
const HOLDS_PK: &str = "STATS#HOLD";
const LEAD_PK: &str = "STATS#LEAD";
const EVENT_SK: &str = "STATSEVT";
const SHIPPED_SK: &str = "STATSSHIP";
/// An event's mark outlives any redelivery: SQS keeps a message 14 days at
/// most, in its queue and then in the dead-letter queue.
const EVENT_MARK_DAYS: i64 = 29;
/// Transactions before [`StatsStore::apply`] gives up with
/// [`StoreError::Conflict`] (the message is then retried by the queue).
const ATTEMPTS: u32 = 6;
/// The most products of one order a shipment counts in one transaction
/// (DynamoDB takes 100 items; two are the marks).
const MAX_SKUS: usize = 98;

fn mark(
    table: &str,
    pk: String,
    sk: &str,
    expires_at: Option<i64>,
) -> Result<TransactWriteItem, StoreError> {
    let mut item = key(pk, sk);
    if let Some(at) = expires_at {
        item.insert("expires_at".into(), n(at));
    }
    Ok(TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .context("building Put")?,
        )
        .build())
}

/// `ADD` of `counts` to the counter `pk`/`sk`, which is created with
/// `labels` (its day, tenant...) if new.
fn add(
    table: &str,
    pk: &str,
    sk: String,
    labels: &[(&str, AttributeValue)],
    counts: &[(&str, i64)],
) -> Result<TransactWriteItem, StoreError> {
    let mut sets = Vec::new();
    let mut adds = Vec::new();
    let mut update = Update::builder()
        .table_name(table)
        .set_key(Some(key(pk.to_string(), &sk)));
    for (i, (name, value)) in labels.iter().enumerate() {
        sets.push(format!("#l{i} = :l{i}"));
        update = update
            .expression_attribute_names(format!("#l{i}"), *name)
            .expression_attribute_values(format!(":l{i}"), value.clone());
    }
    for (i, (name, value)) in counts.iter().enumerate() {
        adds.push(format!("#c{i} :c{i}"));
        update = update
            .expression_attribute_names(format!("#c{i}"), *name)
            .expression_attribute_values(format!(":c{i}"), n(value));
    }
    let mut expression = format!("ADD {}", adds.join(", "));
    if !sets.is_empty() {
        expression = format!("SET {} {expression}", sets.join(", "));
    }
    Ok(TransactWriteItem::builder()
        .update(
            update
                .update_expression(expression)
                .build()
                .context("building Update")?,
        )
        .build())
}

fn day_sk(day: Date, rest: &[&str]) -> String {
    let mut sk = day.to_string();
    for part in rest {
        sk.push('#');
        sk.push_str(part);
    }
    sk
}

fn items(table: &str, event_id: &str, fact: &Fact) -> Result<Vec<TransactWriteItem>, StoreError> {
    let expires =
        (OffsetDateTime::now_utc() + time::Duration::days(EVENT_MARK_DAYS)).unix_timestamp();
    let mut items = vec![mark(
        table,
        format!("{EVENT_SK}#{event_id}"),
        EVENT_SK,
        Some(expires),
    )?];
    let day_label = |day: &Date| ("day", s(day.to_string()));
    match fact {
        Fact::Paid {
            tenant,
            day,
            currency,
            gross,
            vat,
        } => items.push(add(
            table,
            REVENUE_PK,
            day_sk(*day, &[tenant.as_str(), currency.code()]),
            &[
                day_label(day),
                ("tenant", s(tenant.as_str())),
                ("currency", s(currency.code())),
            ],
            &[("orders", 1), ("gross", *gross), ("vat", *vat)],
        )?),
        Fact::Refunded {
            tenant,
            day,
            currency,
            amount,
        } => items.push(add(
            table,
            REVENUE_PK,
            day_sk(*day, &[tenant.as_str(), currency.code()]),
            &[
                day_label(day),
                ("tenant", s(tenant.as_str())),
                ("currency", s(currency.code())),
            ],
            &[("refunded", *amount)],
        )?),
        Fact::Held { tenant, day, code } => items.push(add(
            table,
            HOLDS_PK,
            day_sk(*day, &[tenant.as_str(), code]),
            &[
                day_label(day),
                ("tenant", s(tenant.as_str())),
                ("code", s(code)),
            ],
            &[("holds", 1)],
        )?),
        Fact::Shipped {
            order,
            day,
            plant,
            skus,
            minutes,
        } => {
            if skus.len() > MAX_SKUS {
                return Err(anyhow!(
                    "a shipment of {} products; at most {MAX_SKUS} are counted",
                    skus.len()
                )
                .into());
            }
            items.push(mark(
                table,
                format!("{SHIPPED_SK}#{order}"),
                SHIPPED_SK,
                None,
            )?);
            for sku in skus {
                items.push(add(
                    table,
                    LEAD_PK,
                    day_sk(*day, &[plant, sku, &format!("{minutes:09}")]),
                    &[
                        day_label(day),
                        ("plant", s(plant)),
                        ("sku", s(sku)),
                        ("minutes", n(minutes)),
                    ],
                    &[("orders", 1)],
                )?);
            }
        }
    }
    Ok(items)
}

fn text<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(anyhow!("a statistics item without `{name}`").into()),
    }
}

/// A number attribute; 0 when the counter was never added to.
fn number(item: &Item, name: &str) -> Result<i64, StoreError> {
    match item.get(name) {
        None => Ok(0),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| anyhow!("`{name}` is not an integer: {v}").into()),
        Some(_) => Err(anyhow!("`{name}` is not a number").into()),
    }
}

fn day_of(item: &Item) -> Result<Date, StoreError> {
    let raw = text(item, "day")?;
    Date::parse(raw, &time::format_description::well_known::Iso8601::DATE)
        .map_err(|e| anyhow!("`day` {raw}: {e}").into())
}

fn tenant_of(item: &Item) -> Result<TenantId, StoreError> {
    TenantId::parse(text(item, "tenant")?).map_err(|e| anyhow!("`tenant`: {e}").into())
}

impl DynamoStore {
    /// The items of `pk` whose sort key starts with a day of the range.
    async fn days_of(&self, pk: &str, q: &StatsQuery) -> Result<Vec<Item>, StoreError> {
        self.query_pages(|| {
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":from", s(q.from.to_string()))
                // '$' sorts right after '#': every key of the last day.
                .expression_attribute_values(":to", s(format!("{}$", q.to)))
        })
        .await
    }
}

#[async_trait]
impl StatsStore for DynamoStore {
    async fn apply(&self, event_id: &str, fact: &Fact) -> Result<bool, StoreError> {
        let items = items(&self.table, event_id, fact)?;
        for attempt in 0..ATTEMPTS {
            let err = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(true),
                Err(err) => err,
            };
            match failed_conditions(&err) {
                // The event's mark, or the order's first-shipment mark, is
                // there already: counted before.
                Some(failed) if failed.iter().take(2).any(|f| *f) => return Ok(false),
                Some(_) => {
                    // A concurrent transaction on a counter: again shortly.
                    let pause = 20 * (1u64 << attempt) + rand::random_range(0..20);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                None => return Err(anyhow!(err).context("DynamoDB TransactWriteItems").into()),
            }
        }
        Err(StoreError::Conflict)
    }

    async fn counts(&self, q: &StatsQuery) -> Result<Counts, StoreError> {
        let (revenue, holds, lead) = tokio::try_join!(
            self.days_of(REVENUE_PK, q),
            self.days_of(HOLDS_PK, q),
            self.days_of(LEAD_PK, q)
        )?;
        let wanted = |tenant: &TenantId| q.tenant.as_ref().is_none_or(|t| t == tenant);
        let mut counts = Counts::default();
        for item in &revenue {
            let tenant = tenant_of(item)?;
            if !wanted(&tenant) {
                continue;
            }
            let currency = text(item, "currency")?;
            counts.revenue.push(RevenueCount {
                day: day_of(item)?,
                tenant,
                currency: Currency::parse(currency)
                    .ok_or_else(|| anyhow!("`currency` {currency}"))?,
                orders: number(item, "orders")?,
                gross: number(item, "gross")?,
                vat: number(item, "vat")?,
                refunded: number(item, "refunded")?,
            });
        }
        for item in &holds {
            let tenant = tenant_of(item)?;
            if !wanted(&tenant) {
                continue;
            }
            counts.holds.push(HoldCount {
                day: day_of(item)?,
                tenant,
                code: text(item, "code")?.to_string(),
                holds: number(item, "holds")?,
            });
        }
        // Summed over the days: the report's percentiles are of the range.
        let mut summed: std::collections::BTreeMap<(String, String, i64), i64> = Default::default();
        for item in &lead {
            let plant = text(item, "plant")?;
            if q.plant.as_deref().is_some_and(|p| p != plant) {
                continue;
            }
            *summed
                .entry((
                    plant.to_string(),
                    text(item, "sku")?.to_string(),
                    number(item, "minutes")?,
                ))
                .or_default() += number(item, "orders")?;
        }
        counts.lead = summed
            .into_iter()
            .map(|((plant, sku, minutes), orders)| LeadCount {
                plant,
                sku,
                minutes,
                orders,
            })
            .collect();
        Ok(counts)
    }
}
