//! Running: the content-addressed cache, the scheduler, progress, the event log, watch.
//!
//! Public surface (generic over stage kinds; `stages` supplies the executors):
//! - [`run_plan`]`(plan, registry, options) -> RunSummary`: topological, parallel
//!   (`options.jobs`), cached stages loaded, dirty ones executed and committed atomically;
//!   `--only`, `--from`, `--force`; Ctrl-C through [`control`].
//! - [`StageExecutor`] / [`StageContext`] / [`Registry`]: how a stage kind plugs in.
//! - [`cache::CacheStore`]: `.gpl/cache/<fingerprint>/{out/, manifest.json}`, verification,
//!   `clean`, `gc`; [`lock`]: the per-entry locks that let concurrent runs share it.
//! - [`events`]: `.gpl/events.jsonl`, one JSON per run/stage transition.
//! - [`watch()`]: re-plan and re-run on file saves.
//! - [`status::plan_states`] for `gpl graph`; [`cli_support`] for the commands.

pub mod cache;
pub mod cli_support;
pub mod control;
pub mod events;
pub mod executor;
pub mod lock;
pub mod progress;
pub mod runner;
pub mod slurm;
pub mod status;
pub mod watch;

pub use cache::{CacheStore, Verify};
pub use control::RunControl;
pub use events::{read_events, Event, EventKind};
pub use executor::{Registry, StageContext, StageError, StageExecutor};
pub use progress::{ProgressMode, StageProgress};
pub use runner::{run_plan, Executor, RunError, RunOptions, RunSummary, StageOutcome, StageStatus};
pub use status::{live_fingerprints, plan_states, stage_timings, TimingSource};
pub use watch::{watch, Reload, WatchOptions};
