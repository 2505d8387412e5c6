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

/// An order of 50 lines of 100 copies (5,000 jobs) from placement to
/// shipped on `printworks up`: each job printed once, every report applied
/// to its own job record, and each print file fetched by the plant once
/// (its copies in the machine's folder are links to one download).
#[tokio::test]
async fn printworks_up_ships_an_order_of_5000_copies() {
    use printworks_local::platform::{Options, PlantOptions};
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::unix::fs::MetadataExt;

    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let app = platform::start(Options {
        port: 0,
        plants: PlantOptions {
            print_delay: Duration::ZERO,
            ship_delay: Duration::from_millis(100),
            ..PlantOptions::default()
        },
        ..Options::new(dir.path())
    })
    .await
    .expect("the platform starts");
    let base = app.base_url();
    let key = seeded_key(&app, "demo-b2b");
    let client = Client::new();
    let mut photos = Vec::new();
    for n in 0..5 {
        photos.push(upload(&client, &base, &key, photo(1200 + 8 * n, 1800), true).await);
    }
    let items: Vec<Value> = (0..50)
        .map(|line| {
            json!({
                "sku": "photo-10x15", "quantity": 100,
                "images": [{"upload_id": photos[line % photos.len()]}],
            })
        })
        .collect();
    let id = place(&client, &base, &key, json!(items), "DE", "10115").await;

    // Polled every two seconds: the order of 5,000 jobs is a large answer.
    let shipped = loop {
        let order = printworks_tests::get_order(&client, &base, &key, &id).await;
        if FINAL_STATES.contains(&order["state"].as_str().unwrap_or_default()) {
            break order;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "still {} after 15 minutes",
            order["state"]
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(shipped["state"], "shipped");
    let production = &shipped["production"];
    let jobs = production["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 5_000);
    assert!(
        jobs.iter().all(|j| j["status"] == "shipped"),
        "every job shipped"
    );
    let plant = production["plant"].as_str().unwrap();

    // Each job printed once.
    let plant_dir = platform::plant_dir(dir.path(), plant);
    let printed = std::fs::read_to_string(plant_dir.join("printed.log")).unwrap();
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for line in printed.lines() {
        *times.entry(line).or_default() += 1;
    }
    assert_eq!(times.len(), 5_000);
    assert!(times.values().all(|n| *n == 1), "a job printed twice");
    for job in jobs {
        assert!(times.contains_key(job["job_id"].as_str().unwrap()));
    }

    // The print files the machine took: 5,000, as links to at most one
    // download per print file (50 lines; lines of the same photo render
    // the same bytes).
    let mut files = 0;
    let mut downloads = BTreeSet::new();
    for entry in std::fs::read_dir(plant_dir.join("done")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().ends_with(".jpg") {
            files += 1;
            downloads.insert(entry.metadata().unwrap().ino());
        }
    }
    assert_eq!(files, 5_000);
    assert!(
        downloads.len() <= 50,
        "{} downloads for 5,000 copies",
        downloads.len()
    );

    // One OrderShipped, nothing left behind.
    while app.bus.outbox_len().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events: Vec<EventType> = app
        .bus
        .events_of(
            &TenantId::parse("demo-b2b").unwrap(),
            &OrderId::parse(&id).unwrap(),
        )
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == EventType::OrderShipped)
            .count(),
        1,
        "{events:?}"
    );
    let open = app.store.open_jobs(&[plant.to_string()]).await.unwrap();
    assert_eq!(open.values().sum::<i64>(), 0, "{open:?}");
    println!(
        "5,000 copies shipped on printworks up in {:.1} s; {} print file downloads",
        started.elapsed().as_secs_f64(),
        downloads.len()
    );
    app.stop().await.unwrap();
}
