//! The SQLite order and tenant store. An order, its idempotency record and
//! its events (the outbox) are written in one transaction.

use super::db::{Db, json_err, sql};
use crate::domain::events::EventEnvelope;
use crate::domain::job_records::{self, ProductionRecord, ProductionWrite};
use crate::domain::order::{Order, OrderId};
use crate::domain::production::{JobRecord, Production};
use crate::domain::tenant::{ApiKeyRecord, Tenant, TenantId};
use crate::ports::{
    IdempotencyRecord, JobView, JobWrite, NewOrder, OpsStore, OpsWrite, OrderStore, PaymentRecord,
    PaymentStore, PaymentWrite, PaymentWriteOutcome, PlaceOutcome, ProductionStore, ReconcileStore,
    StoreError, StoredResponse, TenantStore, check_successor,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
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

    pub(crate) fn db(&self) -> &Arc<Db> {
        &self.db
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
                if let Some(outcome) = claim_key(c, tenant, &new.idempotency, &created)? {
                    return Ok(outcome);
                }
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
        self.db.read(move |c| load_order(c, &tenant, &id)).await
    }

    async fn transition(
        &self,
        next: &Order,
        observed: &Order,
        events: Vec<EventEnvelope>,
    ) -> Result<(), StoreError> {
        let update = OrderUpdate::new(next, observed)?;
        self.db
            .write(move |c| {
                update.apply(c)?;
                append_outbox(c, &events)
            })
            .await
    }
}

#[async_trait]
impl ProductionStore for SqliteStore {
    async fn open_jobs(&self, plants: &[String]) -> Result<BTreeMap<String, i64>, StoreError> {
        let plants = plants.to_vec();
        self.db
            .read(move |c| {
                let mut out = BTreeMap::new();
                let mut stmt = c
                    .prepare_cached("SELECT open_jobs FROM plant_load WHERE plant = ?1")
                    .map_err(sql)?;
                for plant in plants {
                    let n: Option<i64> = stmt
                        .query_row([&plant], |r| r.get(0))
                        .optional()
                        .map_err(sql)?;
                    out.insert(plant, n.unwrap_or(0));
                }
                Ok(out)
            })
            .await
    }

    async fn transition_counted(
        &self,
        next: &Order,
        observed: &Order,
        events: Vec<EventEnvelope>,
        plant: &str,
        delta: i64,
    ) -> Result<(), StoreError> {
        let update = OrderUpdate::new(next, observed)?;
        let plant = plant.to_string();
        self.db
            .write(move |c| {
                update.apply(c)?;
                add_open_jobs(c, &plant, delta)?;
                append_outbox(c, &events)
            })
            .await
    }

    async fn job_view(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        job_id: &str,
    ) -> Result<Option<JobView>, StoreError> {
        let (tenant, id, job_id) = (
            tenant.as_str().to_string(),
            order.as_str().to_string(),
            job_id.to_string(),
        );
        self.db
            .read(move |c| {
                let doc: Option<String> = c
                    .prepare_cached("SELECT doc FROM orders WHERE tenant_id = ?1 AND id = ?2")
                    .map_err(sql)?
                    .query_row(params![tenant, id], |r| r.get(0))
                    .optional()
                    .map_err(sql)?;
                let Some(doc) = doc else { return Ok(None) };
                let Some(record) = production_record(c, &tenant, &id)? else {
                    return Ok(None);
                };
                let order: Order = serde_json::from_str(&doc).map_err(json_err)?;
                let job: Option<String> = c
                    .prepare_cached(
                        "SELECT doc FROM jobs WHERE tenant_id = ?1 AND order_id = ?2 AND job_id = ?3",
                    )
                    .map_err(sql)?
                    .query_row(params![tenant, id, job_id], |r| r.get(0))
                    .optional()
                    .map_err(sql)?;
                let job = job
                    .map(|d| serde_json::from_str(&d).map_err(json_err))
                    .transpose()?;
                Ok(Some(JobView { order, record, job }))
            })
            .await
    }

    async fn record_job(&self, write: JobWrite) -> Result<(), StoreError> {
        let update = match &write.order {
            Some((next, observed)) => Some(OrderUpdate::new(next, observed)?),
            None => None,
        };
        let mut record = write.record.clone();
        record.revision = write.observed_revision + 1;
        let production = ProductionWrite {
            record,
            observed_revision: write.observed_revision,
            jobs: vec![write.job.clone()],
        };
        self.db
            .write(move |c| {
                if let Some(update) = &update {
                    update.apply(c)?;
                }
                write_production(
                    c,
                    write.tenant.as_str(),
                    write.order_id.as_str(),
                    &production,
                )?;
                add_open_jobs(c, &write.plant, write.open_jobs_delta)?;
                if let Some(day) = write.shipped_on() {
                    c.prepare_cached(
                        "INSERT INTO plant_shipped (plant, day, jobs) VALUES (?1, ?2, 1) \
                         ON CONFLICT(plant, day) DO UPDATE SET jobs = jobs + 1",
                    )
                    .map_err(sql)?
                    .execute(params![write.plant, day.to_string()])
                    .map_err(sql)?;
                }
                append_outbox(c, &write.events)
            })
            .await
    }

    async fn plant_reported(
        &self,
        plant: &str,
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        let plant = plant.to_string();
        let at = (at.unix_timestamp_nanos() / 1_000_000) as i64;
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO plant_reports (plant, last_report_ms) VALUES (?1, ?2) \
                     ON CONFLICT(plant) DO UPDATE SET last_report_ms = \
                     max(last_report_ms, excluded.last_report_ms)",
                )
                .map_err(sql)?
                .execute(params![plant, at])
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn plant_activity(
        &self,
        plants: &[String],
        day: time::Date,
    ) -> Result<BTreeMap<String, crate::ports::PlantActivity>, StoreError> {
        let plants = plants.to_vec();
        self.db
            .read(move |c| {
                let mut out = BTreeMap::new();
                for plant in plants {
                    let last: Option<i64> = c
                        .prepare_cached("SELECT last_report_ms FROM plant_reports WHERE plant = ?1")
                        .map_err(sql)?
                        .query_row([&plant], |r| r.get(0))
                        .optional()
                        .map_err(sql)?;
                    let shipped: Option<i64> = c
                        .prepare_cached(
                            "SELECT jobs FROM plant_shipped WHERE plant = ?1 AND day = ?2",
                        )
                        .map_err(sql)?
                        .query_row(params![plant, day.to_string()], |r| r.get(0))
                        .optional()
                        .map_err(sql)?;
                    let last_report = last
                        .map(|ms| {
                            time::OffsetDateTime::from_unix_timestamp_nanos(
                                i128::from(ms) * 1_000_000,
                            )
                            .map_err(|e| {
                                StoreError::Unexpected(anyhow::anyhow!(
                                    "a plant's last report {ms}: {e}"
                                ))
                            })
                        })
                        .transpose()?;
                    out.insert(
                        plant,
                        crate::ports::PlantActivity {
                            last_report,
                            shipped: shipped.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                        },
                    );
                }
                Ok(out)
            })
            .await
    }
}

/// Adds `delta` to `plant`'s open-job count, inside a write job.
fn add_open_jobs(c: &Connection, plant: &str, delta: i64) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO plant_load (plant, open_jobs) VALUES (?1, ?2) \
         ON CONFLICT(plant) DO UPDATE SET open_jobs = open_jobs + excluded.open_jobs",
    )
    .map_err(sql)?
    .execute(params![plant, delta])
    .map_err(sql)?;
    Ok(())
}

/// The earlier request under `key` in `scope` (a tenant, or an operator's
/// [`ops_scope`]).
fn idempotency_record(
    c: &Connection,
    scope: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    c.prepare_cached(
        "SELECT request_hash, status, body FROM idempotency WHERE tenant_id = ?1 AND key = ?2",
    )
    .map_err(sql)?
    .query_row(params![scope, key], |r| {
        Ok(IdempotencyRecord {
            key: key.to_string(),
            request_hash: r.get(0)?,
            response: StoredResponse {
                status: r.get(1)?,
                body: r.get(2)?,
            },
        })
    })
    .optional()
    .map_err(sql)
}

/// Records `record` under `scope` unless its key was used before: then
/// the earlier response (same request) or [`PlaceOutcome::KeyReused`].
fn claim_key(
    c: &Connection,
    scope: &str,
    record: &IdempotencyRecord,
    created: &str,
) -> Result<Option<PlaceOutcome>, StoreError> {
    if let Some(earlier) = idempotency_record(c, scope, &record.key)? {
        return Ok(Some(if earlier.request_hash == record.request_hash {
            PlaceOutcome::Replayed(earlier.response)
        } else {
            PlaceOutcome::KeyReused
        }));
    }
    c.prepare_cached(
        "INSERT INTO idempotency (tenant_id, key, request_hash, status, body, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(sql)?
    .execute(params![
        scope,
        record.key,
        record.request_hash,
        record.response.status,
        record.response.body,
        created
    ])
    .map_err(sql)?;
    Ok(None)
}

#[async_trait]
impl OpsStore for SqliteStore {
    async fn find_order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        SqliteStore::find_order(self, id).await
    }

    async fn ops_request(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let (scope, key) = (scope.to_string(), key.to_string());
        self.db
            .read(move |c| idempotency_record(c, &scope, &key))
            .await
    }

    async fn needing_attention(&self, limit: usize) -> Result<Vec<Order>, StoreError> {
        self.db
            .read(move |c| {
                load_orders(
                    c,
                    "SELECT tenant_id, id FROM orders WHERE attention = 1 \
                     ORDER BY updated_at LIMIT ?1",
                    params![limit as i64],
                )
            })
            .await
    }

    async fn search(
        &self,
        query: &crate::ports::SearchQuery,
    ) -> Result<Option<crate::ports::SearchPage>, StoreError> {
        let q = query.clone();
        self.db.read(move |c| search(c, &q).map(Some)).await
    }

    async fn held_orders(&self, limit: usize) -> Result<Vec<Order>, StoreError> {
        self.db
            .read(move |c| {
                load_orders(
                    c,
                    "SELECT tenant_id, id FROM orders WHERE state = ?1 \
                     ORDER BY updated_at LIMIT ?2",
                    params![
                        crate::domain::state::OrderState::OnHold.as_str(),
                        limit as i64
                    ],
                )
            })
            .await
    }

    async fn record_request(
        &self,
        scope: &str,
        idempotency: IdempotencyRecord,
    ) -> Result<PlaceOutcome, StoreError> {
        let created = ts(time::OffsetDateTime::now_utc())?;
        let scope = scope.to_string();
        self.db
            .write(move |c| {
                Ok(claim_key(c, &scope, &idempotency, &created)?.unwrap_or(PlaceOutcome::Created))
            })
            .await
    }

    async fn act(&self, write: OpsWrite) -> Result<PlaceOutcome, StoreError> {
        let update = OrderUpdate::new(&write.next, &write.observed)?;
        let created = ts(write.next.updated_at)?;
        let scope = write.scope.clone();
        self.db
            .write(move |c| {
                if let Some(outcome) = claim_key(c, &scope, &write.idempotency, &created)? {
                    return Ok(outcome);
                }
                update.apply(c)?;
                for (plant, delta) in &write.open_jobs {
                    add_open_jobs(c, plant, *delta)?;
                }
                append_outbox(c, &write.events)?;
                Ok(PlaceOutcome::Created)
            })
            .await
    }
}

/// The reconciler's reads: idle orders through the `orders_idle` index
/// (`state`, `updated_at`: RFC 3339 text, whose order is time's to within
/// a second, which the domain's deadlines re-check exactly), and the
/// outbox rows the relay has not taken (it deletes what it publishes).
#[async_trait]
impl ReconcileStore for SqliteStore {
    async fn idle_orders(
        &self,
        state: crate::domain::state::OrderState,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Order>, StoreError> {
        let before = ts(before)?;
        self.db
            .read(move |c| {
                load_orders(
                    c,
                    "SELECT tenant_id, id FROM orders WHERE state = ?1 AND updated_at <= ?2 \
                     ORDER BY updated_at LIMIT ?3",
                    params![state.as_str(), before, limit as i64],
                )
            })
            .await
    }

    async fn unpublished(
        &self,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.db
            .read(move |c| {
                let docs = c
                    .prepare_cached("SELECT doc FROM outbox ORDER BY seq LIMIT ?1")
                    .map_err(sql)?
                    .query_map([limit as i64], |r| r.get::<_, String>(0))
                    .map_err(sql)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(sql)?;
                let mut events = Vec::with_capacity(docs.len());
                for doc in docs {
                    let event: EventEnvelope = serde_json::from_str(&doc).map_err(json_err)?;
                    if event.occurred_at < before {
                        events.push(event);
                    }
                }
                Ok(events)
            })
            .await
    }

    async fn mark_published(&self, event_ids: &[String]) -> Result<(), StoreError> {
        let ids = event_ids.to_vec();
        self.db
            .write(move |c| {
                let mut stmt = c
                    .prepare_cached("DELETE FROM outbox WHERE event_id = ?1")
                    .map_err(sql)?;
                for id in &ids {
                    stmt.execute([id]).map_err(sql)?;
                }
                Ok(())
            })
            .await
    }
}

/// The orders whose (tenant, id) `query` selects, each read whole.
/// The orders `q` finds, newest first. Each key has its index (the id:
/// `orders_id`; the reference and the e-mail: expression indexes on
/// the order's document; a tracking number: one on the job records'),
/// and tenant, state and days placed narrow it (`orders_tenant_created`,
/// `orders_state_created`, `orders_created`), so a page reads at most a
/// page of orders more than it shows.
fn search(
    c: &Connection,
    q: &crate::ports::SearchQuery,
) -> Result<crate::ports::SearchPage, StoreError> {
    use rusqlite::types::Value;
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(id) = &q.order_id {
        clauses.push("id = ?");
        args.push(Value::Text(id.to_string()));
    }
    if let Some(reference) = &q.reference {
        clauses.push("json_extract(doc, '$.reference') = ?");
        args.push(Value::Text(reference.clone()));
    }
    if let Some(email) = &q.email {
        clauses.push("lower(json_extract(doc, '$.customer.email')) = ?");
        args.push(Value::Text(email.to_lowercase()));
    }
    if let Some(tracking) = &q.tracking {
        clauses.push(
            "(tenant_id, id) IN (SELECT tenant_id, order_id FROM jobs \
             WHERE json_extract(doc, '$.tracking') = ?)",
        );
        args.push(Value::Text(tracking.clone()));
    }
    if let Some(tenant) = &q.tenant {
        clauses.push("tenant_id = ?");
        args.push(Value::Text(tenant.to_string()));
    }
    if let Some(state) = q.state {
        clauses.push("state = ?");
        args.push(Value::Text(state.as_str().into()));
    }
    if let Some(from) = q.from {
        clauses.push("created_at >= ?");
        args.push(Value::Text(from.to_string()));
    }
    if let Some(next) = q.to.and_then(|to| to.next_day()) {
        clauses.push("created_at < ?");
        args.push(Value::Text(next.to_string()));
    }
    if let Some((at, id)) = &q.after {
        clauses.push("(created_at, id) < (?, ?)");
        args.push(Value::Text(ts(*at)?));
        args.push(Value::Text(id.to_string()));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let limit = q.limit.clamp(1, 200);
    args.push(Value::Integer(limit as i64 + 1));
    let sql_text = format!(
        "SELECT tenant_id, id FROM orders {filter} ORDER BY created_at DESC, id DESC LIMIT ?"
    );
    let mut orders = load_orders(c, &sql_text, rusqlite::params_from_iter(args))?;
    let more = orders.len() > limit;
    orders.truncate(limit);
    Ok(crate::ports::SearchPage { orders, more })
}

fn load_orders(
    c: &Connection,
    query: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Order>, StoreError> {
    let refs = c
        .prepare_cached(query)
        .map_err(sql)?
        .query_map(args, |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    let mut orders = Vec::with_capacity(refs.len());
    for (tenant, id) in refs {
        orders.extend(load_order(c, &tenant, &id)?);
    }
    Ok(orders)
}

/// The whole order: its row, and its production record with the job
/// records beside it (an order stored before jobs were records of their
/// own keeps its production in its document).
fn load_order(c: &Connection, tenant: &str, id: &str) -> Result<Option<Order>, StoreError> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM orders WHERE tenant_id = ?1 AND id = ?2")
        .map_err(sql)?
        .query_row(params![tenant, id], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    let Some(doc) = doc else { return Ok(None) };
    let mut order: Order = serde_json::from_str(&doc).map_err(json_err)?;
    if let Some(record) = production_record(c, tenant, id)? {
        let mut stmt = c
            .prepare_cached("SELECT doc FROM jobs WHERE tenant_id = ?1 AND order_id = ?2")
            .map_err(sql)?;
        let jobs = stmt
            .query_map(params![tenant, id], |r| r.get::<_, String>(0))
            .map_err(sql)?
            .map(|doc| serde_json::from_str::<JobRecord>(&doc.map_err(sql)?).map_err(json_err))
            .collect::<Result<Vec<_>, StoreError>>()?;
        order.production = Some(Production::assemble(&order.id, &record, jobs));
    }
    Ok(Some(order))
}

fn production_record(
    c: &Connection,
    tenant: &str,
    id: &str,
) -> Result<Option<ProductionRecord>, StoreError> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM productions WHERE tenant_id = ?1 AND order_id = ?2")
        .map_err(sql)?
        .query_row(params![tenant, id], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    doc.map(|d| serde_json::from_str(&d).map_err(json_err))
        .transpose()
}

/// Writes `record` if the stored revision is still `observed` (0: none
/// stored), and `jobs`; otherwise [`StoreError::Conflict`].
fn write_production(
    c: &Connection,
    tenant: &str,
    id: &str,
    write: &ProductionWrite,
) -> Result<(), StoreError> {
    let doc = serde_json::to_string(&write.record).map_err(json_err)?;
    let changed = if write.observed_revision == 0 {
        c.prepare_cached(
            "INSERT INTO productions (tenant_id, order_id, revision, doc) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (tenant_id, order_id) DO NOTHING",
        )
        .map_err(sql)?
        .execute(params![tenant, id, write.record.revision as i64, doc])
        .map_err(sql)?
    } else {
        c.prepare_cached(
            "UPDATE productions SET revision = ?3, doc = ?4 \
             WHERE tenant_id = ?1 AND order_id = ?2 AND revision = ?5",
        )
        .map_err(sql)?
        .execute(params![
            tenant,
            id,
            write.record.revision as i64,
            doc,
            write.observed_revision as i64
        ])
        .map_err(sql)?
    };
    if changed != 1 {
        return Err(StoreError::Conflict);
    }
    let mut stmt = c
        .prepare_cached(
            "INSERT INTO jobs (tenant_id, order_id, job_id, doc) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (tenant_id, order_id, job_id) DO UPDATE SET doc = excluded.doc",
        )
        .map_err(sql)?;
    for job in &write.jobs {
        let doc = serde_json::to_string(job).map_err(json_err)?;
        stmt.execute(params![tenant, id, job.job_id, doc])
            .map_err(sql)?;
    }
    Ok(())
}

/// A conditional order update, ready to run inside a write job.
struct OrderUpdate {
    /// The order's production, written beside it.
    production: Option<ProductionWrite>,
    /// The production stays in the order's document: no record may be
    /// stored apart ([`job_records::SplitOrder::inline`]).
    inline: bool,
    doc: String,
    updated: String,
    tenant: String,
    id: String,
    state: &'static str,
    rank: u32,
    version: u64,
    observed_rank: u32,
    observed_version: u64,
    /// [`Order::needs_attention`] of the order written.
    attention: bool,
}

impl OrderUpdate {
    fn new(next: &Order, observed: &Order) -> Result<OrderUpdate, StoreError> {
        check_successor(next, observed)?;
        let split = job_records::split(next, observed);
        Ok(OrderUpdate {
            production: split.production,
            inline: split.inline,
            doc: serde_json::to_string(&split.order).map_err(json_err)?,
            updated: ts(next.updated_at)?,
            tenant: next.tenant.as_str().to_string(),
            id: next.id.as_str().to_string(),
            state: next.state.as_str(),
            rank: next.rank(),
            version: next.version,
            observed_rank: observed.rank(),
            observed_version: observed.version,
            attention: next.needs_attention(),
        })
    }

    /// Writes the order if its rank and version are still as observed.
    fn apply(&self, c: &Connection) -> Result<(), StoreError> {
        let changed = c
            .prepare_cached(
                "UPDATE orders SET state = ?1, rank = ?2, doc = ?3, updated_at = ?4, version = ?5, \
                 attention = ?10 WHERE tenant_id = ?6 AND id = ?7 AND rank = ?8 AND version = ?9",
            )
            .map_err(sql)?
            .execute(params![
                self.state,
                self.rank,
                self.doc,
                self.updated,
                self.version as i64,
                self.tenant,
                self.id,
                self.observed_rank,
                self.observed_version as i64,
                self.attention
            ])
            .map_err(sql)?;
        if changed != 1 {
            return Err(StoreError::Conflict);
        }
        if self.inline {
            let apart: Option<i64> = c
                .prepare_cached("SELECT 1 FROM productions WHERE tenant_id = ?1 AND order_id = ?2")
                .map_err(sql)?
                .query_row(params![self.tenant, self.id], |r| r.get(0))
                .optional()
                .map_err(sql)?;
            if apart.is_some() {
                return Err(StoreError::Conflict);
            }
        }
        if let Some(production) = &self.production {
            write_production(c, &self.tenant, &self.id, production)?;
        }
        Ok(())
    }
}

#[async_trait]
impl PaymentStore for SqliteStore {
    async fn payment_record(
        &self,
        provider: &str,
        event_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let (provider, event_id) = (provider.to_string(), event_id.to_string());
        let doc: Option<String> = self
            .db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT doc FROM payment_events WHERE provider = ?1 AND event_id = ?2",
                )
                .map_err(sql)?
                .query_row(params![provider, event_id], |r| r.get(0))
                .optional()
                .map_err(sql)
            })
            .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(json_err))
            .transpose()
    }

    async fn record_payment(&self, write: PaymentWrite) -> Result<PaymentWriteOutcome, StoreError> {
        let update = match &write.order {
            Some((next, observed)) => Some(OrderUpdate::new(next, observed)?),
            None => None,
        };
        let doc = serde_json::to_string(&write.record).map_err(json_err)?;
        let received = ts(write.record.received_at)?;
        self.db
            .write(move |c| {
                let record = &write.record;
                let inserted = c
                    .prepare_cached(
                        "INSERT INTO payment_events (provider, event_id, outcome, order_ref, doc, received_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (provider, event_id) DO NOTHING",
                    )
                    .map_err(sql)?
                    .execute(params![record.provider, record.event_id, record.outcome, record.order, doc, received])
                    .map_err(sql)?;
                if inserted == 0 {
                    return Ok(PaymentWriteOutcome::Duplicate);
                }
                if let Some(update) = &update {
                    update.apply(c)?;
                }
                if let Some((payment_id, tenant, order)) = &write.payment_index {
                    c.prepare_cached(
                        "INSERT INTO payment_index (provider, payment_id, tenant_id, order_id) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (provider, payment_id) DO NOTHING",
                    )
                    .map_err(sql)?
                    .execute(params![record.provider, payment_id, tenant.as_str(), order.as_str()])
                    .map_err(sql)?;
                }
                append_outbox(c, &write.events)?;
                Ok(PaymentWriteOutcome::Recorded)
            })
            .await
    }

    async fn order_for_payment(
        &self,
        provider: &str,
        payment_id: &str,
    ) -> Result<Option<(TenantId, OrderId)>, StoreError> {
        let (provider, payment_id) = (provider.to_string(), payment_id.to_string());
        let row: Option<(String, String)> = self
            .db
            .read(move |c| {
                c.prepare_cached("SELECT tenant_id, order_id FROM payment_index WHERE provider = ?1 AND payment_id = ?2")
                    .map_err(sql)?
                    .query_row(params![provider, payment_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(sql)
            })
            .await?;
        Ok(row.and_then(|(tenant, order)| {
            Some((TenantId::parse(&tenant).ok()?, OrderId::parse(&order)?))
        }))
    }
}

impl SqliteStore {
    /// An order by id alone, whatever its tenant (`printworks pay`, on one
    /// machine the operator sees every tenant).
    pub async fn find_order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let id = id.as_str().to_string();
        self.db
            .read(move |c| {
                let tenant: Option<String> = c
                    .query_row("SELECT tenant_id FROM orders WHERE id = ?1", [&id], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(sql)?;
                match tenant {
                    Some(tenant) => load_order(c, &tenant, &id),
                    None => Ok(None),
                }
            })
            .await
    }
}
