//! Planning: the stage DAG (petgraph) and BLAKE3 fingerprints.
//!
//! The contract with the rest of gpl: `stages` turns a checked program into [`StageSpec`]s
//! (one per stage: kind, canonical resolved config, input stages, files read, seed);
//! [`Plan::new`] checks them into a DAG (unknown inputs, duplicates and cycles are errors);
//! `run` resolves each stage's [`Fingerprint`] in topological order while it runs, because a
//! fingerprint covers the *output digests* of the stage's inputs (early cutoff: an upstream
//! stage that re-ran but produced byte-identical outputs leaves its downstream cached).
//!
//! What a fingerprint covers (see [`fingerprint::stage_fingerprint`]): the engine version,
//! the stage id and kind, the canonical JSON of the config (keys sorted, no whitespace),
//! each input's id and output digest, the content hash of each file read, and the seed.
//! [`render`] draws the DAG as a terminal tree or Graphviz DOT for `gpl graph`.

pub mod fingerprint;
pub mod graph;
pub mod projection;
pub mod render;
pub mod spec;

pub use fingerprint::{canonical_json, stage_fingerprint, ContentHash, FileHasher, Fingerprint};
pub use graph::{Plan, PlanError};
pub use render::{render_dot, render_tree, StageState};
pub use spec::{StageId, StageSpec};
