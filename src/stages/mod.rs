//! Stage kinds: each kind is one file here holding its config, how it compiles from its
//! checked block, its inputs, its executor and its report section (the [`Stage`] trait).
//! `compile` maps a checked program onto stage specs; `KINDS` is the one list the registry
//! and the report are built from.
//!
//! This is the one place that knows both the language (`check::Program`) and the libraries
//! (`data`, `nn`, `train`, `eval`, `report`). Each executor reads its own serde config from
//! its spec, so a stage's fingerprint covers exactly what it computes from.

pub mod balance;
pub mod chain;
pub mod crossval;
pub mod dataset;
pub mod detect;
pub mod ensemble;
pub mod evaluate;
pub mod explain;
pub mod report;
pub mod search;
pub mod select;
pub mod split;
pub mod train;

use crate::check::{self, CheckedStage, Diagnostics, Program};
use crate::data::augment::{AugmentSpec, FillMode};
use crate::eval::ProbMatrix;
use crate::lang::BlockKind;
use crate::plan::{Plan, StageSpec};
use crate::report::model::StageReport;
use crate::run::{Registry, StageContext, StageError, StageExecutor};
use crate::train::predictions::{read_predictions_csv, PredictionRow};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The stage that writes `report.html`; its files are also copied to `runs/<pipeline>/`.
pub const REPORT_STAGE: &str = "report";
/// Where a stage's files for people live inside its cache entry (the runner's layout).
pub const PUBLIC: &str = crate::run::cache::PUBLIC_DIR;

/// Every kind of stage gpl runs. A spec's `kind` is `StageKind::as_str`: the runner is a
/// generic cached-DAG executor keyed by strings (its tests use toy kinds), so the closed enum
/// lives on this side of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageKind {
    Dataset,
    Split,
    Balance,
    Train,
    Ensemble,
    Evaluate,
    CrossvalFold,
    Crossval,
    Explain,
    Search,
    Detect,
    Chain,
    Report,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Dataset => "dataset",
            StageKind::Split => "split",
            StageKind::Balance => "balance",
            StageKind::Train => "train",
            StageKind::Ensemble => "ensemble",
            StageKind::Evaluate => "evaluate",
            StageKind::CrossvalFold => "crossval_fold",
            StageKind::Crossval => "crossval",
            StageKind::Explain => "explain",
            StageKind::Search => "search",
            StageKind::Detect => "detect",
            StageKind::Chain => "chain",
            StageKind::Report => "report",
        }
    }

    pub fn parse(text: &str) -> Option<StageKind> {
        KINDS.iter().map(|s| s.kind()).find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage kind's executor and its section of the report. Its config type, its `compile`
/// (from its checked block) and its inputs live beside it in the kind's file.
pub trait Stage: StageExecutor {
    fn kind(&self) -> StageKind;

    /// Whether the report has a section for stages of this kind.
    fn in_report(&self) -> bool {
        true
    }

    /// Fills this kind's part of a report section from a stage's committed outputs.
    fn report(&self, _dir: &Path, _section: &mut StageReport) -> Result<bool, StageError> {
        Ok(false)
    }
}

/// Every stage kind gpl can run: the one list the registry and the report are built from.
pub const KINDS: &[&dyn Stage] = &[
    &dataset::DatasetStage,
    &split::SplitStage,
    &balance::BalanceStage,
    &train::TrainStage,
    &ensemble::EnsembleStage,
    &evaluate::EvaluateStage,
    &crossval::CrossvalFoldStage,
    &crossval::CrossvalStage,
    &explain::ExplainStage,
    &search::SearchStage,
    &detect::DetectStage,
    &chain::ChainStage,
    &report::ReportStage,
];

/// The stage kind's implementation (every kind is in `KINDS`).
pub fn stage(kind: StageKind) -> &'static dyn Stage {
    *KINDS
        .iter()
        .find(|s| s.kind() == kind)
        .expect("every StageKind is in KINDS")
}

/// Every stage kind gpl can run, with its executor.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    for &stage in KINDS {
        registry.register(stage.kind().as_str(), std::sync::Arc::new(Shared(stage)));
    }
    registry
}

/// What each kind's Slurm job asks for unless the pipeline or the command line says
/// otherwise: trainings (and the stages that train or run networks) get cores, memory and a
/// day; data and summary stages one core for two hours.
pub fn slurm_defaults() -> std::collections::BTreeMap<String, crate::run::slurm::Resources> {
    use crate::run::slurm::Resources;
    let resources = |cpus: u32, mem: &str, time: &str| Resources {
        cpus: Some(cpus),
        mem: Some(mem.to_string()),
        time: Some(time.to_string()),
        ..Resources::default()
    };
    KINDS
        .iter()
        .map(|stage| {
            let kind = stage.kind();
            let resources = match kind {
                StageKind::Train
                | StageKind::CrossvalFold
                | StageKind::Search
                | StageKind::Explain
                | StageKind::Chain => resources(4, "8G", "24:00:00"),
                StageKind::Dataset
                | StageKind::Split
                | StageKind::Balance
                | StageKind::Ensemble
                | StageKind::Evaluate
                | StageKind::Crossval
                | StageKind::Detect
                | StageKind::Report => resources(1, "4G", "2:00:00"),
            };
            (kind.as_str().to_string(), resources)
        })
        .collect()
}

/// A `&'static dyn Stage` as the runner's executor.
struct Shared(&'static dyn Stage);

impl StageExecutor for Shared {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        self.0.execute(ctx)
    }
}

/// A program ready to run: its plan, and the files whose edits invalidate it.
pub struct Compiled {
    pub plan: Plan,
    pub pipeline: String,
    pub watch: Vec<PathBuf>,
}

/// Maps every stage block onto stage specs, through its kind's `compile`. A setting no stage
/// can honour yet is refused with a diagnostic pointing at the block.
///
/// Each kind's `compile` destructures its checked block field by field, without `..`: a
/// setting added to the checker that no stage reads fails to compile there instead of being
/// silently dropped.
pub fn compile(program: &Program) -> Result<Compiled, Diagnostics> {
    let mut refused: Vec<check::Error> = Vec::new();
    let label = |name: &str| {
        program
            .span_of(name)
            .map(|s| format!("{} {name}", program.location(s)))
    };
    let mut specs = Vec::new();
    let mut keep = |result: Result<Vec<StageSpec>, Box<check::Error>>| match result {
        Ok(s) => specs.extend(s),
        Err(e) => refused.push(*e),
    };
    // Kinds in dependency order (a stable sort keeps load order within a kind), so the plan
    // and the report's stage list read top-down.
    let mut checked: Vec<&CheckedStage> = program.checked_in_order().collect();
    checked.sort_by_key(|c| compile_rank(c.kind()));
    for c in checked {
        let label = label(c.name());
        // Exhaustive: a new kind of checked stage does not compile until it is handled here.
        match c {
            CheckedStage::Dataset(d) => {
                keep(dataset::compile(program, d, label.clone()).map(|s| vec![s]));
                if let Some(s) = &d.split {
                    keep(Ok(vec![split::compile(&d.name, s, label)]));
                }
            }
            CheckedStage::Balance(b) => keep(balance::compile(program, b, label).map(|s| vec![s])),
            CheckedStage::Train(t) => keep(Ok(vec![train::compile(program, t, label)])),
            CheckedStage::Ensemble(e) => {
                keep(ensemble::compile(program, e, label).map(|s| vec![s]))
            }
            CheckedStage::Evaluate(e) => {
                keep(evaluate::compile(program, e, label).map(|s| vec![s]))
            }
            CheckedStage::Crossval(c) => keep(crossval::compile(program, c, label)),
            CheckedStage::Explain(e) => keep(Ok(vec![explain::compile(e, label)])),
            CheckedStage::Search(x) => keep(search::compile(program, x, label).map(|s| vec![s])),
            CheckedStage::Detect(d) => keep(Ok(vec![detect::compile(d, label)])),
            CheckedStage::Chain(x) => keep(chain::compile(program, x, label).map(|s| vec![s])),
        }
    }
    if !refused.is_empty() {
        return Err(Diagnostics {
            errors: refused,
            sources: program.sources.clone(),
        });
    }
    let pipeline = pipeline_name(&program.root);
    specs.push(report::compile(&pipeline, &specs));
    let plan = Plan::new(specs).map_err(|e| Diagnostics {
        errors: vec![check::Error::bug(format!(
            "the stage graph is invalid: {e}"
        ))],
        sources: program.sources.clone(),
    })?;
    let mut watch: Vec<PathBuf> = program
        .source_files()
        .iter()
        .map(|f| f.path.clone())
        .filter(|p| p.exists())
        .collect();
    watch.sort();
    Ok(Compiled {
        plan,
        pipeline,
        watch,
    })
}

/// Where a checked stage's kind comes in the plan: data, then models, then what reads them.
fn compile_rank(kind: BlockKind) -> u8 {
    match kind {
        BlockKind::Dataset => 0,
        BlockKind::Balance => 1,
        BlockKind::Train => 2,
        BlockKind::Ensemble => 3,
        BlockKind::Evaluate => 4,
        BlockKind::Crossval => 5,
        BlockKind::Explain => 6,
        BlockKind::Search => 7,
        BlockKind::Detect => 8,
        BlockKind::Chain => 9,
        _ => 10,
    }
}

pub(crate) fn unsupported(span: crate::lang::Span, what: &str, help: &str) -> Box<check::Error> {
    Box::new(check::Error::Unsupported {
        what: what.to_string(),
        span,
        help: Some(help.to_string()),
    })
}

/// `pipelines/galaxy10.gpl` → `galaxy10`.
pub fn pipeline_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into())
}

pub(crate) fn spec<T: Serialize>(
    id: String,
    kind: StageKind,
    config: &T,
    inputs: &[&str],
    label: Option<String>,
) -> StageSpec {
    // Our config types serialise infallibly (no maps with non-string keys).
    let value = serde_json::to_value(config).expect("stage config serialises");
    let mut s = StageSpec::new(id, kind.as_str(), value).with_inputs(inputs);
    s.label = label;
    s
}

pub(crate) fn augment_spec(a: &check::Augment) -> AugmentSpec {
    let check::Augment {
        name: _,
        span: _,
        rotation,
        width_shift,
        height_shift,
        shear,
        zoom,
        horizontal_flip,
        vertical_flip,
        fill_mode,
        cval,
        rot90,
        noise,
        brightness,
    } = a;
    AugmentSpec {
        rotation_range: *rotation as f32,
        width_shift_range: *width_shift as f32,
        height_shift_range: *height_shift as f32,
        shear_range: *shear as f32,
        zoom_range: [zoom[0] as f32, zoom[1] as f32],
        horizontal_flip: *horizontal_flip,
        vertical_flip: *vertical_flip,
        fill_mode: match fill_mode {
            check::FillMode::Nearest => FillMode::Nearest,
            check::FillMode::Constant => FillMode::Constant,
            check::FillMode::Reflect => FillMode::Reflect,
            check::FillMode::Wrap => FillMode::Wrap,
        },
        cval: *cval as f32,
        brightness_range: brightness.map(|[lo, hi]| [lo as f32, hi as f32]),
        rot90: *rot90,
        noise_std: *noise as f32,
        rescale: 1.0,
    }
}

/// Reads a stage's config from its spec.
pub(crate) fn config<T: DeserializeOwned>(ctx: &StageContext) -> Result<T, StageError> {
    serde_json::from_value(ctx.config().clone())
        .map_err(|e| StageError::failed(format!("bad stage config: {e}")))
}

/// Any library error as a failed stage, keeping its message chain.
pub(crate) fn stage_error(error: impl std::fmt::Display) -> StageError {
    StageError::failed(error)
}
/// The committed outputs of a stage's `i`-th input.
pub(crate) struct Artifacts<'a> {
    pub dir: &'a Path,
}

impl<'a> Artifacts<'a> {
    pub fn of(ctx: &'a StageContext, i: usize) -> Result<Artifacts<'a>, StageError> {
        let id = ctx
            .spec()
            .inputs
            .get(i)
            .ok_or_else(|| StageError::failed(format!("missing input {i}")))?;
        Ok(Artifacts {
            dir: ctx.input_dir(id)?,
        })
    }

    pub fn images(&self) -> Result<crate::data::ImageSet, StageError> {
        dataset::read_images(self.dir)
    }
}
/// Rows of a predictions file for one split part (all rows for `None`), in file order; an
/// error naming the `part` when there are none (a dataset of a few images leaves a split part
/// empty).
pub(crate) fn part_rows(
    rows: &[PredictionRow],
    filter: Option<&str>,
    part: &str,
) -> Result<(Vec<u32>, ProbMatrix, Vec<usize>), StageError> {
    let chosen: Vec<&PredictionRow> = rows
        .iter()
        .filter(|r| filter.is_none_or(|p| r.split == p))
        .collect();
    if chosen.is_empty() {
        return Err(StageError::failed(format!(
            "the `{part}` part has no images to evaluate on: the dataset is too small for its split; use more images or a larger `{part}` fraction"
        )));
    }
    let classes = chosen.first().map_or(0, |r| r.probabilities.len());
    let values: Vec<f64> = chosen
        .iter()
        .flat_map(|r| r.probabilities.iter().map(|&p| p as f64))
        .collect();
    let truth = chosen.iter().map(|r| r.truth).collect();
    let indices = chosen.iter().map(|r| r.index).collect();
    let probs = ProbMatrix::new(chosen.len(), classes, values).map_err(stage_error)?;
    Ok((truth, probs, indices))
}

pub(crate) fn read_predictions(dir: &Path) -> Result<Vec<PredictionRow>, StageError> {
    read_predictions_csv(&dir.join(PUBLIC).join(train::PREDICTIONS_FILE)).map_err(stage_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once_and_round_trips_its_name() {
        let kinds: Vec<StageKind> = KINDS.iter().map(|s| s.kind()).collect();
        let mut unique = kinds.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), kinds.len(), "a kind is listed twice");
        for kind in kinds {
            assert_eq!(StageKind::parse(kind.as_str()), Some(kind));
            assert_eq!(stage(kind).kind(), kind);
        }
        let registry = registry();
        assert_eq!(registry.kinds().len(), KINDS.len());
    }
}
