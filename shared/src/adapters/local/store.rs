//! The SQLite order and tenant store. An order, its idempotency record and
//! its events (the outbox) are written in one transaction.

use super::db::{Db, json_err, sql};
use crate::domain::events::EventEnvelope;
use crate::domain::order::{Order, OrderId};
use crate::domain::tenant::{ApiKeyRecord, Tenant, TenantId};
use crate::ports::{NewOrder, OrderStore, PlaceOutcome, StoreError, StoredResponse, TenantStore};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;

#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Db>,
}

impl SqliteStore {
    pub fn new(db: Arc<Db>) -> SqliteStore {
        SqliteStore { db }
    }

    /// Whether any tenant exists (the local runner seeds demo tenants once).
    pub async fn has_tenants(&self) -> Result<bool, StoreError> {
        self.db
            .read(|c| {
                c.query_row("SELECT EXISTS(SELECT 1 FROM tenants)", [], |r| {
                    r.get::<_, bool>(0)
                })
                .map_err(sql)
            })
            .await
    }

    /// Counts orders (all tenants); for the runner's start-up line.
    pub async fn count_orders(&self) -> Result<u64, StoreError> {
        self.db
            .read(|c| {
                c.query_row("SELECT COUNT(*) FROM orders", [], |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
                    .map_err(sql)
            })
            .await
    }
}

fn ts(t: time::OffsetDateTime) -> Result<String, StoreError> {
    t.format(&Rfc3339)
        .map_err(|e| StoreError::Unexpected(e.into()))
}

/// Appends events to the outbox, inside the caller's transaction.
pub(crate) fn append_outbox(conn: &Connection, events: &[EventEnvelope]) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("INSERT INTO outbox (event_id, type, doc) VALUES (?1, ?2, ?3)")
        .map_err(sql)?;
    for event in events {
        let doc = serde_json::to_string(event).map_err(json_err)?;
        stmt.execute(params![event.id, event.event_type.as_str(), doc])
            .map_err(sql)?;
    }
    Ok(())
}

#[async_trait]
impl TenantStore for SqliteStore {
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let key_id = key_id.to_string();
        let doc: Option<String> = self
            .db
            .read(move |c| {
                c.query_row(
                    "SELECT doc FROM api_keys WHERE key_id = ?1",
                    [key_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)
            })
            .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(json_err))
            .transpose()
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        let id = id.as_str().to_string();
        let doc: Option<String> = self
            .db
            .read(move |c| {
                c.query_row("SELECT doc FROM tenants WHERE id = ?1", [id], |r| r.get(0))
                    .optional()
                    .map_err(sql)
            })
            .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(json_err))
            .transpose()
    }

    async fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let doc = serde_json::to_string(tenant).map_err(json_err)?;
        let id = tenant.id.as_str().to_string();
        self.db
            .write(move |c| {
                c.execute("INSERT INTO tenants (id, doc) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc", params![id, doc])
                    .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let doc = serde_json::to_string(key).map_err(json_err)?;
        let (key_id, tenant) = (key.key_id.clone(), key.tenant_id.as_str().to_string());
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO api_keys (key_id, tenant_id, doc) VALUES (?1, ?2, ?3) ON CONFLICT(key_id) DO UPDATE SET doc = excluded.doc",
                    params![key_id, tenant, doc],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn place(&self, new: NewOrder) -> Result<PlaceOutcome, StoreError> {
        let doc = serde_json::to_string(&new.order).map_err(json_err)?;
        let created = ts(new.order.created_at)?;
        self.db
            .write(move |c| {
                let tenant = new.order.tenant.as_str();
                let existing: Option<(String, u16, String)> = c
                    .prepare_cached("SELECT request_hash, status, body FROM idempotency WHERE tenant_id = ?1 AND key = ?2")
                    .map_err(sql)?
                    .query_row(params![tenant, new.idempotency.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
                    .map_err(sql)?;
                if let Some((hash, status, body)) = existing {
                    if hash != new.idempotency.request_hash {
                        return Ok(PlaceOutcome::KeyReused);
                    }
                    return Ok(PlaceOutcome::Replayed(StoredResponse { status, body }));
                }
                let response = &new.idempotency.response;
                c.prepare_cached(
                    "INSERT INTO idempotency (tenant_id, key, request_hash, status, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?
                .execute(params![tenant, new.idempotency.key, new.idempotency.request_hash, response.status, response.body, created])
                .map_err(sql)?;
                c.prepare_cached(
                    "INSERT INTO orders (tenant_id, id, state, rank, doc, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                )
                .map_err(sql)?
                .execute(params![tenant, new.order.id.as_str(), new.order.state.as_str(), new.order.rank(), doc, created])
                .map_err(sql)?;
                append_outbox(c, &new.events)?;
                Ok(PlaceOutcome::Created)
            })
            .await
    }

    async fn get(&self, tenant: &TenantId, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let (tenant, id) = (tenant.as_str().to_string(), id.as_str().to_string());
        let doc: Option<String> = self
            .db
            .read(move |c| {
                c.prepare_cached("SELECT doc FROM orders WHERE tenant_id = ?1 AND id = ?2")
                    .map_err(sql)?
                    .query_row(params![tenant, id], |r| r.get(0))
                    .optional()
                    .map_err(sql)
            })
            .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(json_err))
            .transpose()
    }

    async fn transition(
        &self,
        next: &Order,
        observed_rank: u32,
        events: Vec<EventEnvelope>,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(next).map_err(json_err)?;
        let updated = ts(next.updated_at)?;
        let (tenant, id, state, rank) = (
            next.tenant.as_str().to_string(),
            next.id.as_str().to_string(),
            next.state.as_str(),
            next.rank(),
        );
        self.db
            .write(move |c| {
                let changed = c
                    .prepare_cached(
                        "UPDATE orders SET state = ?1, rank = ?2, doc = ?3, updated_at = ?4 WHERE tenant_id = ?5 AND id = ?6 AND rank = ?7",
                    )
                    .map_err(sql)?
                    .execute(params![state, rank, doc, updated, tenant, id, observed_rank])
                    .map_err(sql)?;
                if changed != 1 {
                    return Err(StoreError::Conflict);
                }
                append_outbox(c, &events)
            })
            .await
    }
}
