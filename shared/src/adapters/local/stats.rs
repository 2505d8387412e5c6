//! The statistics projection on SQLite: one row per counter (`stats_revenue`
//! per day, tenant and currency; `stats_holds` per day, tenant and code;
//! `stats_lead` per day, plant, product and minute value) and the marks of
//! the events counted (`stats_events`) and of the orders whose first
//! shipment was (`stats_shipped`). An event's mark and its counters are
//! written in one writer job, one transaction: an event is counted once
//! however often it is delivered.

use super::db::sql;
use super::store::SqliteStore;
use crate::domain::money::Currency;
use crate::domain::stats::{Counts, Fact, HoldCount, LeadCount, RevenueCount, StatsQuery};
use crate::domain::tenant::TenantId;
use crate::ports::{StatsStore, StoreError};
use async_trait::async_trait;
use rusqlite::{Connection, params};
use time::Date;

fn day_text(day: Date) -> String {
    day.to_string()
}

fn parse_day(raw: &str) -> rusqlite::Result<Date> {
    Date::parse(raw, &time::format_description::well_known::Iso8601::DATE).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse<T, E: std::error::Error + Send + Sync + 'static>(
    parsed: Result<T, E>,
) -> rusqlite::Result<T> {
    parsed.map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn apply(c: &Connection, event_id: &str, fact: &Fact) -> Result<bool, StoreError> {
    let fresh = c
        .prepare_cached("INSERT OR IGNORE INTO stats_events (event_id) VALUES (?1)")
        .map_err(sql)?
        .execute([event_id])
        .map_err(sql)?;
    if fresh == 0 {
        return Ok(false);
    }
    match fact {
        Fact::Paid {
            tenant,
            day,
            currency,
            gross,
            vat,
        } => {
            c.prepare_cached(
                "INSERT INTO stats_revenue (day, tenant_id, currency, orders, gross, vat) VALUES (?1, ?2, ?3, 1, ?4, ?5)
                 ON CONFLICT (day, tenant_id, currency) DO UPDATE SET
                   orders = orders + 1, gross = gross + excluded.gross, vat = vat + excluded.vat",
            )
            .map_err(sql)?
            .execute(params![day_text(*day), tenant.as_str(), currency.code(), gross, vat])
            .map_err(sql)?;
        }
        Fact::Refunded {
            tenant,
            day,
            currency,
            amount,
        } => {
            c.prepare_cached(
                "INSERT INTO stats_revenue (day, tenant_id, currency, refunded) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (day, tenant_id, currency) DO UPDATE SET refunded = refunded + excluded.refunded",
            )
            .map_err(sql)?
            .execute(params![day_text(*day), tenant.as_str(), currency.code(), amount])
            .map_err(sql)?;
        }
        Fact::Held { tenant, day, code } => {
            c.prepare_cached(
                "INSERT INTO stats_holds (day, tenant_id, code, holds) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT (day, tenant_id, code) DO UPDATE SET holds = holds + 1",
            )
            .map_err(sql)?
            .execute(params![day_text(*day), tenant.as_str(), code])
            .map_err(sql)?;
        }
        Fact::Shipped {
            order,
            day,
            plant,
            skus,
            minutes,
        } => {
            let first = c
                .prepare_cached("INSERT OR IGNORE INTO stats_shipped (order_id) VALUES (?1)")
                .map_err(sql)?
                .execute([order.as_str()])
                .map_err(sql)?;
            if first == 0 {
                return Ok(false);
            }
            let mut add = c
                .prepare_cached(
                    "INSERT INTO stats_lead (day, plant, sku, minutes, orders) VALUES (?1, ?2, ?3, ?4, 1)
                     ON CONFLICT (day, plant, sku, minutes) DO UPDATE SET orders = orders + 1",
                )
                .map_err(sql)?;
            for sku in skus {
                add.execute(params![day_text(*day), plant, sku, minutes])
                    .map_err(sql)?;
            }
        }
    }
    Ok(true)
}

fn counts(c: &Connection, q: &StatsQuery) -> Result<Counts, StoreError> {
    let (from, to) = (day_text(q.from), day_text(q.to));
    let tenant = q.tenant.as_ref().map(|t| t.as_str().to_string());
    let revenue = c
        .prepare_cached(
            "SELECT day, tenant_id, currency, orders, gross, vat, refunded FROM stats_revenue
             WHERE day BETWEEN ?1 AND ?2 AND (?3 IS NULL OR tenant_id = ?3)",
        )
        .map_err(sql)?
        .query_map(params![from, to, tenant], |r| {
            let currency: String = r.get(2)?;
            Ok(RevenueCount {
                day: parse_day(&r.get::<_, String>(0)?)?,
                tenant: parse(TenantId::parse(&r.get::<_, String>(1)?))?,
                currency: Currency::parse(&currency).ok_or_else(|| {
                    rusqlite::Error::InvalidColumnType(2, currency, rusqlite::types::Type::Text)
                })?,
                orders: r.get(3)?,
                gross: r.get(4)?,
                vat: r.get(5)?,
                refunded: r.get(6)?,
            })
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    let holds = c
        .prepare_cached(
            "SELECT day, tenant_id, code, holds FROM stats_holds
             WHERE day BETWEEN ?1 AND ?2 AND (?3 IS NULL OR tenant_id = ?3)",
        )
        .map_err(sql)?
        .query_map(params![from, to, tenant], |r| {
            Ok(HoldCount {
                day: parse_day(&r.get::<_, String>(0)?)?,
                tenant: parse(TenantId::parse(&r.get::<_, String>(1)?))?,
                code: r.get(2)?,
                holds: r.get(3)?,
            })
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    let lead = c
        .prepare_cached(
            "SELECT plant, sku, minutes, SUM(orders) FROM stats_lead
             WHERE day BETWEEN ?1 AND ?2 AND (?3 IS NULL OR plant = ?3)
             GROUP BY plant, sku, minutes",
        )
        .map_err(sql)?
        .query_map(params![from, to, q.plant], |r| {
            Ok(LeadCount {
                plant: r.get(0)?,
                sku: r.get(1)?,
                minutes: r.get(2)?,
                orders: r.get(3)?,
            })
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    Ok(Counts {
        revenue,
        holds,
        lead,
    })
}

#[async_trait]
impl StatsStore for SqliteStore {
    async fn apply(&self, event_id: &str, fact: &Fact) -> Result<bool, StoreError> {
        let (event_id, fact) = (event_id.to_string(), fact.clone());
        self.db().write(move |c| apply(c, &event_id, &fact)).await
    }

    async fn counts(&self, query: &StatsQuery) -> Result<Counts, StoreError> {
        let query = query.clone();
        self.db().read(move |c| counts(c, &query)).await
    }
}
