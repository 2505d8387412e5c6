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
    let app = App::new(
        Config::for_env("local").unwrap(),
        Ops::new(
            Arc::new(Catalog::builtin().clone()),
            shared.clone(),
            Arc::new(SystemClock),
        ),
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
