//! [`LocalEnv`]: the local adapters a handler test runs on (features
//! `testing` and `local`): a temporary directory, the SQLite database in
//! it, the order store and the bus on that database, and a manual clock
//! they all read. Each function's test module wraps it with its handler.

use super::{paid_order, rendered};
use crate::adapters::local::blobs::FsBlobStore;
use crate::adapters::local::bus::{LocalBus, QueueConfig};
use crate::adapters::local::db::{Db, Durability};
use crate::adapters::local::store::SqliteStore;
use crate::clock::ManualClock;
use crate::domain::events::EventEnvelope;
use crate::domain::order::Order;
use crate::domain::tenant::Tenant;
use crate::ports::{BlobStore, Clock, NewOrder, OrderStore, TenantStore};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// The queue [`LocalEnv::subscribe_all`] declares: subscribed to every event.
pub const ALL: &str = "all";

/// The configuration of the queues the fixtures declare: 30 s visibility,
/// five receives, no dead-letter queue.
pub fn queue_config() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(30),
        max_receive_count: 5,
        dead_letter: None,
    }
}

/// A temporary directory (removed on drop) with the SQLite database, the
/// order store and the bus on it, all on one manual clock.
pub struct LocalEnv {
    pub dir: tempfile::TempDir,
    pub db: Arc<Db>,
    pub store: Arc<SqliteStore>,
    pub bus: LocalBus,
    pub clock: Arc<ManualClock>,
}

impl LocalEnv {
    /// A fresh environment, its clock stopped at the current time.
    pub async fn new() -> LocalEnv {
        LocalEnv::starting_at(OffsetDateTime::now_utc()).await
    }

    /// A fresh environment, its clock stopped at `start`.
    pub async fn starting_at(start: OffsetDateTime) -> LocalEnv {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = Arc::new(
            Db::open(dir.path().join("pw.sqlite"), Durability::Normal).expect("the database opens"),
        );
        let clock = Arc::new(ManualClock::new(start));
        let store = Arc::new(SqliteStore::new(db.clone()));
        let bus = LocalBus::new(db.clone(), clock.clone());
        LocalEnv {
            dir,
            db,
            store,
            bus,
            clock,
        }
    }

    /// The temporary directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The clock's time.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// A blob store in the directory's `name` folder, on the env's clock;
    /// its presigned URLs start with `base_url`.
    pub fn blobs(&self, name: &str, base_url: &str) -> Arc<FsBlobStore> {
        Arc::new(
            FsBlobStore::open(self.path().join(name), base_url, self.clock.clone())
                .expect("the blob store opens"),
        )
    }

    /// Declares the queue `name` ([`queue_config`]).
    pub async fn declare_queue(&self, name: &str) {
        self.bus
            .declare_queue(name, queue_config())
            .await
            .expect("declare queue");
    }

    /// Declares [`ALL`] and subscribes it to every event, so
    /// [`LocalEnv::published`] can tell what was published.
    pub async fn subscribe_all(&self) {
        self.declare_queue(ALL).await;
        self.bus.subscribe(ALL, None).await.expect("subscribe");
    }

    /// Relays the outbox and takes every message off [`ALL`]: the event
    /// types published since the last call.
    pub async fn published(&self) -> Vec<String> {
        super::published(&self.bus, ALL).await
    }

    /// Stores `tenant`.
    pub async fn seed_tenant(&self, tenant: &Tenant) {
        self.store.put_tenant(tenant).await.expect("put tenant");
    }

    /// The `paid_order` fixture (B2B, paid on placement) at the clock's time.
    pub fn paid_order(&self, items: &[(&str, u32)], country: &str) -> NewOrder {
        paid_order(items, country, self.now())
    }

    /// Places `new` in the store; returns its order.
    pub async fn place(&self, new: NewOrder) -> Order {
        let order = new.order.clone();
        self.store.place(new).await.expect("place");
        order
    }

    /// Places the `paid_order` fixture; returns the paid order.
    pub async fn place_paid(&self, items: &[(&str, u32)], country: &str) -> Order {
        self.place(self.paid_order(items, country)).await
    }

    /// Moves the stored `paid` order to rendered with the `rendered`
    /// fixture's stand-in files, storing them in `prints` when given;
    /// returns the rendered order and its `OrderRendered` event.
    pub async fn render(
        &self,
        paid: &Order,
        prints: Option<&dyn BlobStore>,
    ) -> (Order, EventEnvelope) {
        let (next, event, files) = rendered(paid, self.now());
        if let Some(prints) = prints {
            for (key, bytes) in files {
                prints.put(&key, bytes, "image/jpeg").await.expect("put");
            }
        }
        self.store
            .transition(&next, paid, vec![event.clone()])
            .await
            .expect("transition to rendered");
        (next, event)
    }

    /// The stored version of `order`.
    pub async fn reload(&self, order: &Order) -> Order {
        self.store
            .get(&order.tenant, &order.id)
            .await
            .expect("get")
            .expect("the order is stored")
    }
}
