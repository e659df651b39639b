//! The event log `.gpl/events.jsonl`: one JSON object per line for every run and stage
//! transition. Tests and `gpl watch` read it; people can `tail -f` it.

use crate::plan::fingerprint::lock;
use crate::plan::{Fingerprint, StageId};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The log is rotated to `events.jsonl.1` when it grows past this.
const ROTATE_BYTES: u64 = 8 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RunStarted,
    StageCached,
    /// Another process holds the stage's cache entry; this run waits for it.
    StageWaiting,
    /// Submitted as a Slurm job (the message names it); the job logs its start and finish.
    StageSubmitted,
    StageStarted,
    StageFinished,
    StageFailed,
    StageCancelled,
    StageSkipped,
    Warning,
    Notice,
    RunFinished,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub run: String,
    pub event: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub fn events_path(project_root: &Path) -> PathBuf {
    project_root.join(".gpl").join("events.jsonl")
}

/// Appends events of one run. Writing is best effort: a full disk must not fail a stage.
#[derive(Debug)]
pub struct EventLog {
    file: Option<Mutex<File>>,
    run: String,
    pipeline: String,
}

impl EventLog {
    pub fn open(project_root: &Path, run: &str, pipeline: &str) -> EventLog {
        let path = events_path(project_root);
        if fs::metadata(&path).is_ok_and(|m| m.len() > ROTATE_BYTES) {
            let _ = fs::rename(&path, path.with_extension("jsonl.1"));
        }
        // Appending follows a symlink, so a log that is one is not written.
        let linked = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        let file = path
            .parent()
            .filter(|_| !linked)
            .map(fs::create_dir_all)
            .and_then(|r| r.ok())
            .and_then(|_| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .ok()
            });
        EventLog {
            file: file.map(Mutex::new),
            run: run.to_string(),
            pipeline: pipeline.to_string(),
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run
    }

    pub fn emit(
        &self,
        event: EventKind,
        stage: Option<&StageId>,
        fingerprint: Option<&Fingerprint>,
        seconds: Option<f64>,
        message: Option<&str>,
    ) {
        let Some(file) = &self.file else { return };
        let record = Event {
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            run: self.run.clone(),
            event,
            pipeline: Some(self.pipeline.clone()),
            stage: stage.cloned(),
            fingerprint: fingerprint.cloned(),
            seconds,
            message: message.map(str::to_string),
        };
        if let Ok(mut line) = serde_json::to_string(&record) {
            line.push('\n');
            // One write per line on an O_APPEND file: lines from threads never interleave.
            let _ = lock(file).write_all(line.as_bytes());
        }
    }
}

/// Every event in the log (lines that do not parse are skipped).
pub fn read_events(project_root: &Path) -> io::Result<Vec<Event>> {
    let file = match File::open(events_path(project_root)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut events = Vec::new();
    for line in io::BufReader::new(file).lines() {
        if let Ok(event) = serde_json::from_str(&line?) {
            events.push(event);
        }
    }
    Ok(events)
}
