//! The operators' search on DynamoDB ([`OpsStore::search`]): four sparse
//! global secondary indexes on attributes every order write carries
//! (`order_item`) and job records carry once shipped (`job_item`).
//!
//! | index | partition key | sort key | projection | on |
//! |---|---|---|---|---|
//! | `search_tenant` | `search_tenant` = `<tenant>` | `search_sk` | keys, `state` | every order item |
//! | `search_state` | `search_state` = `<state>#<shard>` | `search_sk` | keys | every order item |
//! | `search_lookup` | `search_lookup` = `EMAIL#<sha-256>` | `search_sk` | keys | every order item |
//! | | `search_lookup` = `TRACKING#<sha-256>` | `search_sk` = `JOB#<job id>` | keys | a job record with a tracking number |
//! | `search_reference` | `search_reference` = `REF#<sha-256>` | `search_sk` | keys | an order item with a reference |
//!
//! An order's `search_sk` is its `created_at` in nanoseconds since 1970
//! (20 digits) `#<order id>`: within a partition the entries sort as the
//! port orders (created_at, id), so a page is a `Query` newest first,
//! bounded by the days asked for and the cursor (`after`). The e-mail
//! address is hashed lower-cased (SHA-256, hex): no key holds it in clear.
//! References and tracking numbers are hashed too, so a key's size never
//! depends on what a tenant or a plant sent (a key is at most 2 KB).
//!
//! The most selective key of a query picks what is read: a tracking
//! number's entries (its orders, sorted here) or the order id's order;
//! else the e-mail's, the reference's or the tenant's partition; else
//! the state's shards, or every state's (days only, or nothing), merged
//! newest first. Entries whose tenant (from the table key) or projected
//! state already rule them out are skipped; the others' orders are read
//! whole (consistently), checked against every criterion, and kept until
//! the page has `limit` orders and one more (`more`). The indexes are
//! eventually consistent: an order found is shown as it is now, and one
//! whose new state has not reached the index yet is missed until it has.
//!
//! Orders written before these attributes existed are in none of the
//! indexes until their next write (docs/decisions/search-on-dynamodb.md).

use super::{DynamoStore, Item, order_of_pk, s};
use crate::domain::order::{Order, OrderId};
use crate::domain::production::JobRecord;
use crate::domain::state::OrderState;
use crate::domain::tenant::TenantId;
use crate::ports::{OpsStore, SearchPage, SearchQuery, StoreError};
use anyhow::{Context, anyhow};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, VecDeque};
use time::{OffsetDateTime, UtcOffset};

/// The attribute every search index sorts by.
pub const SORT_ATTRIBUTE: &str = "search_sk";

/// A search index: its name, partition key attribute and the attributes
/// it projects besides the keys (none: `KEYS_ONLY`; else `INCLUDE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchIndex {
    pub name: &'static str,
    pub partition: &'static str,
    pub include: &'static [&'static str],
}

/// A tenant's orders; the state projected, so a tenant's search for a
/// state reads only that state's orders whole.
pub const TENANT_INDEX: SearchIndex = SearchIndex {
    name: "search_tenant",
    partition: "search_tenant",
    include: &["state"],
};

/// The orders of a state (sharded); every state's merged: all orders.
pub const STATE_INDEX: SearchIndex = SearchIndex {
    name: "search_state",
    partition: "search_state",
    include: &[],
};

/// Orders by the customer's e-mail (hashed), and job records by their
/// tracking number (hashed).
pub const LOOKUP_INDEX: SearchIndex = SearchIndex {
    name: "search_lookup",
    partition: "search_lookup",
    include: &[],
};

/// Orders by the tenant's reference (hashed), every tenant's.
pub const REFERENCE_INDEX: SearchIndex = SearchIndex {
    name: "search_reference",
    partition: "search_reference",
    include: &[],
};

/// Every search index: what the table must define (the template's
/// `OrdersTable`, the emulator tests' table).
pub const INDEXES: [SearchIndex; 4] = [TENANT_INDEX, STATE_INDEX, LOOKUP_INDEX, REFERENCE_INDEX];

/// The partitions each state's entries are spread over.
pub const STATE_SHARDS: u32 = 2;

/// The most orders a page holds, as on SQLite.
const MAX_PAGE: usize = 200;

/// Orders read whole at once.
const READ_AT_ONCE: usize = 16;

/// The most entries one `Query` page asks for.
const MAX_QUERY_PAGE: i32 = 1000;

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The lookup key of an e-mail address: never the address itself.
pub fn email_key(email: &str) -> String {
    format!("EMAIL#{}", sha256_hex(&email.to_lowercase()))
}

/// The lookup key of a parcel's tracking number.
pub fn tracking_key(tracking: &str) -> String {
    format!("TRACKING#{}", sha256_hex(tracking))
}

/// The key of a tenant's reference.
pub fn reference_key(reference: &str) -> String {
    format!("REF#{}", sha256_hex(reference))
}

/// A time as a sort key: nanoseconds since 1970, 20 digits (times
/// outside 1970..5138 are clamped; no order is placed there).
fn time_key(at: OffsetDateTime) -> String {
    let ns = at
        .unix_timestamp_nanos()
        .clamp(0, 99_999_999_999_999_999_999);
    format!("{ns:020}")
}

fn sort_key(at: OffsetDateTime, id: &OrderId) -> String {
    format!("{}#{id}", time_key(at))
}

fn state_shard(id: &OrderId) -> u32 {
    id.as_str()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % STATE_SHARDS
}

fn state_partition(state: OrderState, shard: u32) -> String {
    format!("{}#{shard}", state.as_str())
}

/// The search attributes of an order's item.
pub(super) fn add_order_attributes(order: &Order, item: &mut Item) {
    item.insert(
        SORT_ATTRIBUTE.into(),
        s(sort_key(order.created_at, &order.id)),
    );
    item.insert(TENANT_INDEX.partition.into(), s(order.tenant.as_str()));
    item.insert(
        STATE_INDEX.partition.into(),
        s(state_partition(order.state, state_shard(&order.id))),
    );
    item.insert(
        LOOKUP_INDEX.partition.into(),
        s(email_key(&order.customer.email)),
    );
    if let Some(reference) = &order.reference {
        item.insert(
            REFERENCE_INDEX.partition.into(),
            s(reference_key(reference)),
        );
    }
}

/// The search attributes of a job record's item: its tracking number's,
/// once it has one.
pub(super) fn add_job_attributes(job: &JobRecord, item: &mut Item) {
    if let Some(tracking) = &job.tracking {
        item.insert(LOOKUP_INDEX.partition.into(), s(tracking_key(tracking)));
        item.insert(SORT_ATTRIBUTE.into(), s(format!("JOB#{}", job.job_id)));
    }
}

/// The `search_sk` range a query allows: at or after `low`, before `high`.
#[derive(Debug, Clone, Default)]
struct Bounds {
    low: Option<String>,
    high: Option<String>,
}

impl Bounds {
    fn of(q: &SearchQuery) -> Bounds {
        let day_start = |d: time::Date| time_key(d.midnight().assume_utc());
        let to = q.to.and_then(|d| d.next_day()).map(day_start);
        let after = q.after.as_ref().map(|(at, id)| sort_key(*at, id));
        Bounds {
            low: q.from.map(day_start),
            high: match (to, after) {
                (Some(to), Some(after)) => Some(to.min(after)),
                (to, after) => to.or(after),
            },
        }
    }

    /// Nothing can be in the range.
    fn is_empty(&self) -> bool {
        matches!((&self.low, &self.high), (Some(low), Some(high)) if low >= high)
    }
}

/// An index entry: the order it stands for, where it sorts, and its
/// projected state (if the index projects it).
#[derive(Debug, Clone)]
struct Entry {
    sort: String,
    tenant: TenantId,
    id: OrderId,
    state: Option<String>,
}

fn entry_of(item: &Item) -> Result<Entry, StoreError> {
    let sort = item
        .get(SORT_ATTRIBUTE)
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| anyhow!("a search index entry without its {SORT_ATTRIBUTE}"))?;
    let (tenant, id) =
        order_of_pk(item).ok_or_else(|| anyhow!("a search index entry without an order key"))?;
    Ok(Entry {
        sort: sort.clone(),
        tenant,
        id,
        state: item.get("state").and_then(|v| v.as_s().ok()).cloned(),
    })
}

/// One partition of an index, read newest first a page at a time.
struct Partition {
    index: &'static SearchIndex,
    key: String,
    start: Option<Item>,
    done: bool,
    page: i32,
    buffer: VecDeque<Entry>,
}

impl Partition {
    fn new(index: &'static SearchIndex, key: String, page: usize) -> Partition {
        Partition {
            index,
            key,
            start: None,
            done: false,
            page: i32::try_from(page)
                .unwrap_or(MAX_QUERY_PAGE)
                .clamp(1, MAX_QUERY_PAGE),
            buffer: VecDeque::new(),
        }
    }

    /// Reads pages until an entry is buffered or the partition is read.
    async fn fill(mut self, store: DynamoStore, bounds: Bounds) -> Result<Partition, StoreError> {
        while self.buffer.is_empty() && !self.done {
            let mut query = store
                .client
                .query()
                .table_name(&store.table)
                .index_name(self.index.name)
                .expression_attribute_names("#p", self.index.partition)
                .expression_attribute_values(":p", s(self.key.clone()))
                .scan_index_forward(false)
                .limit(self.page)
                .set_exclusive_start_key(self.start.take());
            let condition = match (&bounds.low, &bounds.high) {
                (Some(low), Some(high)) => {
                    query = query
                        .expression_attribute_values(":low", s(low.clone()))
                        .expression_attribute_values(":high", s(high.clone()));
                    "#p = :p AND #s BETWEEN :low AND :high"
                }
                (None, Some(high)) => {
                    query = query.expression_attribute_values(":high", s(high.clone()));
                    "#p = :p AND #s < :high"
                }
                (Some(low), None) => {
                    query = query.expression_attribute_values(":low", s(low.clone()));
                    "#p = :p AND #s >= :low"
                }
                (None, None) => "#p = :p",
            };
            if bounds.low.is_some() || bounds.high.is_some() {
                query = query.expression_attribute_names("#s", SORT_ATTRIBUTE);
            }
            let page = query
                .key_condition_expression(condition)
                .send()
                .await
                .with_context(|| format!("DynamoDB Query of the {} index", self.index.name))?;
            for item in page.items.unwrap_or_default() {
                let entry = entry_of(&item)?;
                // BETWEEN includes its upper end, which the range excludes.
                if bounds.high.as_ref() != Some(&entry.sort) {
                    self.buffer.push_back(entry);
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => self.start = Some(key),
                _ => self.done = true,
            }
            self.page = self.page.saturating_mul(2).min(MAX_QUERY_PAGE);
        }
        Ok(self)
    }
}

/// Index partitions merged newest first.
struct Merge {
    store: DynamoStore,
    bounds: Bounds,
    partitions: Vec<Partition>,
}

impl Merge {
    /// The next entry, newest first; `None` once every partition is read.
    async fn next(&mut self) -> Result<Option<Entry>, StoreError> {
        let (ready, empty): (Vec<Partition>, Vec<Partition>) = std::mem::take(&mut self.partitions)
            .into_iter()
            .partition(|p| !p.buffer.is_empty() || p.done);
        self.partitions = ready;
        let mut reads = tokio::task::JoinSet::new();
        for partition in empty {
            reads.spawn(partition.fill(self.store.clone(), self.bounds.clone()));
        }
        while let Some(filled) = reads.join_next().await {
            self.partitions
                .push(filled.map_err(|e| anyhow!(e).context("a search index read"))??);
        }
        let newest = self
            .partitions
            .iter_mut()
            .filter(|p| !p.buffer.is_empty())
            .max_by(|a, b| a.buffer[0].sort.cmp(&b.buffer[0].sort));
        Ok(newest.and_then(|p| p.buffer.pop_front()))
    }
}

/// Whether `order` is one `q` asks for (every criterion but the tracking
/// number, which picked the candidates).
fn matches(q: &SearchQuery, order: &Order) -> bool {
    let day = order.created_at.to_offset(UtcOffset::UTC).date();
    q.order_id.as_ref().is_none_or(|id| *id == order.id)
        && q.reference
            .as_ref()
            .is_none_or(|r| order.reference.as_ref() == Some(r))
        && q.email
            .as_ref()
            .is_none_or(|e| order.customer.email.to_lowercase() == e.to_lowercase())
        && q.tenant.as_ref().is_none_or(|t| *t == order.tenant)
        && q.state.is_none_or(|s| s == order.state)
        && q.from.is_none_or(|from| day >= from)
        && q.to.is_none_or(|to| day <= to)
        && q.after
            .as_ref()
            .is_none_or(|(at, id)| (order.created_at, order.id.as_str()) < (*at, id.as_str()))
}

/// Whether an entry can be one `q` asks for, from what the index holds.
fn may_match(q: &SearchQuery, entry: &Entry) -> bool {
    q.tenant.as_ref().is_none_or(|t| *t == entry.tenant)
        && q.order_id.as_ref().is_none_or(|id| *id == entry.id)
        && match (q.state, &entry.state) {
            (Some(wanted), Some(projected)) => wanted.as_str() == projected,
            _ => true,
        }
}

/// The orders of `refs`, read whole (consistently) a few at once, in the
/// order of `refs`; an order gone since its entry was read is left out.
async fn read_orders(
    store: &DynamoStore,
    refs: &[(TenantId, OrderId)],
) -> Result<Vec<Order>, StoreError> {
    use crate::ports::OrderStore;
    let mut orders = Vec::with_capacity(refs.len());
    for chunk in refs.chunks(READ_AT_ONCE) {
        let mut reads = tokio::task::JoinSet::new();
        for (i, (tenant, id)) in chunk.iter().enumerate() {
            let (store, tenant, id) = (store.clone(), tenant.clone(), id.clone());
            reads.spawn(async move { (i, store.get(&tenant, &id).await) });
        }
        let mut read = Vec::with_capacity(chunk.len());
        while let Some(done) = reads.join_next().await {
            let (i, order) = done.map_err(|e| anyhow!(e).context("an order read"))?;
            read.push((i, order?));
        }
        read.sort_by_key(|(i, _)| *i);
        orders.extend(read.into_iter().filter_map(|(_, order)| order));
    }
    Ok(orders)
}

fn newest_first(orders: &mut [Order]) {
    orders.sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
}

/// The orders a tracking number's job records belong to, each once.
async fn tracked_orders(
    store: &DynamoStore,
    tracking: &str,
) -> Result<Vec<(TenantId, OrderId)>, StoreError> {
    let key = tracking_key(tracking);
    let items = store
        .query_pages(|| {
            store
                .client
                .query()
                .table_name(&store.table)
                .index_name(LOOKUP_INDEX.name)
                .key_condition_expression("#p = :p")
                .expression_attribute_names("#p", LOOKUP_INDEX.partition)
                .expression_attribute_values(":p", s(key.clone()))
        })
        .await?;
    let mut seen = BTreeSet::new();
    let mut refs = Vec::new();
    for item in &items {
        let (tenant, id) = order_of_pk(item)
            .ok_or_else(|| anyhow!("a tracking index entry without an order key"))?;
        if seen.insert((tenant.to_string(), id.to_string())) {
            refs.push((tenant, id));
        }
    }
    Ok(refs)
}

/// The index partitions that hold every order `q` may find, when it has
/// neither a tracking number nor an order id.
fn partitions_for(q: &SearchQuery, limit: usize) -> Vec<Partition> {
    let one =
        |index: &'static SearchIndex, key: String| vec![Partition::new(index, key, limit + 1)];
    if let Some(email) = &q.email {
        return one(&LOOKUP_INDEX, email_key(email));
    }
    if let Some(reference) = &q.reference {
        return one(&REFERENCE_INDEX, reference_key(reference));
    }
    if let Some(tenant) = &q.tenant {
        return one(&TENANT_INDEX, tenant.to_string());
    }
    let states: Vec<OrderState> = match q.state {
        Some(state) => vec![state],
        None => OrderState::ALL.to_vec(),
    };
    let count = states.len() * STATE_SHARDS as usize;
    // A first page of about the share of the page each partition holds;
    // a partition read further reads twice as much each time.
    let first = (limit + 1).div_ceil(count) + 1;
    states
        .into_iter()
        .flat_map(|state| {
            (0..STATE_SHARDS).map(move |shard| {
                Partition::new(&STATE_INDEX, state_partition(state, shard), first)
            })
        })
        .collect()
}

/// [`OpsStore::search`] on DynamoDB (module docs).
pub(super) async fn search(store: &DynamoStore, q: &SearchQuery) -> Result<SearchPage, StoreError> {
    let limit = q.limit.clamp(1, MAX_PAGE);
    let bounds = Bounds::of(q);
    if bounds.is_empty() {
        return Ok(SearchPage {
            orders: Vec::new(),
            more: false,
        });
    }
    let mut found = if q.tracking.is_some() || q.order_id.is_some() {
        let mut orders = match (&q.tracking, &q.order_id) {
            (Some(tracking), _) => {
                let refs: Vec<_> = tracked_orders(store, tracking)
                    .await?
                    .into_iter()
                    .filter(|(_, id)| q.order_id.as_ref().is_none_or(|wanted| wanted == id))
                    .collect();
                read_orders(store, &refs).await?
            }
            (None, Some(id)) => store.find_order(id).await?.into_iter().collect(),
            (None, None) => Vec::new(),
        };
        orders.retain(|o| matches(q, o));
        newest_first(&mut orders);
        orders.truncate(limit + 1);
        orders
    } else {
        let mut merge = Merge {
            store: store.clone(),
            bounds,
            partitions: partitions_for(q, limit),
        };
        let mut found = Vec::with_capacity(limit + 1);
        let mut read_all = false;
        // An order changing state may be under both states for a moment.
        let mut seen = BTreeSet::new();
        while found.len() <= limit && !read_all {
            // As many candidates as orders are still wanted, read at once.
            let mut candidates = Vec::new();
            while candidates.len() < limit + 1 - found.len() {
                match merge.next().await? {
                    Some(entry) if may_match(q, &entry) && seen.insert(entry.sort.clone()) => {
                        candidates.push((entry.tenant, entry.id))
                    }
                    Some(_) => {}
                    None => {
                        read_all = true;
                        break;
                    }
                }
            }
            for order in read_orders(store, &candidates).await? {
                if found.len() <= limit && matches(q, &order) {
                    found.push(order);
                }
            }
        }
        found
    };
    let more = found.len() > limit;
    found.truncate(limit);
    Ok(SearchPage {
        orders: found,
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Catalog;
    use crate::domain::locale::{CountryCode, Locale};
    use crate::domain::money::Currency;
    use crate::domain::tenant::{PaymentSetup, Tenant, TenantKind};

    fn order(email: &str, reference: Option<&str>) -> Order {
        let tenant = Tenant {
            id: TenantId::parse("acme-prints").unwrap(),
            name: "Acme Prints".into(),
            kind: TenantKind::B2b,
            brand: "acme".into(),
            countries: CountryCode::ALL.to_vec(),
            currencies: vec![Currency::Eur],
            default_locale: Locale::De,
            payment: PaymentSetup::Invoice,
            notifications: Default::default(),
        };
        let request = serde_json::from_value(serde_json::json!({
            "locale": "de", "currency": "EUR", "reference": reference,
            "customer": {"name": "Erika Muster", "email": email},
            "shipping": {"method": "standard", "address": {
                "name": "Erika Muster", "line1": "Heidestr. 17", "postal_code": "10115",
                "city": "Musterstadt", "country": "DE"}},
            "items": [{"sku": "poster-30x40", "quantity": 1,
                       "images": [{"url": "https://photos.example.com/a.jpg"}]}],
        }))
        .unwrap();
        let now = time::macros::datetime!(2026-11-20 09:30:15.123456789 UTC);
        Order::place(Catalog::builtin(), &tenant, &request, now)
            .unwrap()
            .0
    }

    /// Every index key and sort key of an order's item, and of a shipped
    /// job's: none holds the e-mail address or any part of it, whatever
    /// its case; the same address in another case has the same key.
    #[test]
    fn no_index_key_holds_the_email_address() {
        let email = "Jane.Doe@Example.COM";
        let placed = order(email, Some("PO-17"));
        let item = super::super::order_item(&placed).unwrap();
        let mut keys: Vec<String> = INDEXES
            .iter()
            .map(|i| i.partition)
            .chain([SORT_ATTRIBUTE])
            .filter_map(|name| item.get(name))
            .map(|v| v.as_s().unwrap().clone())
            .collect();
        assert_eq!(keys.len(), 5, "{item:?}");
        let job = JobRecord {
            job_id: format!("{}-1-1", placed.id),
            line: 1,
            copy: 1,
            attempt: 1,
            plant: None,
            status: Some(crate::domain::production::JobState::Shipped),
            status_at: Some(placed.created_at),
            carrier: Some("DHL".into()),
            tracking: Some("JJD000390007".into()),
            reason: None,
        };
        let job_item = super::super::job_item(&placed.tenant, &placed.id, &job).unwrap();
        assert_eq!(
            job_item
                .get(LOOKUP_INDEX.partition)
                .unwrap()
                .as_s()
                .unwrap(),
            &tracking_key("JJD000390007")
        );
        assert_eq!(
            job_item.get(SORT_ATTRIBUTE).unwrap().as_s().unwrap(),
            &format!("JOB#{}", job.job_id)
        );
        let unshipped = JobRecord {
            tracking: None,
            ..job.clone()
        };
        let unshipped = super::super::job_item(&placed.tenant, &placed.id, &unshipped).unwrap();
        assert!(!unshipped.contains_key(LOOKUP_INDEX.partition));
        keys.extend(
            [LOOKUP_INDEX.partition, SORT_ATTRIBUTE]
                .iter()
                .map(|name| job_item[*name].as_s().unwrap().clone()),
        );
        for key in &keys {
            let lower = key.to_lowercase();
            for part in ["jane", "doe", "example", "jane.doe@example.com"] {
                assert!(!lower.contains(part), "{key} holds {part}");
            }
        }
        keys.sort();
        assert!(keys.contains(&email_key("jane.doe@example.com")));
        assert_eq!(email_key(email), email_key(&email.to_lowercase()));
        assert_eq!(
            item.get(SORT_ATTRIBUTE).unwrap().as_s().unwrap(),
            &format!(
                "{:020}#{}",
                placed.created_at.unix_timestamp_nanos(),
                placed.id
            )
        );
    }
}
