//! What the console's plants view reads beside the orders (a child module
//! of `dynamodb.rs`, sharing its item helpers):
//!
//! - on the plant's item `PLANT#<plant id>` / `PLANT` (beside `open_jobs`):
//!   `last_report_ms`, when its agent last reported (epoch milliseconds,
//!   set only forward by a conditional update);
//! - `PLANTDAY#<plant id>` / `<yyyy-mm-dd>`: `shipped`, the jobs the plant
//!   shipped that UTC day, added in the report's own transaction
//!   ([`shipped_update`]), expiring by TTL after [`SHIPPED_TTL_DAYS`].

use super::{DynamoStore, key, n, plant_pk};
use crate::ports::{PlantActivity, StoreError};
use anyhow::Context;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use std::collections::BTreeMap;
use time::{Date, OffsetDateTime, Time};

/// The daily shipped counters are kept this long (the console shows today).
const SHIPPED_TTL_DAYS: i64 = 40;

fn day_pk(plant: &str) -> String {
    format!("PLANTDAY#{plant}")
}

fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// One more job shipped by `plant` on `day`: part of the report's
/// `TransactWriteItems`.
pub(super) fn shipped_update(
    table: &str,
    plant: &str,
    day: Date,
) -> Result<TransactWriteItem, StoreError> {
    let expires =
        day.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() + SHIPPED_TTL_DAYS * 24 * 3600;
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(key(day_pk(plant), &day.to_string())))
        .update_expression("ADD shipped :one SET expires_at = :expires")
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":expires", n(expires))
        .build()
        .context("building Update")?;
    Ok(TransactWriteItem::builder().update(update).build())
}

fn number(item: &super::Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

impl DynamoStore {
    /// [`crate::ports::ProductionStore::plant_reported`]: one conditional
    /// `UpdateItem`; an earlier time than the one kept changes nothing.
    pub(super) async fn set_plant_reported(
        &self,
        plant: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(plant_pk(plant), "PLANT")))
            .update_expression("SET last_report_ms = :at")
            .condition_expression("attribute_not_exists(last_report_ms) OR last_report_ms < :at")
            .expression_attribute_values(":at", n(millis(at)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e).context("DynamoDB UpdateItem").into()),
        }
    }

    /// [`crate::ports::ProductionStore::plant_activity`]: two `GetItem`s
    /// per plant.
    pub(super) async fn read_plant_activity(
        &self,
        plants: &[String],
        day: Date,
    ) -> Result<BTreeMap<String, PlantActivity>, StoreError> {
        let mut out = BTreeMap::new();
        let day_sk = day.to_string();
        for plant in plants {
            let (plant_item, day_item) = tokio::try_join!(
                self.get_item(plant_pk(plant), "PLANT"),
                self.get_item(day_pk(plant), &day_sk),
            )?;
            let last_report = plant_item
                .as_ref()
                .and_then(|i| number(i, "last_report_ms"))
                .map(|ms| {
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                        .with_context(|| format!("{plant}'s last report {ms}"))
                })
                .transpose()?;
            let shipped = day_item
                .as_ref()
                .and_then(|i| number(i, "shipped"))
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)) as u32;
            out.insert(
                plant.clone(),
                PlantActivity {
                    last_report,
                    shipped,
                },
            );
        }
        Ok(out)
    }
}
