//! The journal: every job the agent took, its state at the plant, and the
//! outbox of status reports not yet sent. One SQLite file with
//! `synchronous=FULL` (an fsync per commit group): a job is journaled
//! before its message is deleted, and a state change and its report are
//! one transaction, so neither a crash nor a power cut loses a job or a
//! status, and a job id seen once is never taken again.

use printworks::adapters::local::db::{Db, Durability, Schema};
use printworks::domain::production::{Job, JobCancel, JobState, JobStatusReport};
use printworks::ports::StoreError;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::Path;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DDL: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    packing_ref TEXT NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    reason TEXT,
    received_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_package ON jobs (packing_ref);
-- A cancelled order's jobs to take off the floor (the plant's job queue
-- said so); kept even for a job not received yet, which is then refused.
CREATE TABLE IF NOT EXISTS cancel_requests (
    job_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    requested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (job_id, status)
);
";

pub const SCHEMA: Schema = Schema {
    name: "edge-agent journal",
    // 2: cancel_requests (created by the DDL, which only adds tables).
    version: 2,
    ddl: DDL,
    migrate: |_, _| Ok(()),
};

/// What the intake decided about a job it downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// Files verified in the spool: hand it to the machine.
    Accepted,
    /// Cannot be made (a checksum mismatch, a file that is gone).
    Failed(String),
    /// Its order was cancelled before the job arrived: never made.
    Cancelled(String),
}

/// Extra facts of a status: the carrier and tracking number of a shipment,
/// the reason of a failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub carrier: Option<String>,
    pub tracking: Option<String>,
    pub reason: Option<String>,
}

/// One row of `edge-agent status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub job_id: String,
    pub packing_ref: String,
    pub state: String,
    pub reason: Option<String>,
    pub updated_at: String,
}

pub struct Journal {
    db: Db,
}

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError::Unexpected(anyhow::anyhow!(e))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Unexpected(e.into()))
}

fn ts(t: OffsetDateTime) -> Result<String, StoreError> {
    t.format(&Rfc3339)
        .map_err(|e| StoreError::Unexpected(e.into()))
}

/// Appends the report of `job` reaching `status` to the outbox (once per
/// job and status).
fn report(
    c: &Connection,
    job: &Job,
    status: JobState,
    details: &Details,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let body = json(&JobStatusReport {
        job_id: job.job_id.clone(),
        plant: job.plant.clone(),
        tenant: job.tenant.clone(),
        order_id: job.order_id.clone(),
        status,
        at,
        carrier: details.carrier.clone(),
        tracking: details.tracking.clone(),
        reason: details.reason.clone(),
    })?;
    c.prepare_cached(
        "INSERT INTO outbox (job_id, status, body) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )
    .map_err(sql)?
    .execute(params![job.job_id, status.as_str(), body])
    .map_err(sql)?;
    Ok(())
}

fn state_of(c: &Connection, job_id: &str) -> Result<Option<(JobState, String)>, StoreError> {
    let row: Option<(String, String)> = c
        .prepare_cached("SELECT state, doc FROM jobs WHERE job_id = ?1")
        .map_err(sql)?
        .query_row([job_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(sql)?;
    Ok(row.and_then(|(s, doc)| Some((JobState::parse(&s)?, doc))))
}

impl Journal {
    pub fn open(path: &Path) -> anyhow::Result<Journal> {
        Ok(Journal {
            db: Db::open_schema(path, Durability::Full, &SCHEMA)?,
        })
    }

    pub fn close(&self) {
        self.db.close();
    }

    pub async fn contains(&self, job_id: &str) -> Result<bool, StoreError> {
        let id = job_id.to_string();
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT 1 FROM jobs WHERE job_id = ?1")
                    .map_err(sql)?
                    .exists([id])
                    .map_err(sql)
            })
            .await
    }

    /// Journals a job with its first status, unless its id is already
    /// journaled (then nothing is written and the answer is false).
    pub async fn take(
        &self,
        job: &Job,
        intake: Intake,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let job = job.clone();
        self.db
            .write(move |c| {
                let (state, details) = match intake {
                    Intake::Accepted => (JobState::Accepted, Details::default()),
                    Intake::Failed(reason) => (
                        JobState::Failed,
                        Details {
                            reason: Some(reason),
                            ..Details::default()
                        },
                    ),
                    Intake::Cancelled(reason) => (
                        JobState::Cancelled,
                        Details {
                            reason: Some(reason),
                            ..Details::default()
                        },
                    ),
                };
                let at = ts(now)?;
                let inserted = c
                    .prepare_cached(
                        "INSERT INTO jobs (job_id, packing_ref, state, doc, reason, received_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT(job_id) DO NOTHING",
                    )
                    .map_err(sql)?
                    .execute(params![
                        job.job_id,
                        job.packing_ref,
                        state.as_str(),
                        json(&job)?,
                        details.reason,
                        at
                    ])
                    .map_err(sql)?
                    == 1;
                if inserted {
                    report(c, &job, state, &details, now)?;
                }
                Ok(inserted)
            })
            .await
    }

    /// Moves each of `job_ids` to `to` if that is forward, with its report;
    /// returns the ids that moved.
    pub async fn advance(
        &self,
        job_ids: Vec<String>,
        to: JobState,
        details: Details,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        self.db
            .write(move |c| {
                let at = ts(now)?;
                let mut moved = Vec::new();
                for id in job_ids {
                    let Some((state, doc)) = state_of(c, &id)? else {
                        continue;
                    };
                    if !JobState::advances(Some(state), to) {
                        continue;
                    }
                    let job: Job = serde_json::from_str(&doc)
                        .map_err(|e| StoreError::Unexpected(e.into()))?;
                    c.prepare_cached(
                        "UPDATE jobs SET state = ?1, updated_at = ?2, reason = COALESCE(?3, reason) WHERE job_id = ?4",
                    )
                    .map_err(sql)?
                    .execute(params![to.as_str(), at, details.reason, id])
                    .map_err(sql)?;
                    report(c, &job, to, &details, now)?;
                    moved.push(id);
                }
                Ok(moved)
            })
            .await
    }

    /// Records that `job_ids` are to be taken off the floor (once per job:
    /// a repeated request keeps the first reason).
    pub async fn request_cancel(
        &self,
        cancel: &JobCancel,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let cancel = cancel.clone();
        self.db
            .write(move |c| {
                let at = ts(now)?;
                for id in &cancel.cancel_jobs {
                    let new = c
                        .prepare_cached(
                            "INSERT INTO cancel_requests (job_id, reason, requested_at) VALUES (?1, ?2, ?3) \
                             ON CONFLICT(job_id) DO NOTHING",
                        )
                        .map_err(sql)?
                        .execute(params![id, cancel.reason, at])
                        .map_err(sql)?
                        == 1;
                    // A job this plant never received (it may never be sent:
                    // dispatch sends no job of a cancelled order) is
                    // reported now, so its record ends; if it comes after
                    // all, it is refused and reported again, which changes
                    // nothing.
                    if new && state_of(c, id)?.is_none() {
                        let body = json(&JobStatusReport {
                            job_id: id.clone(),
                            plant: cancel.plant.clone(),
                            tenant: cancel.tenant.clone(),
                            order_id: cancel.order_id.clone(),
                            status: JobState::Cancelled,
                            at: now,
                            carrier: None,
                            tracking: None,
                            reason: Some(format!(
                                "never received: the order was cancelled ({})",
                                cancel.reason
                            )),
                        })?;
                        c.prepare_cached(
                            "INSERT INTO outbox (job_id, status, body) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                        )
                        .map_err(sql)?
                        .execute(params![id, JobState::Cancelled.as_str(), body])
                        .map_err(sql)?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// Why `job_id` is to be cancelled, if it is.
    pub async fn cancel_request(&self, job_id: &str) -> Result<Option<String>, StoreError> {
        let id = job_id.to_string();
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT reason FROM cancel_requests WHERE job_id = ?1")
                    .map_err(sql)?
                    .query_row([id], |r| r.get(0))
                    .optional()
                    .map_err(sql)
            })
            .await
    }

    /// Journaled jobs to cancel that have not ended: (id, state, reason).
    pub async fn to_cancel(&self) -> Result<Vec<(String, JobState, String)>, StoreError> {
        self.db
            .read(move |c| {
                let rows: Vec<(String, String, String)> = c
                    .prepare_cached(
                        "SELECT j.job_id, j.state, r.reason FROM cancel_requests r \
                         JOIN jobs j ON j.job_id = r.job_id \
                         WHERE j.state IN ('accepted', 'printing', 'printed', 'packed') \
                         ORDER BY j.job_id",
                    )
                    .map_err(sql)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(id, state, reason)| Some((id, JobState::parse(&state)?, reason)))
                    .collect())
            })
            .await
    }

    /// Jobs in `state`, oldest first, at most `limit`.
    pub async fn jobs_in(&self, state: JobState, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.db
            .read(move |c| {
                let docs: Vec<String> = c
                    .prepare_cached(
                        "SELECT doc FROM jobs WHERE state = ?1 ORDER BY received_at, job_id LIMIT ?2",
                    )
                    .map_err(sql)?
                    .query_map(params![state.as_str(), limit as i64], |r| r.get(0))
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                docs.iter()
                    .map(|d| serde_json::from_str(d).map_err(|e| StoreError::Unexpected(e.into())))
                    .collect()
            })
            .await
    }

    /// The ids of jobs in `state`, oldest first, at most `limit`.
    pub async fn ids_in(&self, state: JobState, limit: usize) -> Result<Vec<String>, StoreError> {
        self.db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT job_id FROM jobs WHERE state = ?1 ORDER BY received_at, job_id LIMIT ?2",
                )
                .map_err(sql)?
                .query_map(params![state.as_str(), limit as i64], |r| r.get(0))
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)
            })
            .await
    }

    /// The packages whose jobs are all here and all in `state`, with the
    /// ids of their jobs and when the last of them got there.
    pub async fn complete_packages(
        &self,
        state: JobState,
    ) -> Result<Vec<(String, Vec<String>, String)>, StoreError> {
        self.db
            .read(move |c| {
                let rows: Vec<(String, String, String, String)> = c
                    .prepare_cached(
                        "SELECT packing_ref, job_id, doc, updated_at FROM jobs WHERE packing_ref IN
                           (SELECT packing_ref FROM jobs WHERE state = ?1)
                         ORDER BY packing_ref",
                    )
                    .map_err(sql)?
                    .query_map([state.as_str()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                let mut packages: BTreeMap<String, (Vec<String>, u32, bool, String)> =
                    BTreeMap::new();
                for (package, id, doc, updated) in rows {
                    let job: Job =
                        serde_json::from_str(&doc).map_err(|e| StoreError::Unexpected(e.into()))?;
                    let in_state = state_of(c, &id)?.is_some_and(|(s, _)| s == state);
                    let entry = packages.entry(package).or_insert((
                        Vec::new(),
                        job.jobs_in_package,
                        true,
                        String::new(),
                    ));
                    entry.0.push(id);
                    entry.2 &= in_state;
                    if updated > entry.3 {
                        entry.3 = updated;
                    }
                }
                Ok(packages
                    .into_iter()
                    .filter(|(_, (ids, expected, all, _))| *all && ids.len() as u32 == *expected)
                    .map(|(package, (ids, _, _, last))| (package, ids, last))
                    .collect())
            })
            .await
    }

    /// The ids of a package's jobs.
    pub async fn package(&self, packing_ref: &str) -> Result<Vec<String>, StoreError> {
        let package = packing_ref.to_string();
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT job_id FROM jobs WHERE packing_ref = ?1 ORDER BY job_id")
                    .map_err(sql)?
                    .query_map([package], |r| r.get(0))
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)
            })
            .await
    }

    /// Up to `limit` reports not yet sent, oldest first: (seq, body).
    pub async fn pending_reports(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT seq, body FROM outbox ORDER BY seq LIMIT ?1")
                    .map_err(sql)?
                    .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)
            })
            .await
    }

    /// Removes sent reports from the outbox.
    pub async fn reported(&self, seqs: Vec<i64>) -> Result<(), StoreError> {
        self.db
            .write(move |c| {
                let mut delete = c
                    .prepare_cached("DELETE FROM outbox WHERE seq = ?1")
                    .map_err(sql)?;
                for seq in seqs {
                    delete.execute([seq]).map_err(sql)?;
                }
                Ok(())
            })
            .await
    }

    /// Jobs per state, and reports waiting to be sent.
    pub async fn counts(&self) -> Result<(BTreeMap<String, u64>, u64), StoreError> {
        self.db
            .read(|c| {
                let by_state = c
                    .prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                    .map_err(sql)?
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                    })
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                let pending: i64 = c
                    .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
                    .map_err(sql)?;
                Ok((by_state, pending as u64))
            })
            .await
    }

    /// Every job, newest first, at most `limit`.
    pub async fn list(&self, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        self.db
            .read(move |c| {
                c.prepare(
                    "SELECT job_id, packing_ref, state, reason, updated_at FROM jobs ORDER BY updated_at DESC, job_id LIMIT ?1",
                )
                .map_err(sql)?
                .query_map([limit as i64], |r| {
                    Ok(JobRow {
                        job_id: r.get(0)?,
                        packing_ref: r.get(1)?,
                        state: r.get(2)?,
                        reason: r.get(3)?,
                        updated_at: r.get(4)?,
                    })
                })
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)
            })
            .await
    }
}
