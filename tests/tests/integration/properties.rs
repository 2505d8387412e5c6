//! Bad input everywhere: property tests (proptest) that
//! throw generated order bodies, addresses, crop rectangles and webhook
//! headers at the real routers on the real SQLite store. Whatever comes in:
//! no panic, never a 5xx, a 4xx always carries the JSON error body, and a
//! refused request stores nothing.

use axum::body::Body;
use http::Request;
use printworks::adapters::local::blobs::FsBlobStore;
use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::store::SqliteStore;
use printworks::clock::SystemClock;
use printworks::ports::{FixedSecrets, TenantStore};
use printworks::webhooks::{Secret, WebhookSecrets};
use printworks_tests::{SAMPLE_KEY, api_router, sample_key};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

struct Env {
    _dir: tempfile::TempDir,
    db: Arc<Db>,
    store: SqliteStore,
    api: axum::Router,
    webhooks: axum::Router,
}

fn env(rt: &tokio::runtime::Runtime) -> Env {
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path().join("db.sqlite"), Durability::Normal).unwrap());
        let store = SqliteStore::new(db.clone());
        let tenant = printworks_local::seed::demo_tenants()
            .into_iter()
            .find(|t| t.id.as_str() == "demo-b2b")
            .unwrap();
        store.put_tenant(&tenant).await.unwrap();
        store.put_api_key(&sample_key(&tenant.id)).await.unwrap();
        let blobs = Arc::new(
            FsBlobStore::open(
                dir.path().join("blobs"),
                "http://127.0.0.1:3000",
                Arc::new(SystemClock),
            )
            .unwrap(),
        );
        let shared = Arc::new(store.clone());
        let api = api_router(
            "local",
            shared.clone(),
            shared.clone(),
            shared.clone(),
            blobs,
        );
        // As `printworks up` serves them: one router, the order API's JSON
        // fallbacks for unknown paths and methods. (On AWS, API Gateway
        // only routes `POST /v1/payments/{provider}/webhook` to the
        // webhook function.)
        let secrets = WebhookSecrets {
            stripe: vec![Secret::new(b"whsec_properties".to_vec())],
            adyen: vec![Secret::new(vec![0x44; 32])],
        };
        let webhooks = api.clone().merge(payment_webhook::router(Arc::new(
            payment_webhook::Webhooks::new(
                shared.clone(),
                shared,
                Arc::new(FixedSecrets(secrets)),
                Arc::new(SystemClock),
            ),
        )));
        Env {
            _dir: dir,
            db,
            store,
            api,
            webhooks,
        }
    })
}

impl Env {
    async fn rows(&self, table: &'static str) -> i64 {
        self.db
            .read(move |c| {
                c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                    .map_err(|e| printworks::ports::StoreError::Unexpected(e.into()))
            })
            .await
            .unwrap()
    }

    /// Sends `request`; checks the answer is never a 5xx, and that a 4xx is
    /// the JSON error body. Returns the status.
    async fn send(
        &self,
        router: &axum::Router,
        request: Request<Body>,
    ) -> Result<u16, TestCaseError> {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        prop_assert!(
            status < 500,
            "{status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status >= 400 {
            let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
                TestCaseError::fail(format!("{status} without a JSON body ({e}): {bytes:?}"))
            })?;
            prop_assert!(body["error"]["code"].is_string(), "{body}");
            prop_assert!(body["error"]["message"].is_string(), "{body}");
        }
        Ok(status)
    }

    /// POSTs an order body; a refusal stores nothing (no order, no
    /// idempotency record, no event), an acceptance stores one order.
    async fn place(&self, body: Vec<u8>, key: &str) -> Result<u16, TestCaseError> {
        let before = (
            self.rows("orders").await,
            self.rows("idempotency").await,
            self.rows("outbox").await,
        );
        let request = Request::post("/v1/orders")
            .header("authorization", format!("Bearer {SAMPLE_KEY}"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body))
            .unwrap();
        let status = self.send(&self.api, request).await?;
        let after = (
            self.rows("orders").await,
            self.rows("idempotency").await,
            self.rows("outbox").await,
        );
        if status == 201 {
            prop_assert_eq!(after.0, before.0 + 1);
        } else {
            prop_assert!((400..500).contains(&status), "{status}");
            prop_assert_eq!(after, before, "a refused order stored something");
        }
        Ok(status)
    }
}

fn valid_order() -> Value {
    json!({
        "locale": "de", "currency": "EUR",
        "customer": {"name": "Erika Muster", "email": "erika@example.com", "phone": "+4915112345678"},
        "shipping": {"method": "standard", "address": {
            "name": "Erika Muster", "company": "Muster GmbH", "line1": "Heidestr. 17", "line2": "Hinterhaus",
            "postal_code": "51147", "city": "Köln", "country": "DE"}},
        "items": [{"sku": "poster-30x40", "quantity": 1, "options": {"finish": "matte"},
                   "images": [{"url": "https://photos.example.com/a.jpg", "fit": "fill",
                               "crop": {"x": 0, "y": 0, "width": 100, "height": 100}}]}],
        "reference": "PO-1",
    })
}

/// Every place in an order body a client fills in.
const PATHS: &[&str] = &[
    "/locale",
    "/currency",
    "/customer",
    "/customer/name",
    "/customer/email",
    "/customer/phone",
    "/shipping",
    "/shipping/method",
    "/shipping/address",
    "/shipping/address/name",
    "/shipping/address/company",
    "/shipping/address/line1",
    "/shipping/address/line2",
    "/shipping/address/postal_code",
    "/shipping/address/city",
    "/shipping/address/country",
    "/items",
    "/items/0",
    "/items/0/sku",
    "/items/0/quantity",
    "/items/0/options",
    "/items/0/options/finish",
    "/items/0/images",
    "/items/0/images/0",
    "/items/0/images/0/url",
    "/items/0/images/0/upload_id",
    "/items/0/images/0/fit",
    "/items/0/images/0/background",
    "/items/0/images/0/crop",
    "/items/0/images/0/crop/x",
    "/items/0/images/0/crop/width",
    "/reference",
    "/total",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        "\\PC{0,300}".prop_map(Value::from),
        Just(Value::from("x".repeat(10_000))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Sets (or, with `None`, removes) the value at `path`.
fn set(body: &mut Value, path: &str, value: Option<Value>) {
    let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
    let Some(parent) = body.pointer_mut(parent) else {
        return;
    };
    match (parent, value) {
        (Value::Object(map), Some(v)) => {
            map.insert(last.to_string(), v);
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (Value::Array(items), Some(v)) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *slot = v;
            }
        }
        (Value::Array(items), None) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn order_bodies_with_any_field_changed_get_a_4xx_or_an_order_never_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = env(&rt);
    let mutation = prop::collection::vec(
        (
            prop::sample::select(PATHS),
            prop::option::weighted(0.85, any_json()),
        ),
        1..4,
    );
    let n = std::cell::Cell::new(0u64);
    runner(200)
        .run(&mutation, |changes| {
            let mut body = valid_order();
            for (path, value) in changes {
                set(&mut body, path, value);
            }
            n.set(n.get() + 1);
            rt.block_on(env.place(
                serde_json::to_vec(&body).unwrap(),
                &format!("prop-{}", n.get()),
            ))?;
            Ok(())
        })
        .unwrap();
    // Both outcomes happened: the generator is not stuck on one side.
    let stored = rt.block_on(env.store.count_orders()).unwrap();
    assert!(stored > 0 && stored < n.get(), "{stored} of {}", n.get());
    env.db.close();
}

#[test]
fn raw_bytes_as_an_order_body_get_a_4xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = env(&rt);
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        "\\PC{0,200}".prop_map(String::into_bytes),
        // Valid JSON cut short.
        (0usize..400).prop_map(|cut| {
            let full = serde_json::to_vec(&valid_order()).unwrap();
            full[..cut.min(full.len() - 1)].to_vec()
        }),
    ];
    let n = std::cell::Cell::new(0u64);
    runner(150)
        .run(&bytes, |body| {
            n.set(n.get() + 1);
            let status = rt.block_on(env.place(body, &format!("raw-{}", n.get())))?;
            prop_assert!((400..500).contains(&status), "{status}");
            Ok(())
        })
        .unwrap();
    env.db.close();
}

#[test]
fn any_address_is_accepted_or_refused_field_by_field() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = env(&rt);
    let text = prop_oneof![
        Just(String::new()),
        "\\PC{0,80}",
        ".{0,400}",
        Just(" ".repeat(50)),
        Just("Straße 1\u{0}\r\nBcc: x@example.com".to_string()),
    ];
    let field = prop::sample::select(
        &[
            "name",
            "company",
            "line1",
            "line2",
            "postal_code",
            "city",
            "country",
        ][..],
    );
    let n = std::cell::Cell::new(0u64);
    runner(200)
        .run(&prop::collection::vec((field, text), 1..5), |changes| {
            let mut body = valid_order();
            for (name, value) in changes {
                body["shipping"]["address"][name] = Value::from(value);
            }
            n.set(n.get() + 1);
            let status = rt.block_on(env.place(
                serde_json::to_vec(&body).unwrap(),
                &format!("addr-{}", n.get()),
            ))?;
            prop_assert!(status == 201 || status == 422, "{status}");
            Ok(())
        })
        .unwrap();
    let stored = rt.block_on(env.store.count_orders()).unwrap();
    assert!(stored > 0 && stored < n.get(), "{stored} of {}", n.get());
    env.db.close();
}

#[test]
fn any_crop_rectangle_is_accepted_or_refused_never_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = env(&rt);
    let number = prop_oneof![
        any::<u32>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(-1)),
        Just(Value::from(0.5)),
        Just(Value::from("10")),
    ];
    let crop = (number.clone(), number.clone(), number.clone(), number);
    let n = std::cell::Cell::new(0u64);
    runner(200)
        .run(&crop, |(x, y, width, height)| {
            let mut body = valid_order();
            body["items"][0]["images"][0]["crop"] =
                json!({"x": x, "y": y, "width": width, "height": height});
            n.set(n.get() + 1);
            let status = rt.block_on(env.place(
                serde_json::to_vec(&body).unwrap(),
                &format!("crop-{}", n.get()),
            ))?;
            prop_assert!(status == 201 || status == 422, "{status}");
            Ok(())
        })
        .unwrap();
    env.db.close();
}

#[test]
fn any_crop_plans_inside_the_photo_or_is_refused() {
    use printworks::domain::catalog::Catalog;
    use printworks::render::geometry::{Rect, Sheet, plan};
    use printworks::render::probe::Orientation;
    let catalog = Catalog::builtin();
    let skus: Vec<String> = catalog
        .products()
        .map(|p| p.sku.as_str().to_string())
        .collect();
    let input = (
        prop::sample::select(skus),
        1u32..20_000,
        1u32..20_000,
        0u8..8,
        any::<bool>(),
        prop::option::of((any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>())),
    );
    runner(2_000)
        .run(&input, |(sku, w, h, o, fill, crop)| {
            let sheet = Sheet::for_product(catalog.product(&sku).unwrap(), &Default::default());
            let orientation = Orientation(o + 1);
            let fit = if fill {
                printworks::render::Fit::Fill
            } else {
                printworks::render::Fit::Fit
            };
            let crop = crop.map(|(x, y, w, h)| Rect { x, y, w, h });
            if let Ok(p) = plan(w, h, orientation, &sheet, fit, crop) {
                let src = p.source;
                prop_assert!(src.w >= 1 && src.h >= 1);
                prop_assert!(u64::from(src.x) + u64::from(src.w) <= u64::from(w), "{p:?}");
                prop_assert!(u64::from(src.y) + u64::from(src.h) <= u64::from(h), "{p:?}");
                prop_assert!(p.out_w >= 1 && p.out_h >= 1);
                prop_assert!(p.at.0 + p.out_w <= sheet.width && p.at.1 + p.out_h <= sheet.height);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_webhook_header_or_body_is_refused_with_a_4xx_and_stores_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = env(&rt);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header = prop_oneof![
        ".{0,120}",
        "\\PC{0,60}",
        // Well-formed headers with wrong, short or odd signatures and times.
        (any::<i64>(), "[0-9a-f]{0,70}").prop_map(|(t, v)| format!("t={t},v1={v}")),
        (-400i64..400, "[0-9a-f]{64}").prop_map(move |(d, v)| format!("t={},v1={v}", now + d)),
        (-400i64..400).prop_map(move |d| format!("t={},t={},v1=", now + d, now)),
    ];
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        Just(br#"{"notificationItems":[{"NotificationRequestItem":{"eventCode":"CAPTURE","success":"true","pspReference":"x","merchantReference":"demo-b2b:ord_x","amount":{"value":1,"currency":"EUR"},"additionalData":{"hmacSignature":"AAAA"}}}]}"#.to_vec()),
    ];
    let provider =
        prop::sample::select(&["stripe", "adyen", "paypal", "STRIPE", "stripe/../adyen"][..]);
    runner(300)
        .run(&(provider, header, body), |(provider, header, body)| {
            rt.block_on(async {
                let before = env.rows("payment_events").await;
                let mut request = Request::post(format!("/v1/payments/{provider}/webhook"))
                    .header("content-type", "application/json");
                if let Ok(value) = http::HeaderValue::from_str(&header) {
                    request = request.header("stripe-signature", value);
                }
                let status = env
                    .send(&env.webhooks, request.body(Body::from(body)).unwrap())
                    .await?;
                prop_assert!((400..500).contains(&status), "{provider}: {status}");
                prop_assert_eq!(env.rows("payment_events").await, before);
                Ok(())
            })
        })
        .unwrap();
    env.db.close();
}
