//! `printworks up` takes orders all the way to shipped: dispatch chooses the
//! plant, the plant's edge agent relays each job into its hot folder, the
//! simulated machine prints it, the agent packs, ships and reports, and
//! production-events moves the order.

use printworks::domain::events::EventType;
use printworks::domain::order::OrderId;
use printworks::domain::tenant::TenantId;
use printworks::ports::ProductionStore;
use printworks_local::platform;
use printworks_tests::{FINAL_STATES, OrderForm, photo, poll_order, seeded_key, spawn_app, upload};
use reqwest::Client;
use serde_json::{Value, json};
use std::time::Duration;

/// Places `items` shipped express to `country`; the order's id.
async fn place(
    client: &Client,
    base: &str,
    key: &str,
    items: Value,
    country: &str,
    postal: &str,
) -> String {
    let form = OrderForm::items(items)
        .express()
        .ship_to(country, postal, "Hafen");
    printworks_tests::place(client, base, key, &form).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn until_final(client: &Client, base: &str, key: &str, id: &str) -> Value {
    poll_order(client, base, key, id, Duration::from_secs(60), |s| {
        FINAL_STATES.contains(&s)
    })
    .await
}

#[tokio::test]
async fn printworks_up_ships_orders_from_both_plants() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let base = app.base_url();
    let key = seeded_key(&app, "demo-b2b");
    let client = Client::new();
    let upload_id = upload(&client, &base, &key, photo(1800, 2400), true).await;
    let image = json!([{"upload_id": upload_id}]);
    // Posters to Switzerland: muc serves CH. A canvas is made only in btf.
    let posters = place(
        &client,
        &base,
        &key,
        json!([{"sku": "poster-20x30", "quantity": 2, "images": image}]),
        "CH",
        "8001",
    )
    .await;
    let canvas = place(
        &client,
        &base,
        &key,
        json!([{"sku": "canvas-30x40", "quantity": 1, "images": image}]),
        "CH",
        "8001",
    )
    .await;

    for (id, plant, jobs) in [(&posters, "muc", 2), (&canvas, "btf", 1)] {
        let order = until_final(&client, &base, &key, id).await;
        assert_eq!(order["state"], "shipped", "{order}");
        let production = &order["production"];
        assert_eq!(production["plant"], plant);
        let records = production["jobs"].as_array().unwrap();
        assert_eq!(records.len(), jobs);
        let plant_dir = platform::plant_dir(dir.path(), plant);
        let printed = std::fs::read_to_string(plant_dir.join("printed.log")).unwrap();
        for job in records {
            assert_eq!(job["status"], "shipped");
            assert_eq!(job["carrier"], "SIM-POST");
            assert!(job["tracking"].as_str().unwrap().starts_with("SIM"));
            let job_id = job["job_id"].as_str().unwrap();
            // The machine took the job from its hot folder once, with its ticket.
            assert_eq!(
                printed.lines().filter(|l| *l == job_id).count(),
                1,
                "{job_id}"
            );
            let ticket: Value = serde_json::from_slice(
                &std::fs::read(plant_dir.join("done").join(format!("{job_id}.ticket.json")))
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(ticket["order_id"], id.as_str());
            let file = plant_dir
                .join("done")
                .join(ticket["files"][0].as_str().unwrap());
            assert!(std::fs::metadata(file).unwrap().len() > 10_000);
        }
        // The timeline is what the relay moved: let it catch up.
        while app.bus.outbox_len().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let events: Vec<EventType> = app
            .bus
            .events_of(
                &TenantId::parse("demo-b2b").unwrap(),
                &OrderId::parse(id).unwrap(),
            )
            .await
            .unwrap()
            .iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(
            events,
            [
                EventType::OrderPlaced,
                EventType::OrderPaid,
                EventType::OrderRendered,
                EventType::OrderDispatched,
                EventType::OrderInProduction,
                EventType::OrderShipped
            ]
        );
    }
    // Nothing left behind: no job waiting, no report unread, nothing dead-lettered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for queue in [
        "plant-muc-jobs",
        "plant-btf-jobs",
        "plant-events",
        "dispatch",
        "plant-events-dlq",
        "dispatch-dlq",
        "plant-muc-jobs-dlq",
        "plant-btf-jobs-dlq",
    ] {
        assert_eq!(app.bus.depth(queue).await.unwrap(), 0, "{queue}");
    }
    let open = app
        .store
        .open_jobs(&["muc".into(), "btf".into()])
        .await
        .unwrap();
    assert_eq!(open.values().sum::<i64>(), 0, "{open:?}");
    app.stop().await.unwrap();
}
