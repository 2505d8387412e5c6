//! Pause points for the crash tests: with `EDGE_AGENT_PAUSE_AT=<step>` the
//! agent stops its whole process (SIGSTOP) the first time it reaches that
//! step, so a test can kill it with SIGKILL exactly there and restart it.
//! Off unless the variable is set; when off, a step costs one comparison.

use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable that names the step to pause at.
pub const PAUSE_AT: &str = "EDGE_AGENT_PAUSE_AT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The files are in the spool, verified; nothing journaled.
    AfterDownload,
    /// The job is journaled; its message not yet deleted.
    AfterJournal,
    /// The message is deleted; the job not yet handed to the machine.
    AfterDelete,
    /// The job is in the hot folder; the hand-off not yet journaled.
    AfterHandOff,
    /// Reports read from the outbox, not yet sent.
    BeforeReport,
    /// Reports sent, not yet removed from the outbox.
    AfterReport,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::AfterDownload,
        Step::AfterJournal,
        Step::AfterDelete,
        Step::AfterHandOff,
        Step::BeforeReport,
        Step::AfterReport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::AfterDownload => "after-download",
            Step::AfterJournal => "after-journal",
            Step::AfterDelete => "after-delete",
            Step::AfterHandOff => "after-hand-off",
            Step::BeforeReport => "before-report",
            Step::AfterReport => "after-report",
        }
    }

    pub fn parse(raw: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    pause_at: Option<Step>,
    paused: AtomicBool,
}

impl Faults {
    pub fn none() -> Faults {
        Faults::default()
    }

    pub fn pause_at(step: Step) -> Faults {
        Faults {
            pause_at: Some(step),
            paused: AtomicBool::new(false),
        }
    }

    /// From [`PAUSE_AT`]; an unknown step name is an error.
    pub fn from_env() -> anyhow::Result<Faults> {
        match std::env::var(PAUSE_AT) {
            Ok(raw) if !raw.is_empty() => Step::parse(&raw)
                .map(Faults::pause_at)
                .ok_or_else(|| anyhow::anyhow!("{PAUSE_AT}: no step {raw:?}")),
            _ => Ok(Faults::none()),
        }
    }

    /// Stops the process here if this is the step to pause at.
    pub fn reached(&self, step: Step) {
        if self.pause_at != Some(step) || self.paused.swap(true, Ordering::SeqCst) {
            return;
        }
        eprintln!("edge-agent: pausing at {}", step.as_str());
        // SAFETY: raise() only sends a signal to this process; SIGSTOP
        // stops every thread at once until a SIGCONT or SIGKILL.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}
