//! The `train` stage and the training recipe it shares with cross-validation folds: build the
//! network from its IR, load initial weights (or say plainly that it starts from random),
//! fit with Keras callbacks (checkpointed every epoch in the stage's scratch folder, so a
//! killed run resumes), then write the model, history and predictions.

use super::select::{input_stages, split_id, DataLoader, DataSel};
use super::{augment_spec, spec, stage_error, Stage, StageKind};
use crate::check::Part;
use crate::check::{self, Program};
use crate::data::augment::AugmentSpec;
use crate::data::fields::FieldSet;
use crate::data::ImageSet;
use crate::nn::frozen::FrozenPrefix;
use crate::nn::ir::ModelIr;
use crate::nn::learner::{Learner, NamedTensors};
use crate::nn::optim::OptimizerConfig;
use crate::nn::Network;
use crate::plan::StageSpec;
use crate::report::model::EpochRow;
use crate::report::model::{KeyFigure, StageReport};
use crate::run::{StageContext, StageError, StageExecutor};
use crate::train::callbacks::{
    CallbackSpec, EarlyStoppingConfig, ModelCheckpointConfig, ReduceLrConfig,
};
use crate::train::detection::{DetectorConfig, DetectorSet, FieldSamples};
use crate::train::fit::{fit, DetectionTargets, EpochProgress, FitConfig, FitContext, TrainData};
use crate::train::history::History;
use crate::train::predictions::{
    predict_set, prediction_rows, write_predictions_csv, PredictionRow,
};
use crate::train::weights::{load_keras_h5, load_safetensors, save_safetensors, ExpectedShapes};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub const MODEL_FILE: &str = "model.safetensors";
pub const HISTORY_FILE: &str = "history.csv";
pub const PREDICTIONS_FILE: &str = "predictions.csv";
/// The safetensors metadata entry holding the model's IR as JSON.
pub const IR_METADATA: &str = "gpl.ir";

/// How the loss weighs classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClassWeightConfig {
    None,
    /// The weights the balance input computed.
    FromBalance,
    /// N / (C · n_c) on the training data as given.
    Balanced,
    Explicit {
        weights: Vec<f64>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitConfig {
    /// Relative to the project root.
    pub path: PathBuf,
    pub keras_h5: bool,
    /// A missing file starts from random initialisation, with a notice.
    pub optional: bool,
    /// The train stage whose saved model gives the weights (then `path` is unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

/// Everything that decides a trained model, apart from its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// `nn::ENGINE_EPOCH`: every stage that runs the engine builds it from a recipe, so a
    /// numerics change re-runs them all.
    pub engine_epoch: u32,
    pub model: ModelIr,
    pub optimizer: OptimizerConfig,
    pub fit: FitConfig,
    pub class_weights: ClassWeightConfig,
    /// On-the-fly augmentation of training batches.
    pub augment: Option<AugmentSpec>,
    pub init: Option<InitConfig>,
    /// A detector's anchors and loss (the train block's `anchors`); absent for a classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<DetectorConfig>,
}

/// A train stage: the recipe, the images it trains on and validates on, and the split whose
/// val and test parts it predicts (for evaluate and ensemble stages).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub recipe: Recipe,
    pub data: DataSel,
    /// What the callbacks monitor; `None` trains without validation metrics.
    pub validation: Option<DataSel>,
    /// The dataset whose split's val and test parts go to `predictions.csv`, when it has one.
    pub predict: Option<String>,
}

impl TrainConfig {
    /// Every stage whose outputs the train stage reads.
    pub fn inputs(&self) -> Vec<String> {
        let predict = self.predict.as_ref().map(|dataset| DataSel::Part {
            dataset: dataset.clone(),
            split: split_id(dataset),
            part: Part::Test,
        });
        let mut inputs = input_stages(
            std::iter::once(&self.data)
                .chain(self.validation.as_ref())
                .chain(predict.as_ref()),
        );
        if let Some(stage) = self.recipe.init.as_ref().and_then(|i| i.stage.clone()) {
            if !inputs.contains(&stage) {
                inputs.push(stage);
            }
        }
        inputs
    }
}

pub struct TrainStage;

impl StageExecutor for TrainStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: TrainConfig = super::config(ctx)?;
        if let Some(detector) = &config.recipe.detector {
            return train_detector(ctx, &config, detector);
        }
        let mut loader = DataLoader::default();
        let train = loader.select(ctx, &config.data)?;
        let val = match &config.validation {
            Some(sel) => Some(loader.select(ctx, sel)?.images),
            None => None,
        };
        let (mut network, _) = fit_recipe(
            ctx,
            &config.recipe,
            &train.images,
            train.class_weights.as_deref(),
            val.as_ref(),
            None,
            FitDirs {
                files: ctx.public_dir(),
                checkpoints: ctx.scratch_dir(),
            },
        )?;
        let mut rows = Vec::new();
        if let Some(dataset) = &config.predict {
            for part in [Part::Val, Part::Test] {
                let sel = DataSel::Part {
                    dataset: dataset.clone(),
                    split: split_id(dataset),
                    part,
                };
                let chosen = loader.select(ctx, &sel)?;
                rows.extend(predictions(
                    network.as_mut(),
                    part.as_str(),
                    &chosen.images,
                    &chosen.indices,
                    config.recipe.fit.batch_size,
                )?);
            }
        }
        write_predictions_csv(&ctx.public_dir().join(PREDICTIONS_FILE), &rows)
            .map_err(stage_error)?;
        save_model(ctx.public_dir(), network.as_ref(), &config.recipe.model)
    }
}

impl Stage for TrainStage {
    fn kind(&self) -> StageKind {
        StageKind::Train
    }

    fn report(&self, dir: &Path, section: &mut StageReport) -> Result<bool, StageError> {
        let history = read_history(dir)?;
        section
            .key_figures
            .push(KeyFigure::number("epochs run", history.len() as f64));
        if let Some(best) = history
            .epochs
            .iter()
            .filter_map(|e| e.val_accuracy)
            .reduce(f64::max)
        {
            section
                .key_figures
                .push(KeyFigure::number("best val_accuracy", best));
        }
        if let Some(best) = history
            .epochs
            .iter()
            .filter_map(|e| e.val_map50)
            .reduce(f64::max)
        {
            section
                .key_figures
                .push(KeyFigure::number("best val mAP@0.5", best));
        }
        let seconds: f64 = history.epochs.iter().map(|e| e.seconds).sum();
        section
            .key_figures
            .push(KeyFigure::number("training seconds", seconds));
        section.history = epoch_rows(&history);
        Ok(true)
    }
}

/// Builds, initialises and fits a network; checkpoints go to the stage's scratch folder.
/// A frozen base whose input is not augmented runs once per image, not once per epoch.
/// Where a fit writes: its history (csv and png) and its checkpoints (resume after a kill).
pub struct FitDirs<'p> {
    pub files: &'p Path,
    pub checkpoints: &'p Path,
}

pub fn fit_recipe(
    ctx: &StageContext,
    recipe: &Recipe,
    train: &ImageSet,
    balance_weights: Option<&[f64]>,
    val: Option<&ImageSet>,
    detection: Option<&dyn DetectionTargets>,
    dirs: FitDirs,
) -> Result<(Box<dyn Learner>, History), StageError> {
    let split = FrozenPrefix::split_point(&recipe.model)
        .filter(|_| recipe.augment.is_none() && detection.is_none());
    let mut network: Box<dyn Learner> = match split {
        Some(at) => {
            let first_trainable = &recipe.model.layers[at].name;
            ctx.notice(format!(
                "layers before {first_trainable} are frozen: their outputs are computed once per image"
            ));
            Box::new(
                FrozenPrefix::new(&recipe.model, at, recipe.fit.seed, recipe.optimizer)
                    .map_err(stage_error)?,
            )
        }
        None => Box::new(
            Network::new(&recipe.model, recipe.fit.seed, recipe.optimizer).map_err(stage_error)?,
        ),
    };
    if let Some(d) = &recipe.detector {
        set_class_prior(network.as_mut(), &recipe.model, d)?;
    }
    if let Some(init) = &recipe.init {
        load_initial_weights(ctx, network.as_mut(), init)?;
    }
    let weights: Option<Vec<f32>> = match &recipe.class_weights {
        ClassWeightConfig::None => None,
        ClassWeightConfig::FromBalance => {
            balance_weights.map(|w| w.iter().map(|&x| x as f32).collect())
        }
        ClassWeightConfig::Balanced => Some(
            crate::data::balance::balanced_weights(&train.class_counts())
                .iter()
                .map(|&x| x as f32)
                .collect(),
        ),
        ClassWeightConfig::Explicit { weights } => {
            Some(weights.iter().map(|&x| x as f32).collect())
        }
    };
    let data = TrainData {
        images: train,
        class_weights: weights.as_deref(),
        augment: recipe
            .augment
            .as_ref()
            .map(|spec| spec as &dyn crate::train::fit::Augment)
            .filter(|_| detection.is_none()),
        detection,
    };
    let cancel = AtomicBool::new(false);
    let batches = train.len().div_ceil(recipe.fit.batch_size.max(1)) as u64;
    ctx.progress()
        .set_length(recipe.fit.epochs as u64 * batches);
    let mut on_progress = |event: EpochProgress| {
        match event {
            EpochProgress::Resumed { completed_epochs } => {
                ctx.progress()
                    .set_position(completed_epochs as u64 * batches);
                ctx.notice(format!("resuming after epoch {completed_epochs}"));
            }
            EpochProgress::Batch { epoch, loss, .. } => {
                ctx.progress().inc(1);
                ctx.progress()
                    .set_message(format!("epoch {} loss {loss:.4}", epoch + 1));
            }
            EpochProgress::Epoch(record) => {
                ctx.progress().set_position(record.epoch as u64 * batches);
                ctx.progress().set_message(match record.val_map50 {
                    Some(map) => format!("epoch {} val mAP@0.5 {map:.4}", record.epoch),
                    None => format!(
                        "epoch {} val_accuracy {:.4}",
                        record.epoch,
                        record.val_accuracy.unwrap_or(f64::NAN)
                    ),
                });
            }
        }
        if ctx.cancelled() {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let outcome = fit(
        network.as_mut(),
        &recipe.fit,
        &data,
        val,
        FitContext {
            checkpoint_dir: Some(dirs.checkpoints),
            cancel: Some(&cancel),
            progress: Some(&mut on_progress),
            prefetch_batches: 2,
        },
    );
    ctx.check_cancelled()?;
    let outcome = outcome.map_err(stage_error)?;
    if let Some(epoch) = outcome.stopped_at {
        ctx.notice(format!("early stopping after epoch {epoch}"));
    }
    outcome
        .history
        .write_csv(&dirs.files.join(HISTORY_FILE))
        .map_err(stage_error)?;
    let rows = epoch_rows(&outcome.history);
    let png =
        crate::report::plots::training_curves(&rows, ctx.id().as_str()).map_err(stage_error)?;
    crate::train::write_atomic(&dirs.files.join("history.png"), &png).map_err(stage_error)?;
    Ok((network, outcome.history))
}

fn load_initial_weights(
    ctx: &StageContext,
    network: &mut dyn Learner,
    init: &InitConfig,
) -> Result<(), StageError> {
    let (path, shown) = match &init.stage {
        Some(stage) => (
            ctx.input_dir(&crate::plan::StageId::from(stage.as_str()))?
                .join(super::PUBLIC)
                .join(MODEL_FILE),
            format!("train block `{stage}`"),
        ),
        None => (ctx.resolve(&init.path), init.path.display().to_string()),
    };
    if !path.exists() {
        if init.optional {
            ctx.notice(format!(
                "{} not found: this model starts from RANDOM initialisation, not pretrained weights",
                init.path.display()
            ));
            return Ok(());
        }
        return Err(StageError::failed(format!(
            "initial weights {} not found",
            init.path.display()
        )));
    }
    let expected: ExpectedShapes = network
        .state()
        .into_iter()
        .filter(|(name, _)| is_weight(name))
        .map(|(name, t)| (name, t.shape))
        .collect();
    let expected_count = expected.len();
    let weights = if init.keras_h5 {
        // A base without a head: keep only the layers the file has.
        let file_layers = crate::train::weights::read_keras_h5(&path).map_err(stage_error)?;
        let present: ExpectedShapes = expected
            .into_iter()
            .filter(|(name, _)| file_layers.contains_key(name))
            .collect();
        load_keras_h5(&path, &present).map_err(stage_error)?
    } else {
        let (all, _) = load_safetensors(&path).map_err(stage_error)?;
        all.into_iter()
            .filter(|(name, _)| expected.contains_key(name))
            .collect()
    };
    if weights.is_empty() {
        return Err(StageError::failed(format!(
            "{shown} has no weight this model has (layer names differ)"
        )));
    }
    ctx.notice(format!(
        "loaded {} of the model's {} weight tensors from {shown}",
        weights.len(),
        expected_count
    ));
    network
        .load_weights(&weights)
        .map_err(|e| StageError::failed(format!("{e:?}")))
}

/// Keras weight names (`<layer>/kernel`, ...), not optimizer slots or counters.
fn is_weight(name: &str) -> bool {
    [
        "/kernel",
        "/bias",
        "/gamma",
        "/beta",
        "/moving_mean",
        "/moving_variance",
    ]
    .iter()
    .any(|suffix| name.ends_with(suffix))
}

pub fn predictions(
    network: &mut dyn Learner,
    part: &str,
    set: &ImageSet,
    indices: &[usize],
    batch: usize,
) -> Result<Vec<PredictionRow>, StageError> {
    let probs = predict_set(network, set, batch).map_err(stage_error)?;
    let mut rows = prediction_rows(part, &set.labels, &probs, network.classes());
    for (row, &index) in rows.iter_mut().zip(indices) {
        row.index = index;
    }
    Ok(rows)
}

pub(super) fn save_model(
    dir: &Path,
    network: &dyn Learner,
    model: &ModelIr,
) -> Result<(), StageError> {
    save_model_with(dir, network, model, &[])
}

/// [`save_model`] with more metadata entries.
fn save_model_with(
    dir: &Path,
    network: &dyn Learner,
    model: &ModelIr,
    extra: &[(&str, String)],
) -> Result<(), StageError> {
    let weights: BTreeMap<_, _> = network
        .state()
        .into_iter()
        .filter(|(name, _)| is_weight(name))
        .collect();
    let mut metadata = BTreeMap::new();
    metadata.insert(
        IR_METADATA.to_string(),
        serde_json::to_string(model).map_err(stage_error)?,
    );
    for (key, value) in extra {
        metadata.insert(key.to_string(), value.clone());
    }
    // In the public folder: `runs/<pipeline>/<stage>/model.safetensors` opens in Python
    // (`safetensors.safe_open`), its IR in the `gpl.ir` metadata entry.
    save_safetensors(&dir.join(MODEL_FILE), &weights, &metadata).map_err(stage_error)
}

/// The model a train stage saved, ready to predict: the network its IR describes with the
/// trained weights loaded. `dir` is the train stage's committed output folder.
pub fn load_model(dir: &Path) -> Result<Network, StageError> {
    load_model_file(&dir.join(super::PUBLIC).join(MODEL_FILE))
}

/// A model written by [`save_model`], from its file.
pub fn load_model_file(path: &Path) -> Result<Network, StageError> {
    let path = path.to_path_buf();
    let (weights, metadata) = load_safetensors(&path).map_err(stage_error)?;
    let ir = metadata.get(IR_METADATA).ok_or_else(|| {
        StageError::failed(format!("{} has no `{IR_METADATA}` entry", path.display()))
    })?;
    let ir: ModelIr = serde_json::from_str(ir)
        .map_err(|e| StageError::failed(format!("{}: bad model IR: {e}", path.display())))?;
    // The optimizer is irrelevant for prediction; any will do.
    let optimizer = OptimizerConfig::Sgd {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    let mut network = Network::new(&ir, 0, optimizer).map_err(stage_error)?;
    network
        .load_weights(&weights)
        .map_err(|e| StageError::failed(format!("{}: {e:?}", path.display())))?;
    Ok(network)
}

pub fn epoch_rows(history: &History) -> Vec<EpochRow> {
    history
        .epochs
        .iter()
        .map(|r| EpochRow {
            epoch: r.epoch,
            loss: r.loss,
            accuracy: Some(r.accuracy),
            val_loss: r.val_loss,
            val_accuracy: r.val_accuracy,
            lr: Some(r.lr as f64),
        })
        .collect()
}

pub fn read_history(dir: &Path) -> Result<History, StageError> {
    History::read_csv(&dir.join(super::PUBLIC).join(HISTORY_FILE)).map_err(stage_error)
}

pub(super) fn compile(program: &Program, t: &check::Train, label: Option<String>) -> StageSpec {
    let config = TrainConfig {
        recipe: recipe(program, t),
        data: DataSel::of(&t.data),
        validation: t.validation.as_ref().map(DataSel::of),
        predict: predicted_dataset(program, t).map(str::to_string),
    };
    let inputs = config.inputs();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let mut s = spec(t.name.clone(), StageKind::Train, &config, &inputs, label).with_seed(t.seed);
    s.files = init_files(program, t);
    s
}

/// The dataset whose split a train stage predicts for evaluation and ensembles: its training
/// data's dataset, when that has a split.
pub(super) fn predicted_dataset<'a>(program: &'a Program, t: &check::Train) -> Option<&'a str> {
    program
        .dataset(t.data.dataset())
        .filter(|d| d.split.is_some())
        .map(|d| d.name.as_str())
}

pub(super) fn recipe(program: &Program, t: &check::Train) -> Recipe {
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
        loss:
            check::Loss {
                // Cross-entropy, or a detector's focal loss (then `detector` is set).
                kind: _,
                class_weights,
                label_smoothing,
            },
        optimizer: o,
        epochs,
        batch,
        seed,
        augment,
        callbacks,
        init,
        detector,
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
        label_smoothing: *label_smoothing as f32,
    };
    let class_weights = match class_weights {
        None => ClassWeightConfig::None,
        Some(check::ClassWeights::Balance { .. }) => ClassWeightConfig::FromBalance,
        Some(check::ClassWeights::Balanced) => ClassWeightConfig::Balanced,
        Some(check::ClassWeights::Explicit { weights }) => ClassWeightConfig::Explicit {
            weights: weights.clone(),
        },
    };
    Recipe {
        engine_epoch: crate::nn::ENGINE_EPOCH,
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
            stage: i.stage.clone(),
        }),
        detector: detector.as_deref().cloned(),
    }
}

/// The focal-loss prior (Lin et al. 2017, §4.1): every class logit starts at
/// −ln((1 − π) / π) with π = 0.01, so the thousands of background anchors do not swamp the
/// first steps' loss. Written into the biases of the convolutions whose maps the class output
/// flattens; a weights file given with `init` overrides it.
fn set_class_prior(
    network: &mut dyn Learner,
    model: &ModelIr,
    detector: &DetectorConfig,
) -> Result<(), StageError> {
    const PRIOR: f64 = 0.01;
    let bias = -((1.0 - PRIOR) / PRIOR).ln() as f32;
    let class_output = &model.layers[model.outputs[0]];
    let mut weights = NamedTensors::new();
    for source in &class_output.inputs {
        let crate::nn::ir::Source::Layer(flatten) = *source else {
            continue;
        };
        let Some(crate::nn::ir::Source::Layer(head)) = model.layers[flatten].inputs.first() else {
            continue;
        };
        // A head that shares another's weights sets the owner's bias (once).
        let head = &model.layers[model.layers[*head].shares.unwrap_or(*head)];
        if let crate::nn::ir::LayerOp::Conv2d { filters, .. } = head.op {
            weights.insert(
                format!("{}/bias", head.name),
                crate::nn::learner::Tensor {
                    shape: vec![filters],
                    data: vec![bias; filters],
                },
            );
        }
    }
    if weights.is_empty() {
        return Err(StageError::failed(format!(
            "the class output `{}` should join one convolution's map per level ({} levels), found none",
            class_output.name,
            detector.levels.len(),
        )));
    }
    network.load_weights(&weights).map_err(stage_error)
}

/// A train block with `anchors`: the detector trained on its fields, checkpointed and
/// resumable like any model, and saved with its anchors so a detect block can run it.
fn train_detector(
    ctx: &StageContext,
    config: &TrainConfig,
    detector: &DetectorConfig,
) -> Result<(), StageError> {
    let model = &config.recipe.model;
    let input = match model.input.as_slice() {
        &[h, w, _] => [h, w],
        _ => return Err(StageError::failed("a detector's input is an image")),
    };
    let (fields, _) = super::detect::select_fields(ctx, &config.data)?;
    check_fields(ctx, &fields, input, detector, &config.data.describe())?;
    let train = DetectorSet::new(&fields, input).map_err(stage_error)?;
    let val = match &config.validation {
        Some(sel) => {
            let (fields, _) = super::detect::select_fields(ctx, sel)?;
            check_fields(ctx, &fields, input, detector, &sel.describe())?;
            Some(DetectorSet::new(&fields, input).map_err(stage_error)?)
        }
        None => None,
    };
    let augment = config
        .recipe
        .augment
        .as_ref()
        .map(crate::train::detection::box_augment);
    let samples = FieldSamples::new(
        &train,
        val.as_ref(),
        detector,
        augment,
        config.recipe.fit.batch_size,
    );
    let (network, _) = fit_recipe(
        ctx,
        &config.recipe,
        &train.images,
        None,
        None,
        Some(&samples),
        FitDirs {
            files: ctx.public_dir(),
            checkpoints: ctx.scratch_dir(),
        },
    )?;
    save_detector(ctx.public_dir(), network.as_ref(), model, detector)
}

/// The fields against the detector: their classes must be ones the head scores, and images
/// of another size are resized (with a notice when they are enlarged).
fn check_fields(
    ctx: &StageContext,
    fields: &FieldSet,
    input: [usize; 2],
    detector: &DetectorConfig,
    what: &str,
) -> Result<(), StageError> {
    let classes = fields.classes();
    if classes.len() > detector.classes {
        return Err(StageError::failed(format!(
            "`{what}` has {} box classes ({}), but the detector's class head scores {}",
            classes.len(),
            classes.join(", "),
            detector.classes
        )));
    }
    let (h, w) = (fields.images.height, fields.images.width);
    if h < input[0] || w < input[1] {
        ctx.notice(format!(
            "`{what}` images are {h}x{w}, smaller than the detector's {}x{} input: they are enlarged",
            input[0], input[1]
        ));
    }
    Ok(())
}

/// The metadata entry of a detector's model file that holds its anchors and loss.
pub const DETECTOR_METADATA: &str = "gpl.detector";

fn save_detector(
    dir: &Path,
    network: &dyn Learner,
    model: &ModelIr,
    detector: &DetectorConfig,
) -> Result<(), StageError> {
    save_model_with(
        dir,
        network,
        model,
        &[(
            DETECTOR_METADATA,
            serde_json::to_string(detector).map_err(stage_error)?,
        )],
    )
}

/// A detector a train stage saved: the network with its weights, and its anchors.
pub fn load_detector(dir: &Path) -> Result<(Network, DetectorConfig), StageError> {
    let path = dir.join(super::PUBLIC).join(MODEL_FILE);
    let (_, metadata) = load_safetensors(&path).map_err(stage_error)?;
    let detector = metadata.get(DETECTOR_METADATA).ok_or_else(|| {
        StageError::failed(format!(
            "{} is not a detector (no `{DETECTOR_METADATA}` entry)",
            path.display()
        ))
    })?;
    let detector: DetectorConfig = serde_json::from_str(detector)
        .map_err(|e| StageError::failed(format!("{}: bad detector entry: {e}", path.display())))?;
    Ok((load_model_file(&path)?, detector))
}

pub(super) fn init_files(program: &Program, t: &check::Train) -> Vec<PathBuf> {
    t.init
        .iter()
        .filter(|i| i.stage.is_none() && program.project_root.join(&i.path).exists())
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
