//! `GET /v1/ops/stats`: the business statistics of a range of days, read
//! from the statistics projection's counters (`functions/stats` keeps them
//! as the events happen; [`printworks::domain::stats`] says what is
//! counted), never from the orders.
//!
//! Shop staff (`admin`, `support`) see every tenant's revenue, holds and
//! notifications against the daily caps (counted by the notification
//! ledger as it claims sends) and every plant's lead times; a plant's
//! operators see only their plant's lead times.

use crate::Ops;
use crate::ops::internal;
use axum::http::StatusCode;
use order_api::ApiError;
use printworks::domain::operator::{Operator, Role};
use printworks::domain::stats::{MAX_DAYS, NotificationLine, Report, StatsQuery};
use printworks::domain::tenant::TenantId;
use serde::Deserialize;
use time::{Date, Duration};

/// Days shown when the query names no `from`: the last 30.
const DEFAULT_DAYS: i64 = 30;

/// The query string: `from` and `to` (`YYYY-MM-DD`, UTC, both included;
/// `to` defaults to today and `from` to 29 days before `to`), `tenant`,
/// `plant`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub tenant: Option<String>,
    pub plant: Option<String>,
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

fn day(name: &str, raw: &str) -> Result<Date, ApiError> {
    Date::parse(raw, &time::format_description::well_known::Iso8601::DATE)
        .ok()
        .filter(|_| raw.len() == 10)
        .ok_or_else(|| invalid(format!("`{name}` must be a day as YYYY-MM-DD, not {raw:?}")))
}

/// 1-40 lowercase letters, digits or dashes (the schema's pattern).
fn plant_id(raw: &str) -> bool {
    (1..=40).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Ops {
    /// The statistics `params` ask for, as `operator` may see them.
    pub async fn stats(
        &self,
        operator: &Operator,
        params: &StatsParams,
    ) -> Result<Report, ApiError> {
        let Some(store) = &self.stats else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stats_unavailable",
                "the statistics are not kept where this runs",
            ));
        };
        let to = match &params.to {
            Some(raw) => day("to", raw)?,
            None => self.clock.now().date(),
        };
        let from = match &params.from {
            Some(raw) => day("from", raw)?,
            None => to - Duration::days(DEFAULT_DAYS - 1),
        };
        let tenant = params
            .tenant
            .as_deref()
            .map(|t| TenantId::parse(t).map_err(|e| invalid(format!("`tenant`: {e}"))))
            .transpose()?;
        if let Some(plant) = &params.plant
            && !plant_id(plant)
        {
            return Err(invalid(format!(
                "`plant` must be a plant id (1-40 lowercase letters, digits or dashes), not {plant:?}"
            )));
        }
        let mut plant = params.plant.clone();
        if let Role::Plant(own) = &operator.role {
            if tenant.is_some() || plant.as_deref().is_some_and(|p| p != own) {
                return Err(crate::ops::not_for_role(
                    operator,
                    &format!(
                        "read another plant's or a tenant's statistics (plant {own}'s lead times only)"
                    ),
                ));
            }
            plant = Some(own.clone());
        }
        // Well-formed days that make no range: 422, as a body that breaks
        // a rule its schema cannot say.
        let query = StatsQuery::new(from, to, tenant, plant).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_range",
                format!("{e} (`from` to `to`, at most {MAX_DAYS} days)"),
            )
        })?;
        let counts = store.counts(&query).await.map_err(internal)?;
        let mut report = Report::from_counts(&query, counts);
        if matches!(operator.role, Role::Plant(_)) {
            report.revenue.clear();
            report.holds.clear();
        } else if let Some(ledger) = &self.notifications {
            report.notifications = ledger
                .send_counts(query.from, query.to, query.tenant.as_ref())
                .await
                .map_err(internal)?
                .into_iter()
                .map(|c| NotificationLine {
                    cap: self.caps.limit(&c.tenant, c.channel),
                    day: c.day,
                    tenant: c.tenant,
                    channel: c.channel.as_str(),
                    sent: c.sent,
                    deferred: c.deferred,
                })
                .collect();
        }
        Ok(report)
    }
}
