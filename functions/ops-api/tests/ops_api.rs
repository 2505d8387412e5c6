//! The operator API through its router on the local SQLite adapters: who
//! may do what, the refusals, and each action taken once per key.

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use ops_api::{App, Config, Ops, router};
use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::store::SqliteStore;
use printworks::clock::SystemClock;
use printworks::domain::catalog::Catalog;
use printworks::domain::operator::{Operator, OperatorId, Role, mint_operator_key};
use printworks::domain::order::Order;
use printworks::domain::state::OrderState;
use printworks::domain::tenant::mint_api_key;
use printworks::ports::{OperatorStore, OrderStore};
use printworks::testing::{b2b_tenant, paid_order};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

struct Env {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    router: axum::Router,
    support: String,
    plant_muc: String,
    tenant_key: String,
}

async fn operator(store: &SqliteStore, id: &str, role: &str) -> String {
    let id = OperatorId::parse(id).unwrap();
    let key = mint_operator_key("local", &id);
    let op = Operator {
        id,
        role: Role::parse(role).unwrap(),
        created_at: time::OffsetDateTime::now_utc(),
    };
    store.add_operator(&op, &key.record).await.unwrap();
    key.full
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("printworks.db"), Durability::Normal).unwrap();
    let store = SqliteStore::new(Arc::new(db));
    let support = operator(&store, "sam", "support").await;
    let plant_muc = operator(&store, "pia", "plant:muc").await;
    let tenant_key = mint_api_key("local", &b2b_tenant().id).full;
    let shared = Arc::new(store.clone());
    let prints = Arc::new(
        printworks::adapters::local::blobs::FsBlobStore::open(
            dir.path().join("prints"),
            "http://127.0.0.1:9/prints",
            Arc::new(SystemClock),
        )
        .unwrap(),
    );
    let app = App::new(
        Config::for_env("local").unwrap(),
        Ops {
            stats: Some(shared.clone()),
            notifications: Some(shared.clone()),
            caps: printworks::domain::notify::DailyCaps::parse(
                r#"{"tenants": {"acme-prints": {"email": 2}}}"#,
            )
            .unwrap(),
            prints: Some(prints),
            production: Some(shared.clone()),
            idle: Some(shared.clone()),
            ..Ops::new(
                Arc::new(Catalog::builtin().clone()),
                shared.clone(),
                Arc::new(SystemClock),
            )
        },
        shared,
    );
    Env {
        _dir: dir,
        store,
        router: router(Arc::new(app)),
        support,
        plant_muc,
        tenant_key,
    }
}

impl Env {
    /// `plant`'s agent reported at `at`.
    async fn store_reported(&self, plant: &str, at: time::OffsetDateTime) {
        use printworks::ports::ProductionStore;
        self.store.plant_reported(plant, at).await.unwrap();
    }
}

/// A paid poster order held before rendering (the photo was too small).
async fn held_order(env: &Env) -> Order {
    let new = paid_order(
        &[("poster-30x40", 1)],
        "DE",
        time::OffsetDateTime::now_utc(),
    );
    let order = new.order.clone();
    env.store.place(new).await.unwrap();
    let (held, event) = order
        .hold(
            "The photo is too small.",
            json!({"code": "too_small"}),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    env.store
        .transition(&held, &order, vec![event])
        .await
        .unwrap();
    held
}

async fn call(
    env: &Env,
    method: &str,
    path: &str,
    key: Option<&str>,
    idempotency: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, bool) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let Some(k) = idempotency {
        request = request.header("idempotency-key", k);
    }
    let body = match body {
        Some(v) => {
            request = request.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let response = env
        .router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"));
    (status, value, replayed)
}

#[tokio::test]
async fn a_held_order_is_released_once_per_key_and_shows_who_did_it() {
    let env = env().await;
    let held = held_order(&env).await;
    let path = format!("/v1/ops/orders/{}/release", held.id);
    let body = json!({"reason": "customer sent a larger photo"});
    let (status, first, replayed) = call(
        &env,
        "POST",
        &path,
        Some(&env.support),
        Some("rel-1"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(!replayed);
    assert_eq!(first["order"]["state"], "paid");
    assert_eq!(first["order"]["attempt"], 2);
    assert_eq!(first["action"]["operator"], "sam");
    assert_eq!(first["action"]["action"], "release");
    assert_eq!(first["action"]["details"]["stage"], "render");

    // The same request again: the same answer, nothing done twice.
    let (status, again, replayed) = call(
        &env,
        "POST",
        &path,
        Some(&env.support),
        Some("rel-1"),
        Some(body),
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::OK, true));
    assert_eq!(again, first);
    let stored = env.store.find_order(&held.id).await.unwrap().unwrap();
    assert_eq!((stored.actions.len(), stored.attempt), (1, 2));

    // The key with another request is refused; so is a second release.
    let (status, reused, _) = call(
        &env,
        "POST",
        &path,
        Some(&env.support),
        Some("rel-1"),
        Some(json!({"reason": "something else"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reused}");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    let (status, conflict, _) = call(
        &env,
        "POST",
        &path,
        Some(&env.support),
        Some("rel-2"),
        Some(json!({"reason": "again"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(
        conflict["error"]["details"]["allowed_actions"],
        json!(["show", "cancel"])
    );

    // Shown with its timeline, its actions and what may be done now.
    let (status, shown, _) = call(
        &env,
        "GET",
        &format!("/v1/ops/orders/{}", held.id),
        Some(&env.support),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        shown["actions"][0]["reason"],
        "customer sent a larger photo"
    );
    assert_eq!(shown["allowed_actions"], json!(["show", "cancel"]));
    let events: Vec<&str> = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"placed"));
    assert!(events.contains(&"operator_release"), "{events:?}");
    assert_eq!(events.last(), Some(&"now_paid"), "{events:?}");
}

#[tokio::test]
async fn bad_requests_are_refused_with_what_is_allowed_instead() {
    let env = env().await;
    let held = held_order(&env).await;
    let release = format!("/v1/ops/orders/{}/release", held.id);
    let reason = json!({"reason": "checked"});
    let refused = |status: StatusCode, body: &Value, code: &str| {
        assert_eq!(body["error"]["code"], code, "{status}: {body}");
    };

    let (s, b, _) = call(
        &env,
        "POST",
        &release,
        None,
        Some("k"),
        Some(reason.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    refused(s, &b, "unauthorized");
    let tenant = env.tenant_key.clone();
    let (s, b, _) = call(
        &env,
        "POST",
        &release,
        Some(&tenant),
        Some("k"),
        Some(reason.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        b["error"]["message"].as_str().unwrap().contains("tenant"),
        "{b}"
    );

    let (s, b, _) = call(
        &env,
        "POST",
        &release,
        Some(&env.support),
        None,
        Some(reason.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    refused(s, &b, "idempotency_key_required");

    let unknown = "/v1/ops/orders/ord_00000000000000000000000000/release";
    let (s, b, _) = call(
        &env,
        "POST",
        unknown,
        Some(&env.support),
        Some("k"),
        Some(reason.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, _, _) = call(
        &env,
        "GET",
        "/v1/ops/orders/not-an-order",
        Some(&env.support),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A plant's operator may not release, nor see an order not at the plant.
    let muc = env.plant_muc.clone();
    let (s, b, _) = call(
        &env,
        "POST",
        &release,
        Some(&muc),
        Some("k"),
        Some(reason.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(
        b["error"]["details"]["role_allows"],
        json!(["show", "reprint"])
    );
    let (s, _, _) = call(
        &env,
        "GET",
        &format!("/v1/ops/orders/{}", held.id),
        Some(&muc),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A reason is required, and must say something.
    let (s, b, _) = call(
        &env,
        "POST",
        &release,
        Some(&env.support),
        Some("k1"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("reason"),
        "{b}"
    );
    let (s, b, _) = call(
        &env,
        "POST",
        &release,
        Some(&env.support),
        Some("k2"),
        Some(json!({"reason": "  "})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["details"]["field"], "reason");
    // A plant that does not exist.
    let (s, b, _) = call(
        &env,
        "POST",
        &release,
        Some(&env.support),
        Some("k3"),
        Some(json!({"reason": "x", "plant": "nowhere"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["details"]["field"], "plant");

    // A reprint of an order with nothing printed: 409, with what is allowed.
    let reprint = format!("/v1/ops/orders/{}/reprint", held.id);
    let (s, b, _) = call(
        &env,
        "POST",
        &reprint,
        Some(&env.support),
        Some("k4"),
        Some(json!({"reason": "x", "jobs": ["job_x"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(
        b["error"]["details"]["allowed_actions"],
        json!(["show", "release", "cancel"])
    );

    // Nothing of the refused requests was kept.
    let stored = env.store.find_order(&held.id).await.unwrap().unwrap();
    assert_eq!(stored.state, OrderState::OnHold);
    assert!(stored.actions.is_empty());

    // Cancel, then nothing more but show.
    let cancel = format!("/v1/ops/orders/{}/cancel", held.id);
    let (s, b, _) = call(
        &env,
        "POST",
        &cancel,
        Some(&env.support),
        Some("c1"),
        Some(json!({"reason": "customer asked"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["order"]["state"], "cancelled");
    let (s, b, _) = call(
        &env,
        "POST",
        &cancel,
        Some(&env.support),
        Some("c2"),
        Some(json!({"reason": "again"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["details"]["allowed_actions"], json!(["show"]));
}

/// Held orders are listed with why, and what the operator may do; a
/// plant's operator sees only their plant's (this one is not dispatched:
/// no plant's), and never the customer's e-mail or phone on an order.
#[tokio::test]
async fn held_orders_are_listed_by_role_and_a_plant_never_sees_how_to_reach_the_customer() {
    let env = env().await;
    let held = held_order(&env).await;
    let (status, listed, _) =
        call(&env, "GET", "/v1/ops/holds", Some(&env.support), None, None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let line = &listed["orders"][0];
    assert_eq!(line["order_id"], held.id.as_str());
    assert_eq!(line["code"], "too_small");
    assert_eq!(line["from"], "paid");
    assert_eq!(line["customer_can_fix"], false);
    assert_eq!(line["actions"], json!(["show", "release", "cancel"]));
    let (status, mine, _) = call(
        &env,
        "GET",
        "/v1/ops/holds",
        Some(&env.plant_muc),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["orders"], json!([]));
    // The support operator sees how to reach the customer; on a plant's
    // order, its plant's operator sees the name and the ship-to only.
    let (_, shown, _) = call(
        &env,
        "GET",
        &format!("/v1/ops/orders/{}", held.id),
        Some(&env.support),
        None,
        None,
    )
    .await;
    assert_eq!(shown["order"]["customer"]["email"], "erika@example.com");
    let at_muc = printworks::testing::stored_dispatched(
        &env.store,
        &[("poster-30x40", 1)],
        time::OffsetDateTime::now_utc(),
    )
    .await;
    let plant = at_muc.production.as_ref().unwrap().plant.clone();
    let key = if plant == "muc" {
        env.plant_muc.clone()
    } else {
        operator(&env.store, "bo", &format!("plant:{plant}")).await
    };
    let (status, shown, _) = call(
        &env,
        "GET",
        &format!("/v1/ops/orders/{}", at_muc.id),
        Some(&key),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["order"]["customer"], json!({"name": "Erika Muster"}));
    assert_eq!(shown["order"]["shipping"]["address"]["city"], "Musterstadt");
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_writes_from_another_site_are_refused() {
    let env = env().await;
    let response = env
        .router
        .clone()
        .oneshot(Request::get("/console").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe"),
        "{policy}"
    );
    assert!(policy.contains("frame-ancestors 'none'"));
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let page = response.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(page.contains(r#"<script type="module" src="/console/console.js">"#));
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "no inline script or style"
    );
    for (file, kind) in [
        ("console.js", "text/javascript"),
        ("console.css", "text/css"),
    ] {
        let response = env
            .router
            .clone()
            .oneshot(
                Request::get(format!("/console/{file}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
    let (status, missing, _) = call(&env, "GET", "/console/other.js", None, None, None).await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // An action posted by another site's page: refused before anything.
    let held = held_order(&env).await;
    let request = Request::post(format!("/v1/ops/orders/{}/cancel", held.id))
        .header("authorization", format!("Bearer {}", env.support))
        .header("content-type", "application/json")
        .header("idempotency-key", "x-1")
        .header("host", "ops.example.com")
        .header("origin", "https://evil.example.net")
        .body(Body::from(r#"{"reason":"forged"}"#))
        .unwrap();
    let response = env.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "cross_site_request");
    let still = env
        .store
        .get(&held.tenant, &held.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.state, OrderState::OnHold, "nothing happened");
    // The same from the console's own origin goes through.
    let request = Request::post(format!("/v1/ops/orders/{}/cancel", held.id))
        .header("authorization", format!("Bearer {}", env.support))
        .header("content-type", "application/json")
        .header("idempotency-key", "x-2")
        .header("host", "ops.example.com")
        .header("origin", "https://ops.example.com")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(r#"{"reason":"the customer asked"}"#))
        .unwrap();
    assert_eq!(
        env.router.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
}

/// The live stream: where there is no feed (the Lambda) a 501 that says to
/// poll; on the local bus, what is published after the stream opened, as
/// ids and types only, resumable from `Last-Event-ID`.
#[tokio::test]
async fn the_live_stream_carries_what_happens_and_says_so_where_it_cannot() {
    let env = env().await;
    let (status, refused, _) =
        call(&env, "GET", "/v1/ops/live", Some(&env.support), None, None).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::NOT_IMPLEMENTED, Some("live_unavailable"))
    );

    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path().join("live.db"), Durability::Normal).unwrap());
    let store = Arc::new(SqliteStore::new(db.clone()));
    let support = operator(&store, "sam", "support").await;
    let bus = printworks::adapters::local::bus::LocalBus::new(db, Arc::new(SystemClock));
    let app = App::new(
        Config::for_env("local").unwrap(),
        Ops {
            feed: Some(Arc::new(bus.clone())),
            ..Ops::new(
                Arc::new(Catalog::builtin().clone()),
                store.clone(),
                Arc::new(SystemClock),
            )
        },
        store.clone(),
    );
    let live = router(Arc::new(app));
    let before = paid_order(
        &[("poster-30x40", 1)],
        "DE",
        time::OffsetDateTime::now_utc(),
    );
    store.place(before).await.unwrap();
    bus.relay_outbox(100).await.unwrap();
    let response = live
        .clone()
        .oneshot(
            Request::get("/v1/ops/live")
                .header("authorization", format!("Bearer {support}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut next = async || -> String {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("a message in time")
            .unwrap()
            .unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    };
    let hello = next().await;
    assert!(hello.contains("event: open"), "{hello}");
    let opened_at: i64 = hello
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .parse()
        .unwrap();
    let after = paid_order(
        &[("poster-30x40", 1)],
        "DE",
        time::OffsetDateTime::now_utc(),
    );
    let id = after.order.id.clone();
    store.place(after).await.unwrap();
    bus.relay_outbox(100).await.unwrap();
    let message = next().await;
    // Only what happened after the stream opened: the new order's events.
    assert_eq!(message.matches("event: order").count(), 2, "{message}");
    assert!(
        message.contains(&format!("\"order_id\":\"{id}\"")),
        "{message}"
    );
    assert!(
        message.contains("\"type\":\"OrderPlaced\"") && message.contains("\"type\":\"OrderPaid\"")
    );
    assert!(
        !message.contains("erika") && !message.contains("amount"),
        "ids and types only: {message}"
    );
    let last: i64 = message
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap()
        .parse()
        .unwrap();
    assert!(last > opened_at);
    // Resumed from the first of them, the second comes again.
    let response = live
        .oneshot(
            Request::get("/v1/ops/live")
                .header("authorization", format!("Bearer {support}"))
                .header("last-event-id", (last - 1).to_string())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut resumed = String::new();
    while !resumed.contains("event: order") {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        resumed.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
    assert!(resumed.contains(&format!("id: {last}")), "{resumed}");
}

/// Search by each key and filter, newest first, a page at a time; a
/// plant's operator finds their plant's orders only, and never by e-mail.
#[tokio::test]
async fn orders_are_found_by_each_key_and_filter_a_page_at_a_time() {
    use printworks::domain::production::JobState;
    let env = env().await;
    let t0 = time::macros::datetime!(2026-11-20 09:00 UTC);
    let mut placed = Vec::new();
    for i in 0..7i64 {
        let mut new = paid_order(
            &[("poster-30x40", 1)],
            "DE",
            t0 + time::Duration::hours(12 * i),
        );
        new.order.reference = Some(format!("PO-{i}"));
        if i == 3 {
            new.order.customer.email = "Jane.Doe@Example.com".into();
        }
        placed.push(new.order.clone());
        env.store.place(new).await.unwrap();
    }
    // One dispatched order with a tracked parcel.
    let shipped = printworks::testing::stored_dispatched(
        &env.store,
        &[("poster-30x40", 1)],
        t0 + time::Duration::days(5),
    )
    .await;
    report(
        &env,
        &shipped,
        0,
        JobState::Shipped,
        t0 + time::Duration::days(6),
    )
    .await;
    let tracking = format!("JJD0{}", shipped.id);
    let search = |body: Value| {
        let env = &env;
        async move {
            call(
                env,
                "POST",
                "/v1/ops/search",
                Some(&env.support),
                None,
                Some(body),
            )
            .await
        }
    };
    let ids = |found: &Value| -> Vec<String> {
        found["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["order_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, found, _) = search(json!({"email": "jane.doe@example.COM"})).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(ids(&found), [placed[3].id.to_string()]);
    let (_, found, _) = search(json!({"reference": "PO-5"})).await;
    assert_eq!(ids(&found), [placed[5].id.to_string()]);
    let (_, found, _) = search(json!({"tracking": tracking})).await;
    assert_eq!(ids(&found), [shipped.id.to_string()], "{found}");
    assert_eq!(found["orders"][0]["tracking"], json!([tracking]));
    let (_, found, _) = search(json!({"order_id": placed[1].id})).await;
    assert_eq!(ids(&found), [placed[1].id.to_string()]);
    // The days placed, newest first, two at a time.
    let (_, first, _) = search(json!({"from": "2026-11-21", "to": "2026-11-22", "limit": 2})).await;
    assert_eq!(
        ids(&first),
        [placed[5].id.to_string(), placed[4].id.to_string()]
    );
    let (_, second, _) = search(
        json!({"from": "2026-11-21", "to": "2026-11-22", "limit": 2, "cursor": first["next"]}),
    )
    .await;
    assert_eq!(
        ids(&second),
        [placed[3].id.to_string(), placed[2].id.to_string()]
    );
    assert_eq!(second["next"], Value::Null);
    let (_, held, _) = search(json!({"state": "shipped", "tenant": "acme-prints"})).await;
    assert_eq!(ids(&held), [shipped.id.to_string()]);
    let (_, none, _) = search(json!({"state": "cancelled"})).await;
    assert_eq!(none["orders"], json!([]));
    // Refusals say what is wrong.
    for (body, code) in [
        (json!({"email": "  "}), "validation_failed"),
        (
            json!({"from": "2026-11-22", "to": "2026-11-21"}),
            "validation_failed",
        ),
        (json!({"cursor": "bm9wZQ"}), "validation_failed"),
        (json!({"state": "lost"}), "validation_failed"),
        (json!({"limit": 0}), "validation_failed"),
    ] {
        let (status, error, _) = search(body.clone()).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{body}: {error}"
        );
    }
    let (status, error, _) = search(json!({"phone": "1"})).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body")),
        "{error}"
    );
    // A plant's operator: their plant's orders, never by e-mail.
    let (status, refused, _) = call(
        &env,
        "POST",
        "/v1/ops/search",
        Some(&env.plant_muc),
        None,
        Some(json!({"email": "jane.doe@example.com"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let (_, mine, _) = call(
        &env,
        "POST",
        "/v1/ops/search",
        Some(&env.plant_muc),
        None,
        Some(json!({})),
    )
    .await;
    let expected: Vec<String> = if shipped.production.as_ref().unwrap().plant == "muc" {
        vec![shipped.id.to_string()]
    } else {
        vec![]
    };
    assert_eq!(ids(&mine), expected);
}

/// A plant's report on job `index` of `order` (as stored now), applied as
/// production-events applies it: the plant's last report, the job's
/// record, a shipment counted.
async fn report(
    env: &Env,
    order: &Order,
    index: usize,
    status: printworks::domain::production::JobState,
    at: time::OffsetDateTime,
) {
    use printworks::domain::job_records::{ReportOutcome, apply_report};
    use printworks::domain::production::{JobState, JobStatusReport};
    use printworks::ports::ProductionStore;
    let production = order.production.as_ref().unwrap();
    let job = &production.jobs[index];
    let view = env
        .store
        .job_view(&order.tenant, &order.id, &job.job_id)
        .await
        .unwrap()
        .unwrap();
    let report = JobStatusReport {
        job_id: job.job_id.clone(),
        plant: production.plant.clone(),
        tenant: order.tenant.clone(),
        order_id: order.id.clone(),
        status,
        at,
        carrier: (status == JobState::Shipped).then(|| "DHL".to_string()),
        tracking: (status == JobState::Shipped).then(|| format!("JJD{index}{}", order.id)),
        reason: None,
    };
    env.store.plant_reported(&report.plant, at).await.unwrap();
    let ReportOutcome::Changed(change) =
        apply_report(&view.order, &view.record, view.job.as_ref(), &report, at)
    else {
        panic!("the report applies")
    };
    let change = *change;
    let shipped = change.closed > 0 && change.job.status == Some(JobState::Shipped);
    env.store
        .record_job(printworks::ports::JobWrite {
            tenant: order.tenant.clone(),
            order_id: order.id.clone(),
            job: change.job,
            record: change.record,
            observed_revision: view.record.revision,
            order: change.order.map(|next| (next, view.order.clone())),
            events: change.events,
            plant: production.plant.clone(),
            open_jobs_delta: -change.closed,
            shipped,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_plants_view_counts_open_jobs_by_state_oldest_first_with_what_each_plant_reported() {
    use printworks::domain::production::JobState;
    use printworks::testing::stored_dispatched;
    let env = env().await;
    let now = time::OffsetDateTime::now_utc();
    let hours = |h: i64| now - time::Duration::hours(h);
    let a = stored_dispatched(&env.store, &[("poster-30x40", 2)], hours(3)).await;
    let b = stored_dispatched(&env.store, &[("poster-30x40", 1)], hours(2)).await;
    let c = stored_dispatched(&env.store, &[("poster-30x40", 1)], hours(1)).await;
    // Dispatch chose the plant; its operators and its row are looked at.
    let at = a.production.as_ref().unwrap().plant.clone();
    let its_operator = operator(&env.store, "pat", &format!("plant:{at}")).await;
    report(&env, &a, 0, JobState::Accepted, hours(2)).await;
    report(
        &env,
        &a,
        0,
        JobState::Printing,
        now - time::Duration::minutes(90),
    )
    .await;
    report(
        &env,
        &b,
        0,
        JobState::Shipped,
        now - time::Duration::minutes(30),
    )
    .await;
    // A report that changes nothing still says the agent is there.
    env.store_reported(&at, now - time::Duration::minutes(5))
        .await;

    let (status, board, _) = call(
        &env,
        "GET",
        "/v1/ops/plants",
        Some(&env.support),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{board}");
    assert_eq!(board["complete"], true);
    let plants: Vec<&str> = board["plants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["plant"].as_str().unwrap())
        .collect();
    let mut catalog: Vec<&str> = Catalog::builtin()
        .plants
        .keys()
        .map(String::as_str)
        .collect();
    catalog.sort_unstable();
    assert_eq!(plants, catalog, "every plant of the catalog, by id");
    let row = board["plants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plant"] == at.as_str())
        .unwrap();
    // a: one printing, one sent; b shipped (not open); c: one sent.
    assert_eq!(row["open_jobs"], 3, "{row}");
    assert_eq!(
        row["by_state"],
        json!({"sent": 2, "accepted": 0, "printing": 1, "printed": 0, "packed": 0})
    );
    assert_eq!(row["shipped_today"], 1);
    let oldest = &row["oldest_job"];
    assert_eq!(oldest["order_id"], a.id.to_string());
    let age = oldest["age_minutes"].as_i64().unwrap();
    assert!((179..=181).contains(&age), "sent 3 hours ago: {age}");
    let listed: Vec<&str> = row["oldest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [a.id.as_str(), a.id.as_str(), c.id.as_str()],
        "oldest first"
    );
    let last = row["last_report_minutes_ago"].as_i64().unwrap();
    assert!(
        (4..=6).contains(&last),
        "the latest report, 5 minutes ago: {last}"
    );
    // An earlier report arriving late does not move it back.
    env.store_reported(&at, hours(10)).await;
    let (_, again, _) = call(
        &env,
        "GET",
        "/v1/ops/plants",
        Some(&env.support),
        None,
        None,
    )
    .await;
    let row_again = again["plants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plant"] == at.as_str())
        .unwrap();
    assert_eq!(row_again["last_report_at"], row["last_report_at"]);
    for other in board["plants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["plant"] != at.as_str())
    {
        assert_eq!(other["open_jobs"], 0, "{other}");
        assert_eq!(other["last_report_at"], Value::Null);
        assert_eq!(other["oldest_job"], Value::Null);
    }

    // A plant's operators see their own plant only.
    let (status, own, _) = call(
        &env,
        "GET",
        "/v1/ops/plants",
        Some(&its_operator),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(own["plants"].as_array().unwrap().len(), 1);
    assert_eq!(own["plants"][0]["plant"], at.as_str());
    assert_eq!(own["plants"][0]["open_jobs"], 3);
    let (status, _, _) = call(&env, "GET", "/v1/ops/plants", None, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_order_page_shows_its_previews_and_notifications_without_bodies_and_the_statistics_their_caps()
 {
    use printworks::domain::notify::{Channel, cap_day};
    use printworks::ports::{
        EmailMessage, NotificationRecord, NotificationStatus, NotificationStore, Outgoing,
    };
    let env = env().await;
    let now = time::OffsetDateTime::now_utc();
    let order =
        printworks::testing::stored_dispatched(&env.store, &[("poster-30x40", 1)], now).await;
    let mail = |n: u32| NotificationRecord {
        id: format!("n-{n}"),
        tenant: order.tenant.clone(),
        order_id: order.id.clone(),
        event_id: format!("evt-{n}"),
        event_type: printworks::domain::events::EventType::OrderDispatched,
        message: Outgoing::Email(Box::new(EmailMessage {
            from_name: "Shop".into(),
            from_address: "orders@shop.example".into(),
            reply_to: None,
            to_name: "Jane".into(),
            to_address: "jane.secret@example.com".into(),
            subject: format!("Your order is on its way ({n})"),
            text: "THE BODY".into(),
            html: "<p>THE BODY</p>".into(),
            language: "en".into(),
            message_id: format!("n-{n}@shop.example"),
        })),
        status: NotificationStatus::Retry,
        attempts: 0,
        created_at: now + time::Duration::seconds(i64::from(n)),
    };
    let lease = std::time::Duration::from_secs(60);
    // The tenant's e-mail cap is 2 a day here: the third is deferred.
    for n in 1..=3 {
        env.store.claim(&mail(n), 2, now, lease).await.unwrap();
    }
    env.store
        .finish(
            "n-1",
            NotificationStatus::Sent {
                at: now,
                provider_id: "p-1".into(),
            },
            now,
        )
        .await
        .unwrap();

    let path = format!("/v1/ops/orders/{}", order.id);
    let (status, view, _) = call(&env, "GET", &path, Some(&env.support), None, None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let previews = view["previews"].as_array().unwrap();
    let renders = &order.items[0].renders;
    assert_eq!(previews.len(), renders.len());
    let url = previews[0]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!(
            "http://127.0.0.1:9/prints/blobs/{}",
            renders[0].preview.key
        )) && url.contains("sig="),
        "a presigned link to the preview: {url}"
    );
    let lines = view["notifications"].as_array().unwrap();
    let statuses: Vec<&str> = lines
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["sent", "sending", "deferred"], "{lines:?}");
    assert_eq!(lines[0]["subject"], "Your order is on its way (1)");
    assert_eq!(lines[0]["channel"], "email");
    assert_eq!(lines[0]["event"], "OrderDispatched");
    let text = view["notifications"].to_string();
    assert!(
        !text.contains("THE BODY") && !text.contains("jane.secret"),
        "{text}"
    );
    // A plant's operators are not shown what the customer was sent.
    let plant = order.production.as_ref().unwrap().plant.clone();
    let its_operator = operator(&env.store, "pat", &format!("plant:{plant}")).await;
    let (_, plant_view, _) = call(&env, "GET", &path, Some(&its_operator), None, None).await;
    assert!(plant_view.get("notifications").is_none(), "{plant_view}");
    assert_eq!(
        plant_view["previews"].as_array().unwrap().len(),
        renders.len()
    );

    // The statistics: 2 sent (the cap) and 1 deferred, today.
    let day = cap_day(now).to_string();
    let (status, stats, _) = call(
        &env,
        "GET",
        &format!("/v1/ops/stats?from={day}&to={day}"),
        Some(&env.support),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(
        stats["notifications"],
        json!([{"day": day, "tenant": order.tenant.as_str(), "channel": Channel::Email.as_str(), "sent": 2, "deferred": 1, "cap": 2}])
    );
    // A send released to be tried again no longer counts against the cap.
    env.store.release("n-2").await.unwrap();
    let (_, stats, _) = call(
        &env,
        "GET",
        &format!("/v1/ops/stats?from={day}&to={day}"),
        Some(&env.support),
        None,
        None,
    )
    .await;
    assert_eq!(stats["notifications"][0]["sent"], 1);
    let (_, plant_stats, _) = call(
        &env,
        "GET",
        &format!("/v1/ops/stats?from={day}&to={day}"),
        Some(&env.plant_muc),
        None,
        None,
    )
    .await;
    assert_eq!(plant_stats["notifications"], json!([]));
}
