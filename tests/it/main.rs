//! The integration tests, as one binary: each file here is a module (one per area: lang_,
//! data_, engine_, train_, eval_, report_, runner_, pipeline_). One binary links the crate
//! once instead of once per file, which is most of a clean build's test time on two cores
//! (docs/decisions.md, "One integration-test binary"). Shared fixtures stay beside this
//! folder: tests/fixtures, tests/cases, tests/pipelines, tests/common.

#[path = "../common/mod.rs"]
mod common;

mod data_augment;
mod data_cli;
mod data_hdf5;
mod data_sources;
mod data_split_balance;
mod detect_anchors;
mod detect_extract;
mod detect_learned;
mod detect_pipeline;
mod detect_tile;
mod detection_metrics;
mod detection_voc;
mod engine_graph;
mod engine_network;
mod engine_shared;
mod engine_torch;
mod engine_transfer;
mod eval_ensemble;
mod eval_metrics;
mod eval_stats;
mod explain_pipeline;
mod explain_torch;
mod fields_synth;
mod fuzz;
mod hardening;
mod lang_cases;
mod lang_cli;
mod pipeline_e2e;
mod pipeline_text;
mod report_html;
mod runner_concurrency;
mod runner_pipeline;
mod runner_slurm;
mod search_pipeline;
mod settings_change_the_run;
mod shared;
mod train_callbacks;
mod train_fit;
mod train_predictions;
mod train_weights;
