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
