//! gpl: a declarative pipeline language and engine for deep-learning research on galaxy images.
//!
//! Stages of compilation (see ARCHITECTURE.md): source → `lang` (syntax tree with spans)
//! → `check` (resolved program, model IR) → `plan` (stage DAG with fingerprints) → `run`.

pub mod bench;
pub mod check;
pub mod cli;
pub mod data;
pub mod detect;
pub mod eval;
pub mod explain;
pub mod fsutil;
pub mod lang;
pub mod nn;
pub mod plan;
pub mod report;
pub mod run;
pub mod search;
pub mod stages;
pub mod train;
