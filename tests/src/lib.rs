//! Helpers of the cross-crate tests (`tests/integration/`):
//!
//! - [`spawn_app`]: the real local platform on port 0 with a fresh data dir
//! - [`emulator`]: the AWS emulator's endpoint, when the test script set it
//!   (`printworks::testing::emulator::endpoint`; that module, shared with
//!   `edge-agent/tests`, also creates the emulator's tables, buckets, queues)
//! - [`openapi`]: `infra/openapi.yaml` as JSON
//! - [`sample_key`]: the API key the sample events in `events/` carry
//! - [`photo`], [`upload`]: a generated JPEG, uploaded through the API
//! - [`OrderForm`], [`place`]: an order request, placed over HTTP

use printworks::clock::SystemClock;
use printworks::domain::catalog::Catalog;
use printworks::domain::tenant::{ApiKeyRecord, TenantId};
use printworks::ports::{BlobStore, OpsStore, OrderStore, TenantStore};
use printworks::render::{JpegOut, Raster, encode_jpeg};
use printworks_local::platform::{self, Options, Running};
use reqwest::Client;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// Starts the real platform on 127.0.0.1:0 with its data in `data_dir`.
pub async fn spawn_app(data_dir: &Path) -> Running {
    let options = Options {
        port: 0,
        ..Options::new(data_dir)
    };
    platform::start(options).await.expect("the platform starts")
}

/// The order API router on the given stores, as `main.rs` and the local
/// runner build it, with the system clock and the built-in catalog.
pub fn api_router(
    env: &str,
    tenants: Arc<dyn TenantStore>,
    orders: Arc<dyn OrderStore>,
    actions: Arc<dyn OpsStore>,
    blobs: Arc<dyn BlobStore>,
) -> axum::Router {
    let config = order_api::Config {
        upload_url_ttl: Duration::from_secs(300),
        ..order_api::Config::for_env(env).expect("a valid environment")
    };
    let catalog = Arc::new(Catalog::builtin().clone());
    let app = order_api::App::new(
        config,
        catalog,
        tenants,
        orders,
        actions,
        blobs,
        Arc::new(SystemClock),
    );
    order_api::router(Arc::new(app))
}

/// The API key of a tenant seeded by this start.
/// A SQLite store of its own in `dir` (normal durability): the local
/// adapters beside an emulator's, or a handler's store in a test.
pub fn sqlite_store(dir: &Path) -> Arc<printworks::adapters::local::store::SqliteStore> {
    use printworks::adapters::local::db::{Db, Durability};
    let db = Db::open(dir.join("pw.sqlite"), Durability::Normal).expect("the database opens");
    Arc::new(printworks::adapters::local::store::SqliteStore::new(
        Arc::new(db),
    ))
}

pub fn seeded_key(running: &Running, tenant: &str) -> String {
    running
        .seeded
        .iter()
        .find(|c| c.tenant.id.as_str() == tenant)
        .map(|c| c.api_key.clone())
        .expect("seeded tenant")
}

/// The emulator endpoint (`AWS_ENDPOINT_URL`, set by `scripts/test`). When
/// `PRINTWORKS_REQUIRE_EMULATOR=1` and it is missing, the test fails rather
/// than skipping, so the script can insist that these tests really ran.
pub use printworks::testing::emulator::endpoint as emulator;

/// `infra/openapi.yaml` parsed into JSON.
pub fn openapi() -> serde_json::Value {
    let raw = std::fs::read_to_string(repo_root().join("infra/openapi.yaml"))
        .expect("infra/openapi.yaml");
    serde_norway::from_str(&raw).expect("openapi.yaml is YAML")
}

/// The example body of `POST path` in the spec.
pub fn request_example(spec: &serde_json::Value, path: &str) -> serde_json::Value {
    spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"].clone()
}

/// The key the sample events carry (`events/order-api/*.json`).
pub const SAMPLE_KEY: &str = "pw_local_sampleevents0000_SampleSecretForEventFixtures000000000000";
/// The order the GET and cancel sample events name.
pub const SAMPLE_ORDER_ID: &str = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f90";

/// The operator key the ops-api sample events carry (`events/ops-api`): a
/// `support` operator's.
pub const SAMPLE_OPERATOR_KEY: &str =
    "pwop_local_sampleevents0000_SampleSecretForEventFixtures000000000000";

/// The operator of [`SAMPLE_OPERATOR_KEY`] (`sample-support`) and its
/// stored key.
pub fn sample_operator() -> (
    printworks::domain::operator::Operator,
    printworks::domain::operator::OperatorKeyRecord,
) {
    use printworks::domain::operator::{Operator, OperatorId, OperatorKeyRecord, Role};
    let parts: Vec<&str> = SAMPLE_OPERATOR_KEY.split('_').collect();
    let id = OperatorId::parse("sample-support").expect("a valid operator id");
    let key = OperatorKeyRecord {
        key_id: parts[2].to_string(),
        operator_id: id.clone(),
        env: parts[1].to_string(),
        secret_sha256: sha256_hex(parts[3].as_bytes()),
        revoked: false,
    };
    let operator = Operator {
        id,
        role: Role::Support,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    (operator, key)
}

/// The stored record of [`SAMPLE_KEY`] for `tenant`.
pub fn sample_key(tenant: &TenantId) -> ApiKeyRecord {
    let parts: Vec<&str> = SAMPLE_KEY.split('_').collect();
    ApiKeyRecord {
        key_id: parts[2].to_string(),
        tenant_id: tenant.clone(),
        env: parts[1].to_string(),
        secret_sha256: sha256_hex(parts[3].as_bytes()),
        revoked: false,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// A gradient JPEG of `w` x `h` pixels.
pub fn photo(w: u32, h: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 100]);
        }
    }
    let raster = Raster {
        width: w,
        height: h,
        channels: 3,
        data,
    };
    encode_jpeg(
        &raster,
        JpegOut {
            quality: 90,
            full_chroma: false,
            dpi: 72,
        },
        &[],
    )
    .unwrap()
}

/// Asks for an upload URL for `size` bytes of JPEG: the API's answer
/// (`upload_id`, `upload.url`, ...).
pub async fn request_upload(client: &Client, base: &str, key: &str, size: usize) -> Value {
    client
        .post(format!("{base}/v1/uploads"))
        .bearer_auth(key)
        .json(&json!({"content_type": "image/jpeg", "size_bytes": size}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// PUTs `bytes` to the presigned URL of `requested` ([`request_upload`]).
pub async fn put_upload(client: &Client, requested: &Value, bytes: Vec<u8>) {
    let put = client
        .put(requested["upload"]["url"].as_str().unwrap())
        .header("Content-Type", "image/jpeg")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
}

/// Uploads `bytes` through the API's presigned URL; returns the upload id.
pub async fn upload(
    client: &Client,
    base: &str,
    key: &str,
    bytes: Vec<u8>,
    complete: bool,
) -> String {
    let res = request_upload(client, base, key, bytes.len()).await;
    if complete {
        put_upload(client, &res, bytes).await;
    }
    res["upload_id"].as_str().unwrap().to_string()
}

/// An order request for `POST /v1/orders`, as the local tests place them:
/// by default in German and euros, from and to "Print GmbH" in Hamburg
/// (DE), shipped standard; the builder methods change what a test needs.
#[derive(Debug, Clone)]
pub struct OrderForm {
    pub locale: String,
    /// The customer's name, also the name on the address.
    pub customer: String,
    pub email: String,
    pub method: String,
    pub country: String,
    pub postal_code: String,
    pub city: String,
    /// The request's `items` array.
    pub items: Value,
}

impl OrderForm {
    /// An order of `items` (the request's `items` array).
    pub fn items(items: Value) -> OrderForm {
        OrderForm {
            locale: "de".into(),
            customer: "Print GmbH".into(),
            email: "ops@print.example".into(),
            method: "standard".into(),
            country: "DE".into(),
            postal_code: "20457".into(),
            city: "Hamburg".into(),
            items,
        }
    }

    /// An order of one `sku` with one photo: `{"upload_id": ...}` or `{"url": ...}`.
    pub fn one(sku: &str, image: Value) -> OrderForm {
        OrderForm::items(json!([{"sku": sku, "quantity": 1, "images": [image]}]))
    }

    pub fn locale(mut self, locale: &str) -> OrderForm {
        self.locale = locale.into();
        self
    }

    pub fn customer(mut self, name: &str, email: &str) -> OrderForm {
        self.customer = name.into();
        self.email = email.into();
        self
    }

    pub fn express(mut self) -> OrderForm {
        self.method = "express".into();
        self
    }

    pub fn ship_to(mut self, country: &str, postal_code: &str, city: &str) -> OrderForm {
        self.country = country.into();
        self.postal_code = postal_code.into();
        self.city = city.into();
        self
    }

    /// The request body; the currency is the country's (CHF in CH, else EUR).
    pub fn body(&self) -> Value {
        json!({
            "locale": self.locale,
            "currency": if self.country == "CH" { "CHF" } else { "EUR" },
            "customer": {"name": self.customer, "email": self.email},
            "shipping": {"method": self.method, "address": {
                "name": self.customer, "line1": "Hafenstr. 1", "postal_code": self.postal_code,
                "city": self.city, "country": self.country}},
            "items": self.items,
        })
    }
}

/// Places `form` through the API with `key` (a fresh idempotency key);
/// asserts 201 Created and returns the created order.
pub async fn place(client: &Client, base: &str, key: &str, form: &OrderForm) -> Value {
    let res = client
        .post(format!("{base}/v1/orders"))
        .bearer_auth(key)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&form.body())
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 201, "placing {}: {body}", form.body());
    serde_json::from_str(&body).unwrap()
}

/// `GET /v1/orders/{id}` as the tenant of `key`.
pub async fn get_order(client: &Client, base: &str, key: &str, id: &str) -> Value {
    client
        .get(format!("{base}/v1/orders/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The states an order stays in until a person acts.
pub const FINAL_STATES: [&str; 3] = ["shipped", "on_hold", "cancelled"];

/// Polls the order every 100 ms until `done(state)`, for at most `limit`.
pub async fn poll_order(
    client: &Client,
    base: &str,
    key: &str,
    id: &str,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let order = get_order(client, base, key, id).await;
        if done(order["state"].as_str().unwrap_or_default()) {
            return order;
        }
        assert!(
            started.elapsed() < limit,
            "order {id} still {} after {limit:?}",
            order["state"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
