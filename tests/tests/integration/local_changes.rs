//! Customers fix their own orders on `printworks up`, through the tenant
//! API over HTTP: a photo replaced while the order is held for it (only
//! what changed is rendered again, and the order ships), an address
//! changed until dispatch (an unpaid order priced again, a paid one
//! refused a change of its total), `actions` on every order, and every
//! refusal naming what is allowed instead.

use printworks::domain::order::OrderId;
use printworks::domain::tenant::{PaymentSetup, TenantId};
use printworks::ports::OrderStore;
use printworks_local::ops_cmd::{self, OpsRequest, Target};
use printworks_local::payments::{self, PayEvent};
use printworks_local::platform::{self, Options, Running};
use printworks_tests::{
    OrderForm, get_order, photo, poll_order, put_upload, request_upload, seeded_key, upload,
};
use reqwest::{Client, Method};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

struct Shop {
    _dir: tempfile::TempDir,
    app: Running,
    base: String,
    client: Client,
    /// demo-b2b's key (invoice: paid when placed).
    b2b: String,
    /// demo-brand's key (B2C: paid through a provider).
    b2c: String,
}

async fn shop() -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        port: 0,
        ..Options::new(dir.path())
    };
    let app = platform::start(options).await.expect("the platform starts");
    Shop {
        base: app.base_url(),
        b2b: seeded_key(&app, "demo-b2b"),
        b2c: seeded_key(&app, "demo-brand"),
        client: Client::new(),
        _dir: dir,
        app,
    }
}

/// An answer: status, `Idempotent-Replayed`, body.
struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

impl Shop {
    async fn send(&self, method: Method, path: &str, key: &str, idem: &str, body: Value) -> Answer {
        let res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("Idempotency-Key", idem)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let replayed = res.headers().contains_key("idempotent-replayed");
        let body = res.json().await.unwrap();
        Answer {
            status,
            replayed,
            body,
        }
    }

    async fn replace(&self, key: &str, id: &str, line: u32, image: u32, body: Value) -> Answer {
        let idem = uuid::Uuid::new_v4().to_string();
        let path = format!("/v1/orders/{id}/items/{line}/images/{image}");
        self.send(Method::PUT, &path, key, &idem, body).await
    }

    async fn patch(&self, key: &str, id: &str, body: Value) -> Answer {
        let idem = uuid::Uuid::new_v4().to_string();
        self.send(Method::PATCH, &format!("/v1/orders/{id}"), key, &idem, body)
            .await
    }

    async fn until(&self, key: &str, id: &str, done: impl Fn(&str) -> bool) -> Value {
        poll_order(
            &self.client,
            &self.base,
            key,
            id,
            Duration::from_secs(90),
            done,
        )
        .await
    }

    /// Where the local prints store keeps `key`.
    fn print_file(&self, key: &str) -> PathBuf {
        self.app.data_dir.join("prints").join(key)
    }

    /// A provider's signed event for `id` of demo-brand, sent to the webhook.
    async fn pay(&self, id: &str, event: PayEvent) {
        let tenant = TenantId::parse("demo-brand").unwrap();
        let id = OrderId::parse(id).unwrap();
        let order = self.app.store.get(&tenant, &id).await.unwrap().unwrap();
        let PaymentSetup::Provider { provider, .. } = &order.payment else {
            panic!("demo-brand pays by provider");
        };
        let secrets = payments::load_or_create_secrets(&self.app.data_dir).unwrap();
        let webhook = payments::signed_event(
            &secrets,
            &order,
            provider,
            event,
            None,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let (status, body) = payments::send(&self.base, &webhook).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

fn actions(order: &Value) -> Vec<String> {
    order["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions: {order}"))
        .iter()
        .map(|a| match (a["line"].as_u64(), a["image"].as_u64()) {
            (Some(line), Some(image)) => {
                format!("{} {line}/{image}", a["action"].as_str().unwrap())
            }
            _ => a["action"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn refusal_actions(answer: &Answer) -> Vec<String> {
    actions(&json!({ "actions": answer.body["error"]["details"]["allowed_actions"] }))
}

fn modified(path: &PathBuf) -> SystemTime {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .modified()
        .unwrap()
}

#[tokio::test]
async fn a_customer_replaces_the_photo_an_order_is_held_for_and_it_ships() {
    let shop = shop().await;
    let good = upload(&shop.client, &shop.base, &shop.b2b, photo(1800, 2400), true).await;
    // Item 2's upload is a PDF, not a photo: render holds the order for it.
    let pdf = b"%PDF-1.7\n1 0 obj << >> endobj\n".to_vec();
    let bad = request_upload(&shop.client, &shop.base, &shop.b2b, pdf.len()).await;
    put_upload(&shop.client, &bad, pdf.clone()).await;
    let bad_id = bad["upload_id"].as_str().unwrap();
    let form = OrderForm::items(json!([
        {"sku": "poster-30x40", "quantity": 1, "images": [{"upload_id": good}]},
        {"sku": "poster-20x30", "quantity": 1, "images": [{"upload_id": bad_id}]},
    ]));
    let placed = printworks_tests::place(&shop.client, &shop.base, &shop.b2b, &form).await;
    let id = placed["id"].as_str().unwrap().to_string();
    let held = shop.until(&shop.b2b, &id, |s| s == "on_hold").await;
    assert_eq!(
        held["hold"]["photo"],
        json!({"line": 2, "image": 0}),
        "{held}"
    );
    assert_eq!(
        actions(&held),
        ["cancel", "replace_image 2/0", "change_address"]
    );
    // Item 1 was rendered before item 2 failed: its render is kept.
    let kept = held["items"][0]["renders"][0].clone();
    let print_key = kept["print"]["key"].as_str().unwrap().to_string();
    let rendered_at = modified(&shop.print_file(&print_key));

    // Another photo than the one it is held for: 409, naming the one allowed.
    let wrong = shop
        .replace(&shop.b2b, &id, 1, 0, json!({"upload_id": good}))
        .await;
    assert_eq!(wrong.status, 409, "{}", wrong.body);
    assert_eq!(wrong.body["error"]["code"], "action_not_allowed");
    assert!(
        wrong.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("replace_image (item 2, image 0)"),
        "{}",
        wrong.body
    );
    assert_eq!(
        refusal_actions(&wrong),
        ["cancel", "replace_image 2/0", "change_address"]
    );
    // A PDF again, an upload never completed, a photo nobody has: 422 or
    // 404, and the order is as it was.
    let again = shop
        .replace(&shop.b2b, &id, 2, 0, json!({"upload_id": bad_id}))
        .await;
    assert_eq!(
        (again.status, again.body["error"]["code"].as_str()),
        (422, Some("unsupported_image")),
        "{}",
        again.body
    );
    assert!(
        again.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a PDF document"),
        "{}",
        again.body
    );
    let pending = upload(&shop.client, &shop.base, &shop.b2b, photo(10, 10), false).await;
    let missing = shop
        .replace(&shop.b2b, &id, 2, 0, json!({"upload_id": pending}))
        .await;
    assert_eq!(
        (missing.status, missing.body["error"]["code"].as_str()),
        (422, Some("upload_missing")),
        "{}",
        missing.body
    );
    let nowhere = shop
        .replace(&shop.b2b, &id, 3, 0, json!({"upload_id": good}))
        .await;
    assert_eq!(nowhere.status, 404, "{}", nowhere.body);
    let no_url = shop
        .replace(
            &shop.b2b,
            &id,
            2,
            0,
            json!({"url": "http://example.com/a.jpg"}),
        )
        .await;
    assert_eq!(no_url.status, 422, "{}", no_url.body);
    let priced = shop
        .replace(&shop.b2b, &id, 2, 0, json!({"upload_id": good, "price": 1}))
        .await;
    assert_eq!(
        priced.body["error"]["code"], "server_computed_field",
        "{}",
        priced.body
    );
    // Another tenant's key does not see the order.
    let foreign = shop
        .replace(&shop.b2c, &id, 2, 0, json!({"upload_id": good}))
        .await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);
    assert_eq!(
        get_order(&shop.client, &shop.base, &shop.b2b, &id).await["state"],
        "on_hold"
    );

    // Held, the order is paid and not dispatched: the e-mail may change,
    // the method may not (express costs more, and it is paid).
    let email = shop
        .patch(
            &shop.b2b,
            &id,
            json!({"customer": {"email": "buyer@print.example"}}),
        )
        .await;
    assert_eq!(email.status, 200, "{}", email.body);
    assert_eq!(email.body["customer"]["email"], "buyer@print.example");
    let express = shop
        .patch(&shop.b2b, &id, json!({"shipping": {"method": "express"}}))
        .await;
    assert_eq!(
        (express.status, express.body["error"]["code"].as_str()),
        (409, Some("total_would_change")),
        "{}",
        express.body
    );
    let details = &express.body["error"]["details"];
    assert!(
        details["total_after_change"]["amount"].as_i64() > details["total"]["amount"].as_i64(),
        "{}",
        express.body
    );
    assert_eq!(
        refusal_actions(&express),
        ["cancel", "replace_image 2/0", "change_address"]
    );

    // The customer uploads a real photo and replaces the held one.
    let fresh = upload(&shop.client, &shop.base, &shop.b2b, photo(1200, 1800), true).await;
    let path = format!("/v1/orders/{id}/items/2/images/0");
    let body = json!({"upload_id": fresh, "fit": "fit", "background": "#ffffff"});
    let replaced = shop
        .send(Method::PUT, &path, &shop.b2b, "fix-1", body.clone())
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(
        (&replaced.body["state"], &replaced.body["attempt"]),
        (&json!("paid"), &json!(2))
    );
    assert_eq!(replaced.body["items"][1]["images"][0]["upload_id"], fresh);
    assert_eq!(replaced.body["changes"][1]["action"], "replace_image");
    // The same request again: the same answer, nothing done twice; the key
    // with another body: 422.
    let replay = shop
        .send(Method::PUT, &path, &shop.b2b, "fix-1", body)
        .await;
    assert!(
        replay.replayed && replay.body == replaced.body,
        "{}",
        replay.body
    );
    let reused = shop
        .send(
            Method::PUT,
            &path,
            &shop.b2b,
            "fix-1",
            json!({"upload_id": good}),
        )
        .await;
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");

    let shipped = shop.until(&shop.b2b, &id, |s| s == "shipped").await;
    assert_eq!(shipped["attempt"], 2);
    assert_eq!(
        shipped["items"][0]["renders"][0], kept,
        "item 1 kept its render"
    );
    assert_eq!(
        modified(&shop.print_file(&print_key)),
        rendered_at,
        "item 1 was not rendered again"
    );
    assert!(shipped["items"][1]["renders"][0]["print"]["sha256"].is_string());
    assert!(actions(&shipped).is_empty(), "{shipped}");

    // Shipped: a photo can no longer be replaced, and the refusal says so.
    let late = shop
        .replace(&shop.b2b, &id, 2, 0, json!({"upload_id": good}))
        .await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(refusal_actions(&late).is_empty(), "{}", late.body);
    assert!(
        late.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed now: nothing"),
        "{}",
        late.body
    );

    // Operators see the customer's change on the order's timeline.
    let now = time::OffsetDateTime::now_utc();
    let (_, key) = printworks_local::operators::add(&shop.app.store, "cs", "support", "local", now)
        .await
        .unwrap();
    let shown = ops_cmd::send(
        &Target::Http(shop.base.clone()),
        &key.full,
        &OpsRequest::show(&id),
    )
    .await
    .unwrap();
    let timeline: Vec<&str> = shown.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["event"].as_str())
        .collect();
    assert!(timeline.contains(&"customer_replace_image"), "{timeline:?}");
    shop.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_customer_changes_the_address_until_dispatch() {
    let shop = shop().await;
    let photo_id = upload(&shop.client, &shop.base, &shop.b2c, photo(1800, 2400), true).await;
    let form = OrderForm::one("poster-30x40", json!({"upload_id": photo_id}));
    let placed = printworks_tests::place(&shop.client, &shop.base, &shop.b2c, &form).await;
    let id = placed["id"].as_str().unwrap().to_string();
    assert_eq!(placed["state"], "placed");
    assert!(
        actions(&placed).contains(&"change_address".to_string()),
        "{placed}"
    );

    // Unpaid: moving it to France prices it again, and the checkout follows.
    let to_france = json!({"shipping": {"address": {
        "name": "Erika Muster", "line1": "1 rue de Rivoli", "postal_code": "75001",
        "city": "Paris", "country": "FR"}}});
    let moved = shop.patch(&shop.b2c, &id, to_france).await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved.body["shipping"]["address"]["country"], "FR");
    assert_ne!(
        moved.body["totals"]["vat_rate_bp"],
        placed["totals"]["vat_rate_bp"]
    );
    assert_eq!(
        moved.body["checkout"]["amount"],
        moved.body["totals"]["total"]["amount"]
    );
    assert_eq!(moved.body["changes"][0]["action"], "change_address");
    assert_eq!(
        moved.body["changes"][0]["details"]["fields"],
        json!(["shipping.address"])
    );

    // Bad input: a price or a state, an unknown field, a bad postal code,
    // nothing at all; another tenant's key: 404.
    for (body, code) in [
        (json!({"totals": {"total": 1}}), "server_computed_field"),
        (json!({"state": "shipped"}), "server_computed_field"),
        (
            json!({"customer": {"name": "Someone Else"}}),
            "invalid_body",
        ),
        (
            json!({"shipping": {"address": {"name": "E", "line1": "x", "postal_code": "1",
                "city": "Paris", "country": "FR"}}}),
            "validation_failed",
        ),
        (json!({}), "validation_failed"),
    ] {
        let refused = shop.patch(&shop.b2c, &id, body.clone()).await;
        assert_eq!(refused.status, 422, "{body}: {}", refused.body);
        assert_eq!(
            refused.body["error"]["code"], code,
            "{body}: {}",
            refused.body
        );
    }
    let bad_zip = shop
        .patch(
            &shop.b2c,
            &id,
            json!({"shipping": {"address": {"name": "E", "line1": "x", "postal_code": "1",
                "city": "Paris", "country": "FR"}}}),
        )
        .await;
    assert_eq!(
        bad_zip.body["error"]["details"][0]["field"],
        "shipping.address.postal_code"
    );
    let foreign = shop
        .patch(
            &shop.b2b,
            &id,
            json!({"customer": {"email": "x@example.com"}}),
        )
        .await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);

    shop.pay(&id, PayEvent::Succeeded).await;

    // Once dispatched the address goes with the jobs: 409, nothing allowed
    // but what the order still allows.
    let shipped = shop.until(&shop.b2c, &id, |s| s == "shipped").await;
    assert_eq!(shipped["shipping"]["address"]["city"], "Paris");
    let late = shop
        .patch(
            &shop.b2c,
            &id,
            json!({"customer": {"email": "late@example.com"}}),
        )
        .await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert_eq!(late.body["error"]["code"], "action_not_allowed");
    assert!(refusal_actions(&late).is_empty());
    let cancel = shop
        .send(
            Method::POST,
            &format!("/v1/orders/{id}/cancel"),
            &shop.b2c,
            "c1",
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 409, "{}", cancel.body);
    assert!(
        cancel.body["error"]["details"]["allowed_actions"].is_array(),
        "{}",
        cancel.body
    );
    shop.app.stop().await.unwrap();
}
