//! Stage kinds: maps a checked program onto stage specs and their executors.
//!
//! This is the one place that knows both the language (`check::Program`) and the libraries
//! (`data`, `nn`, `train`, `eval`, `report`). Each executor reads its own serde config from
//! its spec, so a stage's fingerprint covers exactly what it computes from.

pub mod data;
pub mod eval;
pub mod select;
pub mod train;

use crate::check::{self, Diagnostics, Program};
use crate::data::augment::{AugmentSpec, FillMode};
use crate::data::balance::{BalanceSpec, Resample, WeightsSpec};
use crate::data::split::{ClassSpec, HoldoutSpec, MergeSpec};
use crate::data::synth::{SynthConfig, SynthKind};
use crate::eval::crossval::{CrossvalOptions, Metric, PairedTest};
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
    CrossvalConfig, EnsembleConfig, EnsembleWeightsConfig, EvalModel, EvalSource, EvaluateConfig,
    FoldConfig, ReportConfig,
};
use select::{split_id, DataSel};
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
/// The significance level of crossval's paired tests (the study's).
const CROSSVAL_ALPHA: f64 = 0.05;

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
/// search, chain, detect) are refused with a diagnostic pointing at the block, and so is any
/// setting no stage can honour yet.
///
/// Each checked block is destructured field by field, without `..`: a setting added to the
/// checker that no stage reads fails to compile here instead of being silently dropped.
pub fn compile(program: &Program) -> Result<Compiled, Diagnostics> {
    let mut refused: Vec<check::Error> = program
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
    let mut specs = Vec::new();
    let label = |name: &str| {
        program
            .span_of(name)
            .map(|s| format!("{} {name}", program.location(s)))
    };
    for d in &program.datasets {
        match dataset_spec(program, d, label(&d.name)) {
            Ok(s) => specs.push(s),
            Err(e) => refused.push(*e),
        }
        if let Some(split) = &d.split {
            let check::Split {
                train,
                val,
                test,
                stratify,
                seed,
            } = *split;
            let holdout = HoldoutSpec {
                train,
                val,
                test,
                stratify,
                seed,
            };
            specs.push(
                spec(
                    split_id(&d.name),
                    SPLIT,
                    &holdout,
                    &[&d.name],
                    label(&d.name),
                )
                .with_seed(seed),
            );
        }
    }
    for b in &program.balances {
        if let Err(e) = oversample_preset(b) {
            refused.push(*e);
            continue;
        }
        let from = DataSel::of(&b.from);
        if let DataSel::Balance { .. } = from {
            refused.push(*unsupported(
                b.span,
                "balancing the output of another balance block",
                "name a dataset part, e.g. `from galaxy10.train`",
            ));
            continue;
        }
        let config = BalanceConfig {
            spec: balance_spec(program, b),
            from: from.clone(),
        };
        specs.push(
            spec(
                b.name.clone(),
                BALANCE,
                &config,
                &from.stages(),
                label(&b.name),
            )
            .with_seed(b.seed),
        );
    }
    for t in &program.trains {
        let config = TrainConfig {
            recipe: recipe(program, t),
            data: DataSel::of(&t.data),
            validation: t.validation.as_ref().map(DataSel::of),
            predict: predicted_dataset(program, t),
        };
        let inputs = config.inputs();
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let mut s = spec(t.name.clone(), TRAIN, &config, &inputs, label(&t.name)).with_seed(t.seed);
        s.files = init_files(program, t);
        specs.push(s);
    }
    for e in &program.ensembles {
        let check::Ensemble {
            name,
            members,
            weights,
            span,
        } = e;
        let weights = match weights {
            check::EnsembleWeights::Fixed { weights } => EnsembleWeightsConfig::Fixed {
                weights: weights.clone(),
            },
            check::EnsembleWeights::Search { on, step } => {
                let part = match on {
                    check::DataRef::Split { dataset, part }
                        if *part != check::Part::Train
                            && Some(dataset.as_str()) == members_dataset(program, members) =>
                    {
                        *part
                    }
                    _ => {
                        refused.push(*unsupported(
                            *span,
                            &format!("searching ensemble weights on `{on}`"),
                            "search on the val or test part of the members' own dataset, e.g. `weights search on galaxy10.val`",
                        ));
                        continue;
                    }
                };
                EnsembleWeightsConfig::Search {
                    part: part.as_str().to_string(),
                    step: *step,
                }
            }
        };
        let config = EnsembleConfig {
            members: members.clone(),
            weights,
        };
        let inputs: Vec<&str> = members.iter().map(String::as_str).collect();
        specs.push(spec(name.clone(), ENSEMBLE, &config, &inputs, label(name)));
    }
    for e in &program.evaluates {
        match evaluate_spec(program, e, label(&e.name)) {
            Ok(s) => specs.push(s),
            Err(err) => refused.push(*err),
        }
    }
    for c in &program.crossvals {
        match crossval_specs(program, c, label(&c.name)) {
            Ok(s) => specs.extend(s),
            Err(err) => refused.push(*err),
        }
    }
    if !refused.is_empty() {
        return Err(Diagnostics {
            errors: refused,
            sources: program.sources.clone(),
        });
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

fn unsupported(span: crate::lang::Span, what: &str, help: &str) -> Box<check::Error> {
    Box::new(check::Error::Unsupported {
        what: what.to_string(),
        span,
        help: Some(help.to_string()),
    })
}

/// The dataset whose split a train stage predicts for evaluation and ensembles: its training
/// data's dataset, when that has a split.
fn predicted_dataset(program: &Program, t: &check::Train) -> Option<String> {
    let dataset = t.data.dataset();
    program
        .dataset(dataset)
        .filter(|d| d.split.is_some())
        .map(|_| dataset.to_string())
}

/// The dataset an ensemble's members all predicted, if they agree on one.
fn members_dataset<'a>(program: &'a Program, members: &[String]) -> Option<&'a str> {
    let mut datasets = members.iter().map(|m| {
        program
            .train(m)
            .and_then(|t| program.dataset(t.data.dataset()))
            .filter(|d| d.split.is_some())
            .map(|d| d.name.as_str())
    });
    let first = datasets.next()??;
    datasets.all(|d| d == Some(first)).then_some(first)
}

/// The dataset whose val and test predictions a model (train or ensemble) carries.
fn predictions_dataset<'a>(program: &'a Program, model: &check::Predictor) -> Option<&'a str> {
    match model {
        check::Predictor::Train { name } => program
            .train(name)
            .and_then(|t| program.dataset(t.data.dataset()))
            .filter(|d| d.split.is_some())
            .map(|d| d.name.as_str()),
        check::Predictor::Ensemble { name } => program
            .ensemble(name)
            .and_then(|e| members_dataset(program, &e.members)),
    }
}

fn evaluate_spec(
    program: &Program,
    e: &check::Evaluate,
    label: Option<String>,
) -> Result<StageSpec, Box<check::Error>> {
    let check::Evaluate {
        name,
        models,
        data,
        report,
        confusion,
        roc,
        predictions,
        span,
    } = e;
    let classes = program.dataset(data.dataset()).and_then(|d| d.classes);
    let mut batch = 32;
    let mut evaluated = Vec::new();
    for model in models {
        let own = predictions_dataset(program, model);
        let source = match data {
            check::DataRef::Split { dataset, part }
                if *part != check::Part::Train && own == Some(dataset.as_str()) =>
            {
                EvalSource::Predictions { part: *part }
            }
            _ => {
                match model {
                    check::Predictor::Train { name: model_name } => {
                        let t = program.train(model_name);
                        if let (Some(units), Some(classes)) = (t.and_then(|t| t.classes), classes) {
                            if units != classes {
                                return Err(Box::new(check::Error::ClassCount {
                                model: model_name.clone(),
                                units,
                                dataset: data.dataset().to_string(),
                                classes,
                                span: *span,
                                help: Some(format!(
                                    "`{model_name}` was trained on {units} classes; evaluate it on data with the same classes"
                                )),
                            }));
                            }
                        }
                        if let Some(t) = t {
                            batch = t.batch;
                        }
                        EvalSource::Infer
                    }
                    check::Predictor::Ensemble { name: ensemble } => return Err(unsupported(
                        *span,
                        &format!("evaluating ensemble `{ensemble}` on `{data}`"),
                        "an ensemble is scored on the val or test part of its members' own dataset",
                    )),
                }
            }
        };
        evaluated.push(EvalModel {
            name: model.name().to_string(),
            source,
        });
    }
    let config = EvaluateConfig {
        models: evaluated,
        data: DataSel::of(data),
        report: *report,
        confusion: *confusion,
        roc: *roc,
        predictions: *predictions,
        batch,
    };
    let inputs = config.inputs();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(spec(name.clone(), EVALUATE, &config, &inputs, label))
}

fn crossval_specs(
    program: &Program,
    c: &check::Crossval,
    label: Option<String>,
) -> Result<Vec<StageSpec>, Box<check::Error>> {
    let check::Crossval {
        name,
        data,
        folds,
        stratify,
        seed,
        compare,
        test,
        metrics,
        span,
    } = c;
    let data = DataSel::of(data);
    if let DataSel::Balance { balance, .. } = &data {
        return Err(unsupported(
            *span,
            &format!("cross-validating on balance output `{balance}`"),
            "name a dataset or a split part: folds are drawn first, then each compared model's own rebalancing is applied to its fold's training part",
        ));
    }
    let mut specs = Vec::new();
    let mut fold_ids = Vec::new();
    for model in compare {
        let Some(t) = program.train(model) else {
            continue;
        };
        let balance = match &t.data {
            check::DataRef::Balance { balance, .. } => {
                program.balance(balance).map(|b| balance_spec(program, b))
            }
            _ => None,
        };
        for fold in 0..*folds {
            let config = FoldConfig {
                model: model.clone(),
                recipe: recipe(program, t),
                data: data.clone(),
                balance: balance.clone(),
                folds: *folds,
                fold,
                stratify: *stratify,
                seed: *seed,
                val_fraction: FOLD_VAL_FRACTION,
            };
            let id = format!("{name}.{model}.fold{}", fold + 1);
            let mut s = spec(
                id.clone(),
                CROSSVAL_FOLD,
                &config,
                &data.stages(),
                label.clone(),
            )
            .with_seed(*seed);
            s.files = init_files(program, t);
            fold_ids.push(id);
            specs.push(s);
        }
    }
    let metrics = metrics
        .iter()
        .map(|m| match m {
            check::CvMetric::Accuracy => Metric::Accuracy,
            check::CvMetric::Precision => Metric::Precision,
            check::CvMetric::Recall => Metric::Recall,
            check::CvMetric::F1 => Metric::F1,
            check::CvMetric::Auc => Metric::Auc,
        })
        .collect();
    let test = match test {
        check::StatTest::Wilcoxon => Some(PairedTest::Wilcoxon),
        check::StatTest::PairedT => Some(PairedTest::PairedT),
        check::StatTest::None => None,
    };
    let config = CrossvalConfig {
        models: compare.clone(),
        folds: *folds,
        options: CrossvalOptions {
            metrics,
            test,
            alpha: CROSSVAL_ALPHA,
        },
    };
    let inputs: Vec<&str> = fold_ids.iter().map(String::as_str).collect();
    specs.push(spec(name.clone(), CROSSVAL, &config, &inputs, label));
    Ok(specs)
}

/// `pipelines/galaxy10.gpl` → `galaxy10`.
pub fn pipeline_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into())
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

fn dataset_spec(
    program: &Program,
    d: &check::Dataset,
    label: Option<String>,
) -> Result<StageSpec, Box<check::Error>> {
    let check::Dataset {
        name,
        source,
        fallback,
        // Derived at check time from the source, drop and merge; the run recomputes them.
        source_classes: _,
        image_shape,
        drop,
        merges,
        label_map: _,
        classes: _,
        class_names,
        // Compiled into its own stage by the caller.
        split: _,
        span,
    } = d;
    let refuse_fields = || {
        unsupported(
            *span,
            "`synthetic(fields)` (detection fields)",
            "no stage can use detection fields yet (galaxy detection is a coming issue); use `synthetic(galaxy10)` or `synthetic(galaxy10_decals)`",
        )
    };
    let source_cfg = source_config(source, image_shape.as_deref()).ok_or_else(refuse_fields)?;
    let fallback_cfg = match fallback {
        None => None,
        Some(f) => match source_config(f, None).ok_or_else(refuse_fields)? {
            SourceConfig::Synthetic { config } => Some(config),
            // The checker accepts only synthetic fallbacks.
            _ => None,
        },
    };
    let config = DatasetConfig {
        source: source_cfg,
        fallback: fallback_cfg,
        class_names: class_names.clone(),
        classes: ClassSpec {
            drop: drop.clone(),
            merge: merges
                .iter()
                .map(|check::Merge { classes, into }| MergeSpec {
                    classes: classes.clone(),
                    name: None,
                    into: *into,
                })
                .collect(),
        },
    };
    let mut s = spec(name.clone(), DATASET, &config, &[], label);
    // A data file is content-hashed when present; its appearance changes the stage's files.
    if let check::Source::Hdf5 { path, .. } | check::Source::Folder { path, .. } = source {
        if program.project_root.join(path).exists() {
            s.files = vec![PathBuf::from(path)];
        }
    }
    Ok(s)
}

/// The stage config of a source; `None` for a source no stage can load yet.
fn source_config(source: &check::Source, shape: Option<&[usize]>) -> Option<SourceConfig> {
    Some(match source {
        check::Source::Hdf5 {
            path,
            resolved: _,
            images,
            labels,
        } => SourceConfig::Hdf5 {
            path: path.into(),
            images: images.clone(),
            labels: labels.clone(),
        },
        check::Source::Folder { path, resolved: _ } => {
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
            config.kind = match generator {
                check::SyntheticKind::Galaxy10 => SynthKind::Galaxy10,
                check::SyntheticKind::Galaxy10Decals => SynthKind::Galaxy10Decals,
                check::SyntheticKind::Fields => return None,
            };
            SourceConfig::Synthetic { config }
        }
    })
}

fn augment_spec(a: &check::Augment) -> AugmentSpec {
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

/// The one augmentation preset a balance block's over-sampled copies use; a block whose
/// oversample statements name different presets (or some none) is refused: the balance
/// artifact holds one recipe for all its copies.
fn oversample_preset(b: &check::Balance) -> Result<Option<&str>, Box<check::Error>> {
    let mut presets = b.oversample.iter().map(|r| r.using.as_deref());
    let first = presets.next().flatten();
    if presets.any(|p| p != first) {
        return Err(unsupported(
            b.span,
            "over-sampling with different augmentation presets in one balance block",
            "use the same `using` preset on every oversample statement, or split the block",
        ));
    }
    Ok(first)
}

fn balance_spec(program: &Program, b: &check::Balance) -> BalanceSpec {
    let check::Balance {
        name: _,
        span: _,
        // The stage's input, compiled by the caller.
        from: _,
        downsample,
        oversample,
        weights,
        seed,
    } = b;
    let resample = |r: &check::Resample| {
        let check::Resample {
            classes,
            // As written, for messages; `classes` are the training labels.
            original: _,
            to,
            // One preset for the whole block: `oversample_preset`.
            using: _,
        } = r;
        Resample {
            classes: classes.iter().map(|&c| c as u32).collect(),
            to: *to,
        }
    };
    let augment = oversample_preset(b)
        .ok()
        .flatten()
        .and_then(|name| program.augment(name))
        .map(augment_spec)
        .unwrap_or_default();
    BalanceSpec {
        downsample: downsample.iter().map(resample).collect(),
        oversample: oversample.iter().map(resample).collect(),
        augment,
        weights: match weights {
            None => WeightsSpec::None,
            Some(check::WeightsSpec::Balanced) => WeightsSpec::Balanced,
            Some(check::WeightsSpec::Explicit { weights }) => {
                WeightsSpec::Explicit(weights.clone())
            }
        },
        seed: *seed,
    }
}

fn recipe(program: &Program, t: &check::Train) -> Recipe {
    let check::Train {
        // The stage's own name and where it is written.
        name: _,
        span: _,
        // Instantiated into `ir`, with `freeze` applied to its layers' trainable flags.
        model: _,
        freeze: _,
        ir,
        // The stage's inputs (see `TrainConfig`), not part of the recipe a fold reuses.
        data: _,
        validation: _,
        // Derived from `ir` and the data at check time.
        classes: _,
        loss,
        optimizer: o,
        epochs,
        batch,
        seed,
        augment,
        callbacks,
        init,
    } = t;
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
        epochs: *epochs,
        batch_size: *batch,
        seed: *seed,
        shuffle: true,
        learning_rate: o.lr as f32,
        callbacks: callbacks.iter().map(callback_spec).collect(),
    };
    let class_weights = match &loss.class_weights {
        None => ClassWeightConfig::None,
        Some(check::ClassWeights::Balance { .. }) => ClassWeightConfig::FromBalance,
        Some(check::ClassWeights::Balanced) => ClassWeightConfig::Balanced,
        Some(check::ClassWeights::Explicit { weights }) => ClassWeightConfig::Explicit {
            weights: weights.clone(),
        },
    };
    Recipe {
        model: ir.clone(),
        optimizer,
        fit,
        class_weights,
        augment: augment
            .as_deref()
            .and_then(|name| program.augment(name))
            .map(augment_spec),
        init: init.as_ref().map(|i| InitConfig {
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
