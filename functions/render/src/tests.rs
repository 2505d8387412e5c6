//! Which failures put an order on hold: a customer's photo URL that keeps
//! failing does, after `max_attempts` deliveries; our own stores failing
//! never do, however often the message comes back.

use super::*;
use printworks::domain::order::OrderId;
use printworks::domain::tenant::TenantId;
use printworks::ports::PresignedRequest;
use printworks::testing::LocalEnv;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A photo host that answers 503 to every request, counting them.
#[derive(Default)]
struct HostDown(AtomicU32);

#[async_trait]
impl UrlSource for HostDown {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, SourceError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(SourceError {
            permanent: false,
            message: format!("{url}: 503 Service Unavailable"),
        })
    }
}

/// One of our buckets, unreachable: every read and write fails.
struct BucketDown;

#[async_trait]
impl BlobStore for BucketDown {
    async fn presign_put(
        &self,
        _key: &str,
        _content_type: &str,
        _content_length: u64,
        _ttl: Duration,
    ) -> Result<PresignedRequest, StoreError> {
        Err(StoreError::Unexpected(anyhow::anyhow!(
            "bucket unreachable"
        )))
    }

    async fn presign_get(
        &self,
        _key: &str,
        _ttl: Duration,
    ) -> Result<PresignedRequest, StoreError> {
        Err(StoreError::Unexpected(anyhow::anyhow!(
            "bucket unreachable"
        )))
    }

    async fn put(&self, _key: &str, _bytes: Vec<u8>, _ct: &str) -> Result<(), StoreError> {
        Err(StoreError::Unexpected(anyhow::anyhow!(
            "bucket unreachable"
        )))
    }

    async fn get(&self, _key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::Unexpected(anyhow::anyhow!(
            "bucket unreachable"
        )))
    }
}

/// The shared local environment with a renderer on it whose photo host
/// and buckets are down.
struct Setup {
    env: LocalEnv,
    renderer: Renderer,
    host: Arc<HostDown>,
}

async fn setup() -> Setup {
    let env = LocalEnv::new().await;
    let host = Arc::new(HostDown::default());
    let renderer = Renderer {
        catalog: Arc::new(Catalog::builtin().clone()),
        orders: env.store.clone(),
        uploads: Arc::new(BucketDown),
        prints: Arc::new(BucketDown),
        urls: host.clone(),
        clock: env.clock.clone(),
        limits: Limits::default(),
        max_attempts: 4,
    };
    Setup {
        env,
        renderer,
        host,
    }
}

/// Places a paid poster order whose photo is `source`; its `OrderPaid`.
async fn paid(s: &Setup, source: Option<ImageSource>) -> (TenantId, OrderId, EventEnvelope) {
    let mut new = s.env.paid_order(&[("poster-20x30", 1)], "DE");
    if let Some(source) = source {
        new.order.items[0].images[0].source = source;
    }
    let (tenant, id) = (new.order.tenant.clone(), new.order.id.clone());
    let paid = new
        .events
        .iter()
        .find(|e| e.event_type == EventType::OrderPaid)
        .expect("a B2B order is paid on placement")
        .clone();
    s.env.place(new).await;
    (tenant, id, paid)
}

async fn state(s: &Setup, tenant: &TenantId, id: &OrderId) -> Order {
    s.env.store.get(tenant, id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_photo_url_that_keeps_failing_holds_the_order_after_the_last_attempt() {
    let s = setup().await;
    let (tenant, id, paid) = paid(&s, None).await;
    for attempt in 1..s.renderer.max_attempts {
        let err = s.renderer.handle(&paid, attempt).await.unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        assert_eq!(state(&s, &tenant, &id).await.state, OrderState::Paid);
    }
    let outcome = s.renderer.handle(&paid, 4).await.unwrap();
    let Outcome::Held { reason } = outcome else {
        panic!("expected a hold, got {outcome:?}");
    };
    assert!(
        reason.contains("we could not read the photo after 4 attempts"),
        "{reason}"
    );
    let order = state(&s, &tenant, &id).await;
    assert_eq!(order.state, OrderState::OnHold);
    assert_eq!(order.hold.unwrap().reason, reason);
    assert_eq!(s.host.0.load(Ordering::SeqCst), 4, "one fetch per delivery");
}

#[tokio::test]
async fn our_own_bucket_failing_is_retried_and_never_holds_the_order() {
    let s = setup().await;
    let tenant = printworks::testing::b2b_tenant().id;
    let key = format!("uploads/{tenant}/u1/photo.jpg");
    let source = ImageSource::Upload {
        upload_id: "u1".into(),
        key,
    };
    let (tenant, id, paid) = paid(&s, Some(source)).await;
    // Far past max_attempts: still a retry, so the queue keeps the message
    // until its dead-letter queue takes it and the alarm calls someone.
    for attempt in [1, 4, 5, 50] {
        let err = s.renderer.handle(&paid, attempt).await.unwrap_err();
        assert!(err.to_string().contains("bucket unreachable"), "{err}");
        assert_eq!(state(&s, &tenant, &id).await.state, OrderState::Paid);
    }
    assert_eq!(s.host.0.load(Ordering::SeqCst), 0, "no URL was fetched");
}

/// A render hold released by an operator starts attempt 2: the first
/// attempt's `OrderPaid`, delivered again, starts nothing, and the
/// release's `OrderResumed` renders (here: fetches again).
#[tokio::test]
async fn after_a_release_only_the_new_attempt_renders() {
    use printworks::domain::operator::OperatorId;

    let s = setup().await;
    let (tenant, id, paid) = paid(&s, None).await;
    let Outcome::Held { .. } = s.renderer.handle(&paid, 4).await.unwrap() else {
        panic!("not held");
    };
    let held = state(&s, &tenant, &id).await;
    let acted = held
        .release(
            &OperatorId::parse("anna").unwrap(),
            "the customer's host is back",
            None,
            Catalog::builtin(),
            s.env.now(),
        )
        .unwrap();
    s.env
        .store
        .transition(&acted.next, &held, acted.events.clone())
        .await
        .unwrap();
    let fetched = s.host.0.load(Ordering::SeqCst);
    let late = s.renderer.handle(&paid, 1).await.unwrap();
    assert!(
        matches!(&late, Outcome::Skipped(why) if why.contains("attempt 2")),
        "{late:?}"
    );
    assert_eq!(s.host.0.load(Ordering::SeqCst), fetched, "nothing fetched");
    // The release's own message renders: the host is still down here, so
    // it is retried (it would render once the host answers).
    let err = s.renderer.handle(&acted.events[0], 1).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(s.host.0.load(Ordering::SeqCst), fetched + 1);
    assert_eq!(state(&s, &tenant, &id).await.state, OrderState::Paid);
}

/// A photo host that answers with a real photo, while (as a payment
/// webhook or a customer's e-mail change might) the order is written by
/// someone else during the download.
struct BusyOrder {
    store: Arc<printworks::adapters::local::store::SqliteStore>,
    tenant: TenantId,
    id: OrderId,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl UrlSource for BusyOrder {
    async fn fetch(&self, _url: &str) -> Result<Vec<u8>, SourceError> {
        let order = self
            .store
            .get(&self.tenant, &self.id)
            .await
            .unwrap()
            .unwrap();
        let mut next = order.successor(self.clock.now());
        next.customer.phone = Some("+4930123456".into());
        self.store
            .transition(&next, &order, Vec::new())
            .await
            .unwrap();
        let raster = printworks::render::Raster {
            width: 1200,
            height: 1800,
            channels: 3,
            data: vec![128; 1200 * 1800 * 3],
        };
        let out = printworks::render::JpegOut {
            quality: 90,
            full_chroma: false,
            dpi: 72,
        };
        Ok(printworks::render::encode_jpeg(&raster, out, &[]).unwrap())
    }
}

/// The order changed while it was rendered, in a way that leaves the work
/// as it was (still paid, same attempt, same photos): the renders are
/// written on the fresh order, not dropped (which would leave it paid
/// with nobody to render it).
#[tokio::test]
async fn an_order_written_meanwhile_keeps_the_renders() {
    let env = LocalEnv::new().await;
    let prints = printworks::adapters::local::blobs::FsBlobStore::open(
        env.dir.path().join("prints"),
        "http://127.0.0.1:1/prints",
        env.clock.clone(),
    )
    .unwrap();
    let mut new = env.paid_order(&[("poster-20x30", 1)], "DE");
    new.order.items[0].images[0].source = ImageSource::Url {
        url: "https://photos.example.com/a.jpg".into(),
    };
    let (tenant, id) = (new.order.tenant.clone(), new.order.id.clone());
    let paid = new
        .events
        .iter()
        .find(|e| e.event_type == EventType::OrderPaid)
        .unwrap()
        .clone();
    env.place(new).await;
    let renderer = Renderer {
        catalog: Arc::new(Catalog::builtin().clone()),
        orders: env.store.clone(),
        uploads: Arc::new(BucketDown),
        prints: Arc::new(prints),
        urls: Arc::new(BusyOrder {
            store: env.store.clone(),
            tenant: tenant.clone(),
            id: id.clone(),
            clock: env.clock.clone(),
        }),
        clock: env.clock.clone(),
        limits: Limits::default(),
        max_attempts: 4,
    };
    let outcome = renderer.handle(&paid, 1).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Rendered { images: 1 }),
        "{outcome:?}"
    );
    let order = env.store.get(&tenant, &id).await.unwrap().unwrap();
    assert_eq!(order.state, OrderState::Rendered);
    assert_eq!(
        order.customer.phone.as_deref(),
        Some("+4930123456"),
        "the other write stands"
    );
    assert_eq!(order.items[0].renders.len(), 1);
}

/// The reconciler's `OrderNudged` (stage render) of a paid order that was
/// never rendered starts the render (here: fetches the photo); one of an
/// earlier attempt starts nothing.
#[tokio::test]
async fn the_reconcilers_hand_over_renders_an_idle_paid_order() {
    let s = setup().await;
    let (tenant, id, _paid) = paid(&s, None).await;
    s.env.clock.advance(std::time::Duration::from_secs(20 * 60));
    let order = state(&s, &tenant, &id).await;
    let repair = order
        .reconcile(
            s.env.now(),
            &printworks::domain::reconcile::Deadlines::default(),
        )
        .expect("idle past the deadline");
    s.env
        .store
        .transition(&repair.next, &order, repair.events.clone())
        .await
        .unwrap();
    let nudge = &repair.events[0];
    assert_eq!(nudge.event_type, EventType::OrderNudged);
    let err = s.renderer.handle(nudge, 1).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(s.host.0.load(Ordering::SeqCst), 1, "the photo was fetched");
    let mut stale = nudge.clone();
    stale.data["attempt"] = serde_json::json!(0);
    let skipped = s.renderer.handle(&stale, 1).await.unwrap();
    assert!(matches!(skipped, Outcome::Skipped(_)), "{skipped:?}");
    assert_eq!(s.host.0.load(Ordering::SeqCst), 1);
}
