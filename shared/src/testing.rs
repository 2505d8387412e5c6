//! Fixtures for the crates' tests (feature `testing`, dev-dependencies
//! only): a B2B tenant, orders placed for it, and orders moved along as the
//! earlier stages would move them, through the real domain functions.
//!
//! - [`local_env`] (with feature `local`, which `testing` turns on):
//!   [`LocalEnv`], the temporary SQLite store, bus and manual clock the
//!   handler tests of the functions run on.
//! - `emulator` (feature `testing-aws`): the AWS emulator (moto server)
//!   for the tests of `tests/` and of `edge-agent/tests` alike: whether it
//!   is configured, and the tables, buckets and queues the tests create.

use crate::domain::catalog::Catalog;
use crate::domain::events::EventEnvelope;
use crate::domain::locale::{CountryCode, Locale};
use crate::domain::money::Currency;
use crate::domain::order::{Order, OrderRequest, RenderedFile, RenderedImage};
use crate::domain::tenant::{PaymentSetup, Tenant, TenantId, TenantKind};
use crate::ports::{IdempotencyRecord, NewOrder, StoredResponse};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

#[cfg(feature = "testing-aws")]
pub mod emulator;
#[cfg(feature = "local")]
pub mod local_env;
#[cfg(feature = "local")]
pub use local_env::LocalEnv;

/// A B2B tenant (orders are paid by invoice when placed).
pub fn b2b_tenant() -> Tenant {
    Tenant {
        id: TenantId::parse("acme-prints").expect("a valid tenant id"),
        name: "Acme Prints".into(),
        kind: TenantKind::B2b,
        brand: "acme".into(),
        countries: CountryCode::ALL.to_vec(),
        currencies: vec![Currency::Eur, Currency::Chf],
        default_locale: Locale::De,
        payment: PaymentSetup::Invoice,
        notifications: Default::default(),
    }
}

/// An order request for `items` (sku, quantity), shipped to `country`.
/// Photo boxes get one image per print they hold.
pub fn order_request(catalog: &Catalog, items: &[(&str, u32)], country: &str) -> OrderRequest {
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(|(sku, quantity)| {
            let images = catalog.product(sku).map_or(1, |p| p.images_per_item);
            let images: Vec<_> = (0..images)
                .map(|i| serde_json::json!({ "url": format!("https://photos.example.com/{sku}/{i}.jpg") }))
                .collect();
            serde_json::json!({ "sku": sku, "quantity": quantity, "images": images })
        })
        .collect();
    let currency = if country == "CH" { "CHF" } else { "EUR" };
    let postal_code = match country {
        "DE" | "FR" | "IT" | "ES" => "10115",
        "NL" => "1012 AB",
        "LU" => "L-1009",
        _ => "8001",
    };
    serde_json::from_value(serde_json::json!({
        "locale": "de", "currency": currency,
        "customer": {"name": "Erika Muster", "email": "erika@example.com"},
        "shipping": {"method": "standard", "address": {
            "name": "Erika Muster", "line1": "Heidestr. 17", "postal_code": postal_code,
            "city": "Musterstadt", "country": country}},
        "items": items,
    }))
    .expect("a well-formed order request")
}

/// A paid order (B2B) for `items`, with its placement record.
pub fn paid_order(items: &[(&str, u32)], country: &str, now: OffsetDateTime) -> NewOrder {
    let catalog = Catalog::builtin();
    let request = order_request(catalog, items, country);
    let (order, events) =
        Order::place(catalog, &b2b_tenant(), &request, now).expect("a valid order");
    NewOrder {
        idempotency: IdempotencyRecord {
            key: order.id.to_string(),
            request_hash: "fixture".into(),
            response: StoredResponse {
                status: 201,
                body: "{}".into(),
            },
        },
        order,
        events,
    }
}

/// Stand-in print files for every image of `order` (bytes that say what
/// they are) and the order rendered with them: (next, event, files by key).
pub fn rendered(
    order: &Order,
    now: OffsetDateTime,
) -> (Order, EventEnvelope, Vec<(String, Vec<u8>)>) {
    let mut files = Vec::new();
    let renders: Vec<Vec<RenderedImage>> = order
        .items
        .iter()
        .map(|item| {
            (0..item.images.len())
                .map(|j| {
                    let keys = crate::domain::print::PrintFileKeys::of(order, item.line, j);
                    let print = format!("print of {}", keys.print).into_bytes();
                    let preview = format!("preview of {}", keys.preview).into_bytes();
                    let file = |key: String, bytes: &[u8]| RenderedFile {
                        key,
                        sha256: hex::encode(Sha256::digest(bytes)),
                        width: 100,
                        height: 150,
                        bytes: bytes.len() as u64,
                    };
                    let record = RenderedImage {
                        image: j as u32,
                        print: file(keys.print.clone(), &print),
                        preview: file(keys.preview.clone(), &preview),
                        effective_dpi: 300,
                        warnings: Vec::new(),
                    };
                    files.push((record.print.key.clone(), print));
                    files.push((record.preview.key.clone(), preview));
                    record
                })
                .collect()
        })
        .collect();
    let (next, event) = order.rendered(renders, now).expect("a paid order renders");
    (next, event, files)
}

/// `items` (to DE) placed, rendered (stand-in files, not stored) and
/// dispatched on `store`, as the stages write them; the order as dispatch
/// made it (its production's revision is the one before it was stored).
pub async fn stored_dispatched<S>(store: &S, items: &[(&str, u32)], now: OffsetDateTime) -> Order
where
    S: crate::ports::OrderStore + crate::ports::ProductionStore + ?Sized,
{
    use crate::domain::production::Dispatch;
    let paid = paid_order(items, "DE", now);
    store.place(paid.clone()).await.expect("placed");
    let (rendered, event, _) = rendered(&paid.order, now);
    store
        .transition(&rendered, &paid.order, vec![event])
        .await
        .expect("rendered");
    let Dispatch::ToPlant { next, event } = rendered
        .dispatch(Catalog::builtin(), &Default::default(), now)
        .expect("dispatches")
    else {
        panic!("held: no plant makes {items:?}")
    };
    let production = next.production.as_ref().expect("a production");
    let (plant, jobs) = (production.plant.clone(), production.jobs.len() as i64);
    store
        .transition_counted(&next, &rendered, vec![event], &plant, jobs)
        .await
        .expect("dispatched");
    next
}

/// Relays the outbox and takes every message off `queue` (subscribed to
/// the events of interest): the event types published since the last call.
#[cfg(feature = "local")]
pub async fn published(bus: &crate::adapters::local::bus::LocalBus, queue: &str) -> Vec<String> {
    bus.relay_outbox(10_000).await.expect("relay");
    let mut types = Vec::new();
    loop {
        let batch = bus.receive(queue, 10).await.expect("receive");
        if batch.is_empty() {
            return types;
        }
        for m in batch {
            bus.delete(&m.receipt).await.expect("delete");
            types.push(m.event_type);
        }
    }
}
