//! The agent's loops: intake (queue -> spool -> journal), the floor (journal
//! -> machine -> results, packing and shipping), and the reporter (outbox ->
//! `plant-events`).
//!
//! Intake, for each message: a job id already journaled only deletes the
//! message. Otherwise the files are downloaded into the spool and checked
//! against their sha256 (a mismatch or a file that is gone journals the job
//! as failed: it is never printed), the job is journaled (fsync), and only
//! then is the message deleted. While a message is being worked on its
//! visibility is extended. A crash before the journal write leaves the
//! message to come back; after it, the journal stops a second take.

use crate::config::{AfterPrint, Config, DriverConfig};
use crate::driver::{HotFolder, MachineResult, SimulatedMachine, sync_dir};
use crate::faults::{Faults, Step};
use crate::journal::{Details, Intake, Journal};
use printworks::domain::production::{Job, JobCancel, JobState, PlantMessage};
use printworks::ports::{MessageQueue, QueueError, QueueMessage};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

/// What happened to one received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Journaled and deleted: the job goes to the machine.
    Accepted(String),
    /// Journaled as failed (bad checksum, file gone) and deleted.
    Failed(String, String),
    /// Journaled before: the message was only deleted.
    Duplicate(String),
    /// Its print file links had expired: the message was deleted and
    /// nothing journaled, for the copy with fresh links the reconciler
    /// sends under the same job id (dispatch's resend).
    Stale(String, String),
    /// A cancelled order's jobs, recorded to be taken off the floor (the
    /// message deleted); the number of jobs.
    CancelRecorded(usize),
    /// Its order was cancelled before it came: journaled as cancelled,
    /// never downloaded nor printed.
    Cancelled(String),
    /// The same job is being taken right now from another message.
    Busy(String),
    /// Not a job for this plant: left on the queue for its dead-letter queue.
    Refused(String),
    /// Stopped before the journal write (shutdown, or the file store was
    /// unreachable): the message comes back.
    Returned(String),
}

enum DownloadError {
    Permanent(String),
    Transient(anyhow::Error),
}

/// Exponential back-off with full jitter.
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.max);
        self.attempt += 1;
        ceiling.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

pub struct Agent {
    config: Config,
    journal: Arc<Journal>,
    jobs: Arc<dyn MessageQueue>,
    events: Arc<dyn MessageQueue>,
    http: reqwest::Client,
    machine: HotFolder,
    faults: Faults,
    floor_wake: Notify,
    report_wake: Notify,
    in_flight: Mutex<HashSet<String>>,
    /// One download per sha256 at a time: copies of one print taken at
    /// once wait for the first and link its file from the cache.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Removes a job id from the in-flight set when its intake ends.
struct InFlight<'a>(&'a Mutex<HashSet<String>>, String);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(&self.1);
        }
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The reason of a job cancelled before it reached the machine.
fn cancelled_before(reason: &str) -> String {
    format!("never printed: the order was cancelled ({reason})")
}

impl Agent {
    pub fn new(
        config: Config,
        jobs: Arc<dyn MessageQueue>,
        events: Arc<dyn MessageQueue>,
        faults: Faults,
    ) -> anyhow::Result<Arc<Agent>> {
        let spool = config.spool_dir();
        std::fs::create_dir_all(&spool)?;
        let journal = Arc::new(Journal::open(&config.journal_path())?);
        clean_spool(&spool)?;
        let machine = HotFolder::new(config.folders())?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Arc::new(Agent {
            config,
            journal,
            jobs,
            events,
            http,
            machine,
            faults,
            floor_wake: Notify::new(),
            report_wake: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
            fetching: Mutex::new(HashMap::new()),
        }))
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Runs every loop until `stop` turns true, then lets intake finish or
    /// park what it holds, sends what it can, and closes the journal.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        tracing::info!(plant = %self.config.plant, "edge agent started");
        let mut tasks = JoinSet::new();
        tasks.spawn(self.clone().intake_loop(stop.clone()));
        tasks.spawn(self.clone().floor_loop(stop.clone()));
        tasks.spawn(self.clone().report_loop(stop.clone()));
        if let DriverConfig::Simulated {
            delay_ms,
            failure_rate,
            ..
        } = self.config.driver
        {
            let folders = self.config.folders();
            let log = self.config.state_dir.join("machine").join("printed.log");
            let machine =
                SimulatedMachine::new(folders, log, Duration::from_millis(delay_ms), failure_rate)?;
            tasks.spawn(machine.run(stop.clone()));
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "an agent loop ended abnormally");
            }
        }
        self.journal.close();
        tracing::info!(plant = %self.config.plant, "edge agent stopped");
        Ok(())
    }

    async fn intake_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        let mut working = JoinSet::new();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut busy = false;
        loop {
            while let Some(done) = working.try_join_next() {
                log_taken(done);
            }
            if *stop.borrow() {
                break;
            }
            let free = permits.available_permits();
            if free == 0 {
                if let Some(done) = working.join_next().await {
                    log_taken(done);
                }
                continue;
            }
            let received = tokio::select! {
                r = self.jobs.receive(free.min(10), self.config.wait()) => r,
                _ = stop.changed() => break,
            };
            match received {
                Ok(messages) if messages.is_empty() => {
                    backoff.reset();
                    if working.is_empty() && std::mem::take(&mut busy) {
                        release_freed_memory();
                    }
                }
                Ok(messages) => {
                    busy = true;
                    backoff.reset();
                    for message in messages {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        let agent = self.clone();
                        let stop = stop.clone();
                        working.spawn(async move {
                            let _permit = permit;
                            agent.take(message, stop).await
                        });
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "job queue unreachable");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => break,
                    }
                }
            }
        }
        // Shutdown: what is being taken finishes its step (download ->
        // journal -> delete) or, past the grace period, is dropped before
        // the journal write and its message comes back.
        let grace = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(done) = working.join_next().await {
                log_taken(done);
            }
        });
        if grace.await.is_err() {
            working.abort_all();
        }
    }

    /// Takes one received message (see the module docs).
    pub async fn take(
        &self,
        message: QueueMessage,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Taken> {
        let job = match PlantMessage::parse(&message.body) {
            Ok(PlantMessage::Cancel(cancel)) if cancel.plant == self.config.plant => {
                return self.record_cancel(&message, cancel).await;
            }
            Ok(PlantMessage::Cancel(cancel)) => {
                tracing::error!(order = %cancel.order_id, plant = %cancel.plant, "a cancellation for another plant; left for the dead-letter queue");
                return Ok(Taken::Refused(format!(
                    "cancellation for plant {}",
                    cancel.plant
                )));
            }
            Ok(PlantMessage::Job(job)) if job.plant == self.config.plant => *job,
            Ok(PlantMessage::Job(job)) => {
                tracing::error!(job = %job.job_id, plant = %job.plant, "a job for another plant; left for the dead-letter queue");
                return Ok(Taken::Refused(format!("job for plant {}", job.plant)));
            }
            Err(e) => {
                tracing::error!(message = %message.message_id, error = %e, "not a job; left for the dead-letter queue");
                return Ok(Taken::Refused(e.to_string()));
            }
        };
        let id = job.job_id.clone();
        let inserted = self
            .in_flight
            .lock()
            .map_err(|_| anyhow::anyhow!("in-flight set poisoned"))?
            .insert(id.clone());
        if !inserted {
            // Comes back in a few seconds, when the journal knows it.
            let _ = self
                .jobs
                .change_visibility(&message.receipt, Duration::from_secs(5))
                .await;
            return Ok(Taken::Busy(id));
        }
        let _guard = InFlight(&self.in_flight, id.clone());
        if self.journal.contains(&id).await? {
            self.delete(&message).await?;
            return Ok(Taken::Duplicate(id));
        }
        // Its order was cancelled before it came: journaled as cancelled
        // (and reported), never downloaded.
        if let Some(reason) = self.journal.cancel_request(&id).await? {
            self.journal
                .take(&job, Intake::Cancelled(cancelled_before(&reason)), now())
                .await?;
            self.delete(&message).await?;
            self.report_wake.notify_one();
            return Ok(Taken::Cancelled(id));
        }
        let heartbeat = self.keep_hidden(&message);
        let downloaded = tokio::select! {
            d = self.download(&job) => d,
            _ = wait_for(stop) => {
                heartbeat.abort();
                return Ok(Taken::Returned(format!("{id}: shutting down")));
            }
        };
        let intake = match downloaded {
            Ok(()) => {
                self.faults.reached(Step::AfterDownload);
                Intake::Accepted
            }
            // Links past their expiry are not the job's fault: a copy with
            // fresh links comes (the reconciler refreshes jobs not taken in
            // time), and a file that is really gone fails that copy.
            Err(DownloadError::Permanent(reason))
                if OffsetDateTime::now_utc() >= job.files_expire_at =>
            {
                heartbeat.abort();
                let _ = tokio::fs::remove_dir_all(self.config.spool_dir().join(&id)).await;
                self.delete(&message).await?;
                tracing::warn!(job = %id, reason, "the job's links expired; waiting for a copy with fresh ones");
                return Ok(Taken::Stale(id, reason));
            }
            Err(DownloadError::Permanent(reason)) => Intake::Failed(reason),
            Err(DownloadError::Transient(e)) => {
                heartbeat.abort();
                tracing::warn!(job = %id, error = %format!("{e:#}"), "download failed; the job comes back");
                return Ok(Taken::Returned(format!("{id}: {e:#}")));
            }
        };
        let taken = self.journal.take(&job, intake.clone(), now()).await;
        heartbeat.abort();
        taken?;
        self.faults.reached(Step::AfterJournal);
        self.delete(&message).await?;
        self.faults.reached(Step::AfterDelete);
        self.floor_wake.notify_one();
        self.report_wake.notify_one();
        Ok(match intake {
            Intake::Accepted => Taken::Accepted(id),
            Intake::Failed(reason) => {
                let _ = tokio::fs::remove_dir_all(self.config.spool_dir().join(&id)).await;
                tracing::warn!(job = %id, reason, "job failed at intake");
                Taken::Failed(id, reason)
            }
            Intake::Cancelled(_) => Taken::Cancelled(id),
        })
    }

    /// Records a cancellation durably, then deletes its message; the floor
    /// takes the jobs off (see [`Agent::cancel_pass`]).
    async fn record_cancel(
        &self,
        message: &QueueMessage,
        cancel: JobCancel,
    ) -> anyhow::Result<Taken> {
        let jobs = cancel.cancel_jobs.len();
        tracing::info!(order = %cancel.order_id, jobs, "order cancelled: taking its jobs off the floor");
        self.journal.request_cancel(&cancel, now()).await?;
        self.delete(message).await?;
        self.floor_wake.notify_one();
        self.report_wake.notify_one();
        Ok(Taken::CancelRecorded(jobs))
    }

    /// Takes the jobs of cancelled orders off the floor: one not handed
    /// to the machine yet is cancelled; one in the hot folder is taken
    /// back if the machine has not taken it (else it is left to the
    /// machine, and cancelled once printed); a printed or packed one is
    /// not packed or shipped. Each ends `cancelled`, the reason saying
    /// which. Returns how many jobs changed state.
    async fn cancel_pass(&self) -> anyhow::Result<usize> {
        let mut moved = 0;
        for (id, state, reason) in self.journal.to_cancel().await? {
            let why = match state {
                JobState::Accepted => cancelled_before(&reason),
                JobState::Printing => {
                    let machine = self.machine.clone();
                    let job = id.clone();
                    let withdrawn =
                        tokio::task::spawn_blocking(move || machine.withdraw(&job)).await??;
                    if !withdrawn {
                        // The machine took it: it is printed (or fails) and
                        // is cancelled then.
                        continue;
                    }
                    format!("taken off the hot folder before the machine took it; {reason}")
                }
                _ => format!("printed, not shipped; {reason}"),
            };
            let details = Details {
                reason: Some(why),
                ..Details::default()
            };
            let ended = self
                .journal
                .advance(vec![id.clone()], JobState::Cancelled, details, now())
                .await?;
            if !ended.is_empty() {
                self.forget_spool(&id).await;
                tracing::info!(job = %id, was = state.as_str(), "job cancelled");
            }
            moved += ended.len();
        }
        Ok(moved)
    }

    async fn delete(&self, message: &QueueMessage) -> anyhow::Result<()> {
        match self.jobs.delete(&message.receipt).await {
            Ok(()) => Ok(()),
            // The message was received again meanwhile: the journal stops
            // that delivery from being taken twice.
            Err(QueueError::StaleReceipt) => Ok(()),
            Err(e) => {
                // Journaled already: a redelivery is only deleted.
                tracing::warn!(error = %e, "deleting a journaled job's message failed; it will come back and be dropped");
                Ok(())
            }
        }
    }

    /// Extends the message's visibility every third of the timeout until
    /// the returned task is aborted.
    fn keep_hidden(&self, message: &QueueMessage) -> tokio::task::JoinHandle<()> {
        let queue = self.jobs.clone();
        let receipt = message.receipt.clone();
        let timeout = self.config.visibility();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(timeout / 3).await;
                if let Err(e) = queue.change_visibility(&receipt, timeout).await {
                    tracing::warn!(error = %e, "extending a job's visibility failed");
                }
            }
        })
    }

    /// Downloads every file of `job` into `<spool>/<job id>/`, checking
    /// size and sha256, each fsynced and renamed into place. A file whose
    /// sha256 the spool's cache holds (another copy of the same print) is
    /// linked from there instead of fetched again ([`SpoolCache`]).
    async fn download(&self, job: &Job) -> Result<(), DownloadError> {
        let dir = self.config.spool_dir().join(&job.job_id);
        let io = |e: std::io::Error| DownloadError::Transient(anyhow::anyhow!(e).context("spool"));
        tokio::fs::create_dir_all(&dir).await.map_err(io)?;
        let cache = SpoolCache::of(&self.config.spool_dir());
        for file in &job.files {
            let lock = self
                .fetching
                .lock()
                .map_err(|_| DownloadError::Transient(anyhow::anyhow!("fetch locks poisoned")))?
                .entry(file.sha256.to_ascii_lowercase())
                .or_default()
                .clone();
            let fetched = {
                let _one_at_a_time = lock.lock().await;
                self.fetch_or_link(job, file, &dir, &cache).await
            };
            if let Ok(mut locks) = self.fetching.lock()
                && Arc::strong_count(&lock) == 2
            {
                locks.remove(&file.sha256.to_ascii_lowercase());
            }
            fetched?;
        }
        let spool = self.config.spool_dir();
        tokio::task::spawn_blocking(move || {
            sync_dir(&dir)?;
            sync_dir(&spool)
        })
        .await
        .map_err(|e| DownloadError::Transient(e.into()))?
        .map_err(io)
    }

    /// `file` of `job` into `dir`: linked from the cache if it holds it,
    /// else fetched, verified and kept there.
    async fn fetch_or_link(
        &self,
        job: &Job,
        file: &printworks::domain::production::JobFile,
        dir: &Path,
        cache: &SpoolCache,
    ) -> Result<(), DownloadError> {
        let io = |e: std::io::Error| DownloadError::Transient(anyhow::anyhow!(e).context("spool"));
        if cache.link_into(file, &dir.join(&file.name)).map_err(io)? {
            return Ok(());
        }
        let part = dir.join(format!(
            ".{}.{}.part",
            file.name,
            uuid::Uuid::new_v4().simple()
        ));
        let result = self.fetch_to(file, job.files_expire_at, &part).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        result?;
        cache.keep(file, &part);
        tokio::fs::rename(&part, dir.join(&file.name))
            .await
            .map_err(io)
    }

    async fn fetch_to(
        &self,
        file: &printworks::domain::production::JobFile,
        expires_at: OffsetDateTime,
        part: &Path,
    ) -> Result<(), DownloadError> {
        let transient = |e: anyhow::Error| DownloadError::Transient(e);
        let mut response = self.http.get(&file.url).send().await.map_err(|e| {
            transient(anyhow::anyhow!(e).context(format!("fetching {}", file.name)))
        })?;
        let status = response.status();
        // Gone for good: a missing file, or a link past its expiry. A 403
        // before the expiry (a skewed clock, a permission being fixed) is
        // retried: the message comes back, and dead-letters after its limit.
        let expired = OffsetDateTime::now_utc() >= expires_at;
        if matches!(status.as_u16(), 404 | 410) || (status.as_u16() == 403 && expired) {
            return Err(DownloadError::Permanent(format!(
                "file {}: HTTP {} from the print store (the link expired or the file is gone)",
                file.name,
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(transient(anyhow::anyhow!(
                "file {}: HTTP {status}",
                file.name
            )));
        }
        let out = tokio::fs::File::create(part)
            .await
            .map_err(|e| transient(anyhow::anyhow!(e).context("creating a spool file")))?;
        let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, out);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transient(anyhow::anyhow!(e).context(format!("reading {}", file.name))))?
        {
            size += chunk.len() as u64;
            if size > file.bytes {
                return Err(DownloadError::Permanent(format!(
                    "file {}: longer than the {} bytes announced",
                    file.name, file.bytes
                )));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| transient(anyhow::anyhow!(e).context("writing the spool")))?;
        }
        out.flush()
            .await
            .map_err(|e| transient(anyhow::anyhow!(e).context("writing the spool")))?;
        out.into_inner()
            .sync_all()
            .await
            .map_err(|e| transient(anyhow::anyhow!(e).context("fsync of the spool")))?;
        let digest = hex::encode(hasher.finalize());
        if size != file.bytes || !digest.eq_ignore_ascii_case(&file.sha256) {
            return Err(DownloadError::Permanent(format!(
                "file {}: checksum mismatch (sha256 {digest}, {size} bytes; the job says {}, {} bytes)",
                file.name, file.sha256, file.bytes
            )));
        }
        Ok(())
    }

    async fn floor_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // Hand-offs run as soon as intake wakes the floor; the machine's
        // results are looked at about once a second (two stats per job).
        let mut results_checked = std::time::Instant::now() - Duration::from_secs(1);
        loop {
            let check_results = results_checked.elapsed() >= Duration::from_secs(1);
            if check_results {
                results_checked = std::time::Instant::now();
                let cache = SpoolCache::of(&self.config.spool_dir());
                if let Err(e) = tokio::task::spawn_blocking(move || cache.sweep(CACHE_KEEP)).await {
                    tracing::warn!(error = %e, "sweeping the spool cache failed");
                }
            }
            match self.floor_pass(check_results).await {
                Ok(moved) if moved > 0 => self.report_wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "the floor step failed; retrying")
                }
            }
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = self.floor_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One pass over the floor: hands accepted jobs to the machine, takes
    /// the machine's results, and packs and ships (when simulated).
    /// Returns how many jobs changed state.
    pub async fn floor_step(&self) -> anyhow::Result<usize> {
        self.floor_pass(true).await
    }

    async fn floor_pass(&self, check_results: bool) -> anyhow::Result<usize> {
        // Cancellations first: a cancelled job is never handed over.
        let mut moved = self.cancel_pass().await?;
        // Hand-off, in batches: one folder fsync, one journal commit.
        loop {
            let accepted = self.journal.jobs_in(JobState::Accepted, 64).await?;
            if accepted.is_empty() {
                break;
            }
            let machine = self.machine.clone();
            let spool = self.config.spool_dir();
            let handed: Vec<String> = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
                let mut handed = Vec::new();
                for job in &accepted {
                    match machine.submit(job, &spool.join(&job.job_id)) {
                        Ok(_) => handed.push(job.job_id.clone()),
                        Err(e) => tracing::error!(job = %job.job_id, error = %e, "hand-off failed; retrying"),
                    }
                }
                machine.sync()?;
                Ok(handed)
            })
            .await??;
            if handed.is_empty() {
                break;
            }
            self.faults.reached(Step::AfterHandOff);
            moved += self
                .journal
                .advance(handed, JobState::Printing, Details::default(), now())
                .await?
                .len();
        }
        // The machine's results.
        let printing = if check_results {
            self.journal.ids_in(JobState::Printing, 10_000).await?
        } else {
            Vec::new()
        };
        if !printing.is_empty() {
            let machine = self.machine.clone();
            let results = tokio::task::spawn_blocking(move || {
                printing
                    .into_iter()
                    .map(|id| {
                        let r = machine.result(&id);
                        (id, r)
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
            let mut printed = Vec::new();
            for (id, result) in results {
                match result {
                    MachineResult::Printing => {}
                    MachineResult::Printed => printed.push(id),
                    MachineResult::Failed(reason) => {
                        let details = Details {
                            reason: Some(reason),
                            ..Details::default()
                        };
                        moved += self
                            .journal
                            .advance(vec![id.clone()], JobState::Failed, details, now())
                            .await?
                            .len();
                        self.forget_spool(&id).await;
                    }
                }
            }
            for id in &printed {
                self.forget_spool(id).await;
            }
            moved += self
                .journal
                .advance(printed, JobState::Printed, Details::default(), now())
                .await?
                .len();
        }
        // A job printed after its order was cancelled is not packed.
        moved += self.cancel_pass().await?;
        if let AfterPrint::Simulate {
            ship_delay_ms,
            carrier,
        } = &self.config.after_print
        {
            for (_, ids, _) in self.journal.complete_packages(JobState::Printed).await? {
                moved += self
                    .journal
                    .advance(ids, JobState::Packed, Details::default(), now())
                    .await?
                    .len();
            }
            for (package, ids, packed_at) in
                self.journal.complete_packages(JobState::Packed).await?
            {
                let packed_at = OffsetDateTime::parse(
                    &packed_at,
                    &time::format_description::well_known::Rfc3339,
                )?;
                if now() - packed_at < Duration::from_millis(*ship_delay_ms) {
                    continue;
                }
                let details = Details {
                    carrier: Some(carrier.clone()),
                    tracking: Some(simulated_tracking(&package)),
                    reason: None,
                };
                moved += self
                    .journal
                    .advance(ids, JobState::Shipped, details, now())
                    .await?
                    .len();
            }
        }
        Ok(moved)
    }

    async fn forget_spool(&self, job_id: &str) {
        let _ = tokio::fs::remove_dir_all(self.config.spool_dir().join(job_id)).await;
    }

    async fn report_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(self.config.report_backoff_max_secs.max(1)),
        );
        loop {
            let stopping = *stop.borrow();
            let sent = if stopping {
                // One last try, bounded: what is left goes out after the restart.
                tokio::time::timeout(Duration::from_secs(3), self.report_once())
                    .await
                    .unwrap_or(Ok(0))
            } else {
                self.report_once().await
            };
            if stopping {
                if let Err(e) = sent {
                    tracing::warn!(error = %format!("{e:#}"), "reports left in the outbox at shutdown");
                }
                return;
            }
            let pause = match sent {
                Ok(0) => {
                    backoff.reset();
                    Duration::from_secs(1)
                }
                Ok(_) => {
                    backoff.reset();
                    continue;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = delay.as_millis() as u64, "status not delivered; retrying");
                    delay
                }
            };
            tokio::select! {
                _ = self.report_wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Sends up to 10 reports from the outbox; returns how many went.
    pub async fn report_once(&self) -> anyhow::Result<usize> {
        let pending = self.journal.pending_reports(10).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        self.faults.reached(Step::BeforeReport);
        let bodies: Vec<String> = pending.iter().map(|(_, b)| b.clone()).collect();
        let seqs: Vec<i64> = pending.iter().map(|(s, _)| *s).collect();
        match self.events.send_batch(&bodies).await {
            Ok(()) => {
                self.faults.reached(Step::AfterReport);
                let n = seqs.len();
                self.journal.reported(seqs).await?;
                Ok(n)
            }
            Err(QueueError::NotSent { failed, cause }) => {
                let sent: Vec<i64> = seqs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !failed.contains(i))
                    .map(|(_, s)| *s)
                    .collect();
                self.journal.reported(sent).await?;
                Err(cause.context(format!("{} reports not sent", failed.len())))
            }
            Err(e) => Err(anyhow::anyhow!(e)),
        }
    }
}

/// Gives the memory freed after a burst of jobs back to the system, so an
/// idle agent stays small (glibc keeps freed heap in its arenas).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A tracking number of the simulated carrier, stable for a package.
pub fn simulated_tracking(packing_ref: &str) -> String {
    let digest = Sha256::digest(packing_ref.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    format!("SIM{:012}", n % 1_000_000_000_000)
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn log_taken(done: Result<anyhow::Result<Taken>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(taken)) => tracing::debug!(?taken, "job message handled"),
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "taking a job failed; its message comes back")
        }
        Err(e) => tracing::error!(error = %e, "a job intake task failed"),
    }
}

/// Removes partial downloads left by a crash; a job downloaded but never
/// journaled is downloaded again when its message comes back.
/// How long a cached print file no job uses any more is kept: the copies
/// of one order's item arrive together, and may be minutes apart.
const CACHE_KEEP: Duration = Duration::from_secs(15 * 60);

/// The spool's files by sha256 (`<spool>/.by-sha256/<sha256>`): hard links
/// to verified downloads, so copies of one print file (an item of 100
/// copies is 100 jobs with the same file) are fetched once. An entry only
/// ever holds bytes whose size and sha256 were checked; losing one (a
/// crash, the sweep) only costs a download.
#[derive(Clone)]
struct SpoolCache(PathBuf);

impl SpoolCache {
    fn of(spool: &Path) -> SpoolCache {
        SpoolCache(spool.join(".by-sha256"))
    }

    fn entry(&self, file: &printworks::domain::production::JobFile) -> PathBuf {
        self.0.join(file.sha256.to_ascii_lowercase())
    }

    /// Links the cached bytes of `file` to `target` (a temporary name,
    /// then renamed into place); false if the cache does not hold them.
    fn link_into(
        &self,
        file: &printworks::domain::production::JobFile,
        target: &Path,
    ) -> std::io::Result<bool> {
        let entry = self.entry(file);
        match std::fs::metadata(&entry) {
            Ok(meta) if meta.len() == file.bytes => {}
            _ => return Ok(false),
        }
        let tmp = target.with_file_name(format!(
            ".{}.{}.link",
            file.name,
            uuid::Uuid::new_v4().simple()
        ));
        if std::fs::hard_link(&entry, &tmp).is_err() {
            // Swept meanwhile: fetch it.
            return Ok(false);
        }
        std::fs::rename(&tmp, target)?;
        Ok(true)
    }

    /// Keeps a verified download for the next copy (best effort).
    fn keep(&self, file: &printworks::domain::production::JobFile, verified: &Path) {
        let _ = std::fs::create_dir_all(&self.0);
        let _ = std::fs::hard_link(verified, self.entry(file));
    }

    /// Removes the entries no job's spool links to any more (one link:
    /// the cache's own) that have been unused for `keep`.
    fn sweep(&self, keep: Duration) -> std::io::Result<usize> {
        use std::os::unix::fs::MetadataExt;
        let entries = match std::fs::read_dir(&self.0) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for entry in entries {
            let path = entry?.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            // ctime: when the last job's link went away.
            let changed = std::time::UNIX_EPOCH + Duration::from_secs(meta.ctime().max(0) as u64);
            let idle = now.duration_since(changed).unwrap_or_default();
            if meta.nlink() <= 1 && idle >= keep && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn clean_spool(spool: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(spool)? {
        let dir: PathBuf = entry?.path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir)? {
            let path = file?.path();
            if path.extension().is_some_and(|e| e == "part" || e == "link") {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use printworks::domain::production::JobFile;

    fn file(bytes: &[u8]) -> JobFile {
        JobFile {
            name: "1.jpg".into(),
            url: "http://example.invalid/1.jpg".into(),
            sha256: hex::encode(Sha256::digest(bytes)),
            bytes: bytes.len() as u64,
            width: 1,
            height: 1,
        }
    }

    #[test]
    fn the_spool_cache_links_kept_files_and_sweeps_only_unused_ones() {
        let spool = tempfile::tempdir().unwrap();
        let cache = SpoolCache::of(spool.path());
        let (a, b) = (file(b"print a"), file(b"print b"));
        for (f, bytes) in [(&a, b"print a"), (&b, b"print b")] {
            let dir = spool.path().join(format!("job-{}", &f.sha256[..8]));
            std::fs::create_dir_all(&dir).unwrap();
            let part = dir.join(".1.jpg.part");
            std::fs::write(&part, bytes).unwrap();
            cache.keep(f, &part);
            std::fs::rename(&part, dir.join("1.jpg")).unwrap();
        }
        // Another copy of a: linked, the same bytes, no fetch.
        let copy = spool.path().join("copy");
        std::fs::create_dir_all(&copy).unwrap();
        assert!(cache.link_into(&a, &copy.join("1.jpg")).unwrap());
        assert_eq!(std::fs::read(copy.join("1.jpg")).unwrap(), b"print a");
        // A file of another size is not taken from the cache.
        let wrong = JobFile {
            bytes: 3,
            ..a.clone()
        };
        assert!(!cache.link_into(&wrong, &copy.join("2.jpg")).unwrap());
        // b's job is done: only the cache links it, and it goes; a stays.
        std::fs::remove_dir_all(spool.path().join(format!("job-{}", &b.sha256[..8]))).unwrap();
        assert_eq!(cache.sweep(Duration::ZERO).unwrap(), 1);
        assert!(!cache.link_into(&b, &copy.join("3.jpg")).unwrap());
        assert!(cache.link_into(&a, &copy.join("4.jpg")).unwrap());
        // Unused, but not yet for long enough: kept.
        std::fs::remove_dir_all(spool.path().join(format!("job-{}", &a.sha256[..8]))).unwrap();
        std::fs::remove_dir_all(&copy).unwrap();
        assert_eq!(cache.sweep(Duration::from_secs(600)).unwrap(), 0);
        assert_eq!(cache.sweep(Duration::ZERO).unwrap(), 1);
    }
}
