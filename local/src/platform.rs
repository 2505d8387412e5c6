//! The platform on one machine: the order API and the blob server on one
//! loopback port with the payment webhooks, the SQLite store, the outbox
//! relay, the local bus and the queue consumers (render).

use crate::blob_routes;
use crate::payments;
use crate::seed::{self, CreatedTenant};
use crate::workers;
use anyhow::Context;
use printworks::adapters::local::blobs::FsBlobStore;
use printworks::adapters::local::bus::{LocalBus, QueueConfig};
use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::store::SqliteStore;
use printworks::config::ApiConfig;
use printworks::domain::catalog::Catalog;
use printworks::domain::events::EventType;
use printworks::fetch::{FetchPolicy, UrlFetcher};
use printworks::ports::{Clock, FixedSecrets, SystemClock};
use printworks::render::Limits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    /// 0 picks a free port.
    pub port: u16,
    pub durability: Durability,
    /// The environment in API keys (`pw_local_...`).
    pub env: String,
    pub upload_url_ttl: Duration,
    /// A catalog file to use instead of the built-in one.
    pub catalog: Option<PathBuf>,
}

impl Options {
    pub fn new(data_dir: impl Into<PathBuf>) -> Options {
        Options {
            data_dir: data_dir.into(),
            port: 3000,
            durability: Durability::Full,
            env: "local".into(),
            upload_url_ttl: Duration::from_secs(900),
            catalog: None,
        }
    }
}

/// Queues subscribed to the topic, as in the AWS design: the consumers of
/// later stages read them.
pub const QUEUES: &[(&str, &[EventType])] = &[
    ("render", &[EventType::OrderPaid]),
    ("dispatch", &[EventType::OrderRendered]),
    (
        "notify",
        &[
            EventType::OrderPlaced,
            EventType::OrderPaid,
            EventType::OrderCancelled,
            EventType::OrderOnHold,
            EventType::OrderDispatched,
            EventType::OrderShipped,
            EventType::PaymentFailed,
            EventType::PaymentActionRequired,
            EventType::PaymentRefunded,
        ],
    ),
];

pub fn db_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("printworks.sqlite")
}

/// A running platform; [`Running::stop`] shuts it down cleanly.
pub struct Running {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Tenants seeded by this start (only on a fresh data directory).
    pub seeded: Vec<CreatedTenant>,
    pub store: SqliteStore,
    pub bus: LocalBus,
    db: Arc<Db>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    relay: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets in-flight ones finish, relays what is
    /// left in the outbox, and closes the database.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.server
            .await
            .context("server task")?
            .context("server")?;
        for worker in self.workers {
            worker.await.context("worker task")?;
        }
        self.relay.await.context("relay task")?;
        self.db.close();
        Ok(())
    }
}

/// Starts everything and returns once the port is bound.
pub async fn start(options: Options) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating {}", options.data_dir.display()))?;
    let catalog = match &options.catalog {
        Some(path) => {
            let raw = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Catalog::from_json(&raw).with_context(|| format!("loading {}", path.display()))?
        }
        None => Catalog::builtin().clone(),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let db = Arc::new(Db::open(db_path(&options.data_dir), options.durability)?);
    let store = SqliteStore::new(db.clone());
    let bus = LocalBus::new(db.clone(), clock.clone());
    for (queue, types) in QUEUES {
        let dlq = format!("{queue}-dlq");
        let config = QueueConfig {
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
            dead_letter: Some(dlq),
        };
        bus.declare_queue(queue, config).await?;
        bus.subscribe(queue, Some(types)).await?;
    }
    let mut seeded = Vec::new();
    if !store.has_tenants().await? {
        for tenant in seed::demo_tenants() {
            seeded.push(seed::add_tenant(&store, &options.env, tenant).await?);
        }
    }

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", options.port))?;
    let addr = listener.local_addr()?;
    let blobs = Arc::new(FsBlobStore::open(
        options.data_dir.join("blobs"),
        &format!("http://{addr}"),
        clock.clone(),
    )?);
    let config = ApiConfig {
        env: options.env.clone(),
        upload_url_ttl: options.upload_url_ttl,
    };
    let catalog = Arc::new(catalog);
    let store_arc = Arc::new(store.clone());
    let app = order_api::App::new(
        config,
        catalog.clone(),
        store_arc.clone(),
        store_arc.clone(),
        blobs.clone(),
        clock.clone(),
    );
    // Print files and previews go to their own store, as to their own bucket.
    let prints = Arc::new(FsBlobStore::open(
        options.data_dir.join("prints"),
        &format!("http://{addr}"),
        clock.clone(),
    )?);
    let renderer = render::Renderer {
        catalog,
        orders: store_arc.clone(),
        uploads: blobs.clone(),
        prints,
        urls: Arc::new(UrlFetcher::new(FetchPolicy::default())?),
        clock: clock.clone(),
        limits: Limits::default(),
        max_attempts: 4,
    };
    let webhooks = payment_webhook::Webhooks::new(
        store_arc.clone(),
        store_arc.clone(),
        Arc::new(FixedSecrets(payments::load_or_create_secrets(
            &options.data_dir,
        )?)),
        clock.clone(),
    );
    let router = order_api::router(Arc::new(app))
        .merge(payment_webhook::router(Arc::new(webhooks)))
        .merge(blob_routes::router(blobs));

    let (shutdown, mut stop_server) = watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop_server.wait_for(|stop| *stop).await;
            })
            .await
    });
    let relay = tokio::spawn(relay_loop(bus.clone(), shutdown.subscribe()));
    let workers = vec![tokio::spawn(workers::render_loop(
        bus.clone(),
        renderer,
        shutdown.subscribe(),
    ))];
    Ok(Running {
        addr,
        data_dir: options.data_dir,
        seeded,
        store,
        bus,
        db,
        shutdown,
        server,
        relay,
        workers,
    })
}

/// Moves the outbox to the queues until told to stop, then once more.
async fn relay_loop(bus: LocalBus, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = *stop.borrow();
        loop {
            // Small chunks: a relay job holds the writer, and orders wait behind it.
            match bus.relay_outbox(200).await {
                Ok(0) => break,
                Ok(n) => tracing::debug!(events = n, "outbox relayed"),
                Err(e) => {
                    tracing::error!(error = %e, "outbox relay failed; retrying");
                    break;
                }
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
