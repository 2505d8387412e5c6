use super::bus::{LocalBus, QueueConfig};
use super::db::{Db, Durability};
use super::store::SqliteStore;
use crate::clock::ManualClock;
use crate::domain::catalog::Catalog;
use crate::domain::events::EventType;
use crate::domain::locale::{CountryCode, Locale};
use crate::domain::money::Currency;
use crate::domain::order::{Order, OrderRequest};
use crate::domain::state::OrderState;
use crate::domain::tenant::{PaymentSetup, Tenant, TenantId, TenantKind};
use crate::ports::{
    Clock, IdempotencyRecord, JobWrite, NewOrder, OrderStore, PlaceOutcome, ProductionStore,
    StoreError, StoredResponse,
};
use std::sync::Arc;
use std::time::Duration;

fn tenant() -> Tenant {
    Tenant {
        id: TenantId::parse("acme").unwrap(),
        name: "ACME".into(),
        kind: TenantKind::B2b,
        brand: "acme".into(),
        countries: CountryCode::ALL.to_vec(),
        currencies: vec![Currency::Eur],
        default_locale: Locale::En,
        payment: PaymentSetup::Invoice,
        notifications: Default::default(),
    }
}

fn new_order(key: &str, hash: &str) -> NewOrder {
    let request: OrderRequest = serde_json::from_value(serde_json::json!({
        "locale": "en", "currency": "EUR",
        "customer": {"name": "A", "email": "a@example.com"},
        "shipping": {"method": "standard", "address": {"name": "A", "line1": "B 1", "postal_code": "10115", "city": "Berlin", "country": "DE"}},
        "items": [{"sku": "photo-10x15", "quantity": 3, "images": [{"url": "https://example.com/a.jpg"}]}]
    }))
    .unwrap();
    let (order, events) = Order::place(
        Catalog::builtin(),
        &tenant(),
        &request,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let body = serde_json::to_string(&order).unwrap();
    NewOrder {
        order,
        events,
        idempotency: IdempotencyRecord {
            key: key.into(),
            request_hash: hash.into(),
            response: StoredResponse { status: 201, body },
        },
    }
}

fn setup() -> (tempfile::TempDir, Arc<Db>, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path().join("pw.sqlite"), Durability::Normal).unwrap());
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2026-11-22 10:00:00 UTC),
    ));
    (dir, db, clock)
}

#[tokio::test]
async fn order_events_and_key_commit_together_and_replay() {
    let (_dir, db, clock) = setup();
    let store = SqliteStore::new(db.clone());
    let bus = LocalBus::new(db.clone(), clock);
    let first = new_order("k1", "h1");
    let id = first.order.id.clone();
    assert_eq!(
        store.place(first.clone()).await.unwrap(),
        PlaceOutcome::Created
    );
    assert_eq!(
        bus.outbox_len().await.unwrap(),
        2,
        "OrderPlaced and OrderPaid in the outbox"
    );

    // same key, same hash: the stored response, and nothing new written
    let again = new_order("k1", "h1");
    match store.place(again.clone()).await.unwrap() {
        PlaceOutcome::Replayed(r) => assert!(r.body.contains(id.as_str())),
        other => panic!("{other:?}"),
    }
    assert!(
        store
            .get(&tenant().id, &again.order.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(bus.outbox_len().await.unwrap(), 2);
    // same key, other body
    assert_eq!(
        store.place(new_order("k1", "h2")).await.unwrap(),
        PlaceOutcome::KeyReused
    );
    // another tenant never sees it
    assert!(
        store
            .get(&TenantId::parse("other").unwrap(), &id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.get(&tenant().id, &id).await.unwrap().unwrap().state,
        OrderState::Paid
    );
}

#[tokio::test]
async fn transition_is_conditional_on_the_observed_rank_and_version() {
    let (_dir, db, _clock) = setup();
    let store = SqliteStore::new(db);
    let placed = new_order("k", "h");
    store.place(placed.clone()).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (cancelled, event) = placed.order.cancel("customer_request", now).unwrap();
    // An observation of another rank loses.
    let mut other_rank = placed.order.clone();
    other_rank.state = OrderState::Placed;
    let mut next = other_rank.successor(now);
    next.state = OrderState::Cancelled;
    let stale = store
        .transition(&next, &other_rank, vec![event.clone()])
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    // A write that is not the successor of what it read is refused outright.
    let skipped = store.transition(&placed.order, &placed.order, vec![]).await;
    assert!(
        matches!(skipped, Err(StoreError::Unexpected(_))),
        "{skipped:?}"
    );
    store
        .transition(&cancelled, &placed.order, vec![event])
        .await
        .unwrap();
    // A second writer that read the same version loses, even where the rank
    // would not tell (the same state, another change).
    let mut late = placed.order.successor(now);
    late.reference = Some("late".into());
    let lost = store.transition(&late, &placed.order, vec![]).await;
    assert!(matches!(lost, Err(StoreError::Conflict)), "{lost:?}");
    let stored = store
        .get(&tenant().id, &placed.order.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.state, stored.version), (OrderState::Cancelled, 1));
}

#[tokio::test]
async fn concurrent_writes_with_one_key_create_one_order() {
    let (_dir, db, _clock) = setup();
    let store = SqliteStore::new(db.clone());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.place(new_order("same", "h")).await.unwrap()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == PlaceOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.count_orders().await.unwrap(), 1);
}

#[tokio::test]
async fn relay_fans_out_by_type_and_queues_redeliver_then_dead_letter() {
    let (_dir, db, clock) = setup();
    let store = SqliteStore::new(db.clone());
    let bus = LocalBus::new(db.clone(), clock.clone());
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(30),
        max_receive_count: 3,
        dead_letter: Some("render-dlq".into()),
    };
    bus.declare_queue("render", config).await.unwrap();
    bus.declare_queue(
        "audit",
        QueueConfig {
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
            dead_letter: None,
        },
    )
    .await
    .unwrap();
    bus.subscribe("render", Some(&[EventType::OrderPaid]))
        .await
        .unwrap();
    bus.subscribe("audit", None).await.unwrap();

    store.place(new_order("k", "h")).await.unwrap();
    assert_eq!(bus.relay_outbox(100).await.unwrap(), 2);
    assert_eq!(bus.outbox_len().await.unwrap(), 0);
    assert_eq!(
        bus.depth("audit").await.unwrap(),
        2,
        "unfiltered queue gets both events"
    );
    assert_eq!(
        bus.depth("render").await.unwrap(),
        1,
        "filtered queue gets OrderPaid only"
    );

    let got = bus.receive("render", 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event_type, "OrderPaid");
    // invisible while in flight
    assert!(bus.receive("render", 10).await.unwrap().is_empty());
    clock.advance(Duration::from_secs(29));
    assert!(bus.receive("render", 10).await.unwrap().is_empty());
    // redelivered after the visibility timeout, with a new receipt
    clock.advance(Duration::from_secs(2));
    let again = bus.receive("render", 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, got[0].message_id);
    assert_eq!(again[0].receive_count, 2);
    assert!(
        !bus.delete(&got[0].receipt).await.unwrap(),
        "a stale receipt deletes nothing"
    );
    // third receive, then it is dead-lettered instead of a fourth delivery
    clock.advance(Duration::from_secs(31));
    assert_eq!(bus.receive("render", 10).await.unwrap()[0].receive_count, 3);
    clock.advance(Duration::from_secs(31));
    assert!(bus.receive("render", 10).await.unwrap().is_empty());
    assert_eq!(bus.depth("render").await.unwrap(), 0);
    let dead = bus.receive("render-dlq", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, got[0].message_id);

    // delete with the current receipt removes it for good
    let audit = bus.receive("audit", 10).await.unwrap();
    for m in &audit {
        assert!(bus.delete(&m.receipt).await.unwrap());
    }
    clock.advance(Duration::from_secs(60));
    assert!(bus.receive("audit", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_message_made_visible_again_is_redelivered_at_once() {
    let (_dir, db, clock) = setup();
    let store = SqliteStore::new(db.clone());
    let bus = LocalBus::new(db.clone(), clock.clone());
    bus.declare_queue(
        "q",
        QueueConfig {
            visibility_timeout: Duration::from_secs(300),
            max_receive_count: 5,
            dead_letter: None,
        },
    )
    .await
    .unwrap();
    bus.subscribe("q", Some(&[EventType::OrderPlaced]))
        .await
        .unwrap();
    store.place(new_order("k", "h")).await.unwrap();
    bus.relay_outbox(10).await.unwrap();
    let m = bus.receive("q", 1).await.unwrap().remove(0);
    assert!(
        bus.change_visibility(&m.receipt, Duration::ZERO)
            .await
            .unwrap()
    );
    assert_eq!(bus.receive("q", 1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn committed_orders_survive_reopening_the_file() {
    let (dir, db, _clock) = setup();
    let store = SqliteStore::new(db.clone());
    let placed = new_order("k", "h");
    store.place(placed.clone()).await.unwrap();
    db.close();
    drop(store);
    drop(db);
    let db = Arc::new(Db::open(dir.path().join("pw.sqlite"), Durability::Full).unwrap());
    let store = SqliteStore::new(db);
    assert!(
        store
            .get(&tenant().id, &placed.order.id)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn presigned_blob_urls_check_signature_expiry_type_and_length() {
    use super::blobs::{BlobAccessError, FsBlobStore};
    use crate::ports::BlobStore;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2026-11-22 10:00:00 UTC),
    ));
    let blobs = FsBlobStore::open(dir.path(), "http://127.0.0.1:9", clock.clone()).unwrap();
    let put = blobs
        .presign_put(
            "uploads/acme/upl_1",
            "image/jpeg",
            5,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let query = |url: &str| -> std::collections::BTreeMap<String, String> {
        url.split_once('?')
            .unwrap()
            .1
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.replace("%2F", "/"))
            })
            .collect()
    };
    let q = query(&put.url);
    assert!(
        blobs
            .authorize_put("uploads/acme/upl_1", &q, Some("image/jpeg"), Some(5))
            .is_ok()
    );
    assert_eq!(
        blobs.authorize_put("uploads/acme/upl_1", &q, Some("image/png"), Some(5)),
        Err(BlobAccessError::Mismatch("Content-Type"))
    );
    assert_eq!(
        blobs.authorize_put("uploads/acme/upl_1", &q, Some("image/jpeg"), Some(6)),
        Err(BlobAccessError::Mismatch("Content-Length"))
    );
    assert_eq!(
        blobs.authorize_put("uploads/other/upl_1", &q, Some("image/jpeg"), Some(5)),
        Err(BlobAccessError::BadSignature)
    );
    let mut forged = q.clone();
    forged.insert("len".into(), "50000000".into());
    assert_eq!(
        blobs.authorize_put(
            "uploads/acme/upl_1",
            &forged,
            Some("image/jpeg"),
            Some(50000000)
        ),
        Err(BlobAccessError::BadSignature)
    );
    assert_eq!(
        blobs.authorize_put("../etc/passwd", &q, Some("image/jpeg"), Some(5)),
        Err(BlobAccessError::BadKey)
    );
    // the signing key beside the blobs is never a blob
    assert!(
        blobs
            .presign_get(".signing-key", Duration::from_secs(60))
            .await
            .is_err()
    );
    assert_eq!(
        blobs.authorize_get(".signing-key", &q),
        Err(BlobAccessError::BadKey)
    );
    assert!(blobs.get("uploads/.tmp-x").await.is_err());
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        blobs.authorize_put("uploads/acme/upl_1", &q, Some("image/jpeg"), Some(5)),
        Err(BlobAccessError::Expired)
    );

    blobs
        .put("prints/acme/x.jpg", b"hello".to_vec(), "image/jpeg")
        .await
        .unwrap();
    assert_eq!(
        blobs.get("prints/acme/x.jpg").await.unwrap().unwrap(),
        b"hello"
    );
    let get = blobs
        .presign_get("prints/acme/x.jpg", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        blobs
            .authorize_get("prints/acme/x.jpg", &query(&get.url))
            .is_ok()
    );
    assert!(blobs.get("prints/acme/missing").await.unwrap().is_none());
    let _ = clock.now();
}

#[tokio::test]
async fn a_version_1_database_gains_order_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    let placed = new_order("k", "h");
    {
        // The orders table as schema version 1 made it, with one order.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE orders (tenant_id TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, rank INTEGER NOT NULL,
               doc TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (tenant_id, id));
             PRAGMA user_version = 1;",
        )
        .unwrap();
        let mut doc = serde_json::to_value(&placed.order).unwrap();
        doc.as_object_mut().unwrap().remove("version");
        c.execute(
            "INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5, 't', 't')",
            rusqlite::params![
                placed.order.tenant.as_str(),
                placed.order.id.as_str(),
                placed.order.state.as_str(),
                placed.order.rank(),
                doc.to_string()
            ],
        )
        .unwrap();
    }
    let db = Arc::new(Db::open(&path, Durability::Normal).unwrap());
    let store = SqliteStore::new(db.clone());
    let old = store
        .get(&tenant().id, &placed.order.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.version, 0);
    let (cancelled, event) = old
        .cancel("customer_request", time::OffsetDateTime::now_utc())
        .unwrap();
    store
        .transition(&cancelled, &old, vec![event])
        .await
        .unwrap();
    let now = store.get(&tenant().id, &old.id).await.unwrap().unwrap();
    assert_eq!((now.state, now.version), (OrderState::Cancelled, 1));
    db.close();
}

#[tokio::test]
async fn the_fault_switch_duplicates_messages_crashes_the_relay_and_refuses_calls() {
    use crate::faults::{FaultPlan, Faults, Outage};
    let (_dir, db, clock) = setup();
    let store = SqliteStore::new(db.clone());
    let plan = FaultPlan {
        duplicate_deliveries: true,
        publisher_crashes: 1.0,
        ..FaultPlan::default()
    };
    let faults = Faults::on(plan);
    let bus = LocalBus::new(db.clone(), clock.clone()).with_faults(faults.clone());
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(30),
        max_receive_count: 5,
        dead_letter: None,
    };
    bus.declare_queue("audit", config.clone()).await.unwrap();
    bus.subscribe("audit", None).await.unwrap();
    // Nothing to relay: no crash is rolled or counted.
    assert_eq!(bus.relay_outbox(100).await.unwrap(), 0);
    assert_eq!(faults.counts().publisher_crashes, 0);

    store.place(new_order("k", "h")).await.unwrap();
    // Published (two copies of each of the two events), then crashed
    // before the outbox rows were deleted: the next relay publishes again.
    assert!(bus.relay_outbox(100).await.is_err());
    assert_eq!(bus.depth("audit").await.unwrap(), 4);
    assert_eq!(bus.outbox_len().await.unwrap(), 2);
    assert!(bus.relay_outbox(100).await.is_err());
    assert_eq!(bus.depth("audit").await.unwrap(), 8);
    let counts = faults.counts();
    assert_eq!(
        (counts.publisher_crashes, counts.duplicate_deliveries),
        (2, 4)
    );
    // A direct send is duplicated too; the ids returned are the originals'.
    let ids = bus
        .send("audit", "message", &["a".to_string()])
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(bus.depth("audit").await.unwrap(), 10);

    // An outage refuses every queue call; reads of the depth still work.
    let down = Faults::on(FaultPlan {
        queues_down: Some(Outage {
            lasting: Duration::from_secs(3600),
            every: Duration::from_secs(7200),
            phase: Duration::ZERO,
        }),
        ..FaultPlan::default()
    });
    let bus = LocalBus::new(db.clone(), clock.clone()).with_faults(down.clone());
    assert!(bus.receive("audit", 10).await.is_err());
    assert!(
        bus.send("audit", "message", &["b".to_string()])
            .await
            .is_err()
    );
    assert!(bus.relay_outbox(100).await.is_err());
    assert!(bus.delete("receipt").await.is_err());
    assert_eq!(
        bus.depth("audit").await.unwrap(),
        10,
        "nothing lost or added"
    );
    assert_eq!(down.counts().queue_outages, 4);
    db.close();
}

/// A plant's report writes the one job and the production record (the
/// order only when its state changes), conditional on the revision read;
/// `get` assembles the whole order again.
#[tokio::test]
async fn a_job_report_writes_its_job_and_the_production_record_only() {
    use crate::domain::job_records::{ReportOutcome, apply_report};
    use crate::domain::production::{JobState, JobStatusReport};
    let (_dir, db, _clock) = setup();
    let store = SqliteStore::new(db.clone());
    let now = time::macros::datetime!(2026-12-06 10:00:00 UTC);
    let items: Vec<(&str, u32)> = (0..10).map(|_| ("poster-30x40", 20)).collect();
    let dispatched = crate::testing::stored_dispatched(&store, &items, now).await;
    let tenant = dispatched.tenant.clone();
    let plant = dispatched.production.as_ref().unwrap().plant.clone();
    let rows = |table: &'static str| {
        let db = db.clone();
        async move {
            db.read(move |c| {
                c.query_row(
                    &format!("SELECT COUNT(*), COALESCE(MAX(LENGTH(doc)), 0) FROM {table}"),
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .map_err(|e| StoreError::Unexpected(e.into()))
            })
            .await
            .unwrap()
        }
    };
    // 200 jobs, none heard of: one production record of 10 runs, no job rows.
    assert_eq!(rows("productions").await.0, 1);
    assert_eq!(rows("jobs").await.0, 0);
    let order_doc = rows("orders").await.1;
    assert_eq!(
        store.get(&tenant, &dispatched.id).await.unwrap().unwrap(),
        dispatched_stored(&dispatched)
    );

    let job_id = dispatched.production.as_ref().unwrap().jobs[57]
        .job_id
        .clone();
    let report = JobStatusReport {
        job_id: job_id.clone(),
        plant: plant.clone(),
        tenant: tenant.clone(),
        order_id: dispatched.id.clone(),
        status: JobState::Printing,
        at: now,
        carrier: None,
        tracking: None,
        reason: None,
    };
    let view = store
        .job_view(&tenant, &dispatched.id, &job_id)
        .await
        .unwrap()
        .unwrap();
    assert!(view.job.is_none());
    assert_eq!(view.record.revision, 1);
    let ReportOutcome::Changed(change) =
        apply_report(&view.order, &view.record, view.job.as_ref(), &report, now)
    else {
        panic!("a first report changes its job")
    };
    let next_order = change.order.clone().expect("production starts");
    let write = JobWrite {
        tenant: tenant.clone(),
        order_id: dispatched.id.clone(),
        job: change.job.clone(),
        record: change.record.clone(),
        observed_revision: view.record.revision,
        order: Some((next_order, view.order.clone())),
        events: change.events.clone(),
        plant: plant.clone(),
        open_jobs_delta: change.closed,
        shipped: false,
    };
    store.record_job(write.clone()).await.unwrap();
    // The same write again (a second handler that read the same): refused.
    assert!(matches!(
        store.record_job(write).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(rows("jobs").await.0, 1);
    let job_doc = rows("jobs").await.1;
    assert!(job_doc < 400, "a job record of {job_doc} bytes");
    let whole = store.get(&tenant, &dispatched.id).await.unwrap().unwrap();
    assert_eq!(whole.state, OrderState::InProduction);
    let jobs = &whole.production.as_ref().unwrap().jobs;
    assert_eq!(jobs.len(), 200);
    assert_eq!(jobs[57].status, Some(JobState::Printing));
    assert_eq!(jobs.iter().filter(|j| j.status.is_some()).count(), 1);
    assert_eq!(whole.production.as_ref().unwrap().revision, 2);
    // The order's own row stays as small as it was (no jobs in it).
    assert!(rows("orders").await.1 < order_doc + 200);

    // A whole-order writer that read revision 1 loses to the report.
    let mut stale = dispatched_stored(&dispatched);
    let mut late = stale.successor(now);
    late.production.as_mut().unwrap().jobs[3].status = Some(JobState::Accepted);
    stale.version = whole.version;
    late.version = whole.version + 1;
    late.state = whole.state;
    stale.state = whole.state;
    assert!(matches!(
        store.transition(&late, &stale, vec![]).await,
        Err(StoreError::Conflict)
    ));
}

/// The order as `get` returns it after dispatch: its production record
/// was written once (revision 1).
fn dispatched_stored(order: &Order) -> Order {
    let mut stored = order.clone();
    stored.production.as_mut().unwrap().revision = 1;
    stored
}

/// `order` written back as schema v4 kept it: the whole order, its jobs
/// inside, in `orders.doc`, and no production record apart.
async fn store_as_legacy(db: &Arc<Db>, order: &Order) {
    let doc = serde_json::to_string(order).unwrap();
    let (t, i) = (
        order.tenant.as_str().to_string(),
        order.id.as_str().to_string(),
    );
    db.write(move |c| {
        let sql = |e: rusqlite::Error| StoreError::Unexpected(e.into());
        c.execute(
            "DELETE FROM productions WHERE tenant_id = ?1 AND order_id = ?2",
            rusqlite::params![t, i],
        )
        .map_err(sql)?;
        c.execute(
            "DELETE FROM jobs WHERE tenant_id = ?1 AND order_id = ?2",
            rusqlite::params![t, i],
        )
        .map_err(sql)?;
        c.execute(
            "UPDATE orders SET doc = ?1 WHERE tenant_id = ?2 AND id = ?3",
            rusqlite::params![doc, t, i],
        )
        .map_err(sql)?;
        Ok(())
    })
    .await
    .unwrap();
}

/// An order stored by an earlier version, its jobs inside its document:
/// read whole, a report applied to the whole order (`job_view` has none),
/// and its production moved out by that write.
#[tokio::test]
async fn an_order_stored_with_its_jobs_inside_is_read_and_moved_out_on_its_next_write() {
    use crate::domain::production::{JobState, JobStatusReport, StatusOutcome};
    let (_dir, db, _clock) = setup();
    let store = SqliteStore::new(db.clone());
    let now = time::macros::datetime!(2026-12-06 10:00:00 UTC);
    let dispatched = crate::testing::stored_dispatched(&store, &[("poster-30x40", 3)], now).await;
    let (tenant, id) = (dispatched.tenant.clone(), dispatched.id.clone());
    // As schema v4 kept it: the whole order in `orders.doc`.
    store_as_legacy(&db, &dispatched).await;
    let job = dispatched.production.as_ref().unwrap().jobs[1].clone();
    assert!(
        store
            .job_view(&tenant, &id, &job.job_id)
            .await
            .unwrap()
            .is_none()
    );
    let whole = store.get(&tenant, &id).await.unwrap().unwrap();
    assert_eq!(whole, dispatched);
    let report = JobStatusReport {
        job_id: job.job_id.clone(),
        plant: whole.production.as_ref().unwrap().plant.clone(),
        tenant: tenant.clone(),
        order_id: id.clone(),
        status: JobState::Accepted,
        at: now,
        carrier: None,
        tracking: None,
        reason: None,
    };
    let StatusOutcome::Changed { next, events, .. } = whole.apply_job_status(&report, now) else {
        panic!("a first report changes its job")
    };
    store
        .transition_counted(&next, &whole, events, &report.plant, 0)
        .await
        .unwrap();
    let view = store
        .job_view(&tenant, &id, &job.job_id)
        .await
        .unwrap()
        .expect("moved out: the report's view");
    assert_eq!(view.record.revision, 1);
    assert_eq!(view.job.unwrap().status, Some(JobState::Accepted));
    assert!(view.order.production.is_none());
    let after = store.get(&tenant, &id).await.unwrap().unwrap();
    assert_eq!(after.state, OrderState::InProduction);
    assert_eq!(after.production.as_ref().unwrap().jobs.len(), 3);
}

/// An order stored with its jobs inside and more reported jobs than one
/// write moves out keeps them inside; such a write is refused once a
/// production record is stored apart (an observation from before it).
#[tokio::test]
async fn a_large_legacy_order_keeps_its_jobs_inside_and_never_beside_a_record() {
    use crate::domain::job_records::MOVE_OUT_MAX_JOBS;
    use crate::domain::production::JobState;
    let (_dir, db, _clock) = setup();
    let store = SqliteStore::new(db.clone());
    let now = time::macros::datetime!(2026-12-06 10:00:00 UTC);
    let dispatched = crate::testing::stored_dispatched(&store, &[("poster-30x40", 100)], now).await;
    let (tenant, id) = (dispatched.tenant.clone(), dispatched.id.clone());
    let mut legacy = dispatched.clone();
    for job in legacy.production.as_mut().unwrap().jobs.iter_mut() {
        job.status = Some(JobState::Accepted);
    }
    store_as_legacy(&db, &legacy).await;
    assert!(legacy.production.as_ref().unwrap().jobs.len() > MOVE_OUT_MAX_JOBS);
    let read = store.get(&tenant, &id).await.unwrap().unwrap();
    assert_eq!(read, legacy);
    let mut next = read.successor(now);
    next.reference = Some("po-1".into());
    store.transition(&next, &read, vec![]).await.unwrap();
    let after = store.get(&tenant, &id).await.unwrap().unwrap();
    assert_eq!(after.reference.as_deref(), Some("po-1"));
    assert_eq!(after.production, legacy.production);
    let records = |db: Arc<Db>| async move {
        db.read(|c| {
            c.query_row("SELECT COUNT(*) FROM productions", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| StoreError::Unexpected(e.into()))
        })
        .await
        .unwrap()
    };
    assert_eq!(records(db.clone()).await, 0, "still inside the order");

    // A record stored apart meanwhile: a write from before it is refused.
    let (t, i) = (tenant.as_str().to_string(), id.as_str().to_string());
    db.write(move |c| {
        c.execute(
            "INSERT INTO productions (tenant_id, order_id, revision, doc) VALUES (?1, ?2, 1, '{}')",
            rusqlite::params![t, i],
        )
        .map_err(|e| StoreError::Unexpected(e.into()))?;
        Ok(())
    })
    .await
    .unwrap();
    let mut late = after.successor(now);
    late.reference = Some("po-2".into());
    assert!(matches!(
        store.transition(&late, &after, vec![]).await,
        Err(StoreError::Conflict)
    ));
}

/// The index of orders whose money needs a person, on SQLite: a flagged
/// order is listed from the write that flags it, resolved it leaves the
/// list; and a schema v5 file's flagged orders are listed once it opens
/// as v6 (every flag of then was open).
#[tokio::test]
async fn orders_needing_a_person_are_indexed_and_a_v5_file_is_backfilled() {
    use crate::domain::operator::OperatorId;
    use crate::domain::payment::{PaymentFlag, PaymentLedger};
    use crate::ports::{OpsStore, OpsWrite, PlaceOutcome, ops_scope};
    let now = time::OffsetDateTime::now_utc();
    let flag = |order: &Order| {
        let mut next = order.successor(now);
        next.payment_status
            .get_or_insert_with(PaymentLedger::default)
            .flags
            .push(PaymentFlag {
                event_id: "evt_1".into(),
                code: "amount_mismatch".into(),
                message: "1 EUR is not the total".into(),
                at: now,
                resolved: None,
            });
        next
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v5.sqlite");
    let placed = new_order("k", "h");
    {
        // The orders table of schema v5 (no `attention`) with a flagged order.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE orders (tenant_id TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, rank INTEGER NOT NULL,
               doc TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
               version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, id));
             PRAGMA user_version = 5;",
        )
        .unwrap();
        let flagged = flag(&placed.order);
        c.execute(
            "INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5, 't', 't', ?6)",
            rusqlite::params![
                flagged.tenant.as_str(),
                flagged.id.as_str(),
                flagged.state.as_str(),
                flagged.rank(),
                serde_json::to_string(&flagged).unwrap(),
                flagged.version as i64
            ],
        )
        .unwrap();
    }
    let db = Arc::new(Db::open(&path, Durability::Normal).unwrap());
    let store = SqliteStore::new(db.clone());
    let listed = store.needing_attention(10).await.unwrap();
    assert_eq!(listed.len(), 1, "backfilled from the v5 file");
    let old = listed[0].clone();

    // A new order: listed once flagged, not before.
    let fresh = new_order("k2", "h2");
    let order = fresh.order.clone();
    store.place(fresh).await.unwrap();
    assert_eq!(store.needing_attention(10).await.unwrap().len(), 1);
    let flagged = flag(&order);
    store
        .transition(&flagged, &order, Vec::new())
        .await
        .unwrap();
    assert_eq!(store.needing_attention(10).await.unwrap().len(), 2);

    // Both resolved: none listed.
    let anna = OperatorId::parse("anna").unwrap();
    for (n, current) in [old, flagged].into_iter().enumerate() {
        let acted = current
            .resolve_flag(&anna, 1, "checked with the bank", now)
            .unwrap();
        let outcome = store
            .act(OpsWrite {
                scope: ops_scope(&anna),
                next: acted.next,
                observed: current,
                events: acted.events,
                open_jobs: Default::default(),
                idempotency: crate::ports::IdempotencyRecord {
                    key: format!("resolve-{n}"),
                    request_hash: "h".into(),
                    response: crate::ports::StoredResponse {
                        status: 200,
                        body: "{}".into(),
                    },
                },
            })
            .await
            .unwrap();
        assert_eq!(outcome, PlaceOutcome::Created);
    }
    assert!(store.needing_attention(10).await.unwrap().is_empty());
    db.close();
}

#[tokio::test]
async fn a_version_8_file_counts_deferrals_after_the_upgrade() {
    use crate::domain::notify::Channel;
    use crate::ports::NotificationStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v8.sqlite");
    {
        // The counters of schema v8 (no `deferred`) with a day counted.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE notify_counters (tenant_id TEXT NOT NULL, channel TEXT NOT NULL,
               day TEXT NOT NULL, sent INTEGER NOT NULL, PRIMARY KEY (tenant_id, channel, day));
             INSERT INTO notify_counters VALUES ('demo-brand', 'email', '2026-12-01', 4);
             PRAGMA user_version = 8;",
        )
        .unwrap();
    }
    let store = SqliteStore::new(Arc::new(Db::open(&path, Durability::Normal).unwrap()));
    let day = time::macros::date!(2026 - 12 - 01);
    let counts = store.send_counts(day, day, None).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (counts[0].channel, counts[0].sent, counts[0].deferred),
        (Channel::Email, 4, 0)
    );
}
