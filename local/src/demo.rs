//! `printworks demo`: the whole platform in this process, used as a shop
//! would use it. A generated photo is uploaded and sample orders are placed
//! over HTTP (posters, a canvas, greeting cards and a photo box, so both
//! plants print; one B2C order paid by a signed provider webhook, as
//! `printworks pay` sends it); then, once every order has shipped (or was
//! held or cancelled), what happened to each: its timeline from the bus,
//! its jobs with their tracking numbers, and where its files went (the
//! print files under `prints/`, the tickets and files in the plant's
//! `done` folder). [`run`] returns that as a [`Summary`], which prints
//! itself.

use crate::payments::{self, PayEvent};
use crate::platform::{self, Options, Running};
use crate::seed::{self, CreatedTenant};
use anyhow::{Context, bail};
use printworks::adapters::local::db::Durability;
use printworks::domain::events::{EventEnvelope, EventType};
use printworks::domain::money::Money;
use printworks::domain::order::{Order, OrderId};
use printworks::domain::production::JobState;
use printworks::domain::state::OrderState;
use printworks::domain::tenant::{PaymentSetup, TenantId};
use printworks::ports::{OrderStore, TenantStore};
use serde_json::{Value, json};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `printworks demo` does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The platform's data directory; reused if it exists.
    pub data_dir: PathBuf,
    /// How many orders to place (the samples, in turn).
    pub orders: usize,
    /// How long to wait for the orders to finish.
    pub timeout: Duration,
    /// Print each step as it happens (the summary is printed by the caller).
    pub progress: bool,
}

impl DemoOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> DemoOptions {
        DemoOptions {
            data_dir: data_dir.into(),
            orders: SAMPLES.len(),
            timeout: Duration::from_secs(120),
            progress: false,
        }
    }
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub base_url: String,
    pub data_dir: PathBuf,
    /// The tenants the orders were placed for, with their keys (shown once).
    pub tenants: Vec<CreatedTenant>,
    /// Whether the tenants were made by this run (the data dir was not fresh).
    pub new_tenants: bool,
    pub photo: Photo,
    pub orders: Vec<OrderSummary>,
    /// From the first order placed to the last one finished.
    pub elapsed: Duration,
    pub timeout: Duration,
}

impl Summary {
    /// Whether every order shipped.
    pub fn all_shipped(&self) -> bool {
        self.orders.iter().all(|o| o.state == OrderState::Shipped)
    }

    /// Whether every order reached an end (shipped, on hold, cancelled).
    pub fn all_finished(&self) -> bool {
        self.orders.iter().all(|o| finished(o.state))
    }
}

/// The uploaded photo.
#[derive(Debug, Clone)]
pub struct Photo {
    pub upload_id: String,
    pub width: u32,
    pub height: u32,
    pub bytes: usize,
    /// Where the upload was stored (`<data_dir>/blobs/...`).
    pub path: PathBuf,
}

/// One order and what happened to it.
#[derive(Debug, Clone)]
pub struct OrderSummary {
    pub id: OrderId,
    pub tenant: TenantId,
    /// What was ordered, where to and how it was paid.
    pub what: String,
    pub state: OrderState,
    pub plant: Option<String>,
    pub packing_ref: Option<String>,
    pub hold_reason: Option<String>,
    pub timeline: Vec<Moment>,
    pub jobs: Vec<JobSummary>,
    /// The print files (`<data_dir>/prints/...`).
    pub prints: Vec<PrintFile>,
}

/// A print file the render step made.
#[derive(Debug, Clone)]
pub struct PrintFile {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub effective_dpi: u32,
}

/// One event of an order's timeline.
#[derive(Debug, Clone)]
pub struct Moment {
    /// Since the order's first event.
    pub after: Duration,
    pub event: EventType,
    /// A few words from the event's data.
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct JobSummary {
    pub job_id: String,
    pub status: Option<JobState>,
    pub carrier: Option<String>,
    pub tracking: Option<String>,
    pub reason: Option<String>,
    /// The ticket and the print files at the plant (`done` or `error`).
    pub plant_files: Vec<PathBuf>,
}

/// A sample order.
struct Sample {
    sku: &'static str,
    quantity: u32,
    options: &'static [(&'static str, &'static str)],
    country: &'static str,
    postal_code: &'static str,
    city: &'static str,
    /// Placed for the B2C tenant and paid through its provider's webhook;
    /// otherwise for the B2B tenant (paid by invoice when placed).
    b2c: bool,
    why: &'static str,
}

const SAMPLES: [Sample; 5] = [
    Sample {
        sku: "poster-20x30",
        quantity: 2,
        options: &[("finish", "glossy")],
        country: "CH",
        postal_code: "8001",
        city: "Zürich",
        b2c: false,
        why: "muc serves CH",
    },
    Sample {
        sku: "canvas-30x40",
        quantity: 1,
        options: &[("wrap", "white")],
        country: "CH",
        postal_code: "8001",
        city: "Zürich",
        b2c: false,
        why: "only btf makes canvas",
    },
    Sample {
        sku: "card-a6-folded",
        quantity: 3,
        options: &[("envelope", "kraft")],
        country: "AT",
        postal_code: "1010",
        city: "Wien",
        b2c: false,
        why: "only muc makes cards",
    },
    Sample {
        sku: "photobox-10x15",
        quantity: 1,
        options: &[],
        country: "DE",
        postal_code: "10115",
        city: "Berlin",
        b2c: false,
        why: "only muc makes photo boxes",
    },
    Sample {
        sku: "poster-30x40",
        quantity: 1,
        options: &[],
        country: "DE",
        postal_code: "50667",
        city: "Köln",
        b2c: true,
        why: "both serve DE: the one with fewer open jobs",
    },
];

/// The demo photo's size: the sample photo's.
const PHOTO: (u32, u32) = seed::SAMPLE_PHOTO;

/// Starts the platform on `options.data_dir` (port 0), places the orders
/// over HTTP, waits for them, collects what happened and stops the
/// platform. Orders still open at the timeout are reported as they are
/// ([`Summary::all_finished`]).
pub async fn run(options: DemoOptions) -> anyhow::Result<Summary> {
    if options.orders == 0 {
        bail!("--orders must be at least 1");
    }
    let platform_options = Options {
        port: 0,
        // A demo need not survive a power cut.
        durability: Durability::Normal,
        ..Options::new(&options.data_dir)
    };
    let env = platform_options.env.clone();
    let running = platform::start(platform_options).await?;
    let outcome = drive(&running, &env, &options).await;
    let stopped = running.stop().await;
    let summary = outcome?;
    stopped.context("stopping the platform")?;
    Ok(summary)
}

async fn drive(running: &Running, env: &str, options: &DemoOptions) -> anyhow::Result<Summary> {
    let say = |line: String| {
        if options.progress {
            println!("{line}");
        }
    };
    let base = running.base_url();
    say(format!(
        "platform up on {base}, data in {}",
        options.data_dir.display()
    ));
    let (b2b, b2c, new_tenants) = tenants(running, env).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    let jpeg = photo(PHOTO.0, PHOTO.1)?;
    let bytes = jpeg.len();
    let (upload_id, key) = upload(&client, &base, &b2b.api_key, jpeg.clone()).await?;
    let photo = Photo {
        upload_id: upload_id.clone(),
        width: PHOTO.0,
        height: PHOTO.1,
        bytes,
        path: options.data_dir.join("blobs").join(&key),
    };
    say(format!(
        "uploaded a {}x{} photo ({}) as {upload_id}",
        PHOTO.0,
        PHOTO.1,
        size(bytes as u64)
    ));
    // The B2C tenant uploads its own copy: uploads belong to a tenant.
    let b2c_upload = if SAMPLES.iter().cycle().take(options.orders).any(|s| s.b2c) {
        let (id, _) = upload(&client, &base, &b2c.api_key, jpeg).await?;
        Some(id)
    } else {
        None
    };

    let started = Instant::now();
    let mut placed = Vec::new();
    for sample in SAMPLES.iter().cycle().take(options.orders) {
        let (tenant, upload_id) = match (sample.b2c, &b2c_upload) {
            (true, Some(id)) => (&b2c, id),
            _ => (&b2b, &upload_id),
        };
        let id = place(&client, &base, tenant, sample, upload_id).await?;
        let what = describe(sample, tenant);
        say(format!("placed {id}: {what}"));
        if sample.b2c {
            pay(running, &base, tenant, &id).await?;
            say(format!("  paid {id} through the provider's signed webhook"));
        }
        placed.push((id, tenant.clone(), what));
    }
    say(format!(
        "waiting for {} to ship (at most {} s)…",
        orders(placed.len()),
        options.timeout.as_secs()
    ));
    let deadline = started + options.timeout;
    let mut states = vec![OrderState::Placed; placed.len()];
    loop {
        for ((id, tenant, _), state) in placed.iter().zip(&mut states) {
            if !finished(*state) {
                *state = order_state(&client, &base, &tenant.api_key, id).await?;
            }
        }
        if states.iter().all(|s| finished(*s)) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    // The timeline is what the bus relayed: let the relay catch up with
    // the last writes (it runs every 100 ms).
    while running.bus.outbox_len().await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut orders = Vec::with_capacity(placed.len());
    for (id, tenant, what) in &placed {
        let order = running
            .store
            .get(&tenant.tenant.id, id)
            .await?
            .with_context(|| format!("order {id} vanished"))?;
        let events = running.bus.events_of(&order.tenant, &order.id).await?;
        orders.push(summarize(&options.data_dir, &order, &events, what.clone()));
    }
    Ok(Summary {
        base_url: base,
        data_dir: options.data_dir.clone(),
        tenants: vec![b2b, b2c],
        new_tenants,
        photo,
        orders,
        elapsed,
        timeout: options.timeout,
    })
}

fn finished(state: OrderState) -> bool {
    matches!(
        state,
        OrderState::Shipped | OrderState::OnHold | OrderState::Cancelled
    )
}

/// The B2B and the B2C tenant: the demo tenants on a fresh data directory,
/// else a new pair `demo-run-<n>` (B2B) and `demo-run-<n>-shop` (B2C).
async fn tenants(
    running: &Running,
    env: &str,
) -> anyhow::Result<(CreatedTenant, CreatedTenant, bool)> {
    let seeded = |id: &str| running.seeded.iter().find(|c| c.tenant.id.as_str() == id);
    if let (Some(b2b), Some(b2c)) = (seeded("demo-b2b"), seeded("demo-brand")) {
        return Ok((b2b.clone(), b2c.clone(), false));
    }
    let mut n = 1;
    let b2b_id = loop {
        let id = TenantId::parse(&format!("demo-run-{n}"))?;
        if running.store.tenant(&id).await?.is_none() {
            break id;
        }
        n += 1;
    };
    let b2c_id = TenantId::parse(&format!("demo-run-{n}-shop"))?;
    let mut b2b = None;
    let mut b2c = None;
    for mut tenant in seed::demo_tenants() {
        match tenant.payment {
            PaymentSetup::Invoice => {
                tenant.id = b2b_id.clone();
                tenant.name = format!("Demo run {n} (B2B)");
                b2b = Some(seed::add_tenant(&running.store, env, tenant).await?);
            }
            PaymentSetup::Provider { .. } => {
                tenant.id = b2c_id.clone();
                tenant.name = format!("Demo run {n} shop");
                b2c = Some(seed::add_tenant(&running.store, env, tenant).await?);
            }
        }
    }
    match (b2b, b2c) {
        (Some(b2b), Some(b2c)) => Ok((b2b, b2c, true)),
        _ => bail!("the demo tenants need a B2B and a B2C tenant"),
    }
}

pub use crate::seed::photo;

/// Uploads through the API's presigned URL; returns the upload id and key.
async fn upload(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<(String, String)> {
    let response = client
        .post(format!("{base}/v1/uploads"))
        .bearer_auth(key)
        .json(&json!({"content_type": "image/jpeg", "size_bytes": bytes.len()}))
        .send()
        .await?;
    let body = expect(response, 201, "POST /v1/uploads").await?;
    let field = |v: &Value| v.as_str().map(str::to_string);
    let (Some(id), Some(blob), Some(url)) = (
        field(&body["upload_id"]),
        field(&body["key"]),
        field(&body["upload"]["url"]),
    ) else {
        bail!("POST /v1/uploads: unexpected answer {body}");
    };
    let put = client
        .put(url)
        .header("Content-Type", "image/jpeg")
        .body(bytes)
        .send()
        .await?;
    if !put.status().is_success() {
        bail!("uploading the photo: {}", put.status());
    }
    Ok((id, blob))
}

async fn place(
    client: &reqwest::Client,
    base: &str,
    tenant: &CreatedTenant,
    sample: &Sample,
    upload_id: &str,
) -> anyhow::Result<OrderId> {
    let images_per_item = printworks::domain::catalog::Catalog::builtin()
        .product(sample.sku)
        .map_or(1, |p| p.images_per_item);
    let images: Vec<Value> = (0..images_per_item)
        .map(|_| json!({"upload_id": upload_id}))
        .collect();
    let options: serde_json::Map<String, Value> = sample
        .options
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let name = if sample.b2c {
        "Erika Mustermann"
    } else {
        "Print Buyer GmbH"
    };
    let body = json!({
        "locale": "de",
        "currency": if sample.country == "CH" { "CHF" } else { "EUR" },
        "customer": {"name": name, "email": "demo@example.com"},
        "shipping": {"method": "standard", "address": {
            "name": name, "line1": "Demostrasse 1", "postal_code": sample.postal_code,
            "city": sample.city, "country": sample.country}},
        "items": [{"sku": sample.sku, "quantity": sample.quantity, "options": options, "images": images}],
    });
    let response = client
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&tenant.api_key)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await?;
    let order = expect(response, 201, "POST /v1/orders").await?;
    let id = order["id"].as_str().unwrap_or_default();
    OrderId::parse(id).with_context(|| format!("POST /v1/orders: no order id in {order}"))
}

/// Pays a B2C order as its provider would: a signed webhook for the whole
/// total, as `printworks pay` sends it.
async fn pay(
    running: &Running,
    base: &str,
    tenant: &CreatedTenant,
    id: &OrderId,
) -> anyhow::Result<()> {
    let PaymentSetup::Provider { provider, .. } = &tenant.tenant.payment else {
        bail!("{} pays by invoice", tenant.tenant.id);
    };
    let order = running
        .store
        .get(&tenant.tenant.id, id)
        .await?
        .with_context(|| format!("order {id} vanished"))?;
    let secrets = payments::load_or_create_secrets(&running.data_dir)?;
    let webhook = payments::signed_event(
        &secrets,
        &order,
        provider,
        PayEvent::Succeeded,
        None,
        time::OffsetDateTime::now_utc(),
    )?;
    let (status, body) = payments::send(base, &webhook).await?;
    if !(200..300).contains(&status) {
        bail!("the {provider} webhook for {id} was refused: {status} {body}");
    }
    Ok(())
}

async fn order_state(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    id: &OrderId,
) -> anyhow::Result<OrderState> {
    let response = client
        .get(format!("{base}/v1/orders/{id}"))
        .bearer_auth(key)
        .send()
        .await?;
    let order = expect(response, 200, "GET /v1/orders/{id}").await?;
    let state = order["state"].as_str().unwrap_or_default();
    OrderState::parse(state).with_context(|| format!("order {id}: unknown state {state:?}"))
}

/// The JSON body of a response with the expected status.
async fn expect(response: reqwest::Response, status: u16, what: &str) -> anyhow::Result<Value> {
    let got = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    if got != status {
        bail!("{what}: {got} {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
}

fn describe(sample: &Sample, tenant: &CreatedTenant) -> String {
    let paid = match &tenant.tenant.payment {
        PaymentSetup::Invoice => "B2B, invoice".to_string(),
        PaymentSetup::Provider { provider, .. } => format!("B2C, {provider}"),
    };
    format!(
        "{} x {} to {} ({}; {paid})",
        sample.quantity, sample.sku, sample.country, sample.why
    )
}

fn summarize(
    data_dir: &Path,
    order: &Order,
    events: &[EventEnvelope],
    what: String,
) -> OrderSummary {
    let first = events.first().map(|e| e.occurred_at);
    let timeline = events
        .iter()
        .map(|e| Moment {
            after: first
                .map(|f| (e.occurred_at - f).try_into().unwrap_or_default())
                .unwrap_or_default(),
            event: e.event_type,
            note: note(e),
        })
        .collect();
    let prints = order
        .items
        .iter()
        .flat_map(|i| &i.renders)
        .map(|r| PrintFile {
            path: data_dir.join("prints").join(&r.print.key),
            width: r.print.width,
            height: r.print.height,
            effective_dpi: r.effective_dpi,
        })
        .collect();
    let production = order.production.as_ref();
    let jobs = production
        .map(|p| {
            p.jobs
                .iter()
                .map(|j| JobSummary {
                    job_id: j.job_id.clone(),
                    status: j.status,
                    carrier: j.carrier.clone(),
                    tracking: j.tracking.clone(),
                    reason: j.reason.clone(),
                    plant_files: plant_files(data_dir, &p.plant, &j.job_id),
                })
                .collect()
        })
        .unwrap_or_default();
    OrderSummary {
        id: order.id.clone(),
        tenant: order.tenant.clone(),
        what,
        state: order.state,
        plant: production.map(|p| p.plant.clone()),
        packing_ref: production.map(|p| p.packing_ref.clone()),
        hold_reason: order.hold.as_ref().map(|h| h.reason.clone()),
        timeline,
        jobs,
        prints,
    }
}

/// The job's ticket and print files in the plant's `done` (or `error`)
/// folder, where the machine left them.
fn plant_files(data_dir: &Path, plant: &str, job_id: &str) -> Vec<PathBuf> {
    let dir = platform::plant_dir(data_dir, plant);
    for folder in ["done", "error"] {
        let ticket_path = dir
            .join(folder)
            .join(edge_agent::driver::ticket_name(job_id));
        let Ok(raw) = std::fs::read(&ticket_path) else {
            continue;
        };
        let mut files = vec![ticket_path];
        if let Ok(ticket) = serde_json::from_slice::<edge_agent::driver::Ticket>(&raw) {
            files.extend(ticket.files.iter().map(|f| dir.join(folder).join(f)));
        }
        return files;
    }
    Vec::new()
}

/// A few words from an event's data.
fn note(event: &EventEnvelope) -> String {
    let d = &event.data;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match event.event_type {
        EventType::OrderPlaced => format!(
            "{} item(s) to {}, {}, pays by {}",
            d["items"],
            text(&d["ship_to"]),
            money(&d["total"]),
            text(&d["payment"])
        ),
        EventType::OrderPaid => {
            let by = match text(&d["provider"]) {
                provider if !provider.is_empty() => provider,
                _ => text(&d["method"]),
            };
            format!("{} by {by}", money(&d["amount"]))
        }
        EventType::OrderRendered => {
            let prints: usize = d["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|i| i["renders"].as_array().map_or(0, Vec::len))
                        .sum()
                })
                .unwrap_or(0);
            format!("{prints} print file(s)")
        }
        EventType::OrderDispatched => format!(
            "to {}, {} job(s), package {}",
            text(&d["plant"]),
            d["job_count"].as_u64().unwrap_or(0),
            text(&d["packing_ref"])
        ),
        EventType::OrderInProduction => format!("at {}", text(&d["plant"])),
        EventType::OrderShipped => d["shipments"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|s| format!("{} {}", text(&s["carrier"]), text(&s["tracking"])))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
        EventType::OrderOnHold | EventType::ProductionFailed | EventType::OrderCancelled => {
            text(&d["reason"])
        }
        _ => String::new(),
    }
}

fn orders(n: usize) -> String {
    format!("{n} order{}", if n == 1 { "" } else { "s" })
}

fn money(value: &Value) -> String {
    serde_json::from_value::<Money>(value.clone())
        .map(|m| m.to_string())
        .unwrap_or_default()
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{} KB", b >> 10),
        b => format!("{b} B"),
    }
}

fn file_line(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!("{}  {}", path.display(), size(m.len())),
        Err(_) => format!("{}  (missing)", path.display()),
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "printworks demo: {} on {}, data in {}",
            orders(self.orders.len()),
            self.base_url,
            self.data_dir.display()
        )?;
        if self.new_tenants {
            writeln!(f, "(the data directory was not fresh: new demo tenants)")?;
        }
        for t in &self.tenants {
            writeln!(f, "key {} {}", t.tenant.id, t.api_key)?;
        }
        writeln!(
            f,
            "photo {} ({}x{}, {}) -> {}",
            self.photo.upload_id,
            self.photo.width,
            self.photo.height,
            size(self.photo.bytes as u64),
            self.photo.path.display()
        )?;
        for o in &self.orders {
            writeln!(f)?;
            writeln!(f, "order {} ({})", o.id, o.tenant)?;
            writeln!(f, "  {}", o.what)?;
            writeln!(
                f,
                "  plant {}, state {}{}",
                o.plant.as_deref().unwrap_or("-"),
                o.state.as_str(),
                o.packing_ref
                    .as_deref()
                    .map(|p| format!(", package {p}"))
                    .unwrap_or_default()
            )?;
            if let Some(reason) = &o.hold_reason {
                writeln!(f, "  held: {reason}")?;
            }
            writeln!(f, "  timeline:")?;
            for m in &o.timeline {
                let name = m.event.as_str();
                writeln!(
                    f,
                    "    +{:.3}s  {name:<18} {}",
                    m.after.as_secs_f64(),
                    m.note
                )?;
            }
            if !o.jobs.is_empty() {
                writeln!(f, "  jobs:")?;
            }
            for j in &o.jobs {
                let status = j.status.map_or("sent", JobState::as_str);
                let detail = match (&j.carrier, &j.tracking, &j.reason) {
                    (Some(c), Some(t), _) => format!("{c} {t}"),
                    (_, _, Some(r)) => r.clone(),
                    _ => String::new(),
                };
                writeln!(f, "    {}  {status:<8} {detail}", j.job_id)?;
            }
            if !o.prints.is_empty() {
                writeln!(f, "  print files:")?;
            }
            for p in &o.prints {
                writeln!(
                    f,
                    "    {}, {}x{} px at {} dpi",
                    file_line(&p.path),
                    p.width,
                    p.height,
                    p.effective_dpi
                )?;
            }
            if o.jobs.iter().any(|j| !j.plant_files.is_empty()) {
                writeln!(f, "  at the plant:")?;
            }
            for p in o.jobs.iter().flat_map(|j| &j.plant_files) {
                writeln!(f, "    {}", file_line(p))?;
            }
        }
        writeln!(f)?;
        let count = |state: OrderState| self.orders.iter().filter(|o| o.state == state).count();
        let open = self.orders.iter().filter(|o| !finished(o.state)).count();
        write!(
            f,
            "{} shipped, {} on hold, {} cancelled",
            count(OrderState::Shipped),
            count(OrderState::OnHold),
            count(OrderState::Cancelled)
        )?;
        if open > 0 {
            write!(f, ", {open} still open after {} s", self.timeout.as_secs())?;
        }
        writeln!(f, " in {:.1} s.", self.elapsed.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_demo_ships_orders_from_both_plants() {
        let dir = tempfile::tempdir().unwrap();
        let options = DemoOptions {
            orders: 2,
            ..DemoOptions::new(dir.path().join("demo"))
        };
        let summary = run(options.clone()).await.unwrap();
        assert_eq!(summary.orders.len(), 2);
        assert!(summary.all_shipped(), "{summary}");
        let plants: Vec<_> = summary
            .orders
            .iter()
            .map(|o| o.plant.as_deref().unwrap())
            .collect();
        assert_eq!(plants, ["muc", "btf"]);
        for order in &summary.orders {
            let events: Vec<EventType> = order.timeline.iter().map(|m| m.event).collect();
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
            assert!(order.timeline.windows(2).all(|w| w[0].after <= w[1].after));
            assert!(!order.prints.is_empty());
            assert!(
                order.prints.iter().all(|p| p.path.is_file()),
                "{:?}",
                order.prints
            );
            for job in &order.jobs {
                assert_eq!(job.status, Some(JobState::Shipped));
                assert!(job.tracking.is_some());
                // The ticket and at least one print file, in the done folder.
                assert!(job.plant_files.len() >= 2, "{:?}", job.plant_files);
                assert!(job.plant_files.iter().all(|p| p.is_file()));
            }
        }
        let text = summary.to_string();
        assert!(text.contains("OrderShipped"), "{text}");
        assert!(text.contains("2 shipped"), "{text}");

        // Again on the same data directory: new tenants, the old data kept.
        let again = run(DemoOptions {
            orders: 1,
            ..options
        })
        .await
        .unwrap();
        assert!(again.new_tenants);
        assert_eq!(again.tenants[0].tenant.id.as_str(), "demo-run-1");
        assert!(again.all_shipped(), "{again}");
    }
}
