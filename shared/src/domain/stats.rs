//! The business statistics, kept as a projection of the event stream:
//! each event the `stats` queue receives is turned into one [`Fact`]
//! ([`fact`]), which a [`crate::ports::StatsStore`] adds to its counters
//! once per event id. Reading the statistics reads the counters of the
//! days asked for, never the orders.
//!
//! What is counted, per UTC day of the event:
//!
//! - **revenue**, per tenant and currency: orders paid (`OrderPaid`), what
//!   they paid (gross, VAT, net = gross - VAT) and what went back
//!   (`PaymentRefunded`); the average order value is net / orders;
//! - **holds**, per tenant and the hold's code (`OrderOnHold`,
//!   `data.details.code`: `unprintable_resolution`, `production_failed`,
//!   `refunded`...);
//! - **lead time**, per plant and product (SKU): the whole minutes from an
//!   order's placement to its first shipment (`OrderShipped`), counted
//!   once per order and product, under the shipment's day. The store keeps
//!   a count per minute value, so [`percentile`] is exact (nearest rank)
//!   over any range of days.
//!

use super::events::{EventEnvelope, EventType};
use super::money::{Currency, Money};
use super::order::OrderId;
use super::tenant::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::{Date, OffsetDateTime};

/// The longest range one query reads.
pub const MAX_DAYS: i64 = 366;

/// A hold whose event names no code.
pub const UNKNOWN_HOLD: &str = "other";

/// What one event adds to the statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Paid {
        tenant: TenantId,
        day: Date,
        currency: Currency,
        gross: i64,
        vat: i64,
    },
    Refunded {
        tenant: TenantId,
        day: Date,
        currency: Currency,
        amount: i64,
    },
    Held {
        tenant: TenantId,
        day: Date,
        code: String,
    },
    /// Counted once per order (its first shipment).
    Shipped {
        order: OrderId,
        day: Date,
        plant: String,
        skus: Vec<String>,
        minutes: i64,
    },
}

/// An event the projection cannot read: a field it needs is missing or
/// malformed (the message fails and is dead-lettered, never half-counted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{event_type} {event_id}: {problem}")]
pub struct FactError {
    pub event_type: &'static str,
    pub event_id: String,
    pub problem: String,
}

/// The events the projection reads: the `stats` queue's subscription.
pub const STATS_EVENTS: [EventType; 4] = [
    EventType::OrderPaid,
    EventType::PaymentRefunded,
    EventType::OrderOnHold,
    EventType::OrderShipped,
];

fn field<'a>(event: &'a EventEnvelope, name: &str) -> Result<&'a serde_json::Value, FactError> {
    event
        .data
        .get(name)
        .ok_or_else(|| problem(event, format!("no `{name}`")))
}

fn problem(event: &EventEnvelope, problem: String) -> FactError {
    FactError {
        event_type: event.event_type.as_str(),
        event_id: event.id.clone(),
        problem,
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    event: &EventEnvelope,
    name: &str,
) -> Result<T, FactError> {
    serde_json::from_value(field(event, name)?.clone())
        .map_err(|e| problem(event, format!("`{name}`: {e}")))
}

/// The fact `event` adds, or `None` for an event the statistics do not
/// count.
pub fn fact(event: &EventEnvelope) -> Result<Option<Fact>, FactError> {
    let day = event.occurred_at.date();
    let tenant = event.tenant.clone();
    Ok(Some(match event.event_type {
        EventType::OrderPaid => {
            let amount: Money = typed(event, "amount")?;
            let vat: Money = typed(event, "vat")?;
            if vat.currency != amount.currency || vat.amount > amount.amount {
                return Err(problem(event, "`vat` does not fit `amount`".into()));
            }
            Fact::Paid {
                tenant,
                day,
                currency: amount.currency,
                gross: amount.amount,
                vat: vat.amount,
            }
        }
        EventType::PaymentRefunded => {
            let amount: Money = typed(event, "amount")?;
            Fact::Refunded {
                tenant,
                day,
                currency: amount.currency,
                amount: amount.amount,
            }
        }
        EventType::OrderOnHold => Fact::Held {
            tenant,
            day,
            code: event
                .data
                .pointer("/details/code")
                .and_then(serde_json::Value::as_str)
                .filter(|c| !c.is_empty())
                .unwrap_or(UNKNOWN_HOLD)
                .to_string(),
        },
        EventType::OrderShipped => {
            let placed_at: OffsetDateTime = {
                let raw: String = typed(event, "placed_at")?;
                OffsetDateTime::parse(&raw, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| problem(event, format!("`placed_at`: {e}")))?
            };
            let plant: String = typed(event, "plant")?;
            let mut skus: Vec<String> = typed(event, "skus")?;
            skus.sort();
            skus.dedup();
            if plant.is_empty() || skus.is_empty() {
                return Err(problem(event, "no plant or no product".into()));
            }
            Fact::Shipped {
                order: event.order_id.clone(),
                day,
                plant,
                skus,
                minutes: lead_minutes(placed_at, event.occurred_at),
            }
        }
        _ => return Ok(None),
    }))
}

/// Whole minutes from `placed` to `shipped` (0 if the clocks disagree).
pub fn lead_minutes(placed: OffsetDateTime, shipped: OffsetDateTime) -> i64 {
    ((shipped - placed).whole_minutes()).max(0)
}

/// What to read: the days `from` to `to` (UTC, both included), one tenant
/// or all, one plant's lead times or all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    pub from: Date,
    pub to: Date,
    pub tenant: Option<TenantId>,
    pub plant: Option<String>,
}

impl StatsQuery {
    /// Checks the range: `from` not after `to`, at most [`MAX_DAYS`].
    pub fn new(
        from: Date,
        to: Date,
        tenant: Option<TenantId>,
        plant: Option<String>,
    ) -> Result<StatsQuery, String> {
        if from > to {
            return Err(format!("`from` ({from}) is after `to` ({to})"));
        }
        let days = (to - from).whole_days() + 1;
        if days > MAX_DAYS {
            return Err(format!(
                "{days} days asked for; at most {MAX_DAYS} at a time"
            ));
        }
        Ok(StatsQuery {
            from,
            to,
            tenant,
            plant,
        })
    }

    /// Every day of the range, in order.
    pub fn days(&self) -> impl Iterator<Item = Date> + '_ {
        std::iter::successors(Some(self.from), |d| d.next_day()).take_while(|d| *d <= self.to)
    }
}

/// One day's revenue of a tenant in a currency, as counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenueCount {
    pub day: Date,
    pub tenant: TenantId,
    pub currency: Currency,
    pub orders: i64,
    pub gross: i64,
    pub vat: i64,
    pub refunded: i64,
}

/// One day's holds of a tenant for one code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldCount {
    pub day: Date,
    pub tenant: TenantId,
    pub code: String,
    pub holds: i64,
}

/// Orders of a plant and product whose lead time was `minutes`, summed
/// over the range's days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadCount {
    pub plant: String,
    pub sku: String,
    pub minutes: i64,
    pub orders: i64,
}

/// The counters a store read for a query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub revenue: Vec<RevenueCount>,
    pub holds: Vec<HoldCount>,
    pub lead: Vec<LeadCount>,
}

/// A revenue line of the report: money in minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevenueLine {
    #[serde(serialize_with = "iso_date")]
    pub day: Date,
    pub tenant: TenantId,
    pub currency: Currency,
    pub orders: i64,
    pub net: i64,
    pub vat: i64,
    pub gross: i64,
    pub refunded: i64,
    /// Net per order, rounded half up (0 without orders).
    pub average_order_value: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldLine {
    #[serde(serialize_with = "iso_date")]
    pub day: Date,
    pub tenant: TenantId,
    pub code: String,
    pub holds: i64,
}

/// Lead time of a plant and product over the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeadLine {
    pub plant: String,
    pub sku: String,
    pub orders: i64,
    pub p50_minutes: i64,
    pub p95_minutes: i64,
}

/// Notifications of a tenant, channel and day against the day's cap: the
/// sends counted (what the cap limits) and the notifications deferred to
/// the next day because the cap was reached. Counted by the notification
/// ledger in the transactions of its claims
/// ([`crate::ports::NotificationStore::send_counts`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationLine {
    #[serde(serialize_with = "iso_date")]
    pub day: Date,
    pub tenant: TenantId,
    pub channel: &'static str,
    pub sent: u32,
    pub deferred: u32,
    /// The tenant's daily cap of the channel.
    pub cap: u32,
}

/// The statistics of a range, as the API and the console show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    #[serde(serialize_with = "iso_date")]
    pub from: Date,
    #[serde(serialize_with = "iso_date")]
    pub to: Date,
    pub revenue: Vec<RevenueLine>,
    pub lead_times: Vec<LeadLine>,
    pub holds: Vec<HoldLine>,
    /// Filled by the reader from the notification ledger's counters
    /// ([`Report::from_counts`] leaves it empty).
    pub notifications: Vec<NotificationLine>,
}

fn iso_date<S: serde::Serializer>(day: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(day)
}

/// `total / count` rounded half up (both non-negative; 0 for no count).
fn average(total: i64, count: i64) -> i64 {
    if count <= 0 {
        return 0;
    }
    (total + count / 2).div_euclid(count)
}

/// The nearest-rank `p`th percentile of the values `buckets` counts
/// (value, how many): the smallest value with at least `ceil(p * n / 100)`
/// of the `n` values at or below it. `None` without values.
pub fn percentile(buckets: &[(i64, i64)], p: u32) -> Option<i64> {
    let mut sorted: Vec<(i64, i64)> = buckets.iter().copied().filter(|(_, n)| *n > 0).collect();
    sorted.sort_unstable();
    let n: i64 = sorted.iter().map(|(_, c)| c).sum();
    if n == 0 {
        return None;
    }
    let rank = (i64::from(p) * n + 99) / 100;
    let rank = rank.max(1);
    let mut seen = 0;
    for (value, count) in sorted {
        seen += count;
        if seen >= rank {
            return Some(value);
        }
    }
    None
}

impl Report {
    /// The report of `query` from the counters a store read.
    pub fn from_counts(query: &StatsQuery, counts: Counts) -> Report {
        let mut revenue: Vec<RevenueLine> = counts
            .revenue
            .into_iter()
            .map(|r| {
                let net = r.gross - r.vat;
                RevenueLine {
                    day: r.day,
                    tenant: r.tenant,
                    currency: r.currency,
                    orders: r.orders,
                    net,
                    vat: r.vat,
                    gross: r.gross,
                    refunded: r.refunded,
                    average_order_value: average(net, r.orders),
                }
            })
            .collect();
        revenue.sort_by(|a, b| {
            (a.day, a.tenant.as_str(), a.currency).cmp(&(b.day, b.tenant.as_str(), b.currency))
        });
        let mut holds: Vec<HoldLine> = counts
            .holds
            .into_iter()
            .map(|h| HoldLine {
                day: h.day,
                tenant: h.tenant,
                code: h.code,
                holds: h.holds,
            })
            .collect();
        holds.sort_by(|a, b| {
            (a.day, a.tenant.as_str(), &a.code).cmp(&(b.day, b.tenant.as_str(), &b.code))
        });
        let mut by_product: BTreeMap<(String, String), Vec<(i64, i64)>> = BTreeMap::new();
        for l in counts.lead {
            by_product
                .entry((l.plant, l.sku))
                .or_default()
                .push((l.minutes, l.orders));
        }
        let lead_times = by_product
            .into_iter()
            .filter_map(|((plant, sku), buckets)| {
                Some(LeadLine {
                    orders: buckets.iter().map(|(_, n)| n).sum(),
                    p50_minutes: percentile(&buckets, 50)?,
                    p95_minutes: percentile(&buckets, 95)?,
                    plant,
                    sku,
                })
            })
            .collect();
        Report {
            from: query.from,
            to: query.to,
            revenue,
            lead_times,
            holds,
            notifications: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::{date, datetime};

    fn event(event_type: EventType, data: serde_json::Value) -> EventEnvelope {
        EventEnvelope::new(
            event_type,
            &OrderId::parse("ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f90").unwrap(),
            &TenantId::parse("demo-brand").unwrap(),
            datetime!(2026-11-22 23:59:00 UTC),
            data,
        )
    }

    #[test]
    fn each_counted_event_gives_its_fact_under_its_utc_day() {
        let paid = event(
            EventType::OrderPaid,
            json!({"amount": {"amount": 11900, "currency": "EUR"}, "vat": {"amount": 1900, "currency": "EUR"}, "method": "invoice"}),
        );
        assert_eq!(
            fact(&paid).unwrap(),
            Some(Fact::Paid {
                tenant: paid.tenant.clone(),
                day: date!(2026 - 11 - 22),
                currency: Currency::Eur,
                gross: 11900,
                vat: 1900,
            })
        );
        let held = event(
            EventType::OrderOnHold,
            json!({"reason": "r", "details": {"code": "unprintable_resolution"}}),
        );
        assert!(
            matches!(fact(&held).unwrap(), Some(Fact::Held { code, .. }) if code == "unprintable_resolution")
        );
        let held = event(
            EventType::OrderOnHold,
            json!({"reason": "r", "details": {}}),
        );
        assert!(
            matches!(fact(&held).unwrap(), Some(Fact::Held { code, .. }) if code == UNKNOWN_HOLD)
        );
        let shipped = event(
            EventType::OrderShipped,
            json!({"plant": "muc", "placed_at": "2026-11-21T22:58:30Z", "skus": ["poster-a3", "card-a6", "poster-a3"]}),
        );
        assert_eq!(
            fact(&shipped).unwrap(),
            Some(Fact::Shipped {
                order: shipped.order_id.clone(),
                day: date!(2026 - 11 - 22),
                plant: "muc".into(),
                skus: vec!["card-a6".into(), "poster-a3".into()],
                minutes: 25 * 60,
            })
        );
        let refunded = event(
            EventType::PaymentRefunded,
            json!({"amount": {"amount": 500, "currency": "CHF"}, "full": false}),
        );
        assert!(matches!(
            fact(&refunded).unwrap(),
            Some(Fact::Refunded {
                currency: Currency::Chf,
                amount: 500,
                ..
            })
        ));
        assert_eq!(
            fact(&event(EventType::OrderRendered, json!({}))).unwrap(),
            None
        );
    }

    #[test]
    fn an_event_missing_what_is_counted_is_refused_by_name() {
        let paid = event(
            EventType::OrderPaid,
            json!({"amount": {"amount": 11900, "currency": "EUR"}}),
        );
        let err = fact(&paid).unwrap_err();
        assert!(err.to_string().contains("no `vat`"), "{err}");
        let paid = event(
            EventType::OrderPaid,
            json!({"amount": {"amount": 100, "currency": "EUR"}, "vat": {"amount": 19, "currency": "CHF"}}),
        );
        assert!(fact(&paid).is_err());
        let shipped = event(
            EventType::OrderShipped,
            json!({"plant": "muc", "placed_at": "yesterday", "skus": ["x"]}),
        );
        assert!(
            fact(&shipped)
                .unwrap_err()
                .to_string()
                .contains("placed_at")
        );
        let shipped = event(
            EventType::OrderShipped,
            json!({"plant": "muc", "placed_at": "2026-11-21T22:58:30Z", "skus": []}),
        );
        assert!(fact(&shipped).is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank_over_the_counted_values() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[(7, 1)], 50), Some(7));
        assert_eq!(percentile(&[(7, 1)], 95), Some(7));
        // 1..=20 once each: p50 is the 10th value, p95 the 19th.
        let values: Vec<(i64, i64)> = (1..=20).rev().map(|v| (v, 1)).collect();
        assert_eq!(percentile(&values, 50), Some(10));
        assert_eq!(percentile(&values, 95), Some(19));
        // Counts stand for repeated values: 90 at 5, 10 at 100.
        assert_eq!(percentile(&[(100, 10), (5, 90)], 50), Some(5));
        assert_eq!(percentile(&[(100, 10), (5, 90)], 95), Some(100));
        assert_eq!(percentile(&[(5, 95), (100, 5)], 95), Some(5));
        assert_eq!(percentile(&[(5, 0), (9, 2)], 50), Some(9));
    }

    #[test]
    fn the_report_derives_net_and_the_average_and_sorts_its_lines() {
        let query =
            StatsQuery::new(date!(2026 - 11 - 01), date!(2026 - 11 - 30), None, None).unwrap();
        let tenant = TenantId::parse("demo-brand").unwrap();
        let counts = Counts {
            revenue: vec![RevenueCount {
                day: date!(2026 - 11 - 02),
                tenant: tenant.clone(),
                currency: Currency::Eur,
                orders: 3,
                gross: 11903,
                vat: 1900,
                refunded: 100,
            }],
            holds: vec![],
            lead: vec![
                LeadCount {
                    plant: "muc".into(),
                    sku: "a".into(),
                    minutes: 60,
                    orders: 3,
                },
                LeadCount {
                    plant: "muc".into(),
                    sku: "a".into(),
                    minutes: 30,
                    orders: 1,
                },
            ],
        };
        let report = Report::from_counts(&query, counts);
        let line = &report.revenue[0];
        assert_eq!((line.net, line.average_order_value), (10003, 3334));
        assert_eq!(report.lead_times[0].orders, 4);
        assert_eq!(
            (
                report.lead_times[0].p50_minutes,
                report.lead_times[0].p95_minutes
            ),
            (60, 60)
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["from"], "2026-11-01");
        assert_eq!(json["revenue"][0]["day"], "2026-11-02");
        assert_eq!(json["revenue"][0]["currency"], "EUR");
    }

    #[test]
    fn a_query_is_at_most_a_year_and_forwards() {
        assert!(StatsQuery::new(date!(2026 - 11 - 02), date!(2026 - 11 - 01), None, None).is_err());
        assert!(StatsQuery::new(date!(2025 - 01 - 01), date!(2026 - 11 - 01), None, None).is_err());
        let q = StatsQuery::new(date!(2026 - 02 - 27), date!(2026 - 03 - 01), None, None).unwrap();
        assert_eq!(q.days().count(), 3);
    }
}
