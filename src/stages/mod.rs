//! Stage kinds: maps a checked program onto stage specs and their executors.
//!
//! This is the one place that knows both the language (`check::Program`) and the libraries
//! (`data`, `nn`, `train`, `eval`, `report`). Each executor reads its own serde config from
//! its spec, so a stage's fingerprint covers exactly what it computes from.

pub mod data;
pub mod eval;
pub mod train;

use crate::check::{self, Diagnostics, Program};
use crate::data::augment::{AugmentSpec, FillMode};
use crate::data::balance::{BalanceSpec, Resample, WeightsSpec};
use crate::data::split::{ClassSpec, HoldoutSpec, MergeSpec};
use crate::data::synth::{SynthConfig, SynthKind};
use crate::lang::BlockKind;
use crate::nn::optim::OptimizerConfig;
use crate::plan::{Plan, StageSpec};
use crate::report::model::DagNode;
use crate::run::{Registry, StageContext, StageError};
use crate::train::callbacks::{
    CallbackSpec, EarlyStoppingConfig, ModelCheckpointConfig, ReduceLrConfig,
};
use crate::train::fit::FitConfig;
use data::{BalanceConfig, DatasetConfig, SourceConfig};
use eval::{
    CrossvalConfig, EnsembleConfig, EnsembleWeightsConfig, EvaluateConfig, FoldConfig, ReportConfig,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use train::{ClassWeightConfig, InitConfig, Recipe, TrainConfig};

pub const DATASET: &str = "dataset";
pub const SPLIT: &str = "split";
pub const BALANCE: &str = "balance";
pub const TRAIN: &str = "train";
pub const EVALUATE: &str = "evaluate";
pub const ENSEMBLE: &str = "ensemble";
pub const CROSSVAL_FOLD: &str = "crossval_fold";
pub const CROSSVAL: &str = "crossval";
pub const REPORT: &str = "report";

/// The stage that writes `report.html`; its files are also copied to `runs/<pipeline>/`.
pub const REPORT_STAGE: &str = "report";
/// Where a stage's files for people live inside its cache entry (the runner's layout).
pub const PUBLIC: &str = crate::run::cache::PUBLIC_DIR;

/// Held-out share of a fold's training part that the callbacks monitor.
const FOLD_VAL_FRACTION: f64 = 0.15;

/// Every stage kind gpl can run, with its executor.
pub fn registry() -> Registry {
    Registry::new()
        .with(DATASET, data::DatasetStage)
        .with(SPLIT, data::SplitStage)
        .with(BALANCE, data::BalanceStage)
        .with(TRAIN, train::TrainStage)
        .with(EVALUATE, eval::EvaluateStage)
        .with(ENSEMBLE, eval::EnsembleStage)
        .with(CROSSVAL_FOLD, eval::CrossvalFoldStage)
        .with(CROSSVAL, eval::CrossvalStage)
        .with(REPORT, eval::ReportStage)
}

/// A program ready to run: its plan, and the files whose edits invalidate it.
pub struct Compiled {
    pub plan: Plan,
    pub pipeline: String,
    pub watch: Vec<PathBuf>,
}

/// Maps every stage block onto stage specs. Blocks of a kind that cannot run yet (explain,
/// search, chain, detect) are refused with a diagnostic pointing at the block.
pub fn compile(program: &Program) -> Result<Compiled, Diagnostics> {
    let refused: Vec<check::Error> = program
        .blocks
        .iter()
        .filter(|b| {
            b.stage
                && matches!(
                    b.kind,
                    BlockKind::Explain | BlockKind::Search | BlockKind::Chain | BlockKind::Detect
                )
        })
        .map(|b| check::Error::NotRunnable {
            kind: b.kind.to_string(),
            name: b.name.clone(),
            span: b.span,
        })
        .collect();
    if !refused.is_empty() {
        return Err(Diagnostics {
            errors: refused,
            sources: program.sources.clone(),
        });
    }
    let mut specs = Vec::new();
    let label = |name: &str| {
        program
            .span_of(name)
            .map(|s| format!("{} {name}", program.location(s)))
    };
    for d in &program.datasets {
        specs.push(dataset_spec(program, d, label(&d.name)));
        if let Some(split) = &d.split {
            let holdout = HoldoutSpec {
                train: split.train,
                val: split.val,
                test: split.test,
                seed: split.seed,
            };
            specs.push(
                spec(
                    split_id(&d.name),
                    SPLIT,
                    &holdout,
                    &[&d.name],
                    label(&d.name),
                )
                .with_seed(split.seed),
            );
        }
    }
    for b in &program.balances {
        let dataset = b.from.dataset();
        let config = BalanceConfig {
            spec: balance_spec(program, b),
        };
        specs.push(
            spec(
                b.name.clone(),
                BALANCE,
                &config,
                &[dataset, &split_id(dataset)],
                label(&b.name),
            )
            .with_seed(b.seed),
        );
    }
    for t in &program.trains {
        let dataset = t.data.dataset();
        let split = split_id(dataset);
        let balanced = matches!(t.data, check::DataRef::Balance { .. });
        let config = TrainConfig {
            recipe: recipe(program, t),
            balanced,
        };
        let mut inputs = vec![dataset, split.as_str()];
        if let check::DataRef::Balance { balance, .. } = &t.data {
            inputs.push(balance);
        }
        let mut s = spec(t.name.clone(), TRAIN, &config, &inputs, label(&t.name)).with_seed(t.seed);
        s.files = init_files(program, t);
        specs.push(s);
    }
    for e in &program.ensembles {
        let weights = match &e.weights {
            check::EnsembleWeights::Fixed { weights } => EnsembleWeightsConfig::Fixed {
                weights: weights.clone(),
            },
            check::EnsembleWeights::Search { on, step } => EnsembleWeightsConfig::Search {
                part: part_of(on).to_string(),
                step: *step,
            },
        };
        let config = EnsembleConfig {
            members: e.members.clone(),
            weights,
        };
        let inputs: Vec<&str> = e.members.iter().map(String::as_str).collect();
        specs.push(spec(
            e.name.clone(),
            ENSEMBLE,
            &config,
            &inputs,
            label(&e.name),
        ));
    }
    for e in &program.evaluates {
        let models: Vec<String> = e.models.iter().map(|m| m.name().to_string()).collect();
        let config = EvaluateConfig {
            models: models.clone(),
            data: e.data.to_string(),
            part: part_of(&e.data).to_string(),
            confusion: e.confusion,
            roc: e.roc,
        };
        let mut inputs = vec![e.data.dataset()];
        inputs.extend(models.iter().map(String::as_str));
        specs.push(spec(
            e.name.clone(),
            EVALUATE,
            &config,
            &inputs,
            label(&e.name),
        ));
    }
    for c in &program.crossvals {
        let mut folds = Vec::new();
        for model in &c.compare {
            let Some(t) = program.train(model) else {
                continue;
            };
            let balance = match &t.data {
                check::DataRef::Balance { balance, .. } => {
                    program.balance(balance).map(|b| balance_spec(program, b))
                }
                _ => None,
            };
            for fold in 0..c.folds {
                let config = FoldConfig {
                    model: model.clone(),
                    recipe: recipe(program, t),
                    balance: balance.clone(),
                    folds: c.folds,
                    fold,
                    seed: c.seed,
                    val_fraction: FOLD_VAL_FRACTION,
                };
                let id = format!("{}.{model}.fold{}", c.name, fold + 1);
                let mut s = spec(
                    id.clone(),
                    CROSSVAL_FOLD,
                    &config,
                    &[c.data.dataset()],
                    label(&c.name),
                )
                .with_seed(c.seed);
                s.files = init_files(program, t);
                folds.push(id);
                specs.push(s);
            }
        }
        let config = CrossvalConfig {
            models: c.compare.clone(),
            folds: c.folds,
            alpha: 0.05,
        };
        let inputs: Vec<&str> = folds.iter().map(String::as_str).collect();
        specs.push(spec(
            c.name.clone(),
            CROSSVAL,
            &config,
            &inputs,
            label(&c.name),
        ));
    }
    let pipeline = pipeline_name(&program.root);
    specs.push(report_spec(&pipeline, &specs));
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

/// `pipelines/galaxy10.gpl` → `galaxy10`.
pub fn pipeline_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into())
}

fn split_id(dataset: &str) -> String {
    format!("{dataset}.split")
}

fn part_of(data: &check::DataRef) -> &'static str {
    match data {
        check::DataRef::Split { part, .. } => part.as_str(),
        // Whole datasets and balance outputs are evaluated on their test part.
        _ => "test",
    }
}

fn spec<T: Serialize>(
    id: String,
    kind: &str,
    config: &T,
    inputs: &[&str],
    label: Option<String>,
) -> StageSpec {
    // Our config types serialise infallibly (no maps with non-string keys).
    let value = serde_json::to_value(config).expect("stage config serialises");
    let mut s = StageSpec::new(id, kind, value).with_inputs(inputs);
    s.label = label;
    s
}

fn dataset_spec(program: &Program, d: &check::Dataset, label: Option<String>) -> StageSpec {
    let source = source_config(&d.source, d.image_shape.as_deref());
    let fallback = d
        .fallback
        .as_ref()
        .and_then(|f| match source_config(f, None) {
            SourceConfig::Synthetic { config } => Some(config),
            _ => None,
        });
    let classes = ClassSpec {
        drop: d.drop.clone(),
        merge: d
            .merges
            .iter()
            .map(|m| MergeSpec {
                classes: m.classes.clone(),
                name: None,
            })
            .collect(),
    };
    let config = DatasetConfig {
        source,
        fallback,
        classes,
        resize: d.resize,
    };
    let mut s = spec(d.name.clone(), DATASET, &config, &[], label);
    // A data file is content-hashed when present; its appearance changes the stage's files.
    if let check::Source::Hdf5 { path, .. } | check::Source::Folder { path, .. } = &d.source {
        if program.project_root.join(path).exists() {
            s.files = vec![PathBuf::from(path)];
        }
    }
    s
}

fn source_config(source: &check::Source, shape: Option<&[usize]>) -> SourceConfig {
    match source {
        check::Source::Hdf5 {
            path,
            images,
            labels,
            ..
        } => SourceConfig::Hdf5 {
            path: path.into(),
            images: images.clone(),
            labels: labels.clone(),
        },
        check::Source::Folder { path, .. } => {
            let (height, width) = shape.map_or((69, 69), |s| (s[0], s[1]));
            SourceConfig::Folder {
                path: path.into(),
                height,
                width,
            }
        }
        check::Source::Synthetic {
            generator,
            count,
            seed,
        } => {
            let mut config = SynthConfig::galaxy10(*count, *seed);
            if *generator == check::SyntheticKind::Galaxy10Decals {
                config.kind = SynthKind::Galaxy10Decals;
            }
            SourceConfig::Synthetic { config }
        }
    }
}

fn augment_spec(a: &check::Augment) -> AugmentSpec {
    AugmentSpec {
        rotation_range: a.rotation as f32,
        width_shift_range: a.width_shift as f32,
        height_shift_range: a.height_shift as f32,
        shear_range: a.shear as f32,
        zoom_range: [a.zoom[0] as f32, a.zoom[1] as f32],
        horizontal_flip: a.horizontal_flip,
        vertical_flip: a.vertical_flip,
        fill_mode: match a.fill_mode {
            check::FillMode::Nearest => FillMode::Nearest,
            check::FillMode::Constant => FillMode::Constant,
            check::FillMode::Reflect => FillMode::Reflect,
            check::FillMode::Wrap => FillMode::Wrap,
        },
        cval: a.cval as f32,
        brightness_range: a.brightness.map(|[lo, hi]| [lo as f32, hi as f32]),
        rot90: a.rot90,
        noise_std: a.noise as f32,
        rescale: 1.0,
    }
}

fn balance_spec(program: &Program, b: &check::Balance) -> BalanceSpec {
    let resample = |r: &check::Resample| Resample {
        classes: r.classes.iter().map(|&c| c as u32).collect(),
        to: r.to,
    };
    let augment = b
        .oversample
        .iter()
        .find_map(|r| r.using.as_deref())
        .and_then(|name| program.augment(name))
        .map(augment_spec)
        .unwrap_or_default();
    BalanceSpec {
        downsample: b.downsample.iter().map(resample).collect(),
        oversample: b.oversample.iter().map(resample).collect(),
        augment,
        weights: match &b.weights {
            None => WeightsSpec::None,
            Some(check::WeightsSpec::Balanced) => WeightsSpec::Balanced,
            Some(check::WeightsSpec::Explicit { weights }) => {
                WeightsSpec::Explicit(weights.clone())
            }
        },
        seed: b.seed,
    }
}

fn recipe(program: &Program, t: &check::Train) -> Recipe {
    let o = &t.optimizer;
    let optimizer = match o.kind {
        check::OptimizerKind::Sgd => OptimizerConfig::Sgd {
            momentum: o.momentum as f32,
            nesterov: o.nesterov,
            weight_decay: o.weight_decay as f32,
        },
        check::OptimizerKind::Adam => OptimizerConfig::Adam {
            beta1: o.beta1 as f32,
            beta2: o.beta2 as f32,
            epsilon: o.eps as f32,
            weight_decay: o.weight_decay as f32,
        },
        check::OptimizerKind::Adamw => OptimizerConfig::AdamW {
            beta1: o.beta1 as f32,
            beta2: o.beta2 as f32,
            epsilon: o.eps as f32,
            weight_decay: o.weight_decay as f32,
        },
        check::OptimizerKind::Rmsprop => OptimizerConfig::RmsProp {
            rho: o.rho as f32,
            momentum: o.momentum as f32,
            epsilon: o.eps as f32,
            weight_decay: o.weight_decay as f32,
        },
    };
    let fit = FitConfig {
        epochs: t.epochs,
        batch_size: t.batch,
        seed: t.seed,
        shuffle: true,
        learning_rate: o.lr as f32,
        callbacks: t.callbacks.iter().map(callback_spec).collect(),
    };
    let class_weights = match &t.loss.class_weights {
        None => ClassWeightConfig::None,
        Some(check::ClassWeights::Balance { .. }) => ClassWeightConfig::FromBalance,
        Some(check::ClassWeights::Balanced) => ClassWeightConfig::Balanced,
        Some(check::ClassWeights::Explicit { weights }) => ClassWeightConfig::Explicit {
            weights: weights.clone(),
        },
    };
    Recipe {
        model: t.ir.clone(),
        optimizer,
        fit,
        class_weights,
        augment: t
            .augment
            .as_deref()
            .and_then(|name| program.augment(name))
            .map(augment_spec),
        init: t.init.as_ref().map(|i| InitConfig {
            path: i.path.clone().into(),
            keras_h5: i.format == check::WeightsFormat::KerasH5,
            optional: i.optional,
        }),
    }
}

fn init_files(program: &Program, t: &check::Train) -> Vec<PathBuf> {
    t.init
        .iter()
        .filter(|i| program.project_root.join(&i.path).exists())
        .map(|i| PathBuf::from(&i.path))
        .collect()
}

fn mode(m: check::Mode) -> crate::train::callbacks::Mode {
    match m {
        check::Mode::Min => crate::train::callbacks::Mode::Min,
        check::Mode::Max => crate::train::callbacks::Mode::Max,
    }
}

fn callback_spec(c: &check::Callback) -> CallbackSpec {
    match c {
        check::Callback::EarlyStopping {
            monitor,
            mode: m,
            min_delta,
            patience,
            restore_best,
            start_from_epoch,
        } => CallbackSpec::EarlyStopping(EarlyStoppingConfig {
            monitor: monitor.clone(),
            min_delta: *min_delta,
            patience: *patience,
            mode: mode(*m),
            restore_best_weights: *restore_best,
            start_from_epoch: *start_from_epoch,
            ..EarlyStoppingConfig::default()
        }),
        check::Callback::ReduceLr {
            monitor,
            mode: m,
            factor,
            patience,
            min_delta,
            cooldown,
            min_lr,
        } => CallbackSpec::ReduceLrOnPlateau(ReduceLrConfig {
            monitor: monitor.clone(),
            factor: *factor,
            patience: *patience,
            mode: mode(*m),
            min_delta: *min_delta,
            cooldown: *cooldown,
            min_lr: *min_lr,
        }),
        check::Callback::Checkpoint {
            monitor,
            mode: m,
            save_best,
        } => CallbackSpec::ModelCheckpoint(ModelCheckpointConfig {
            monitor: monitor.clone(),
            mode: mode(*m),
            save_best_only: *save_best,
            ..ModelCheckpointConfig::default()
        }),
    }
}

/// The report reads every stage that has a section (all but splits and folds).
fn report_spec(pipeline: &str, specs: &[StageSpec]) -> StageSpec {
    let node = |s: &StageSpec| DagNode {
        name: s.id.to_string(),
        kind: s.kind.clone(),
        inputs: s.inputs.iter().map(|i| i.to_string()).collect(),
        cached: false,
    };
    let sections: Vec<&StageSpec> = specs
        .iter()
        .filter(|s| !matches!(s.kind.as_str(), SPLIT | CROSSVAL_FOLD))
        .collect();
    let config = ReportConfig {
        pipeline: pipeline.to_string(),
        dag: specs.iter().map(node).collect(),
        sections: sections.iter().map(|s| node(s)).collect(),
    };
    let inputs: Vec<&str> = sections.iter().map(|s| s.id.as_str()).collect();
    spec(REPORT_STAGE.to_string(), REPORT, &config, &inputs, None)
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
        data::read_images(self.dir)
    }
}
