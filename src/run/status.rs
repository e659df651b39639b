//! What a plan would do without running it: each stage's fingerprint where it can be known
//! now (inputs cached) and whether a valid entry exists. Used by `gpl graph`, `gpl clean
//! --gc` (live fingerprints) and watch (which running stages an edit invalidates).

use super::cache::{CacheStore, Lookup, Verify};
use super::runner::{file_hash_store, resolve_fingerprint, RunError};
use crate::plan::{ContentHash, FileHasher, Fingerprint, Plan, StageId, StageState};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// The state of every stage of `plan` against the cache under `root`.
pub fn plan_states(plan: &Plan, root: &Path) -> Result<BTreeMap<StageId, StageState>, RunError> {
    let store = CacheStore::open(root).map_err(|source| RunError::CacheIo {
        path: root.join(".gpl"),
        source,
    })?;
    let hasher = FileHasher::load(&file_hash_store(root));
    let mut digests: HashMap<&StageId, ContentHash> = HashMap::new();
    let mut states = BTreeMap::new();
    for spec in plan.stages() {
        let known: Option<Vec<(StageId, ContentHash)>> = spec
            .inputs
            .iter()
            .map(|id| digests.get(id).map(|d| (id.clone(), d.clone())))
            .collect();
        let state = match known {
            None => StageState::AfterUpstream,
            Some(input_digests) => match resolve_fingerprint(spec, &input_digests, &hasher, root) {
                Err(reason) => StageState::Dirty {
                    fingerprint: None,
                    reason,
                },
                Ok((fp, _)) => match store.lookup(&fp, Verify::Quick) {
                    Lookup::Hit(manifest) => {
                        digests.insert(&spec.id, manifest.output_digest);
                        StageState::Cached(fp)
                    }
                    Lookup::Miss => StageState::Dirty {
                        fingerprint: Some(fp),
                        reason: "not in cache".to_string(),
                    },
                    Lookup::Invalid(reason) => StageState::Dirty {
                        fingerprint: Some(fp),
                        reason,
                    },
                },
            },
        };
        states.insert(spec.id.clone(), state);
    }
    // Only a memo: failing to save it costs time next run, nothing else.
    let _ = hasher.save();
    Ok(states)
}

/// Where a stage's duration in [`stage_timings`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimingSource {
    /// The manifest of the entry the plan's current key names: this very stage.
    Cache,
    /// The last `stage_finished` of a stage of that name in `.gpl/events.jsonl`: perhaps
    /// another profile or an older configuration of it.
    Log,
}

/// Seconds each stage of `plan` took when it was last computed (`gpl plan`). Stages never
/// computed under this project are absent.
pub fn stage_timings(
    plan: &Plan,
    root: &Path,
    pipeline: &str,
) -> Result<BTreeMap<StageId, (f64, TimingSource)>, RunError> {
    let store = CacheStore::open(root).map_err(|source| RunError::CacheIo {
        path: root.join(".gpl"),
        source,
    })?;
    let mut timings = BTreeMap::new();
    let events = super::events::read_events(root).map_err(|source| RunError::CacheIo {
        path: super::events::events_path(root),
        source,
    })?;
    for event in events {
        if event.event != super::events::EventKind::StageFinished
            || event.pipeline.as_deref() != Some(pipeline)
        {
            continue;
        }
        if let (Some(stage), Some(seconds)) = (event.stage, event.seconds) {
            if plan.get(&stage).is_some() {
                timings.insert(stage, (seconds, TimingSource::Log));
            }
        }
    }
    for (id, state) in plan_states(plan, root)? {
        if let StageState::Cached(fp) = state {
            if let Lookup::Hit(manifest) = store.lookup(&fp, Verify::Quick) {
                timings.insert(id, (manifest.seconds, TimingSource::Cache));
            }
        }
    }
    Ok(timings)
}

/// Fingerprints that the current plans of `plans` resolve to now (what `gpl clean --gc`
/// keeps). Dirty stages' fingerprints count too, so a half-finished pipeline keeps its
/// scratch checkpoints.
pub fn live_fingerprints<'a>(
    plans: impl IntoIterator<Item = &'a Plan>,
    root: &Path,
) -> Result<HashSet<Fingerprint>, RunError> {
    let mut live = HashSet::new();
    for plan in plans {
        for state in plan_states(plan, root)?.into_values() {
            if let Some(fp) = state.fingerprint() {
                live.insert(fp.clone());
            }
        }
    }
    Ok(live)
}
