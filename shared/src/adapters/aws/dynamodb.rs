//! The orders table (single-table design, `pk`/`sk` strings):
//!
//! | item | pk | sk |
//! |---|---|---|
//! | order (without its production; the search attributes below) | `ORDER#<tenant>#<order id>` | `ORDER` |
//! | its production record (plant, job runs, tally, `revision`) | `ORDER#<tenant>#<order id>` | `PRODUCTION` |
//! | a job a plant reported on (a shipped one: `search_lookup`) | `ORDER#<tenant>#<order id>` | `JOB#<job id>` |
//! | order id -> tenant (the operator API finds any tenant's order) | `ORDERID#<order id>` | `ORDERID` |
//! | idempotency record | `IDEM#<tenant>#<key>`, an operator's `IDEM#ops:<operator>#<key>` | `IDEM` |
//! | outbox event | `OUTBOX#<event id>` | `OUTBOX` |
//! | tenant | `TENANT#<tenant>` | `TENANT` |
//! | API key | `APIKEY#<key id>` | `APIKEY` |
//! | operator | `OPERATOR#<operator id>` | `OPERATOR` |
//! | operator key | `OPKEY#<key id>` | `OPKEY` |
//! | payment provider event | `PAYEVT#<provider>#<event id>` | `PAYEVT` |
//! | provider payment id -> order | `PAYREF#<provider>#<payment id>` | `PAYREF` |
//! | a plant's open-job count and its agent's last report (`last_report_ms`, `dynamodb_plants.rs`) | `PLANT#<plant id>` | `PLANT` |
//! | jobs a plant shipped on a UTC day (`shipped`, TTL 40 days) | `PLANTDAY#<plant id>` | `<yyyy-mm-dd>` |
//! | notification (record, `rev`, `due_at` while deferred) | `NOTIFY#<notification id>` | `NOTIFY` |
//! | a tenant's daily send counter per channel (`sent`, TTL) | `NCOUNT#<tenant>#<channel>#<yyyy-mm-dd>` | `NCOUNT` |
//! | a deferred notification, under the UTC day it is due | `NDUE#<yyyy-mm-dd>` | `<notification id>` |
//! | an order's notification (the console's order page lists them) | `NORDER#<tenant>#<order id>` | `<notification id>` |
//! | statistics: counters and marks (`dynamodb_stats.rs`) | `STATS#REV`, `STATS#HOLD`, `STATS#LEAD`, `STATS#NOTE` (sends and deferrals per tenant and channel, kept by the notification transactions); `STATSEVT#<event id>`, `STATSSHIP#<order id>` | `<day>#...`; `STATSEVT`, `STATSSHIP` |
//!
//! The sparse global secondary index `idle` (`idle_pk`, `idle_sk`, keys
//! only) is what the reconciler reads instead of scanning (and the console
//! its held orders): an order item in a watched state, or on hold,
//! carries `idle_pk` = `STATE#<state>#<shard>` and
//! `idle_sk` = its `updated_at` in milliseconds (15 digits) `#<order id>`;
//! an outbox item carries `idle_pk` = `OUTBOX#<shard>` and `idle_sk` = its
//! event's time the same way. The shard (0..[`IDLE_SHARDS`], from the id)
//! spreads each state's writes over partitions. events-publisher deletes
//! the outbox items it published, so the index's outbox entries are the
//! events still to publish.
//!
//! The operators' search ([`search`], `dynamodb_search.rs`) reads four
//! more sparse indexes, each sorted by `search_sk` (an order's
//! `created_at` in nanoseconds, 20 digits, `#<order id>`): `search_tenant`
//! (`search_tenant` = the tenant; `state` projected), `search_state`
//! (`<state>#<shard>`), `search_lookup` (an order's `EMAIL#<sha-256 of
//! the lower-cased address>`; a shipped job's `TRACKING#<sha-256>`, its
//! `search_sk` `JOB#<job id>`) and `search_reference` (`REF#<sha-256>`).
//! `order_item` and `job_item` set them; no key holds an e-mail address.
//!
//! The notification items are written by the `NotificationStore` in
//! `dynamodb_notify.rs` (a child module): a claim is the record, conditional
//! on its `rev`, and the counter, conditional on being below the limit, in
//! one `TransactWriteItems`; the deferred index item changes in the same
//! transaction as the record's status.
//!
//! Order writes are conditional on the stored `rank` and `version` being
//! those the writer read; production writes on its `revision`. An order is
//! read whole by one `Query` of its `pk`; a plant's report reads the order,
//! the production record and its job, and writes the job and the
//! production record (the order only when its state changes): jobs are
//! records of their own ([`crate::domain::job_records`]). A provider event's record, the order it changes
//! and the outbox events are one `TransactWriteItems`, the record
//! conditional on not existing: a duplicate delivery, even a concurrent
//! one, writes nothing.
//!
//! The order, its idempotency record and its outbox events are one
//! `TransactWriteItems`; the table's stream (filtered to `OUTBOX#` inserts)
//! triggers events-publisher. Outbox items expire by TTL (`expires_at`)
//! once the stream has carried them.

use crate::domain::events::EventEnvelope;
use crate::domain::job_records::{self, ProductionRecord, ProductionWrite};
use crate::domain::operator::{Operator, OperatorId, OperatorKeyRecord};
use crate::domain::order::{Order, OrderId};
use crate::domain::production::{JobRecord, Production};
use crate::domain::tenant::{ApiKeyRecord, Tenant, TenantId};
use crate::ports::{
    IdempotencyRecord, JobView, JobWrite, NewOrder, OperatorStore, OpsStore, OpsWrite, OrderStore,
    PaymentRecord, PaymentStore, PaymentWrite, PaymentWriteOutcome, PlaceOutcome, ProductionStore,
    StoreError, StoredResponse, TenantStore, check_successor,
};
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update,
};
use std::collections::BTreeMap;
use std::collections::HashMap;

#[path = "dynamodb_notify.rs"]
mod notify;
#[path = "dynamodb_plants.rs"]
mod plants;
#[path = "dynamodb_search.rs"]
pub mod search;
#[path = "dynamodb_stats.rs"]
mod stats;

/// How long an outbox item stays after it was written (the stream keeps 24 h).
const OUTBOX_TTL_SECS: i64 = 7 * 24 * 3600;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn order_pk(tenant: &TenantId, id: &OrderId) -> String {
    format!("ORDER#{tenant}#{id}")
}

fn idem_pk(tenant: &TenantId, key: &str) -> String {
    scoped_idem_pk(tenant.as_str(), key)
}

/// An idempotency record's key in `scope`: a tenant, or an operator's
/// [`ops_scope`].
fn scoped_idem_pk(scope: &str, key: &str) -> String {
    format!("IDEM#{scope}#{key}")
}

/// An idempotency record in `scope` (a tenant's, an operator's).
fn idem_item(scope: &str, record: &IdempotencyRecord) -> Item {
    let mut idem = key(scoped_idem_pk(scope, &record.key), "IDEM");
    idem.insert("request_hash".into(), s(&record.request_hash));
    idem.insert("status".into(), n(record.response.status));
    idem.insert("body".into(), s(&record.response.body));
    idem
}

/// The partition of the orders that need a person for their money.
const ATTENTION_PK: &str = "ATTENTION";

fn order_ref_pk(id: &OrderId) -> String {
    format!("ORDERID#{id}")
}

fn doc_of(item: &Item) -> Result<&str, StoreError> {
    item.get("doc")
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| anyhow!("item without doc").into())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| anyhow!(e).into())
}

fn parse<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| anyhow!(e).context("stored JSON").into())
}

fn put(table: &str, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .set_condition_expression(condition.map(str::to_string));
    Ok(TransactWriteItem::builder()
        .put(put.build().context("building Put")?)
        .build())
}

/// The partitions each idle state's and the outbox's index entries are
/// spread over.
pub const IDLE_SHARDS: u32 = 4;

/// The reconciler's index (see the module docs).
pub const IDLE_INDEX: &str = "idle";

fn shard_of(id: &str) -> u32 {
    id.bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % IDLE_SHARDS
}

fn idle_sk(at: time::OffsetDateTime, id: &str) -> String {
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    format!("{ms:015}#{id}")
}

fn outbox_pk(event_id: &str) -> String {
    format!("OUTBOX#{event_id}")
}

fn outbox_item(event: &EventEnvelope) -> Result<Item, StoreError> {
    let mut item = key(outbox_pk(&event.id), "OUTBOX");
    item.insert(
        "idle_pk".into(),
        s(format!("OUTBOX#{}", shard_of(&event.id))),
    );
    item.insert("idle_sk".into(), s(idle_sk(event.occurred_at, &event.id)));
    item.insert("type".into(), s(event.event_type.as_str()));
    item.insert("event".into(), s(json(event)?));
    item.insert(
        "expires_at".into(),
        n(event.occurred_at.unix_timestamp() + OUTBOX_TTL_SECS),
    );
    Ok(item)
}

/// The states whose orders the `idle` index keeps: the reconciler's
/// watched states, and on hold (the console's list of held orders).
fn indexed_by_state(state: crate::domain::state::OrderState) -> bool {
    crate::domain::reconcile::WATCHED.contains(&state)
        || state == crate::domain::state::OrderState::OnHold
}

fn order_item(order: &Order) -> Result<Item, StoreError> {
    let mut item = key(order_pk(&order.tenant, &order.id), "ORDER");
    item.insert("tenant".into(), s(order.tenant.as_str()));
    item.insert("state".into(), s(order.state.as_str()));
    item.insert("rank".into(), n(order.rank()));
    item.insert("version".into(), n(order.version));
    item.insert("doc".into(), s(json(order)?));
    if indexed_by_state(order.state) {
        item.insert(
            "idle_pk".into(),
            s(format!(
                "STATE#{}#{}",
                order.state.as_str(),
                shard_of(order.id.as_str())
            )),
        );
        item.insert(
            "idle_sk".into(),
            s(idle_sk(order.updated_at, order.id.as_str())),
        );
    }
    search::add_order_attributes(order, &mut item);
    Ok(item)
}

fn production_item(
    tenant: &TenantId,
    id: &OrderId,
    record: &ProductionRecord,
) -> Result<Item, StoreError> {
    let mut item = key(order_pk(tenant, id), "PRODUCTION");
    item.insert("revision".into(), n(record.revision));
    item.insert("doc".into(), s(json(record)?));
    Ok(item)
}

fn job_item(tenant: &TenantId, id: &OrderId, job: &JobRecord) -> Result<Item, StoreError> {
    let mut item = key(order_pk(tenant, id), &format!("JOB#{}", job.job_id));
    if let Some(status) = job.status {
        item.insert("status".into(), s(status.as_str()));
    }
    item.insert("doc".into(), s(json(job)?));
    search::add_job_attributes(job, &mut item);
    Ok(item)
}

/// The size DynamoDB counts for an item, to which its 400 KB item limit
/// applies: the UTF-8 length of every attribute name and string value,
/// the length of binary values, a number as about one byte per two
/// digits plus one, one byte for a boolean or null, and 3 bytes of
/// overhead for each list or map with its elements' sizes.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    let number = |n: &String| n.len().div_ceil(2) + 1;
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(number).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => 3 + item_size_of(m),
        _ => 0,
    }
}

fn item_size_of(map: &HashMap<String, AttributeValue>) -> usize {
    map.iter()
        .map(|(name, value)| 1 + name.len() + value_size(value))
        .sum()
}

/// The sizes of the items `order` is stored as: the order's, its
/// production record's (0 before dispatch) and its largest job record's
/// (0 while no plant reported).
pub fn stored_item_sizes(order: &Order) -> Result<(usize, usize, usize), StoreError> {
    let mut bare = order.clone();
    let production = bare.production.take();
    let order_size = item_size(&order_item(&bare)?);
    let Some(production) = production else {
        return Ok((order_size, 0, 0));
    };
    let record = production_item(&order.tenant, &order.id, &production.record())?;
    let mut largest_job = 0;
    for job in production.jobs.iter().chain(&production.superseded) {
        if job.status.is_some() {
            largest_job = largest_job.max(item_size(&job_item(&order.tenant, &order.id, job)?));
        }
    }
    Ok((order_size, item_size(&record), largest_job))
}

/// The size of `order` stored whole in one item, as it was before jobs
/// were records of their own (what [`stored_item_sizes`] is compared with).
pub fn whole_order_item_size(order: &Order) -> Result<usize, StoreError> {
    Ok(item_size(&order_item(order)?))
}

/// The order put, conditional on the stored rank and version being those
/// of `observed` (an order stored before versions existed has none: that
/// is version 0), and its production record (conditional on its revision)
/// and changed job records when its production changed.
fn conditional_order_put(
    table: &str,
    next: &Order,
    observed: &Order,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    check_successor(next, observed)?;
    let split = job_records::split(next, observed);
    let version_condition = if observed.version == 0 {
        "(attribute_not_exists(#version) OR #version = :version)"
    } else {
        "#version = :version"
    };
    let order_put = Put::builder()
        .table_name(table)
        .set_item(Some(order_item(&split.order)?))
        .condition_expression(format!(
            "attribute_exists(pk) AND #rank = :rank AND {version_condition}"
        ))
        .expression_attribute_names("#rank", "rank")
        .expression_attribute_names("#version", "version")
        .expression_attribute_values(":rank", n(observed.rank()))
        .expression_attribute_values(":version", n(observed.version))
        .build()
        .context("building Put")?;
    let mut items = vec![TransactWriteItem::builder().put(order_put).build()];
    if let Some(production) = &split.production {
        items.extend(production_puts(table, &next.tenant, &next.id, production)?);
    }
    // The index of orders whose money needs a person (`needing_attention`):
    // kept while the order needs one (put again on each write, so an order
    // flagged before the index existed joins it on its next write).
    let marker = key(ATTENTION_PK.into(), &order_pk(&next.tenant, &next.id));
    if next.needs_attention() {
        let mut item = marker;
        item.insert("tenant".into(), s(next.tenant.as_str()));
        item.insert("order_id".into(), s(next.id.as_str()));
        items.push(put(table, item, None)?);
    } else if observed.needs_attention() {
        let delete = Delete::builder()
            .table_name(table)
            .set_key(Some(marker))
            .build()
            .context("building Delete")?;
        items.push(TransactWriteItem::builder().delete(delete).build());
    }
    if split.inline {
        // The production stays in the order's item: only while none is
        // stored apart.
        let check = ConditionCheck::builder()
            .table_name(table)
            .set_key(Some(key(order_pk(&next.tenant, &next.id), "PRODUCTION")))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .context("building ConditionCheck")?;
        items.push(TransactWriteItem::builder().condition_check(check).build());
    }
    Ok(items)
}

/// The production record, conditional on its stored revision, and the
/// job records.
fn production_puts(
    table: &str,
    tenant: &TenantId,
    id: &OrderId,
    write: &ProductionWrite,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let mut put = Put::builder()
        .table_name(table)
        .set_item(Some(production_item(tenant, id, &write.record)?));
    put = if write.observed_revision == 0 {
        put.condition_expression("attribute_not_exists(pk)")
    } else {
        put.condition_expression("#revision = :revision")
            .expression_attribute_names("#revision", "revision")
            .expression_attribute_values(":revision", n(write.observed_revision))
    };
    let mut items = vec![
        TransactWriteItem::builder()
            .put(put.build().context("building Put")?)
            .build(),
    ];
    for job in &write.jobs {
        items.push(put_item(table, job_item(tenant, id, job)?)?);
    }
    Ok(items)
}

fn put_item(table: &str, item: Item) -> Result<TransactWriteItem, StoreError> {
    put(table, item, None)
}

/// Which items of a cancelled transaction failed their condition.
fn failed_conditions(
    err: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<Vec<bool>> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(tc)) => Some(
            tc.cancellation_reasons()
                .iter()
                .map(|r| r.code() == Some("ConditionalCheckFailed"))
                .collect(),
        ),
        _ => None,
    }
}

/// Whether a cancelled transaction failed a condition (rather than, say, a
/// conflict with a concurrent transaction).
fn condition_failed(
    err: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<bool> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(tc)) => Some(
            tc.cancellation_reasons()
                .iter()
                .any(|r| r.code() == Some("ConditionalCheckFailed")),
        ),
        _ => None,
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> DynamoStore {
        DynamoStore::new(Client::new(sdk), table)
    }

    async fn get_item(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .context("DynamoDB GetItem")?;
        Ok(out.item)
    }

    async fn put_doc(&self, pk: String, sk: &str, doc: String) -> Result<(), StoreError> {
        let mut item = key(pk, sk);
        item.insert("doc".into(), s(doc));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .context("DynamoDB PutItem")?;
        Ok(())
    }

    async fn idempotent_outcome(
        &self,
        tenant: &TenantId,
        key: &str,
        hash: &str,
    ) -> Result<Option<PlaceOutcome>, StoreError> {
        self.scoped_outcome(tenant.as_str(), key, hash).await
    }

    /// The earlier request under `key` in `scope`.
    async fn idempotency_record(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(item) = self.get_item(scoped_idem_pk(scope, key), "IDEM").await? else {
            return Ok(None);
        };
        let hash = item.get("request_hash").and_then(|v| v.as_s().ok());
        let status = item
            .get("status")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok());
        let body = item.get("body").and_then(|v| v.as_s().ok());
        let (Some(hash), Some(status), Some(body)) = (hash, status, body) else {
            return Err(anyhow!("IDEM item without hash, status or body").into());
        };
        Ok(Some(IdempotencyRecord {
            key: key.to_string(),
            request_hash: hash.clone(),
            response: StoredResponse {
                status,
                body: body.clone(),
            },
        }))
    }

    /// What a request with `hash` under an earlier-used key gets: the
    /// earlier response, or [`PlaceOutcome::KeyReused`].
    async fn scoped_outcome(
        &self,
        scope: &str,
        key: &str,
        hash: &str,
    ) -> Result<Option<PlaceOutcome>, StoreError> {
        Ok(self.idempotency_record(scope, key).await?.map(|earlier| {
            if earlier.request_hash == hash {
                PlaceOutcome::Replayed(earlier.response)
            } else {
                PlaceOutcome::KeyReused
            }
        }))
    }
}

#[async_trait]
impl TenantStore for DynamoStore {
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        match self.get_item(format!("APIKEY#{key_id}"), "APIKEY").await? {
            Some(item) => Ok(Some(parse(doc_of(&item)?)?)),
            None => Ok(None),
        }
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        match self.get_item(format!("TENANT#{id}"), "TENANT").await? {
            Some(item) => Ok(Some(parse(doc_of(&item)?)?)),
            None => Ok(None),
        }
    }

    async fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.put_doc(format!("TENANT#{}", tenant.id), "TENANT", json(tenant)?)
            .await
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        self.put_doc(format!("APIKEY#{}", key.key_id), "APIKEY", json(key)?)
            .await
    }
}

#[async_trait]
impl OperatorStore for DynamoStore {
    async fn operator_key(&self, key_id: &str) -> Result<Option<OperatorKeyRecord>, StoreError> {
        match self.get_item(format!("OPKEY#{key_id}"), "OPKEY").await? {
            Some(item) => Ok(Some(parse(doc_of(&item)?)?)),
            None => Ok(None),
        }
    }

    async fn operator(&self, id: &OperatorId) -> Result<Option<Operator>, StoreError> {
        match self.get_item(format!("OPERATOR#{id}"), "OPERATOR").await? {
            Some(item) => Ok(Some(parse(doc_of(&item)?)?)),
            None => Ok(None),
        }
    }

    /// The operator and its key in one transaction, each conditional on
    /// not existing.
    async fn add_operator(
        &self,
        operator: &Operator,
        key_record: &OperatorKeyRecord,
    ) -> Result<(), StoreError> {
        let mut op = key(format!("OPERATOR#{}", operator.id), "OPERATOR");
        op.insert("doc".into(), s(json(operator)?));
        let mut opkey = key(format!("OPKEY#{}", key_record.key_id), "OPKEY");
        opkey.insert("doc".into(), s(json(key_record)?));
        let result = self
            .client
            .transact_write_items()
            .transact_items(put(&self.table, op, Some("attribute_not_exists(pk)"))?)
            .transact_items(put(&self.table, opkey, Some("attribute_not_exists(pk)"))?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) == Some(true) => Err(StoreError::Conflict),
            Err(e) => Err(anyhow!(e).context("DynamoDB TransactWriteItems").into()),
        }
    }
}

#[async_trait]
impl OrderStore for DynamoStore {
    async fn place(&self, new: NewOrder) -> Result<PlaceOutcome, StoreError> {
        let tenant = &new.order.tenant;
        let mut idem = key(idem_pk(tenant, &new.idempotency.key), "IDEM");
        idem.insert("request_hash".into(), s(&new.idempotency.request_hash));
        idem.insert("order_id".into(), s(new.order.id.as_str()));
        idem.insert("status".into(), n(new.idempotency.response.status));
        idem.insert("body".into(), s(&new.idempotency.response.body));
        let mut order_ref = key(order_ref_pk(&new.order.id), "ORDERID");
        order_ref.insert("tenant".into(), s(tenant.as_str()));
        let mut items = vec![
            put(&self.table, idem, Some("attribute_not_exists(pk)"))?,
            put(
                &self.table,
                order_item(&new.order)?,
                Some("attribute_not_exists(pk)"),
            )?,
            put(&self.table, order_ref, Some("attribute_not_exists(pk)"))?,
        ];
        for event in &new.events {
            items.push(put(&self.table, outbox_item(event)?, None)?);
        }
        // A concurrent request with the same key either wins the condition
        // (we then read its record) or conflicts with our transaction (we try
        // again, and then find its record).
        for attempt in 0..3 {
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(PlaceOutcome::Created),
                Err(err) => {
                    let Some(conditional) = condition_failed(&err) else {
                        return Err(anyhow!(err).context("DynamoDB TransactWriteItems").into());
                    };
                    if let Some(outcome) = self
                        .idempotent_outcome(
                            tenant,
                            &new.idempotency.key,
                            &new.idempotency.request_hash,
                        )
                        .await?
                    {
                        return Ok(outcome);
                    }
                    if conditional {
                        return Err(anyhow!(
                            "order {} already exists without its idempotency record",
                            new.order.id
                        )
                        .into());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20 * (attempt + 1))).await;
                }
            }
        }
        Err(StoreError::Conflict)
    }

    /// The order, its production record and job records: one `Query`.
    async fn get(&self, tenant: &TenantId, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let items = self.query_pk(order_pk(tenant, id)).await?;
        let mut order: Option<Order> = None;
        let mut record: Option<ProductionRecord> = None;
        let mut jobs: Vec<JobRecord> = Vec::new();
        for item in &items {
            let sk = item.get("sk").and_then(|v| v.as_s().ok());
            match sk.map(String::as_str) {
                Some("ORDER") => order = Some(parse(doc_of(item)?)?),
                Some("PRODUCTION") => record = Some(parse(doc_of(item)?)?),
                Some(sk) if sk.starts_with("JOB#") => jobs.push(parse(doc_of(item)?)?),
                _ => {}
            }
        }
        let Some(mut order) = order else {
            return Ok(None);
        };
        // An order stored before jobs were records of their own keeps its
        // production in its document.
        if let Some(record) = record {
            order.production = Some(Production::assemble(&order.id, &record, jobs));
        }
        Ok(Some(order))
    }

    async fn transition(
        &self,
        next: &Order,
        observed: &Order,
        events: Vec<EventEnvelope>,
    ) -> Result<(), StoreError> {
        let mut items = conditional_order_put(&self.table, next, observed)?;
        for event in &events {
            items.push(put(&self.table, outbox_item(event)?, None)?);
        }
        self.transact(items).await
    }
}

impl DynamoStore {
    /// Every item under `pk`, page by page, read consistently.
    async fn query_pk(&self, pk: String) -> Result<Vec<Item>, StoreError> {
        self.query_pages(|| {
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk.clone()))
                .consistent_read(true)
        })
        .await
    }

    /// Every item the query `query` makes selects, page by page.
    async fn query_pages(
        &self,
        query: impl Fn() -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = query()
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .context("DynamoDB Query")?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }

    /// One `TransactWriteItems`; a failed condition (or a conflict with a
    /// concurrent transaction) is [`StoreError::Conflict`].
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err).is_some() => Err(StoreError::Conflict),
            Err(err) => Err(anyhow!(err).context("DynamoDB TransactWriteItems").into()),
        }
    }
}

#[async_trait]
impl OpsStore for DynamoStore {
    async fn find_order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let Some(item) = self.get_item(order_ref_pk(id), "ORDERID").await? else {
            return Ok(None);
        };
        let tenant = item
            .get("tenant")
            .and_then(|v| v.as_s().ok())
            .and_then(|t| TenantId::parse(t).ok())
            .ok_or_else(|| anyhow!("ORDERID item without a valid tenant"))?;
        self.get(&tenant, id).await
    }

    async fn needing_attention(&self, limit: usize) -> Result<Vec<Order>, StoreError> {
        let mut orders = Vec::new();
        for item in self.query_pk(ATTENTION_PK.into()).await? {
            let found = item
                .get("tenant")
                .and_then(|v| v.as_s().ok())
                .and_then(|t| TenantId::parse(t).ok())
                .zip(
                    item.get("order_id")
                        .and_then(|v| v.as_s().ok())
                        .and_then(|id| OrderId::parse(id)),
                );
            let Some((tenant, id)) = found else {
                return Err(anyhow!("an ATTENTION item without its order").into());
            };
            orders.extend(self.get(&tenant, &id).await?);
        }
        orders.sort_by_key(|o| o.updated_at);
        orders.truncate(limit);
        Ok(orders)
    }

    /// Through the sparse search indexes (`dynamodb_search.rs`).
    async fn search(
        &self,
        query: &crate::ports::SearchQuery,
    ) -> Result<Option<crate::ports::SearchPage>, StoreError> {
        search::search(self, query).await.map(Some)
    }

    async fn held_orders(&self, limit: usize) -> Result<Vec<Order>, StoreError> {
        use crate::ports::ReconcileStore;
        self.idle_orders(
            crate::domain::state::OrderState::OnHold,
            time::OffsetDateTime::now_utc() + time::Duration::days(1),
            limit,
        )
        .await
    }

    async fn ops_request(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.idempotency_record(scope, key).await
    }

    /// The idempotency record (conditional on not existing), the order
    /// (conditional on the rank and version read), the plants' counters
    /// and the outbox events in one `TransactWriteItems`.
    async fn record_request(
        &self,
        scope: &str,
        idempotency: IdempotencyRecord,
    ) -> Result<PlaceOutcome, StoreError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(idem_item(scope, &idempotency)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match written {
            Ok(_) => Ok(PlaceOutcome::Created),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                self.scoped_outcome(scope, &idempotency.key, &idempotency.request_hash)
                    .await?
                    .ok_or_else(|| anyhow!("an idempotency record that vanished").into())
            }
            Err(e) => Err(anyhow!(e).context("DynamoDB PutItem").into()),
        }
    }

    async fn act(&self, write: OpsWrite) -> Result<PlaceOutcome, StoreError> {
        let scope = write.scope.clone();
        let record = &write.idempotency;
        let mut idem = idem_item(&scope, record);
        idem.insert("order_id".into(), s(write.next.id.as_str()));
        let mut items = vec![put(&self.table, idem, Some("attribute_not_exists(pk)"))?];
        items.extend(conditional_order_put(
            &self.table,
            &write.next,
            &write.observed,
        )?);
        for (plant, delta) in &write.open_jobs {
            items.push(open_jobs_update(&self.table, plant, *delta)?);
        }
        for event in &write.events {
            items.push(put(&self.table, outbox_item(event)?, None)?);
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(PlaceOutcome::Created),
            Err(err) => {
                let Some(failed) = failed_conditions(&err) else {
                    return Err(anyhow!(err).context("DynamoDB TransactWriteItems").into());
                };
                // The key was used (by this request or another): its
                // outcome. Otherwise the order changed, or a concurrent
                // transaction touched it: the caller reads it again.
                if failed.first() == Some(&true)
                    && let Some(outcome) = self
                        .scoped_outcome(&scope, &record.key, &record.request_hash)
                        .await?
                {
                    return Ok(outcome);
                }
                Err(StoreError::Conflict)
            }
        }
    }
}

fn plant_pk(plant: &str) -> String {
    format!("PLANT#{plant}")
}

/// Adds `delta` to `plant`'s open-job count, inside a transaction.
fn open_jobs_update(table: &str, plant: &str, delta: i64) -> Result<TransactWriteItem, StoreError> {
    let counter = Update::builder()
        .table_name(table)
        .set_key(Some(key(plant_pk(plant), "PLANT")))
        .update_expression("ADD open_jobs :delta")
        .expression_attribute_values(":delta", n(delta))
        .build()
        .context("building Update")?;
    Ok(TransactWriteItem::builder().update(counter).build())
}

impl DynamoStore {
    /// The `idle` index's entries under `pk` written at or before `before`,
    /// oldest first, at most `limit`: each item's table key.
    async fn idle_entries(
        &self,
        pk: String,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        // `<ms>$` sorts after every `<ms>#<id>`: entries of that very
        // millisecond are included, as the domain's `>=` deadlines want.
        let before = format!("{:015}$", before.unix_timestamp_nanos() / 1_000_000);
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(IDLE_INDEX)
                .key_condition_expression("idle_pk = :pk AND idle_sk < :before")
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":before", s(before.clone()))
                .limit(i32::try_from(limit.min(1000)).unwrap_or(1000))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .context("DynamoDB Query of the idle index")?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() && out.len() < limit => start = Some(key),
                _ => {
                    out.truncate(limit);
                    return Ok(out);
                }
            }
        }
    }
}

/// The tenant and order id of an order item's `pk` (`ORDER#<tenant>#<id>`).
fn order_of_pk(item: &Item) -> Option<(TenantId, OrderId)> {
    let pk = item.get("pk")?.as_s().ok()?;
    let (tenant, id) = pk.strip_prefix("ORDER#")?.rsplit_once('#')?;
    Some((TenantId::parse(tenant).ok()?, OrderId::parse(id)?))
}

/// Orders [`crate::ports::ReconcileStore::idle_orders`] reads at once.
const IDLE_READS_AT_ONCE: usize = 16;

/// The reconciler's reads, through the sparse `idle` index (module docs):
/// a `Query` per shard, never a `Scan`. The index is eventually
/// consistent; each order is read again (consistently) before the domain
/// decides on it.
#[async_trait]
impl crate::ports::ReconcileStore for DynamoStore {
    async fn idle_orders(
        &self,
        state: crate::domain::state::OrderState,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Order>, StoreError> {
        use futures::{StreamExt, TryStreamExt};
        let mut keys = Vec::new();
        for shard in 0..IDLE_SHARDS {
            let pk = format!("STATE#{}#{shard}", state.as_str());
            for entry in self.idle_entries(pk, before, limit).await? {
                keys.push(
                    order_of_pk(&entry)
                        .ok_or_else(|| anyhow!("an idle index entry without an order key"))?,
                );
            }
        }
        // The orders are read 16 at a time (a Query each): the console's
        // plants view reads every order with open jobs.
        let mut orders: Vec<Order> = futures::stream::iter(keys)
            .map(|(tenant, id)| async move { self.get(&tenant, &id).await })
            .buffer_unordered(IDLE_READS_AT_ONCE)
            .try_filter_map(|order| async move { Ok(order) })
            .try_collect()
            .await?;
        orders.sort_by_key(|o| o.updated_at);
        orders.truncate(limit);
        Ok(orders)
    }

    async fn unpublished(
        &self,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut events = Vec::new();
        for shard in 0..IDLE_SHARDS {
            for entry in self
                .idle_entries(format!("OUTBOX#{shard}"), before, limit)
                .await?
            {
                let pk = entry
                    .get("pk")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| anyhow!("an idle index entry without its key"))?;
                // Published (and deleted) since the index was read: skipped.
                if let Some(item) = self.get_item(pk.clone(), "OUTBOX").await? {
                    let raw = item
                        .get("event")
                        .and_then(|v| v.as_s().ok())
                        .ok_or_else(|| anyhow!("an outbox item without its event"))?;
                    events.push(parse::<EventEnvelope>(raw)?);
                }
            }
        }
        events.sort_by_key(|e| e.occurred_at);
        events.truncate(limit);
        Ok(events)
    }

    async fn mark_published(&self, event_ids: &[String]) -> Result<(), StoreError> {
        delete_outbox_items(&self.client, &self.table, event_ids).await
    }
}

/// Deletes the outbox items of `event_ids` (published), 25 to a
/// `BatchWriteItem`, sending again what DynamoDB left unprocessed.
pub async fn delete_outbox_items(
    client: &Client,
    table: &str,
    event_ids: &[String],
) -> Result<(), StoreError> {
    use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
    for chunk in event_ids.chunks(25) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|id| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key(outbox_pk(id), "OUTBOX")))
                    .build()
                    .context("building DeleteRequest")?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<_, StoreError>>()?;
        for round in 0..8u32 {
            let out = client
                .batch_write_item()
                .request_items(table, requests)
                .send()
                .await
                .context("DynamoDB BatchWriteItem")?;
            requests = out
                .unprocessed_items
                .and_then(|mut m| m.remove(table))
                .unwrap_or_default();
            if requests.is_empty() {
                break;
            }
            if round == 7 {
                return Err(anyhow!("{} outbox deletes left unprocessed", requests.len()).into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20 << round)).await;
        }
    }
    Ok(())
}

#[async_trait]
impl ProductionStore for DynamoStore {
    async fn open_jobs(&self, plants: &[String]) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut out = BTreeMap::new();
        for plant in plants {
            let open = match self.get_item(plant_pk(plant), "PLANT").await? {
                Some(item) => item
                    .get("open_jobs")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                None => 0,
            };
            out.insert(plant.clone(), open);
        }
        Ok(out)
    }

    async fn transition_counted(
        &self,
        next: &Order,
        observed: &Order,
        events: Vec<EventEnvelope>,
        plant: &str,
        delta: i64,
    ) -> Result<(), StoreError> {
        let mut items = conditional_order_put(&self.table, next, observed)?;
        items.push(open_jobs_update(&self.table, plant, delta)?);
        for event in &events {
            items.push(put(&self.table, outbox_item(event)?, None)?);
        }
        self.transact(items).await
    }

    /// Three consistent `GetItem`s, at once.
    async fn job_view(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        job_id: &str,
    ) -> Result<Option<JobView>, StoreError> {
        let pk = order_pk(tenant, order);
        let job_sk = format!("JOB#{job_id}");
        let (order_item, record_item, job_item) = tokio::try_join!(
            self.get_item(pk.clone(), "ORDER"),
            self.get_item(pk.clone(), "PRODUCTION"),
            self.get_item(pk.clone(), &job_sk),
        )?;
        let (Some(order_item), Some(record_item)) = (order_item, record_item) else {
            return Ok(None);
        };
        Ok(Some(JobView {
            order: parse(doc_of(&order_item)?)?,
            record: parse(doc_of(&record_item)?)?,
            job: job_item.map(|i| parse(doc_of(&i)?)).transpose()?,
        }))
    }

    /// The job, the production record (conditional on its revision), the
    /// order if it changed (conditional on its version), the plant's
    /// counter and the outbox events in one `TransactWriteItems`.
    async fn record_job(&self, write: JobWrite) -> Result<(), StoreError> {
        let mut items = match &write.order {
            Some((next, observed)) => conditional_order_put(&self.table, next, observed)?,
            None => Vec::new(),
        };
        let mut record = write.record.clone();
        record.revision = write.observed_revision + 1;
        items.extend(production_puts(
            &self.table,
            &write.tenant,
            &write.order_id,
            &ProductionWrite {
                record,
                observed_revision: write.observed_revision,
                jobs: vec![write.job.clone()],
            },
        )?);
        if write.open_jobs_delta != 0 {
            items.push(open_jobs_update(
                &self.table,
                &write.plant,
                write.open_jobs_delta,
            )?);
        }
        if let Some(day) = write.shipped_on() {
            items.push(plants::shipped_update(&self.table, &write.plant, day)?);
        }
        for event in &write.events {
            items.push(put(&self.table, outbox_item(event)?, None)?);
        }
        self.transact(items).await
    }

    async fn plant_reported(
        &self,
        plant: &str,
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.set_plant_reported(plant, at).await
    }

    async fn plant_activity(
        &self,
        plants: &[String],
        day: time::Date,
    ) -> Result<BTreeMap<String, crate::ports::PlantActivity>, StoreError> {
        self.read_plant_activity(plants, day).await
    }
}

fn payevt_pk(provider: &str, event_id: &str) -> String {
    format!("PAYEVT#{provider}#{event_id}")
}

fn payref_pk(provider: &str, payment_id: &str) -> String {
    format!("PAYREF#{provider}#{payment_id}")
}

#[async_trait]
impl PaymentStore for DynamoStore {
    async fn payment_record(
        &self,
        provider: &str,
        event_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        match self
            .get_item(payevt_pk(provider, event_id), "PAYEVT")
            .await?
        {
            Some(item) => Ok(Some(parse(doc_of(&item)?)?)),
            None => Ok(None),
        }
    }

    async fn record_payment(&self, write: PaymentWrite) -> Result<PaymentWriteOutcome, StoreError> {
        let record = &write.record;
        let mut item = key(payevt_pk(&record.provider, &record.event_id), "PAYEVT");
        item.insert("outcome".into(), s(&record.outcome));
        item.insert("doc".into(), s(json(record)?));
        let mut items = vec![put(&self.table, item, Some("attribute_not_exists(pk)"))?];
        if let Some((next, observed)) = &write.order {
            items.extend(conditional_order_put(&self.table, next, observed)?);
        }
        if let Some((payment_id, tenant, order)) = &write.payment_index {
            let mut item = key(payref_pk(&record.provider, payment_id), "PAYREF");
            item.insert("tenant".into(), s(tenant.as_str()));
            item.insert("order_id".into(), s(order.as_str()));
            items.push(put(&self.table, item, None)?);
        }
        for event in &write.events {
            items.push(put(&self.table, outbox_item(event)?, None)?);
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(PaymentWriteOutcome::Recorded),
            Err(err) => match failed_conditions(&err) {
                Some(failed) if failed.first() == Some(&true) => Ok(PaymentWriteOutcome::Duplicate),
                // The order changed, or a concurrent transaction touched the
                // same items (perhaps a second delivery of this very event):
                // the caller reads again and decides again.
                Some(_) => Err(StoreError::Conflict),
                None => Err(anyhow!(err).context("DynamoDB TransactWriteItems").into()),
            },
        }
    }

    async fn order_for_payment(
        &self,
        provider: &str,
        payment_id: &str,
    ) -> Result<Option<(TenantId, OrderId)>, StoreError> {
        let Some(item) = self
            .get_item(payref_pk(provider, payment_id), "PAYREF")
            .await?
        else {
            return Ok(None);
        };
        let field = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
        Ok(match (field("tenant"), field("order_id")) {
            (Some(tenant), Some(order)) => TenantId::parse(tenant).ok().zip(OrderId::parse(order)),
            _ => None,
        })
    }
}
