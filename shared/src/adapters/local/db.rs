//! The local database: one SQLite file in WAL mode, one writer thread that
//! commits in groups, and a small pool of read connections.
//!
//! Every write is a closure run by the writer thread inside its own
//! SAVEPOINT; the writer takes as many queued closures as are waiting (up to
//! [`MAX_GROUP`]), runs them in one transaction and commits once, then
//! answers each caller. A caller is answered only after its commit, so an
//! accepted write is on disk (in the WAL) before the client hears of it.

use crate::ports::StoreError;
use anyhow::{Context, anyhow};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};

const MAX_GROUP: usize = 256;
const SCHEMA_VERSION: i32 = 9;

/// `synchronous` in WAL mode: `Normal` survives a crash of the process
/// (`kill -9`); `Full` also survives a power cut, at one fsync per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Normal,
    Full,
}

type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;

pub struct Db {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    readers: Mutex<Vec<Connection>>,
}

fn open(path: &Path, durability: Durability) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON;"
    ))?;
    Ok(conn)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS operators (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS operator_keys (
    key_id TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators(id),
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    rank INTEGER NOT NULL,
    doc TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    attention INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS orders_attention ON orders (updated_at) WHERE attention = 1;
CREATE INDEX IF NOT EXISTS orders_idle ON orders (state, updated_at);
CREATE INDEX IF NOT EXISTS orders_id ON orders (id);
CREATE INDEX IF NOT EXISTS orders_created ON orders (created_at, id);
CREATE INDEX IF NOT EXISTS orders_tenant_created ON orders (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS orders_state_created ON orders (state, created_at, id);
CREATE INDEX IF NOT EXISTS orders_reference ON orders (json_extract(doc, '$.reference'));
CREATE INDEX IF NOT EXISTS orders_email ON orders (lower(json_extract(doc, '$.customer.email')));
CREATE TABLE IF NOT EXISTS idempotency (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE TABLE IF NOT EXISTS payment_events (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    order_ref TEXT,
    doc TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
CREATE TABLE IF NOT EXISTS payment_index (
    provider TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    PRIMARY KEY (provider, payment_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    visibility_timeout_ms INTEGER NOT NULL,
    max_receive_count INTEGER NOT NULL,
    dead_letter TEXT
);
CREATE TABLE IF NOT EXISTS subscriptions (
    queue TEXT PRIMARY KEY REFERENCES queues(name),
    types TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE TABLE IF NOT EXISTS event_log (
    event_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    type TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_log_order ON event_log (tenant_id, order_id, occurred_at);
CREATE TABLE IF NOT EXISTS productions (
    tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, order_id)
);
CREATE TABLE IF NOT EXISTS jobs (
    tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, order_id, job_id)
);
CREATE INDEX IF NOT EXISTS jobs_tracking ON jobs (json_extract(doc, '$.tracking'));
CREATE TABLE IF NOT EXISTS plant_load (
    plant TEXT PRIMARY KEY,
    open_jobs INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at_ms INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (due_at_ms) WHERE status = 'deferred';
CREATE TABLE IF NOT EXISTS notify_counters (
    tenant_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    day TEXT NOT NULL,
    sent INTEGER NOT NULL,
    deferred INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, channel, day)
);
CREATE INDEX IF NOT EXISTS notify_counters_day ON notify_counters (day);
CREATE INDEX IF NOT EXISTS notifications_order ON notifications (tenant_id, json_extract(doc, '$.order_id'));
CREATE TABLE IF NOT EXISTS plant_reports (
    plant TEXT PRIMARY KEY,
    last_report_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS plant_shipped (
    plant TEXT NOT NULL,
    day TEXT NOT NULL,
    jobs INTEGER NOT NULL,
    PRIMARY KEY (plant, day)
);
CREATE TABLE IF NOT EXISTS stats_events (event_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS stats_shipped (order_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS stats_revenue (
    day TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    orders INTEGER NOT NULL DEFAULT 0,
    gross INTEGER NOT NULL DEFAULT 0,
    vat INTEGER NOT NULL DEFAULT 0,
    refunded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, tenant_id, currency)
);
CREATE TABLE IF NOT EXISTS stats_holds (
    day TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    code TEXT NOT NULL,
    holds INTEGER NOT NULL,
    PRIMARY KEY (day, tenant_id, code)
);
CREATE TABLE IF NOT EXISTS stats_lead (
    day TEXT NOT NULL,
    plant TEXT NOT NULL,
    sku TEXT NOT NULL,
    minutes INTEGER NOT NULL,
    orders INTEGER NOT NULL,
    PRIMARY KEY (day, plant, sku, minutes)
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_at_ms, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_receipt ON messages (receipt) WHERE receipt IS NOT NULL;
";

/// A database's own tables: its DDL (idempotent, `IF NOT EXISTS`), its
/// version, and the steps that bring an older file up to it.
pub struct Schema {
    pub name: &'static str,
    pub version: i32,
    pub ddl: &'static str,
    /// Runs before `ddl` on a file of an older version (given as argument).
    pub migrate: fn(&Connection, i32) -> rusqlite::Result<()>,
}

/// The platform's tables: orders, tenants, payments, outbox and bus.
pub const PLATFORM: Schema = Schema {
    name: "printworks",
    version: SCHEMA_VERSION,
    ddl: SCHEMA,
    migrate: |conn, version| {
        if version == 1 {
            // Version 2: orders carry the version their writes are conditional on.
            conn.execute_batch("ALTER TABLE orders ADD COLUMN version INTEGER NOT NULL DEFAULT 0")?;
        }
        // Versions 3 (event_log, plant_load), 4 (notifications,
        // notify_counters), 5 (productions, jobs: an order's jobs as
        // records of their own) and 7 (the statistics' stats_* tables)
        // only add tables; 8 only indexes (the operators' search).
        // Version 9: the daily counters also count deferrals (the
        // statistics' notifications against the caps); new indexes and the
        // plants' report and shipment tables come with the DDL. A file
        // without the counters gets them, column and all, from the DDL.
        let counters_lack_deferred: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'notify_counters')
               AND NOT EXISTS (SELECT 1 FROM pragma_table_info('notify_counters') WHERE name = 'deferred')",
            [],
            |r| r.get(0),
        )?;
        if counters_lack_deferred {
            conn.execute_batch(
                "ALTER TABLE notify_counters ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0",
            )?;
        }
        if version < 6 {
            // Version 6: orders whose money needs a person are marked (an
            // index for `printworks ops flags`). Every flag stored before
            // could not be resolved yet: open.
            conn.execute_batch(
                "ALTER TABLE orders ADD COLUMN attention INTEGER NOT NULL DEFAULT 0;
                 UPDATE orders SET attention = 1 WHERE doc LIKE '%\"flags\":[%';",
            )?;
        }
        Ok(())
    },
};

impl Db {
    /// Opens (creating if needed) the platform database at `path` and starts the writer.
    pub fn open(path: impl Into<PathBuf>, durability: Durability) -> anyhow::Result<Db> {
        Db::open_schema(path, durability, &PLATFORM)
    }

    /// Opens a database with its own `schema` (the edge agent's journal).
    pub fn open_schema(
        path: impl Into<PathBuf>,
        durability: Durability,
        schema: &Schema,
    ) -> anyhow::Result<Db> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = open(&path, durability)?;
        let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > schema.version {
            return Err(anyhow!(
                "{} has {} schema version {version}, newer than this build's {}",
                path.display(),
                schema.name,
                schema.version
            ));
        }
        if version > 0 && version < schema.version {
            (schema.migrate)(&conn, version)?;
        }
        conn.execute_batch(schema.ddl)?;
        conn.execute_batch(&format!("PRAGMA user_version = {}", schema.version))?;

        // Checkpoints: a thread with its own connection copies the WAL into
        // the database every 25 ms (PASSIVE, never blocking the writer), so
        // the writer seldom stalls on it. A PASSIVE checkpoint cannot finish
        // while the writer keeps appending, though, and only a finished one
        // lets the WAL start over: so the writer also checkpoints itself once
        // the WAL passes 16000 pages (64 MB). By then the thread has copied
        // nearly everything, the writer's checkpoint is short, it finishes
        // (no write runs beside it), and the WAL restarts; the size limit
        // truncates the file afterwards. The WAL stays bounded under load.
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint = 16000; PRAGMA journal_size_limit = 134217728;",
        )?;
        let checkpoint_conn = open(&path, durability)?;
        let (stop_checkpoints, stop_rx) = mpsc::channel::<()>();
        let checkpointer = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, stop_rx))
            .context("starting the SQLite checkpoint thread")?;

        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .context("starting the SQLite writer thread")?;
        Ok(Db {
            path,
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            checkpointer: Mutex::new(Some((stop_checkpoints, checkpointer))),
            readers: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer thread, inside a savepoint of the current
    /// group's transaction, and returns once the group has committed.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<R, StoreError>>();
        let job: Job = Box::new(move |conn: &Connection| {
            let outcome = match conn.execute_batch("SAVEPOINT job") {
                Err(e) => Err(StoreError::Unexpected(anyhow!(e).context("savepoint"))),
                Ok(()) => {
                    let result = f(conn);
                    let end = if result.is_ok() {
                        "RELEASE job"
                    } else {
                        "ROLLBACK TO job; RELEASE job"
                    };
                    match conn.execute_batch(end) {
                        Ok(()) => result,
                        Err(e) => Err(StoreError::Unexpected(
                            anyhow!(e).context("ending savepoint"),
                        )),
                    }
                }
            };
            Box::new(move |commit: Result<(), String>| {
                let answer = match (commit, outcome) {
                    (Ok(()), outcome) => outcome,
                    (Err(e), _) => Err(StoreError::Unexpected(anyhow!("commit failed: {e}"))),
                };
                let _ = tx.send(answer);
            })
        });
        let sender = self
            .writer
            .lock()
            .map_err(|_| anyhow!("writer lock poisoned"))?
            .clone();
        sender
            .ok_or_else(|| anyhow!("the database is closed"))?
            .send(job)
            .map_err(|_| anyhow!("the SQLite writer thread has stopped"))?;
        rx.await
            .map_err(|_| StoreError::Unexpected(anyhow!("the SQLite writer dropped a job")))?
    }

    /// Runs `f` on a read connection in the blocking pool.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let conn = {
            let mut pool = self
                .readers
                .lock()
                .map_err(|_| anyhow!("reader pool poisoned"))?;
            pool.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = open(&self.path, Durability::Normal)?;
                c.execute_batch("PRAGMA query_only = ON").map_err(sql)?;
                c
            }
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| anyhow!("reader task failed: {e}"))?;
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < 8
        {
            pool.push(conn);
        }
        result
    }

    /// Stops the writer after the jobs already queued; later writes fail.
    pub fn close(&self) {
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
        if let Ok(mut t) = self.thread.lock()
            && let Some(handle) = t.take()
        {
            let _ = handle.join();
        }
        if let Ok(mut c) = self.checkpointer.lock()
            && let Some((stop, handle)) = c.take()
        {
            drop(stop);
            let _ = handle.join();
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Run nothing: dropping a job drops its answer channel, so each
            // caller gets an error instead of a silent success.
            tracing::error!(error = %e, "SQLite writer could not begin a transaction");
            drop(group);
            continue;
        }
        let replies: Vec<Reply> = group.into_iter().map(|job| job(&conn)).collect();
        let commit = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
    tracing::debug!("SQLite writer stopped");
}

/// Copies the WAL into the database every 25 ms (PASSIVE: never waits for
/// the writer or readers), and once more, truncating, when the database closes.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    let checkpoint = |mode: &str| {
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying later");
        }
    };
    while let Err(mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(std::time::Duration::from_millis(25))
    {
        checkpoint("PASSIVE");
    }
    checkpoint("TRUNCATE");
}

pub(crate) fn sql(e: rusqlite::Error) -> StoreError {
    StoreError::Unexpected(anyhow!(e))
}

pub(crate) fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Unexpected(anyhow!(e).context("stored JSON"))
}
