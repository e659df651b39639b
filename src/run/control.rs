//! Stopping runs: a per-run [`RunControl`] (stop scheduling, cancel one stage or all) and the
//! process-wide Ctrl-C flag. The ctrlc handler is installed once per process; the first
//! Ctrl-C asks every run to stop at its stages' next cancellation check, a second one exits.

use crate::plan::fingerprint::lock;
use crate::plan::{Fingerprint, StageId};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static HANDLER: Once = Once::new();

/// Installs the Ctrl-C handler (once; later calls do nothing). Exit code 130 on a second press.
pub fn install_interrupt_handler() {
    HANDLER.call_once(|| {
        // Another library may own the signal already; then Ctrl-C keeps its default meaning.
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: stopping running stages (press Ctrl-C again to exit at once)"
            );
        });
    });
}

/// True once Ctrl-C was pressed in this process.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Shared between a running plan and whoever may stop it (watch, tests).
#[derive(Debug, Default)]
pub struct RunControl {
    stop_scheduling: AtomicBool,
    cancel_all: AtomicBool,
    cancelled: Mutex<HashSet<StageId>>,
    running: Mutex<BTreeMap<StageId, Fingerprint>>,
}

impl RunControl {
    pub fn new() -> Self {
        RunControl::default()
    }

    /// Starts no further stages; running ones finish (and commit).
    pub fn stop_scheduling(&self) {
        self.stop_scheduling.store(true, Ordering::SeqCst);
    }

    /// Starts nothing more and cancels every running stage.
    pub fn cancel(&self) {
        self.stop_scheduling();
        self.cancel_all.store(true, Ordering::SeqCst);
    }

    /// Cancels one stage if it is running (or when it starts).
    pub fn cancel_stage(&self, id: &StageId) {
        lock(&self.cancelled).insert(id.clone());
    }

    pub fn scheduling_stopped(&self) -> bool {
        self.stop_scheduling.load(Ordering::SeqCst) || interrupted()
    }

    pub fn is_cancelled(&self, id: &StageId) -> bool {
        self.cancel_all.load(Ordering::SeqCst)
            || interrupted()
            || lock(&self.cancelled).contains(id)
    }

    /// Stages executing right now, with the fingerprint they are computing.
    pub fn running_stages(&self) -> BTreeMap<StageId, Fingerprint> {
        lock(&self.running).clone()
    }

    pub(crate) fn set_running(&self, id: &StageId, fp: Option<&Fingerprint>) {
        let mut running = lock(&self.running);
        match fp {
            Some(fp) => running.insert(id.clone(), fp.clone()),
            None => running.remove(id),
        };
    }
}
