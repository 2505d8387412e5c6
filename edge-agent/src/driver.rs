//! Handing jobs to machines through hot folders, and the simulated machine.
//!
//! A job reaches the machine as its print files `<job id>.<file name>` and
//! a job ticket `<job id>.ticket.json` (job id, product, size, copies,
//! barcode value, files). Each is written under a temporary name (a dot
//! file) in the hot folder, fsynced and renamed into place, the ticket
//! last, and the folder is fsynced: the machine, which takes a job by its
//! ticket, never sees half a job. A print file is hard-linked from the
//! spool when the folders share a file system (the spool copy is already
//! on disk), copied and fsynced otherwise.
//!
//! The machine moves the ticket (and the files) to its `done` or `error`
//! folder: that is the result, an `<job id>.error.txt` beside a failed
//! ticket says why. A ticket found in any of the three folders means the
//! job was handed over already, so a hand-off repeated after a crash
//! writes nothing: the machine gets every job once.

use crate::config::Folders;
use printworks::domain::production::Job;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The sidecar a machine reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub job_id: String,
    pub order_id: String,
    pub sku: String,
    pub product: String,
    pub width_mm: u32,
    pub height_mm: u32,
    pub options: BTreeMap<String, String>,
    /// This copy and how many of the item were ordered.
    pub copy: u32,
    pub copies: u32,
    pub barcode: String,
    pub packing_ref: String,
    /// The print files beside the ticket, in order.
    pub files: Vec<String>,
}

impl Ticket {
    pub fn of(job: &Job) -> Ticket {
        Ticket {
            job_id: job.job_id.clone(),
            order_id: job.order_id.to_string(),
            sku: job.product.sku.clone(),
            product: job.product.name.clone(),
            width_mm: job.product.width_mm,
            height_mm: job.product.height_mm,
            options: job.product.options.clone(),
            copy: job.copy,
            copies: job.copies,
            barcode: job.barcode.clone(),
            packing_ref: job.packing_ref.clone(),
            files: job
                .files
                .iter()
                .map(|f| file_name(&job.job_id, &f.name))
                .collect(),
        }
    }
}

pub fn ticket_name(job_id: &str) -> String {
    format!("{job_id}.ticket.json")
}

pub fn file_name(job_id: &str, name: &str) -> String {
    format!("{job_id}.{name}")
}

/// A ticket taken back from the hot folder (a dot file: no machine reads it).
fn withdrawn_name(job_id: &str) -> String {
    format!(".{job_id}.ticket.withdrawn")
}

/// A ticket the simulated machine claimed (a dot file).
fn claimed_name(job_id: &str) -> String {
    format!(".{job_id}.ticket.claimed")
}

fn error_note(job_id: &str) -> String {
    format!("{job_id}.error.txt")
}

/// What the machine made of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineResult {
    Printing,
    Printed,
    Failed(String),
}

/// Fsyncs a directory, so the renames in it survive a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` durably: temporary name, fsync, rename (the
/// caller fsyncs the directory).
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_name(path);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// A machine behind a hot folder.
#[derive(Debug, Clone)]
pub struct HotFolder {
    pub folders: Folders,
}

impl HotFolder {
    pub fn new(folders: Folders) -> io::Result<HotFolder> {
        for dir in [&folders.hot, &folders.done, &folders.error] {
            fs::create_dir_all(dir)?;
        }
        Ok(HotFolder { folders })
    }

    /// Whether the job's ticket is in the hot, done or error folder (or
    /// claimed by the simulated machine).
    pub fn handed_over(&self, job_id: &str) -> bool {
        let ticket = ticket_name(job_id);
        [&self.folders.hot, &self.folders.done, &self.folders.error]
            .iter()
            .any(|d| d.join(&ticket).exists())
            || self.folders.hot.join(claimed_name(job_id)).exists()
    }

    /// Puts a job with its files from `spool` into the hot folder, unless
    /// it is there (or done) already; returns whether it wrote. The caller
    /// fsyncs the hot folder ([`HotFolder::sync`]) before it records the
    /// hand-off.
    pub fn submit(&self, job: &Job, spool: &Path) -> io::Result<bool> {
        if self.handed_over(&job.job_id) {
            return Ok(false);
        }
        let ticket = Ticket::of(job);
        for (file, target) in job.files.iter().zip(&ticket.files) {
            let from = spool.join(&file.name);
            let to = self.folders.hot.join(target);
            let tmp = temp_name(&to);
            let _ = fs::remove_file(&tmp);
            if fs::hard_link(&from, &tmp).is_err() {
                fs::copy(&from, &tmp)?;
                File::open(&tmp)?.sync_all()?;
            }
            fs::rename(&tmp, &to)?;
        }
        let bytes = serde_json::to_vec_pretty(&ticket).map_err(io::Error::other)?;
        write_durably(&self.folders.hot.join(ticket_name(&job.job_id)), &bytes)?;
        Ok(true)
    }

    pub fn sync(&self) -> io::Result<()> {
        sync_dir(&self.folders.hot)
    }

    /// Takes a handed-over job back, if the machine has not taken it:
    /// its ticket is renamed out of the machine's sight (one atomic
    /// rename, the same the machine claims a job with), then the ticket
    /// and files are removed. `false` if the machine had it first.
    pub fn withdraw(&self, job_id: &str) -> io::Result<bool> {
        let ticket = self.folders.hot.join(ticket_name(job_id));
        let withdrawn = self.folders.hot.join(withdrawn_name(job_id));
        match fs::rename(&ticket, &withdrawn) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Withdrawn before a crash, or taken by the machine.
                if !withdrawn.exists() {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
        let raw = fs::read(&withdrawn)?;
        let files = serde_json::from_slice::<Ticket>(&raw)
            .map(|t| t.files)
            .unwrap_or_default();
        for file in files {
            match fs::remove_file(self.folders.hot.join(&file)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::remove_file(&withdrawn)?;
        sync_dir(&self.folders.hot)?;
        Ok(true)
    }

    /// Where the machine is with a handed-over job.
    pub fn result(&self, job_id: &str) -> MachineResult {
        let ticket = ticket_name(job_id);
        if self.folders.done.join(&ticket).exists() {
            return MachineResult::Printed;
        }
        if self.folders.error.join(&ticket).exists() {
            let note = fs::read_to_string(self.folders.error.join(error_note(job_id)))
                .ok()
                .map(|s| s.trim().chars().take(500).collect::<String>())
                .filter(|s| !s.is_empty());
            return MachineResult::Failed(
                note.unwrap_or_else(|| "the machine rejected the job".into()),
            );
        }
        MachineResult::Printing
    }
}

/// The file beside a simulated machine's log that jams it: the next job it
/// takes fails, and the file is removed (one jam, one failed job).
pub const JAM_FILE: &str = "jam";

/// A machine for demos and tests: takes each ticket from the hot folder,
/// "prints" it after `delay` (appending the job id to `printed.log`, with
/// an fsync), fails `failure_rate` of them and the next one after a jam
/// ([`JAM_FILE`]), and moves the job to `done` or `error`. Its log is the record of every job it took and printed: a job
/// handed to it twice shows twice, which is what the agent's tests count.
pub struct SimulatedMachine {
    folders: Folders,
    log: PathBuf,
    delay: Duration,
    failure_rate: f64,
    seen: BTreeMap<String, Instant>,
}

impl SimulatedMachine {
    /// `log` is where printed job ids are appended.
    pub fn new(
        folders: Folders,
        log: PathBuf,
        delay: Duration,
        failure_rate: f64,
    ) -> io::Result<SimulatedMachine> {
        HotFolder::new(folders.clone())?;
        Ok(SimulatedMachine {
            folders,
            log,
            delay,
            failure_rate,
            seen: BTreeMap::new(),
        })
    }

    /// The job ids in a machine's log, in print order.
    pub fn printed(log: &Path) -> io::Result<Vec<String>> {
        match fs::read_to_string(log) {
            Ok(s) => Ok(s.lines().map(str::to_string).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Looks at the hot folder once; returns how many jobs it finished.
    pub fn step(&mut self) -> io::Result<usize> {
        let now = Instant::now();
        let mut ready = Vec::new();
        for entry in fs::read_dir(&self.folders.hot)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            // A job claimed before a crash is finished at once.
            if let Some(job_id) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".ticket.claimed"))
            {
                ready.push(job_id.to_string());
                continue;
            }
            if name.starts_with('.') {
                continue;
            }
            if let Some(job_id) = name.strip_suffix(".ticket.json") {
                let first = *self.seen.entry(job_id.to_string()).or_insert(now);
                if now.duration_since(first) >= self.delay {
                    ready.push(job_id.to_string());
                }
            }
        }
        ready.sort();
        ready.dedup();
        let mut finished = 0;
        for job_id in ready {
            // The machine takes a job by renaming its ticket out of the hot
            // folder's sight, atomically: a job the agent took back
            // (`HotFolder::withdraw`) is simply gone.
            let claimed = self.folders.hot.join(claimed_name(&job_id));
            match fs::rename(self.folders.hot.join(ticket_name(&job_id)), &claimed) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && claimed.exists() => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.seen.remove(&job_id);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let raw = fs::read(&claimed)?;
            let ticket: Option<Ticket> = serde_json::from_slice(&raw).ok();
            // A jam (the file `jam` beside the log, written by a test or a
            // demo) fails the next job the machine takes, then is cleared.
            let jammed = fs::remove_file(self.log.with_file_name(JAM_FILE)).is_ok();
            let failed = jammed || rand::random::<f64>() < self.failure_rate;
            let target = if failed {
                &self.folders.error
            } else {
                &self.folders.done
            };
            if failed {
                write_durably(
                    &target.join(error_note(&job_id)),
                    b"simulated machine fault: paper jam",
                )?;
            } else {
                let mut log = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)?;
                writeln!(log, "{job_id}")?;
                log.sync_all()?;
            }
            for file in ticket.map(|t| t.files).unwrap_or_default() {
                let from = self.folders.hot.join(&file);
                if from.exists() {
                    fs::rename(&from, target.join(&file))?;
                }
            }
            fs::rename(&claimed, target.join(ticket_name(&job_id)))?;
            sync_dir(target)?;
            self.seen.remove(&job_id);
            finished += 1;
        }
        Ok(finished)
    }

    /// Runs until `stop` says so, looking every 50 ms.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut machine = self;
        loop {
            if *stop.borrow() {
                return;
            }
            let (back, result) = match tokio::task::spawn_blocking(move || {
                let result = machine.step();
                (machine, result)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "simulated machine stopped");
                    return;
                }
            };
            machine = back;
            if let Err(e) = result {
                tracing::error!(error = %e, "simulated machine");
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Folders;

    /// A ticket and one print file in the hot folder, as a hand-off leaves them.
    fn handed(folders: &Folders, job_id: &str) {
        let file = file_name(job_id, "1.jpg");
        fs::write(folders.hot.join(&file), b"print").unwrap();
        let ticket = serde_json::json!({
            "job_id": job_id, "order_id": "ord_x", "sku": "poster-30x40", "product": "Poster",
            "width_mm": 300, "height_mm": 400, "options": {}, "copy": 1, "copies": 1,
            "barcode": "B", "packing_ref": "P", "files": [file],
        });
        fs::write(folders.hot.join(ticket_name(job_id)), ticket.to_string()).unwrap();
    }

    fn setup() -> (tempfile::TempDir, HotFolder, SimulatedMachine, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::under(dir.path());
        let hot = HotFolder::new(folders.clone()).unwrap();
        let log = dir.path().join("printed.log");
        let machine = SimulatedMachine::new(folders, log.clone(), Duration::ZERO, 0.0).unwrap();
        (dir, hot, machine, log)
    }

    #[test]
    fn a_job_taken_back_before_the_machine_took_it_is_never_printed() {
        let (_dir, hot, mut machine, log) = setup();
        handed(&hot.folders, "job_a-1-1");
        handed(&hot.folders, "job_b-1-1");
        assert!(hot.withdraw("job_a-1-1").unwrap());
        // Nothing of it is left in the hot folder; taking it back again is
        // harmless and says the machine does not have it.
        let left: Vec<String> = fs::read_dir(&hot.folders.hot)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.iter().all(|n| !n.contains("job_a")), "{left:?}");
        assert!(!hot.withdraw("job_a-1-1").unwrap());
        machine.step().unwrap();
        assert_eq!(SimulatedMachine::printed(&log).unwrap(), vec!["job_b-1-1"]);
        assert_eq!(hot.result("job_b-1-1"), MachineResult::Printed);
    }

    #[test]
    fn a_job_the_machine_claimed_cannot_be_taken_back() {
        let (_dir, hot, mut machine, log) = setup();
        handed(&hot.folders, "job_a-1-1");
        // The machine claims the ticket (as its step does), and crashes
        // before it prints: the agent cannot take it back, and the
        // machine finishes it when it comes back.
        fs::rename(
            hot.folders.hot.join(ticket_name("job_a-1-1")),
            hot.folders.hot.join(claimed_name("job_a-1-1")),
        )
        .unwrap();
        assert!(hot.handed_over("job_a-1-1"));
        assert!(!hot.withdraw("job_a-1-1").unwrap());
        machine.step().unwrap();
        assert_eq!(SimulatedMachine::printed(&log).unwrap(), vec!["job_a-1-1"]);
        assert_eq!(hot.result("job_a-1-1"), MachineResult::Printed);
    }
}
