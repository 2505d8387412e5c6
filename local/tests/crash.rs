//! An order accepted before a `kill -9` of `printworks up` is there after
//! a restart, and Ctrl-C stops it cleanly: the real binary, signalled for real.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Up {
    child: Child,
    base: String,
    keys: Vec<(String, String)>,
}

fn start(data_dir: &std::path::Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_printworks"))
        .args(["up", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("printworks starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut keys) = (None, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(url) = line.strip_prefix("listening on ") {
            base = Some(url.to_string());
        } else if let Some(rest) = line.strip_prefix("key ") {
            let (tenant, key) = rest.split_once(' ').unwrap();
            keys.push((tenant.to_string(), key.to_string()));
        } else if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    // Keep reading stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Up {
        child,
        base: base.expect("printworks printed its address"),
        keys,
    }
}

#[tokio::test]
async fn an_order_accepted_before_kill_9_is_there_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = start(dir.path());
    let key = up
        .keys
        .iter()
        .find(|(t, _)| t == "demo-b2b")
        .expect("demo-b2b key printed")
        .1
        .clone();
    let client = reqwest::Client::new();
    let body = serde_json::json!({
        "locale": "de", "currency": "CHF",
        "customer": {"name": "Hans Muster", "email": "hans@example.ch"},
        "shipping": {"method": "standard", "address": {"name": "Hans Muster", "line1": "Bahnhofstrasse 1", "postal_code": "8001", "city": "Zürich", "country": "CH"}},
        "items": [{"sku": "photo-13x18", "quantity": 20, "images": [{"url": "https://img.example.ch/1.jpg"}]}]
    });
    let mut ids = Vec::new();
    for i in 0..20 {
        let res = client
            .post(format!("{}/v1/orders", up.base))
            .bearer_auth(&key)
            .header("Idempotency-Key", format!("crash-{i}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let order: serde_json::Value = res.json().await.unwrap();
        ids.push(order["id"].as_str().unwrap().to_string());
    }
    // SIGKILL: no shutdown code runs.
    up.child.kill().unwrap();
    up.child.wait().unwrap();

    let mut up = start(dir.path());
    assert!(up.keys.is_empty(), "tenants are kept, so no new keys");
    for id in &ids {
        let res = client
            .get(format!("{}/v1/orders/{id}", up.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{id} lost by kill -9");
        let order: serde_json::Value = res.json().await.unwrap();
        assert_eq!(order["totals"]["vat_rate_bp"], 810);
    }
    // Ctrl-C (SIGINT) stops it cleanly: exit status 0, promptly.
    let pid = up.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = up.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "printworks did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
